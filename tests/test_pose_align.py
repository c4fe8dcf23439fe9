"""Pose alignment: one test per failure mode of MusePose's pose_align.py, each paired with a test
showing that a straight re-implementation of the original scale computation (``naive_*`` below,
written from shared/notes/pose_align.md §4) really produces the bad value on the same input.

Synthetic people: a fixed OpenPose-18 template in "units"; the driving person is 100 px per unit,
the reference person 187 px per unit, both in 512-px-high frames, so every true segment scale is 1.87.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from musepose.pose.align import (AlignOptions, align_poses, choose_align_frame, person_points,
                                 track_people_detail)
from musepose.pose.layout import FramePose, PersonPose


def track_people(frames, mode="largest"):
    """The person followed in each frame (index, or None)."""
    return track_people_detail(frames, mode)[0]

TRUE_SCALE = 1.87
SCALE_TOL = 0.05  # relative

# OpenPose-18 template, neck at the origin, y down (units)
TEMPLATE = np.array([
    [0.0, -0.10], [0.0, 0.0], [-0.10, 0.0], [-0.12, 0.15], [-0.13, 0.30], [0.10, 0.0], [0.12, 0.15],
    [0.13, 0.30], [-0.06, 0.30], [-0.065, 0.52], [-0.07, 0.74], [0.06, 0.30], [0.065, 0.52], [0.07, 0.74],
    [-0.02, -0.12], [0.02, -0.12], [-0.05, -0.11], [0.05, -0.11],
])


def hand_template(wrist: np.ndarray, side: float) -> np.ndarray:
    """21 hand points hanging below a wrist (units); point 0 is the wrist."""
    pts = [wrist]
    for f in range(5):
        for k in range(1, 5):
            pts.append(wrist + np.array([side * (0.012 * f - 0.024), 0.012 * k + 0.004 * f]))
    return np.array(pts)


def make_person(unit_px: float, neck_xy: tuple[float, float], score: float = 0.9) -> PersonPose:
    neck = np.asarray(neck_xy, dtype=np.float64)
    body = TEMPLATE * unit_px + neck
    rh = hand_template(TEMPLATE[4], -1.0) * unit_px + neck
    lh = hand_template(TEMPLATE[7], 1.0) * unit_px + neck
    face = np.tile(TEMPLATE[0] * unit_px + neck, (68, 1)) + np.linspace(-3, 3, 68)[:, None]

    def with_score(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, np.full((len(a), 1), score)], axis=1).astype(np.float32)

    return PersonPose(with_score(body), with_score(face), with_score(lh), with_score(rh))


def reference_frame() -> FramePose:
    return FramePose(384, 512, [make_person(187.0, (192.0, 130.0))])


def video_frames(n: int = 5, dx: float = 4.0) -> list[FramePose]:
    """A person walking slowly to the right in a 640x512 video."""
    return [FramePose(640, 512, [make_person(100.0, (300.0 + dx * t, 150.0))]) for t in range(n)]


# ---------------------------------------------------------------------------------------------
# the original's scale computation (pose_align.py §4), kept deliberately naive

NAIVE_SEGMENTS = {
    "neck": [(0, 1)], "face": [(16, 17)], "shoulder": [(2, 5)], "arm_upper": [(2, 3), (5, 6)],
    "arm_lower": [(3, 4), (6, 7)], "leg_upper": [(8, 9), (11, 12)], "leg_lower": [(9, 10), (12, 13)],
}


def _naive_xy(frame: FramePose, person: PersonPose) -> np.ndarray:
    """Body coordinates in frame heights, scores ignored (MusePose keeps guessed body points)."""
    return person.body[:, :2].astype(np.float64) / frame.height


def naive_scales(ref: FramePose, video_frame: FramePose) -> dict[str, float]:
    """pose_align.py's scales: first detection, no score gating, pair means, NaN -> 1, inf kept."""
    r = _naive_xy(ref, ref.people[0])
    v = _naive_xy(video_frame, video_frame.people[0])
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, pairs in NAIVE_SEGMENTS.items():
            ratios = [np.float64(np.linalg.norm(r[a] - r[b])) / np.float64(np.linalg.norm(v[a] - v[b]))
                      for a, b in pairs]
            out[name] = float(np.mean(ratios))
        out["body_len"] = float(np.float64(np.linalg.norm(r[1] - (r[8] + r[11]) / 2))
                                / np.float64(np.linalg.norm(v[1] - (v[8] + v[11]) / 2)))
    return {k: (1.0 if math.isnan(s) else s) for k, s in out.items()}


