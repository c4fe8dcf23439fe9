"""Pose images exactly as MusePose's pose guider saw them in training (notes dwpose.md §5).

* body: 17 limbs as filled ellipses whose half-width grows with limb length, the canvas is then
  dimmed to 60 %, then radius-4 joint discs; the usual 18-colour OpenPose palette;
* hands: 20 edges coloured HSV(i/20, 1, 1), thickness from the same length rule, radius-3 joints;
* face: white radius-3 dots, off by default (MusePose never drew faces);
* colours are written as if the canvas were BGR and the finished image is then channel-swapped,
  as MusePose's BGR->RGB step does, so e.g. the neck->right-shoulder limb comes out blue;
* only the selected person is drawn.

Everything is drawn with Pillow (polygons and ellipses computed here); no OpenCV. The pose is drawn
directly at the output aspect; by default it is drawn with short side 1024 (MusePose's render size)
and area-resized to the output, so stroke widths relative to the image match the training renders.
"""
from __future__ import annotations

import colorsys
import math
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .layout import VISIBLE_THRESHOLD, FramePose, PersonPose

#: OpenPose palette, indexed by limb (for limbs) or by keypoint (for joints).
PALETTE = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)

#: The 17 drawn limbs (0-based OpenPose indices); the shoulder-ear pairs are not drawn.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)

HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11),
    (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)

BODY_JOINT_RADIUS = 4
HAND_JOINT_RADIUS = 3
FACE_DOT_RADIUS = 3
HAND_JOINT_COLOR = (0, 0, 255)   # BGR-intended; red after the final swap
FACE_COLOR = (255, 255, 255)
DIM_FACTOR = 0.6
RENDER_SHORT_SIDE = 1024


def limb_half_width(length: float) -> int:
    """Half-width (pixels) of a limb drawn with this length: 1 below 5 px ... 8 from 320 px."""
    for bound, width in ((5, 1), (10, 2), (20, 3), (40, 4), (80, 5), (160, 6), (320, 7)):
        if length < bound:
            return width
    return 8


def hand_edge_color(i: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(i / float(len(HAND_EDGES)), 1.0, 1.0)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def ellipse_polygon(cx: float, cy: float, half_length: float, half_width: float, angle_deg: float,
                    step_deg: int = 1) -> list[tuple[int, int]]:
    """Integer outline of a rotated ellipse (what OpenCV's ellipse2Poly returns for 0..360 degrees)."""
    t = np.deg2rad(np.arange(0, 360 + step_deg, step_deg, dtype=np.float64))
    a = math.radians(angle_deg)
    ca, sa = math.cos(a), math.sin(a)
    x = cx + half_length * np.cos(t) * ca - half_width * np.sin(t) * sa
    y = cy + half_length * np.cos(t) * sa + half_width * np.sin(t) * ca
    pts = np.stack([np.rint(x), np.rint(y)], axis=1).astype(int)
    keep = np.ones(len(pts), dtype=bool)
    keep[1:] = (pts[1:] != pts[:-1]).any(axis=1)
    return [tuple(p) for p in pts[keep]]


def _disc(draw: ImageDraw.ImageDraw, x: float, y: float, r: int, color: tuple[int, int, int]) -> None:
    xi, yi = int(x), int(y)
    draw.ellipse([xi - r, yi - r, xi + r, yi + r], fill=color)


def _thick_line(draw: ImageDraw.ImageDraw, p: np.ndarray, q: np.ndarray, thickness: int,
                color: tuple[int, int, int]) -> None:
    """A line of the given full thickness with round caps (OpenCV's thick-line look)."""
    x1, y1, x2, y2 = int(p[0]), int(p[1]), int(q[0]), int(q[1])
    half = thickness / 2.0
    dx, dy = x2 - x1, y2 - y1
    n = math.hypot(dx, dy)
    if n > 0:
        ox, oy = -dy / n * half, dx / n * half
        draw.polygon([(x1 + ox, y1 + oy), (x2 + ox, y2 + oy), (x2 - ox, y2 - oy), (x1 - ox, y1 - oy)], fill=color)
    if thickness > 1:
        r = int(half)
        for x, y in ((x1, y1), (x2, y2)):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
    else:
        draw.line([(x1, y1), (x2, y2)], fill=color, width=1)


def _finite_visible(points: np.ndarray, threshold: float) -> np.ndarray:
    return (points[:, 2] > threshold) & np.isfinite(points[:, :2]).all(axis=1) & (np.abs(points[:, :2]) < 1e7).all(axis=1)


def _draw_limbs(img: Image.Image, people: Sequence[PersonPose], threshold: float) -> None:
    draw = ImageDraw.Draw(img)
    visible = [_finite_visible(p.body, threshold) for p in people]
    for i, (a, b) in enumerate(LIMBS):  # limb-major order, like MusePose, so overlaps match
        for person, vis in zip(people, visible):
            if not (vis[a] and vis[b]):
                continue
            (xa, ya), (xb, yb) = person.body[a, :2], person.body[b, :2]
            length = math.hypot(xa - xb, ya - yb)
            angle = math.degrees(math.atan2(ya - yb, xa - xb))
            poly = ellipse_polygon(int((xa + xb) / 2), int((ya + yb) / 2), int(length / 2),
                                   limb_half_width(length), int(angle))
            if len(poly) >= 3:
                draw.polygon(poly, fill=PALETTE[i])
            else:
                draw.point(poly, fill=PALETTE[i])


def _draw_body_joints(img: Image.Image, people: Sequence[PersonPose], threshold: float) -> None:
    draw = ImageDraw.Draw(img)
    visible = [_finite_visible(p.body, threshold) for p in people]
    for j in range(18):
        for person, vis in zip(people, visible):
            if vis[j]:
                _disc(draw, person.body[j, 0], person.body[j, 1], BODY_JOINT_RADIUS, PALETTE[j])


def _draw_hand(img: Image.Image, hand: np.ndarray, threshold: float) -> None:
    draw = ImageDraw.Draw(img)
    vis = _finite_visible(hand, threshold)
    for i, (a, b) in enumerate(HAND_EDGES):
        if vis[a] and vis[b]:
            length = math.hypot(*(hand[a, :2] - hand[b, :2]))
            _thick_line(draw, hand[a, :2], hand[b, :2], limb_half_width(length), hand_edge_color(i))
    for j in range(21):
        if vis[j]:
            _disc(draw, hand[j, 0], hand[j, 1], HAND_JOINT_RADIUS, HAND_JOINT_COLOR)


def _draw_face(img: Image.Image, face: np.ndarray, threshold: float) -> None:
    draw = ImageDraw.Draw(img)
    vis = _finite_visible(face, threshold)
    for j in np.nonzero(vis)[0]:
        _disc(draw, face[j, 0], face[j, 1], FACE_DOT_RADIUS, FACE_COLOR)


def draw_people(people: Sequence[PersonPose], width: int, height: int, draw_body: bool = True,
                draw_hands: bool = True, draw_face: bool = False,
                threshold: float = VISIBLE_THRESHOLD) -> np.ndarray:
    """Draw people (pixel coordinates of this canvas) on black; returns RGB uint8 ``[H, W, 3]``."""
    img = Image.new("RGB", (int(width), int(height)))
    if draw_body:
        _draw_limbs(img, people, threshold)
        # floor(v * 0.6) in integers (== MusePose's float multiply + uint8 cast for 0..255)
        dimmed = (np.asarray(img).astype(np.uint16) * 3 // 5).astype(np.uint8)
        img = Image.fromarray(dimmed)
        _draw_body_joints(img, people, threshold)
    if draw_hands:
        for person in people:
            _draw_hand(img, person.left_hand, threshold)
            _draw_hand(img, person.right_hand, threshold)
    if draw_face:
        for person in people:
            _draw_face(img, person.face, threshold)
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])  # MusePose's BGR -> RGB swap


