"""Pose drawing: MusePose's training-render conventions (shared/notes/dwpose.md §5).

Colours are checked at limb centres (exact RGB, no tolerance: flat fills), widths by counting
coloured pixels across a limb (exact for axis-aligned limbs).
"""
from __future__ import annotations

import numpy as np
import pytest

from musepose.pose.draw import (LIMBS, PALETTE, hand_edge_color, limb_half_width, render_pose)
from musepose.pose.layout import FramePose, PersonPose


def swapped_dimmed(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Palette colour as it appears in the final image: x0.6 (floored), then BGR->RGB swap."""
    return tuple(int(c * 0.6) for c in rgb)[::-1]


def person_with(points: dict[int, tuple[float, float]]) -> PersonPose:
    p = PersonPose()
    for j, (x, y) in points.items():
        p.body[j] = (x, y, 0.9)
    return p


def draw(points: dict[int, tuple[float, float]], w: int = 600, h: int = 300, **kw) -> np.ndarray:
    return render_pose(FramePose(w, h, [person_with(points)]), render_short_side=0, **kw)


def test_half_width_table():
    assert [limb_half_width(v) for v in (0, 4.9, 5, 9.9, 10, 19, 20, 39, 40, 79, 80, 159, 160, 319, 320, 2000)] == \
        [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8]


def test_neck_to_right_shoulder_is_blue_not_red():
    img = draw({1: (100, 150), 2: (200, 150)})
    assert tuple(img[150, 150]) == (0, 0, 153)         # palette red, dimmed, channel-swapped
    assert tuple(img[150, 100]) == PALETTE[1][::-1]    # neck joint disc: full colour, swapped
    assert tuple(img[150, 200]) == PALETTE[2][::-1]


@pytest.mark.parametrize("length", [12, 30, 60, 100, 200, 400])
def test_limb_width_grows_with_length(length):
    x0 = 50
    img = draw({1: (x0, 150), 2: (x0 + length, 150)}, w=x0 + length + 50)
    column = img[:, x0 + length // 2]
    rows = np.nonzero((column == (0, 0, 153)).all(axis=1))[0]
    assert len(rows) == 2 * limb_half_width(length) + 1
    assert rows.min() == 150 - limb_half_width(length) and rows.max() == 150 + limb_half_width(length)


@pytest.mark.parametrize("limb", range(len(LIMBS)))
def test_every_limb_colour(limb):
    a, b = LIMBS[limb]
    img = draw({a: (100, 150), b: (300, 150)})
    assert tuple(img[150, 200]) == swapped_dimmed(PALETTE[limb])


def test_vertical_limb_and_joint_discs():
    img = draw({8: (300, 40), 9: (300, 240)}, h=300)  # right hip -> right knee, limb 7
    assert tuple(img[140, 300]) == swapped_dimmed(PALETTE[7])
    row = img[140]
    cols = np.nonzero((row == swapped_dimmed(PALETTE[7])).all(axis=1))[0]
    assert len(cols) == 2 * limb_half_width(200) + 1
    disc = np.nonzero((img[:, :, :] == PALETTE[9][::-1]).all(axis=-1))
    assert disc[0].min() == 236 and disc[0].max() == 244   # radius-4 disc around the knee


def test_invisible_endpoint_hides_limb_and_joint():
    p = person_with({1: (100, 150), 2: (200, 150)})
    p.body[2, 2] = 0.2
    img = render_pose(FramePose(300, 300, [p]), render_short_side=0)
    assert img[150, 150].sum() == 0 and img[150, 200].sum() == 0
    assert tuple(img[150, 100]) == PALETTE[1][::-1]


def test_hand_edges_hsv_and_red_joints():
    p = PersonPose()
    hand = np.zeros((21, 3), dtype=np.float32)   # only points 0 and 1 visible: edge 0 alone
    hand[0] = (100, 100, 0.9)
    hand[1] = (160, 100, 0.9)
    p.right_hand = hand
    img = render_pose(FramePose(600, 200, [p]), render_short_side=0)
    # edge 0 (points 0 -> 1, 60 px long): HSV(0) = (255, 0, 0) drawn as BGR -> blue
    assert tuple(img[100, 130]) == hand_edge_color(0)[::-1] == (0, 0, 255)
    assert tuple(img[100, 100]) == (255, 0, 0)  # hand joint (0, 0, 255) BGR -> red
    col = np.nonzero((img[:, 130] == (0, 0, 255)).all(axis=1))[0]
    assert len(col) in (limb_half_width(60), limb_half_width(60) + 1)  # full thickness = table value
    assert render_pose(FramePose(600, 200, [p]), render_short_side=0, draw_hands=False).sum() == 0


def test_face_off_by_default():
    p = PersonPose()
    p.face[:, :2] = np.stack([np.linspace(50, 250, 68), np.full(68, 100)], axis=1)
    p.face[:, 2] = 0.9
    frame = FramePose(300, 200, [p])
    assert render_pose(frame, render_short_side=0).sum() == 0
    on = render_pose(frame, render_short_side=0, draw_face=True)
    assert tuple(on[100, 50]) == (255, 255, 255)


def test_only_selected_person_drawn():
    a = person_with({1: (50, 50), 2: (150, 50)})
    b = person_with({1: (50, 150), 2: (150, 150)})
    frame = FramePose(200, 200, [a, b])
    one = render_pose(frame, render_short_side=0)
    assert tuple(one[50, 100]) == (0, 0, 153) and one[150, 100].sum() == 0
    second = render_pose(frame, person=1, render_short_side=0)
    assert second[50, 100].sum() == 0 and tuple(second[150, 100]) == (0, 0, 153)
    everyone = render_pose(frame, person=None, render_short_side=0)
    assert tuple(everyone[50, 100]) == tuple(everyone[150, 100]) == (0, 0, 153)


def test_render_at_target_aspect_without_stretch():
    """Drawn at short side 1024 with the output's aspect, then area-resized: discs stay round and
    the limb colour survives; strokes are as thick (relative to the image) as at 1024."""
    p = person_with({1: (256, 300), 2: (256, 500)})  # vertical neck -> right shoulder, 200 px at 512 wide
    img = render_pose(FramePose(512, 768, [p]), render_short_side=1024)
    assert img.shape == (768, 512, 3)
    assert tuple(img[400, 256]) == (0, 0, 153)
    cols = np.nonzero((img[400] == (0, 0, 153)).all(axis=1))[0]
    # at 1024 wide the limb is 400 px -> half-width 8 -> 17 px, i.e. ~8.5 px here (area-resized edges blend)
    assert 7 <= len(cols) <= 9
    ys, xs = np.nonzero((img == PALETTE[1][::-1]).all(axis=-1))
    assert abs((ys.max() - ys.min()) - (xs.max() - xs.min())) <= 1  # the neck disc is round