def naive_pick(frame: FramePose) -> PersonPose:
    return frame.people[0]  # the highest detector score, whoever it is


def naive_hands(frame: FramePose) -> list[np.ndarray]:
    """MusePose's hands array: all persons' left hands, then all right hands."""
    return [p.left_hand for p in frame.people] + [p.right_hand for p in frame.people]


# ---------------------------------------------------------------------------------------------
# checks

def seg_len(body: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(body[a, :2] - body[b, :2]))


def assert_plausible(result, ref: FramePose, width: int, height: int, skip_lengths: tuple[int, ...] = ()) -> None:
    """Every visible point finite and near the canvas; every limb within 25 % of the reference's
    limb mapped to the output (the reference has the target proportions). ``skip_lengths``: frames
    whose driving pose itself has a broken limb (only finiteness/bounds are checked there)."""
    sx, sy = width / ref.width, height / ref.height
    rb = ref.people[0].body.copy()
    rb[:, 0] *= sx
    rb[:, 1] *= sy
    for t, f in enumerate(result.frames):
        assert len(f.people) == 1
        b = f.people[0].body
        vis = b[:, 2] > 0.3
        assert np.isfinite(b[vis, :2]).all()
        assert (b[vis, 0] > -width).all() and (b[vis, 0] < 2 * width).all()
        assert (b[vis, 1] > -height).all() and (b[vis, 1] < 2 * height).all()
        for a, c in ((2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (11, 12), (12, 13), (0, 1)):
            if vis[a] and vis[c] and t not in skip_lengths:
                # the driving person walks sideways, so only the lengths (not directions) are compared;
                # both reference and output use the same non-uniform stretch when W/H differ, so
                # compare in a frame where it is uniform (the tests use a matching aspect)
                assert seg_len(b, a, c) == pytest.approx(seg_len(rb, a, c), rel=0.25), (a, c)


def all_scales_close(scales: dict[str, float], value: float = TRUE_SCALE, rel: float = SCALE_TOL) -> None:
    for name in ("neck", "face", "shoulder", "arm_upper", "arm_lower", "body_len", "leg_upper", "leg_lower", "hand"):
        assert scales[name] == pytest.approx(value, rel=rel), name


W_OUT, H_OUT = 384, 512  # same aspect as the reference: positions are not stretched


def test_clean_input_gives_true_scales_and_neck_offset():
    ref, vid = reference_frame(), video_frames()
    res = align_poses(ref, vid, W_OUT, H_OUT, AlignOptions(align_frame=0))
    all_scales_close(res.scales, rel=1e-6)
    # align frame's neck lands on the reference neck
    assert res.frames[0].people[0].body[1, :2] == pytest.approx([192.0, 130.0], abs=1e-3)
    # motion is kept: the neck moves 4 px per frame in the 512-high video -> 4 px in the 512-high ref
    assert res.frames[4].people[0].body[1, 0] - res.frames[0].people[0].body[1, 0] == pytest.approx(16.0, abs=1e-3)
    assert_plausible(res, ref, W_OUT, H_OUT)
    assert naive_scales(ref, vid[0])["leg_lower"] == pytest.approx(TRUE_SCALE, rel=1e-6)


# --- failure mode 2: invisible legs (guessed at the bottom edge) set the leg scales -------------------

def legs_out_of_frame(frame: FramePose) -> FramePose:
    f = frame.copy()
    b = f.people[0].body
    b[[9, 12], 1] = 505.0          # knees guessed near the bottom edge ...
    b[[10, 13], 1] = 506.0         # ... and ankles right below them
    b[[9, 10, 12, 13], 2] = 0.1    # with low scores
    return f


def test_legs_out_of_frame_naive_scale_is_wrong():
    ref, vid = reference_frame(), video_frames()
    naive = naive_scales(ref, legs_out_of_frame(vid[0]))
    assert naive["leg_lower"] > 10 * TRUE_SCALE      # giant lower legs
    assert naive["leg_upper"] < 0.6 * TRUE_SCALE


def test_legs_out_of_frame_falls_back_to_median_over_frames():
    ref, vid = reference_frame(), video_frames()
    vid[0] = legs_out_of_frame(vid[0])
    res = align_poses(ref, vid, W_OUT, H_OUT, AlignOptions(align_frame=0))
    all_scales_close(res.scales)
    assert res.scale_sources["leg_lower"] == "median_over_frames"
    assert_plausible(res, ref, W_OUT, H_OUT)


def test_legs_never_visible_fall_back_to_neighbour_segment():
    ref = reference_frame()
    vid = [legs_out_of_frame(f) for f in video_frames()]
    res = align_poses(ref, vid, W_OUT, H_OUT, AlignOptions(align_frame=0))
    assert res.scale_sources["leg_upper"] == "neighbour body_len"
    assert res.scale_sources["leg_lower"] == "whole-body median"
    all_scales_close(res.scales)
    assert_plausible(res, ref, W_OUT, H_OUT)
    # invisible legs stay invisible (not drawn), and are not placed at absurd positions
    assert (res.frames[0].people[0].body[[9, 10, 12, 13], 2] < 0.3).all()


# --- failure mode 3: a collapsed segment gives x/0 = inf -------------------------------------------

def collapsed_shin(frame: FramePose) -> FramePose:
    f = frame.copy()
    f.people[0].body[10, :2] = f.people[0].body[9, :2]  # right ankle == right knee, confident
    return f


def test_collapsed_segment_naive_scale_is_inf():
    ref, vid = reference_frame(), video_frames()
    assert math.isinf(naive_scales(ref, collapsed_shin(vid[0]))["leg_lower"])


def test_collapsed_segment_uses_other_side_and_stays_finite():
    ref, vid = reference_frame(), video_frames()
    vid[0] = collapsed_shin(vid[0])
    res = align_poses(ref, vid, W_OUT, H_OUT, AlignOptions(align_frame=0))
    assert all(math.isfinite(s) for s in res.scales.values())
    all_scales_close(res.scales)
    for f in res.frames:
        assert np.isfinite(f.people[0].body[:, :2]).all()
    assert_plausible(res, ref, W_OUT, H_OUT, skip_lengths=(0,))


def test_scales_are_clamped_to_the_body_band():
    """Even a consistent but absurd measurement cannot produce a limb 3x off the body scale."""
    ref, vid = reference_frame(), video_frames(1)
    b = vid[0].people[0].body
    b[10, :2] = b[9, :2] + 0.05 * (b[10, :2] - b[9, :2])  # shins 20x too short (not collapsed)
    b[13, :2] = b[12, :2] + 0.05 * (b[13, :2] - b[12, :2])
    res = align_poses(ref, vid, W_OUT, H_OUT, AlignOptions(align_frame=0))
    assert res.scales["leg_lower"] <= 3.0 * TRUE_SCALE * 1.001
    assert "clamped" in res.scale_sources["leg_lower"]
    with np.errstate(divide="ignore"):
        assert naive_scales(ref, vid[0])["leg_lower"] > 15 * TRUE_SCALE


# --- failure mode 4: one misplaced elbow spoils both arms' mean -----------------------------------

def misplaced_elbow(frame: FramePose) -> FramePose:
    f = frame.copy()
    b = f.people[0].body
    b[3, :2] = b[2, :2] + np.array([-3.0, 4.0])  # right elbow confidently placed on the shoulder
    return f


def test_misplaced_elbow_naive_arm_scales_are_wrong():
    ref, vid = reference_frame(), video_frames()
    naive = naive_scales(ref, misplaced_elbow(vid[0]))
    assert naive["arm_upper"] > 1.5 * TRUE_SCALE
    assert naive["arm_lower"] < 0.9 * TRUE_SCALE


@pytest.mark.parametrize("n_frames", [1, 5])
def test_misplaced_elbow_rejects_the_bad_side(n_frames):
    ref, vid = reference_frame(), video_frames(n_frames)
    vid[0] = misplaced_elbow(vid[0])
    res = align_poses(ref, vid, W_OUT, H_OUT, AlignOptions(align_frame=0))
    assert res.scales["arm_upper"] == pytest.approx(TRUE_SCALE, rel=SCALE_TOL)
    assert res.scales["arm_lower"] == pytest.approx(TRUE_SCALE, rel=SCALE_TOL)
    assert "rejected" in res.scale_sources["arm_upper"]


# --- failure mode 6: two people, detection order changes, hands stacked by side --------------------

def two_people_frames(n: int = 6) -> list[FramePose]:
    """A big dancer on the left and a small bystander near the centre; the detector's order flips."""
    frames = []
    for t in range(n):
        big = make_person(100.0, (200.0 + 3 * t, 150.0))
        small = make_person(40.0, (330.0, 250.0), score=0.95)
        frames.append(FramePose(640, 512, [small, big] if t % 2 else [big, small]))
    return frames


def test_two_people_naive_pick_jumps_and_steals_a_hand():
    frames = two_people_frames()
    necks = [naive_pick(f).body[1, :2] for f in frames]
    jumps = [float(np.linalg.norm(necks[t + 1] - necks[t])) for t in range(len(necks) - 1)]
    assert max(jumps) > 100.0  # identity switches between the two people
    hands = naive_hands(frames[0])
    right_wrist = naive_pick(frames[0]).body[4, :2]
    # hands[1] is attached to person 0's right wrist, but it is person 1's left hand
    assert float(np.linalg.norm(hands[1][0, :2] - right_wrist)) > 100.0


@pytest.mark.parametrize("mode,unit", [("largest", 100.0), ("most_central", 40.0)])
def test_two_people_one_person_tracked_with_own_hands(mode, unit):
    frames = two_people_frames()
    picks = track_people(frames, mode)
    chosen = [frames[t].people[picks[t]] for t in range(len(frames))]
    assert all(math.isclose(seg_len(p.body, 1, 2), 0.10 * unit, rel_tol=1e-4) for p in chosen)
    ref = reference_frame()
    res = align_poses(ref, frames, W_OUT, H_OUT, AlignOptions(align_frame=0, person=mode))
    necks = np.array([f.people[0].body[1, :2] for f in res.frames])
    assert np.abs(np.diff(necks, axis=0)).max() < 20.0
    for f in res.frames:
        p = f.people[0]
        assert float(np.linalg.norm(p.right_hand[0, :2] - p.body[4, :2])) < 1.0
        assert float(np.linalg.norm(p.left_hand[0, :2] - p.body[7, :2])) < 1.0
    assert_plausible(res, ref, W_OUT, H_OUT)


# --- failure mode 7: frames without a person -----------------------------------------------------

def test_missing_detections_naive_crashes():
    frames = video_frames(5)
    frames[2] = FramePose(640, 512, [])
    with pytest.raises(IndexError):
        [naive_pick(f) for f in frames]


def test_missing_detections_repeat_last_pose():
    ref = reference_frame()
    frames = video_frames(6)
    for t in (0, 3, 4):
        frames[t] = FramePose(640, 512, [])
    res = align_poses(ref, frames, W_OUT, H_OUT, AlignOptions(align_frame="auto"))
    assert len(res.frames) == 6
    assert res.person_indices == [None, 0, 0, None, None, 0]
    body = [f.people[0].body for f in res.frames]
    np.testing.assert_allclose(body[0], body[1])      # leading gap takes the first detection
    np.testing.assert_allclose(body[3], body[2])      # later gaps repeat the previous pose
    np.testing.assert_allclose(body[4], body[2])
    assert not np.allclose(body[5], body[2])
    assert_plausible(res, ref, W_OUT, H_OUT)


def test_no_person_anywhere_is_a_clear_error():
    with pytest.raises(ValueError, match="no person"):
        align_poses(reference_frame(), [FramePose(64, 64, [])], 64, 64)
    with pytest.raises(ValueError, match="reference"):
        align_poses(FramePose(64, 64, []), video_frames(1), 64, 64)


# --- failure mode 5: the align frame; auto picks a frontal, fully visible frame -------------------

def test_auto_align_frame_prefers_frontal_full_body():
    frames = video_frames(4)
    side = frames[0].people[0].body
    side[[2, 5], 0] = side[1, 0] + np.array([-2.0, 2.0])   # frame 0: side view, shoulders collapsed
    frames[1] = legs_out_of_frame(frames[1])               # frame 1: legs missing
    frames[2].people[0].body[:, 2] = 0.9                   # frames 2, 3 frontal; 2 comes first
    xy_vis = [person_points(f.people[0], f.height, 0.3) for f in frames]
    xy = np.stack([x for x, _, _ in xy_vis])
    vis = np.stack([v for _, v, _ in xy_vis])
    assert choose_align_frame(xy, vis, np.ones(4, dtype=bool)) == 2
    res = align_poses(reference_frame(), frames, W_OUT, H_OUT)
    assert res.align_frame == 2
    all_scales_close(res.scales)


def test_align_frame_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        align_poses(reference_frame(), video_frames(2), W_OUT, H_OUT, AlignOptions(align_frame=5))


# --- failure mode 8: jitter; One-Euro smoothing ----------------------------------------------------

def test_smoothing_reduces_jitter():
    rng = np.random.default_rng(0)
    frames = [FramePose(640, 512, [make_person(100.0, (300.0, 150.0))]) for _ in range(40)]
    for f in frames:
        f.people[0].body[:, :2] += rng.normal(0, 2.0, size=(18, 2))
    ref = reference_frame()
    raw = align_poses(ref, frames, W_OUT, H_OUT, AlignOptions(align_frame=0))
    smooth = align_poses(ref, frames, W_OUT, H_OUT, AlignOptions(align_frame=0, smooth=True, fps=30))
    jit = lambda r: float(np.std(np.diff([f.people[0].body[7, :2] for f in r.frames], axis=0)))  # noqa: E731
    assert jit(smooth) < 0.5 * jit(raw)


# --- output mapping ----------------------------------------------------------------------------

@pytest.mark.parametrize("fit", ["stretch", "crop", "pad"])
def test_reference_fit_modes_place_the_neck(fit):
    ref = reference_frame()  # 384x512, neck at (192, 130)
    res = align_poses(ref, video_frames(1), 512, 512, AlignOptions(align_frame=0, ref_fit=fit))
    expected = {"stretch": (192 * 512 / 384, 130), "crop": (256, 130 * 4 / 3 - (512 * 4 / 3 - 512) / 2),
                "pad": (192 + 64, 130)}[fit]
    assert res.frames[0].people[0].body[1, :2] == pytest.approx(expected, abs=1e-3)


def test_similar_people_are_tracked_not_reselected_each_frame():
    """Two dancers of nearly equal size whose measured sizes alternate: choosing "largest" per
    frame would jump between them; tracking keeps the first choice."""
    frames = []
    for t in range(6):
        a = make_person(100.0 if t % 2 == 0 else 97.0, (150.0 + 2 * t, 150.0))
        b = make_person(97.0 if t % 2 == 0 else 100.0, (480.0, 150.0))
        frames.append(FramePose(640, 512, [a, b]))
    per_frame_largest = [max(range(2), key=lambda i: seg_len(f.people[i].body, 1, 10)) for f in frames]
    assert per_frame_largest == [0, 1, 0, 1, 0, 1]       # what re-selecting every frame would do
    assert track_people(frames, "largest") == [0] * 6
    res = align_poses(reference_frame(), frames, W_OUT, H_OUT, AlignOptions(align_frame=0))
    necks = np.array([f.people[0].body[1, :2] for f in res.frames])
    assert np.abs(np.diff(necks, axis=0)).max() < 5.0