def render_size(width: int, height: int, short_side: int = RENDER_SHORT_SIDE) -> tuple[int, int]:
    """Canvas with the output's aspect and the given short side (0 = the output size itself)."""
    if not short_side:
        return int(width), int(height)
    s = short_side / float(min(width, height))
    return max(1, int(round(width * s))), max(1, int(round(height * s)))


def render_pose(frame: FramePose, width: int | None = None, height: int | None = None,
                person: int | None = 0, render_short_side: int = RENDER_SHORT_SIDE,
                draw_body: bool = True, draw_hands: bool = True, draw_face: bool = False,
                threshold: float = VISIBLE_THRESHOLD) -> np.ndarray:
    """Render one frame's pose at ``width`` x ``height`` (default: the frame's canvas).

    ``person``: index of the person to draw (MusePose draws one), or None for everyone (previews).
    The drawing happens at ``render_short_side`` with the same aspect and is then resized (area
    filter when shrinking), so strokes scale with the image as in MusePose's training data.
    """
    width = int(width or frame.width)
    height = int(height or frame.height)
    if person is None:
        people = frame.people
    else:
        people = frame.people[person:person + 1]
    rw, rh = render_size(width, height, render_short_side)
    sx, sy = rw / float(frame.width), rh / float(frame.height)
    scaled = [p.scaled(sx, sy) for p in people]
    canvas = draw_people(scaled, rw, rh, draw_body, draw_hands, draw_face, threshold)
    if (rw, rh) == (width, height):
        return canvas
    resample = Image.BOX if rw >= width else Image.BILINEAR
    return np.asarray(Image.fromarray(canvas).resize((width, height), resample=resample))


def render_poses(frames: Sequence[FramePose], width: int | None = None, height: int | None = None,
                 check_interrupt: Callable[[], None] | None = None, **kwargs) -> np.ndarray:
    """:func:`render_pose` for every frame, stacked as uint8 ``[F, H, W, 3]``.

    ``check_interrupt`` is called before each frame and may raise to cancel.
    """
    if not frames:
        raise ValueError("no frames to render")
    out = None
    for i, f in enumerate(frames):
        if check_interrupt is not None:
            check_interrupt()
        img = render_pose(f, width, height, **kwargs)
        if out is None:  # filled frame by frame: no list of frames plus a stacked copy
            out = np.empty((len(frames),) + img.shape, dtype=img.dtype)
        out[i] = img
    return out


def overlay(image_rgb: np.ndarray, pose_rgb: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Pose drawn over a (darkened) image: pose pixels replace, the rest shows the image at 1-alpha."""
    img = image_rgb.astype(np.float32)
    pose = pose_rgb.astype(np.float32)
    mask = (pose.max(axis=-1, keepdims=True) > 0).astype(np.float32)
    out = img * (1.0 - alpha * 0.5) * (1.0 - mask) + (pose * alpha + img * (1.0 - alpha)) * mask
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
