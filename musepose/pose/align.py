"""MusePose pose alignment: re-target a driving video's skeleton to the reference person's proportions.

Algorithm (MusePose ``pose_align.py``, re-written from the notes in shared/notes/pose_align.md):
coordinates are measured in units of their own frame's height; one scale per body segment is the
ratio of the reference's segment length to the driving person's on an align frame; every frame is
then rebuilt along the kinematic chain from the neck (each bone keeps its direction and gets its
length times its segment's scale, children follow their moved parent) and shifted so the align
frame's neck lands on the reference's neck.

Fixed here, each with a test in tests/test_pose_align.py:

* only keypoints above the visibility threshold ever set a scale; a segment without a valid
  measurement falls back to the other side, then to the median over all frames where it is
  visible, then to a neighbouring segment, then to the median scale of the whole body;
* zero-length segments are skipped (no inf), every scale is finite and clamped to a band around
  the whole-body scale;
* left/right ratios that disagree (one misplaced joint) are not averaged: the side closer to the
  whole-body scale wins;
* one person is chosen (largest or most central) and tracked across frames; hands belong to their
  own person, never to the detection order;
* frames without a usable person repeat the previous pose (leading ones take the first);
* optional One-Euro smoothing; ``align_frame="auto"`` picks a frontal frame with all segments visible;
* the output is mapped straight to the target W x H (drawn there later, no stretched strokes), and
  frames before the align frame are kept rather than dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .layout import VISIBLE_THRESHOLD, FramePose, PersonPose
from .log import logger
from .smoothing import one_euro

# Combined point index space of one person: body 18, right hand 21, left hand 21, face 68.
RH, LH, FACE, N_POINTS = 18, 39, 60, 128
ROOT = 1  # neck

#: Segment -> sides; a side is (points of end A, points of end B); an end is the mean of its points.
SEGMENTS: dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {
    "neck": [((0,), (1,))],
    "face": [((16,), (17,))],
    "shoulder": [((2,), (5,))],
    "arm_upper": [((2,), (3,)), ((5,), (6,))],
    "arm_lower": [((3,), (4,)), ((6,), (7,))],
    "body_len": [((1,), (8, 11))],
    "leg_upper": [((8,), (9,)), ((11,), (12,))],
    "leg_lower": [((9,), (10,)), ((12,), (13,))],
    "hand": [((h,), (h + k,)) for h in (RH, LH) for k in (1, 5, 9, 13, 17)],
}
BODY_SEGMENTS = ("neck", "face", "shoulder", "arm_upper", "arm_lower", "body_len", "leg_upper", "leg_lower")

#: Where a segment with no valid measurement borrows its scale, in order.
NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "neck": ("face", "shoulder"),
    "face": ("neck",),
    "shoulder": ("body_len", "neck"),
    "arm_upper": ("arm_lower", "shoulder"),
    "arm_lower": ("arm_upper",),
    "body_len": ("shoulder", "leg_upper"),
    "leg_upper": ("leg_lower", "body_len"),
    "leg_lower": ("leg_upper",),
}

#: Keypoints that the align frame should show (everything the body scales need).
ALIGN_REQUIRED = tuple(range(14)) + (16, 17)

EPS_LENGTH = 1e-3          # segment length (frame heights) below which it is "collapsed"
SIDE_AGREEMENT = 1.3       # left/right ratios further apart than this factor are not averaged
MAX_SCALE_SPREAD = 3.0     # every segment scale stays within [g / 3, g * 3] of the body scale g


def _build_chain() -> tuple[np.ndarray, list[str | None]]:
    parent = np.full(N_POINTS, -1)
    seg: list[str | None] = [None] * N_POINTS
    body = {0: (1, "neck"), 14: (0, "face"), 15: (0, "face"), 16: (0, "face"), 17: (0, "face"),
            2: (1, "shoulder"), 5: (1, "shoulder"), 3: (2, "arm_upper"), 6: (5, "arm_upper"),
            4: (3, "arm_lower"), 7: (6, "arm_lower"), 8: (1, "body_len"), 11: (1, "body_len"),
            9: (8, "leg_upper"), 12: (11, "leg_upper"), 10: (9, "leg_lower"), 13: (12, "leg_lower")}
    for j, (p, s) in body.items():
        parent[j], seg[j] = p, s
    for k in range(21):
        parent[RH + k], seg[RH + k] = 4, "hand"   # subject's right hand hangs from the right wrist
        parent[LH + k], seg[LH + k] = 7, "hand"
    for k in range(68):
        parent[FACE + k], seg[FACE + k] = 0, "face"
    return parent, seg


PARENT, SEGMENT_OF = _build_chain()


def _topological_order() -> list[int]:
    order, frontier = [], [ROOT]
    while frontier:
        nxt = []
        for p in frontier:
            kids = [j for j in range(N_POINTS) if PARENT[j] == p]
            order += kids
            nxt += kids
        frontier = nxt
    return order


CHAIN_ORDER = _topological_order()


@dataclass
class AlignOptions:
    """Settings of :func:`align_poses`.

    align_frame: index into the driving frames, or "auto" (frontal, all segments visible).
    person: "largest" or "most_central" (also used for the reference image).
    ref_fit: how the reference frame maps onto the W x H output, matching how the reference image
    is resized for the sampler: "stretch" (MusePose's plain resize), "crop" (cover) or "pad" (contain).
    smooth: One-Euro filter on the aligned tracks (min_cutoff Hz, beta per frame-height/s).
    """

    align_frame: int | str = "auto"
    person: str = "largest"
    ref_fit: str = "stretch"
    smooth: bool = False
    smooth_min_cutoff: float = 1.5
    smooth_beta: float = 8.0
    fps: float = 30.0
    threshold: float = VISIBLE_THRESHOLD


@dataclass
class AlignResult:
    frames: list[FramePose]                 # one person per frame, pixels of the W x H output
    scales: dict[str, float]
    scale_sources: dict[str, str]
    align_frame: int
    person_indices: list[int | None]        # chosen detection per driving frame (None = repeated)
    offset: np.ndarray                      # reference neck - driving neck, in frame heights
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# person selection and gap filling

def _usable(person: PersonPose, threshold: float) -> bool:
    return person.body[ROOT, 2] > threshold and person.body_box(threshold) is not None


def _box_metrics(person: PersonPose, width: int, height: int, threshold: float) -> tuple[float, float]:
    x0, y0, x1, y1 = person.body_box(threshold)  # type: ignore[misc]
    area = (x1 - x0) * (y1 - y0) / float(width * height)
    cx, cy = (x0 + x1) / 2.0 / height, (y0 + y1) / 2.0 / height
    dist = math.hypot(cx - width / 2.0 / height, cy - 0.5)
    return area, dist


def pick_person(frame: FramePose, mode: str = "largest", threshold: float = VISIBLE_THRESHOLD) -> int | None:
    """Index of the person to use in a single frame, or None when nobody usable is there."""
    cands = [i for i, p in enumerate(frame.people) if _usable(p, threshold)]
    if not cands:
        return None
    metrics = {i: _box_metrics(frame.people[i], frame.width, frame.height, threshold) for i in cands}
    if mode == "largest":
        return max(cands, key=lambda i: (metrics[i][0], -metrics[i][1]))
    if mode in ("most_central", "central"):
        return min(cands, key=lambda i: (metrics[i][1], -metrics[i][0]))
    raise ValueError(f"unknown person selection {mode!r}: use 'largest' or 'most_central'")


def track_people_detail(frames: Sequence[FramePose], mode: str = "largest",
                        threshold: float = VISIBLE_THRESHOLD) -> tuple[list[int | None], list[int]]:
    """One person per frame, consistently: pick by ``mode`` once, then follow the nearest neck; and the
    frames where the followed person was lost and chosen anew by ``mode`` (where the pose may jump to
    someone else).

    A candidate farther than max(0.1, half the tracked person's height) frame heights from the last
    neck is a different person; then the choice is made again by ``mode``.
    """
    chosen: list[int | None] = []
    switches: list[int] = []
    last_neck: np.ndarray | None = None
    last_h = 0.0
    for t, f in enumerate(frames):
        cands = [i for i, p in enumerate(f.people) if _usable(p, threshold)]
        pick = None
        if cands and last_neck is not None:
            necks = {i: f.people[i].body[ROOT, :2] / f.height for i in cands}
            best = min(cands, key=lambda i: float(np.linalg.norm(necks[i] - last_neck)))
            if float(np.linalg.norm(necks[best] - last_neck)) <= max(0.1, 0.5 * last_h):
                pick = best
        if pick is None and cands:
            pick = pick_person(f, mode, threshold)
            if last_neck is not None:
                switches.append(t)
        if pick is not None:
            p = f.people[pick]
            last_neck = p.body[ROOT, :2] / f.height
            x0, y0, x1, y1 = p.body_box(threshold)  # type: ignore[misc]
            last_h = (y1 - y0) / f.height
        chosen.append(pick)
    return chosen, switches


# ---------------------------------------------------------------------------------------------
# geometry helpers

def person_points(person: PersonPose, frame_height: float, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xy ``[128, 2]`` in frame heights, visible ``[128]``, scores ``[128]``) of the combined layout."""
    allp = np.concatenate([person.body, person.right_hand, person.left_hand, person.face]).astype(np.float64)
    xy = allp[:, :2] / float(frame_height)
    score = allp[:, 2]
    vis = (score > threshold) & np.isfinite(xy).all(axis=1)
    return xy, vis, score


def points_to_person(xy: np.ndarray, score: np.ndarray) -> PersonPose:
    arr = np.concatenate([xy, score[:, None]], axis=1).astype(np.float32)
    return PersonPose(body=arr[:18], right_hand=arr[RH:LH], left_hand=arr[LH:FACE], face=arr[FACE:])


def side_length(xy: np.ndarray, vis: np.ndarray, side: tuple[tuple[int, ...], tuple[int, ...]]) -> float | None:
    """Length of one side of a segment, or None if an endpoint is invisible or it is collapsed."""
    a, b = side
    if not (vis[list(a)].all() and vis[list(b)].all()):
        return None
    length = float(np.linalg.norm(xy[list(a)].mean(axis=0) - xy[list(b)].mean(axis=0)))
    return length if math.isfinite(length) and length > EPS_LENGTH else None


# ---------------------------------------------------------------------------------------------
# scales

def estimate_scales(ref_xy: np.ndarray, ref_vis: np.ndarray, drv_xy: np.ndarray, drv_vis: np.ndarray,
                    align_idx: int, detected: np.ndarray) -> tuple[dict[str, float], dict[str, str], list[str]]:
    """Per-segment scales with the fallbacks described in the module docstring."""
    primary: dict[str, float] = {}
    sources: dict[str, str] = {}
    warnings: list[str] = []
    side_ratios: dict[str, list[float]] = {}
    for name, sides in SEGMENTS.items():
        ratios_align, ratios_median = [], []
        for side in sides:
            r = side_length(ref_xy, ref_vis, side)
            if r is None:
                continue
            v = side_length(drv_xy[align_idx], drv_vis[align_idx], side) if detected[align_idx] else None
            if v is not None:
                ratios_align.append(r / v)
            lens = [side_length(drv_xy[t], drv_vis[t], side) for t in range(len(drv_xy)) if detected[t]]
            lens = [x for x in lens if x is not None]
            if lens:
                ratios_median.append(r / float(np.median(lens)))
        if ratios_align:
            side_ratios[name], sources[name] = ratios_align, "align_frame"
        elif ratios_median:
            side_ratios[name], sources[name] = ratios_median, "median_over_frames"
    prelim = {n: float(np.median(v)) for n, v in side_ratios.items()}
    body_vals = [prelim[n] for n in BODY_SEGMENTS if n in prelim]
    if body_vals:
        g = float(np.median(body_vals))
    elif "hand" in prelim:
        g = prelim["hand"]
    else:
        g = 1.0
        warnings.append("No body part is visible in both the reference and the dance, so the dancer's "
                        "proportions are kept unchanged (scale 1).")
    for name, ratios in side_ratios.items():
        if name == "hand" or len(ratios) == 1:
            primary[name] = float(np.median(ratios))
        elif max(ratios) / min(ratios) > SIDE_AGREEMENT:
            primary[name] = min(ratios, key=lambda r: abs(math.log(r / g)))
            sources[name] += ", one side rejected"
        else:
            primary[name] = float(np.mean(ratios))
    scales: dict[str, float] = {}
    for name in BODY_SEGMENTS:
        if name in primary:
            scales[name] = primary[name]
            continue
        for nb in NEIGHBOURS[name]:
            if nb in primary:
                scales[name], sources[name] = primary[nb], f"neighbour {nb}"
                break
        else:
            scales[name], sources[name] = g, "whole-body median"
    arms = (scales["arm_upper"] + scales["arm_lower"]) / 2.0
    if "hand" in primary:
        scales["hand"] = (primary["hand"] + scales["arm_upper"] + scales["arm_lower"]) / 3.0
    else:
        scales["hand"], sources["hand"] = arms, "arms"
    lo, hi = g / MAX_SCALE_SPREAD, g * MAX_SCALE_SPREAD
    clamped = []
    for name, s in scales.items():
        if not math.isfinite(s) or s <= 0:
            scales[name], sources[name] = g, "whole-body median (invalid value)"
        elif s < lo or s > hi:
            scales[name] = float(min(max(s, lo), hi))
            sources[name] += ", clamped"
            clamped.append(f"{name.replace('_', ' ')} {s:.3g}x -> {scales[name]:.3g}x")
    if clamped:
        warnings.append(f"Some body parts would have been resized far more than the whole body ({g:.3g}x), so "
                        f"they were limited: {', '.join(clamped)}. A joint is probably misdetected in the "
                        "reference or in the align frame; try another align_frame.")
    return scales, sources, warnings


def choose_align_frame(drv_xy: np.ndarray, drv_vis: np.ndarray, detected: np.ndarray) -> int:
    """The frame that best shows the body: most required points visible, then frontal and symmetric.

    Frontal = shoulder width large relative to the torso (side views collapse it); symmetric = left
    and right limbs of similar length (no limb pointing at the camera).
    """
    best, best_score = 0, -math.inf
    req = list(ALIGN_REQUIRED)
    for t in range(len(drv_xy)):
        if not detected[t]:
            continue
        xy, vis = drv_xy[t], drv_vis[t]
        score = 10.0 * float(vis[req].sum())
        sw = side_length(xy, vis, SEGMENTS["shoulder"][0])
        bl = side_length(xy, vis, SEGMENTS["body_len"][0])
        if sw and bl:
            score += 2.0 * min(1.0, (sw / bl) / 0.7)
        for name in ("arm_upper", "arm_lower", "leg_upper", "leg_lower"):
            a, b = (side_length(xy, vis, s) for s in SEGMENTS[name])
            if a and b:
                score += 0.5 * (1.0 - abs(a - b) / (a + b))
        if score > best_score + 1e-9:
            best, best_score = t, score
    return best


# ---------------------------------------------------------------------------------------------
# re-targeting

def retarget(xy: np.ndarray, vis: np.ndarray, scales: dict[str, float]) -> np.ndarray:
    """Rebuild one pose along the chain from the neck with per-segment isotropic scaling.

    A point whose parent is invisible hangs from its nearest visible ancestor instead, so an
    invisible (or placeholder) parent never drags a visible child along.
    """
    out = xy.copy()
    for j in CHAIN_ORDER:
        a = int(PARENT[j])
        while a != ROOT and not vis[a]:
            a = int(PARENT[a])
        vec = xy[j] - xy[a]
        if not np.isfinite(vec).all():
            out[j] = out[a]
            continue
        out[j] = out[a] + scales[SEGMENT_OF[j]] * vec
    return out


def _fit_transform(ref_w: int, ref_h: int, width: int, height: int, mode: str) -> tuple[float, float, float, float]:
    """(sx, sy, dx, dy) mapping reference pixels to output pixels."""
    if mode == "stretch":
        return width / ref_w, height / ref_h, 0.0, 0.0
    if mode in ("crop", "pad"):
        s = (max if mode == "crop" else min)(width / ref_w, height / ref_h)
        return s, s, (width - ref_w * s) / 2.0, (height - ref_h * s) / 2.0
    raise ValueError(f"unknown ref_fit {mode!r}: use 'stretch', 'crop' or 'pad'")


def _stretch_note(reference: FramePose, width: int, height: int) -> str | None:
    """The message for a reference whose aspect ratio 'stretch' changes, else None."""
    if math.isclose(reference.width / reference.height, width / height, rel_tol=0.01):
        return None
    return (f"The reference is {reference.width}x{reference.height} but the output is {width}x{height}: with "
            "ref_fit 'stretch' the reference pose is stretched to that shape (the person looks "
            f"{'wider' if width / height > reference.width / reference.height else 'narrower'}). "
            "Use 'crop' or 'pad' to keep proportions, and fit the reference image the same way in the Sampler "
            "(its aspect setting).")


def align_poses(reference: FramePose, driving: Sequence[FramePose], width: int, height: int,
                options: AlignOptions | None = None,
                check_interrupt: Callable[[], None] | None = None) -> AlignResult:
    """Align the driving poses to the reference person; poses come back in W x H output pixels.

    What the user should know (gaps filled, person switches, stretched reference, limited scales...)
    is in ``AlignResult.warnings`` and logged once each as a WARNING on the ``musepose.pose`` logger.
    ``check_interrupt`` is called once per frame in the per-frame loops and may raise to cancel.
    """
    opt = options or AlignOptions()
    thr = opt.threshold
    check = check_interrupt or (lambda: None)
    if not driving:
        raise ValueError("no driving frames to align")
    ref_idx = pick_person(reference, opt.person, thr)
    if ref_idx is None:
        raise ValueError("no person with visible shoulders/neck found in the reference pose")
    ref_xy, ref_vis, _ = person_points(reference.people[ref_idx], reference.height, thr)

    picks, switches = track_people_detail(driving, opt.person, thr)
    if all(p is None for p in picks):
        raise ValueError("no person with visible shoulders/neck found in any driving frame")
    warnings = _tracking_warnings(reference, driving, picks, switches, opt)
    detected = np.array([p is not None for p in picks])
    T = len(driving)
    drv_xy, drv_vis, drv_score = _followed_points(driving, picks, thr)
    align_idx = _align_frame(opt.align_frame, drv_xy, drv_vis, detected, warnings)
    scales, sources, w2 = estimate_scales(ref_xy, ref_vis, drv_xy, drv_vis, align_idx,
                                          detected | (np.arange(T) == align_idx))
    warnings += w2
    offset = ref_xy[ROOT] - drv_xy[align_idx, ROOT]

    aligned = np.empty((T, N_POINTS, 2))
    for t in range(T):
        check()
        aligned[t] = retarget(drv_xy[t], drv_vis[t], scales) + offset
    if opt.smooth and T > 1:
        aligned = one_euro(aligned, drv_vis, opt.fps, opt.smooth_min_cutoff, opt.smooth_beta)

    if opt.ref_fit == "stretch":
        note = _stretch_note(reference, int(width), int(height))
        if note:
            warnings.append(note)
    frames = _to_output(aligned, drv_score, reference, width, height, opt.ref_fit)
    for message in warnings:
        logger.warning("%s", message)
    return AlignResult(frames, scales, sources, align_idx, picks, offset, warnings)


def _tracking_warnings(reference: FramePose, driving: Sequence[FramePose], picks: list, switches: list,
                       opt: AlignOptions) -> list[str]:
    """What the user should know about who was followed: several people in the reference or in frames,
    frames without a person (filled), and frames where the followed person was chosen again."""
    thr, T = opt.threshold, len(driving)
    warnings: list[str] = []
    ref_people = sum(_usable(p, thr) for p in reference.people)
    if ref_people > 1:
        warnings.append(f"The reference shows {ref_people} people; the {opt.person.replace('_', ' ')} one is used.")
    missing = [t for t in range(T) if picks[t] is None]
    if missing:
        warnings.append(f"{len(missing)} of {T} frames had no person detected (or no visible neck and shoulders), "
                        f"the first at frame {missing[0]}; their poses were filled from the neighbouring frames "
                        "(each repeats the last pose before it; leading ones take the first pose found).")
    crowded = sum(sum(_usable(p, thr) for p in f.people) > 1 for f in driving)
    if crowded:
        warnings.append(f"Several people were detected in {crowded} of {T} frames; one person is followed "
                        f"(chosen as the {opt.person.replace('_', ' ')} one).")
    if switches:
        warnings.append(f"The followed person was lost and chosen again in {len(switches)} frame(s), the first at "
                        f"frame {switches[0]}: the pose may jump to another person there. Trim the clip, or try "
                        f"person '{'most_central' if opt.person == 'largest' else 'largest'}'.")
    return warnings


def _followed_points(driving: Sequence[FramePose], picks: list, thr: float):
    """``(xy (T, N, 2), visible (T, N), score (T, N))`` of the followed person in frame heights; a frame
    without one repeats the last pose before it (leading ones take the first pose found)."""
    T = len(driving)
    drv_xy = np.zeros((T, N_POINTS, 2))
    drv_vis = np.zeros((T, N_POINTS), dtype=bool)
    drv_score = np.zeros((T, N_POINTS))
    src = next(i for i, p in enumerate(picks) if p is not None)
    for t in range(T):
        if picks[t] is not None:
            src = t
        f = driving[src]
        drv_xy[t], drv_vis[t], drv_score[t] = person_points(f.people[picks[src]], f.height, thr)
    return drv_xy, drv_vis, drv_score


def _align_frame(align_frame, drv_xy: np.ndarray, drv_vis: np.ndarray, detected: np.ndarray,
                 warnings: list[str]) -> int:
    """The frame whose pose is measured against the reference: the user's, else the best one found."""
    if align_frame == "auto" or align_frame is None:
        return choose_align_frame(drv_xy, drv_vis, detected)
    align_idx, T = int(align_frame), len(detected)
    if not 0 <= align_idx < T:
        raise ValueError(f"align_frame {align_idx} is outside the {T} driving frames")
    if not detected[align_idx]:
        warnings.append(f"The align frame {align_idx} has no person; the pose repeated into it is measured "
                        "instead. Pick a frame where the dancer is fully visible, or -1 (auto).")
    return align_idx


def _to_output(aligned: np.ndarray, scores: np.ndarray, reference: FramePose, width: int, height: int,
               ref_fit: str) -> list[FramePose]:
    """The aligned poses ``(T, N, 2)`` (frame heights of the reference) as W x H output frames, the
    reference fitted to the output as ``ref_fit`` says."""
    sx, sy, dx, dy = _fit_transform(reference.width, reference.height, width, height, ref_fit)
    frames = []
    for t in range(len(aligned)):
        px = aligned[t] * reference.height  # frame heights of the reference -> reference pixels
        px = np.stack([px[:, 0] * sx + dx, px[:, 1] * sy + dy], axis=1)
        frames.append(FramePose(int(width), int(height), [points_to_person(px, scores[t])]))
    return frames


def reference_to_output(reference: FramePose, width: int, height: int, person: str = "largest",
                        ref_fit: str = "stretch", threshold: float = VISIBLE_THRESHOLD) -> FramePose:
    """The chosen reference person mapped to the W x H output (for previews and debugging)."""
    idx = pick_person(reference, person, threshold)
    sx, sy, dx, dy = _fit_transform(reference.width, reference.height, width, height, ref_fit)
    people = [] if idx is None else [reference.people[idx].scaled(sx, sy, dx, dy)]
    return FramePose(int(width), int(height), people)
