"""Conversion between our FramePose and comfyui_controlnet_aux's POSE_KEYPOINT (OpenPose JSON) format.

POSE_KEYPOINT is a list with one dict per frame::

    {"people": [{"pose_keypoints_2d": [x, y, c] * 18, "face_keypoints_2d": [x, y, c] * 70,
                 "hand_left_keypoints_2d": [x, y, c] * 21, "hand_right_keypoints_2d": [...]}],
     "canvas_width": W, "canvas_height": H}

We write absolute pixels, the raw score as ``c`` for visible points and ``0, 0, 0`` for points
below the visibility threshold (what controlnet_aux writes for missing points). The face has 70
points like OpenPose's face model: the 68 landmarks, then the right and left eye. Our own
extraction adds ``wholebody_keypoints_2d`` (the raw 133 DWPose points, feet included, unthresholded);
other nodes ignore unknown keys.

controlnet_aux has written both absolute and normalised (0..1) coordinates over its versions, so
reading detects which one a frame uses.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from .layout import VISIBLE_THRESHOLD, FramePose, PersonPose

WHOLEBODY_KEY = "wholebody_keypoints_2d"

#: A frame whose visible coordinates all lie within this bound is read as normalised. A real
#: absolute-pixel person would have to fit in the top-left 2x2 pixels to be misread.
_NORMALISED_BOUND = 2.0


def _flatten(points: np.ndarray, threshold: float) -> list[float]:
    out: list[float] = []
    for x, y, c in np.asarray(points, dtype=np.float64):
        if c > threshold and np.isfinite(x) and np.isfinite(y):
            out.extend((round(float(x), 4), round(float(y), 4), round(float(c), 4)))
        else:
            out.extend((0.0, 0.0, 0.0))
    return out


def person_to_dict(person: PersonPose, threshold: float = VISIBLE_THRESHOLD) -> dict[str, Any]:
    face70 = np.concatenate([person.face, person.body[[14, 15]]], axis=0)
    d: dict[str, Any] = {
        "pose_keypoints_2d": _flatten(person.body, threshold),
        "face_keypoints_2d": _flatten(face70, threshold),
        "hand_left_keypoints_2d": _flatten(person.left_hand, threshold),
        "hand_right_keypoints_2d": _flatten(person.right_hand, threshold),
    }
    if person.wholebody is not None:
        d[WHOLEBODY_KEY] = [round(float(v), 4) for v in np.asarray(person.wholebody, dtype=np.float64).ravel()]
    return d


def frame_to_dict(frame: FramePose, threshold: float = VISIBLE_THRESHOLD) -> dict[str, Any]:
    return {"people": [person_to_dict(p, threshold) for p in frame.people],
            "canvas_width": int(frame.width), "canvas_height": int(frame.height)}


def frames_to_pose_keypoint(frames: Iterable[FramePose], threshold: float = VISIBLE_THRESHOLD) -> list[dict]:
    """Our frames -> POSE_KEYPOINT list (absolute pixels)."""
    return [frame_to_dict(f, threshold) for f in frames]


def _triples(values: Sequence[float] | None, n: int) -> np.ndarray:
    """``[x, y, c] * k`` -> ``[n, 3]`` (truncated or zero-padded to n points; None -> all missing)."""
    out = np.zeros((n, 3), dtype=np.float32)
    if not values:
        return out
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[: (len(arr) // 3) * 3].reshape(-1, 3)[:n]
    arr = np.where(np.isfinite(arr), arr, 0.0)
    out[: len(arr)] = arr
    return out


def frame_is_normalised(frame: dict) -> bool:
    """True if every visible coordinate of the frame lies in the 0..1 range (small tolerance)."""
    coords = []
    for person in frame.get("people") or []:
        for key in ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d"):
            pts = _triples(person.get(key), 10_000)
            vis = pts[:, 2] > 0
            coords.append(np.abs(pts[vis, :2]).ravel())
    if not coords:
        return False
    allc = np.concatenate(coords)
    if allc.size == 0:
        return False
    return bool(allc.max() <= _NORMALISED_BOUND)


def dict_to_frame(frame: dict, default_size: tuple[int, int] | None = None,
                  coordinates: str = "auto") -> FramePose:
    """One POSE_KEYPOINT frame -> FramePose in absolute pixels.

    ``coordinates``: "auto" (detect), "absolute" or "normalized". A frame without canvas size uses
    ``default_size`` (W, H); normalised coordinates need one of the two.
    """
    w = frame.get("canvas_width") or (default_size[0] if default_size else None)
    h = frame.get("canvas_height") or (default_size[1] if default_size else None)
    normalised = frame_is_normalised(frame) if coordinates == "auto" else coordinates.startswith("normali")
    if w is None or h is None:
        if normalised:
            raise ValueError("POSE_KEYPOINT frame has normalised coordinates but no canvas_width/height")
        w = w or 1
        h = h or 1
    sx, sy = (float(w), float(h)) if normalised else (1.0, 1.0)
    people = []
    for p in frame.get("people") or []:
        person = PersonPose(
            body=_triples(p.get("pose_keypoints_2d"), 18),
            face=_triples(p.get("face_keypoints_2d"), 68),
            left_hand=_triples(p.get("hand_left_keypoints_2d"), 21),
            right_hand=_triples(p.get("hand_right_keypoints_2d"), 21),
            wholebody=_triples(p.get(WHOLEBODY_KEY), 133) if p.get(WHOLEBODY_KEY) else None,
        )
        if normalised:
            person = person.scaled(sx, sy)
        people.append(person)
    return FramePose(int(w), int(h), people)


def pose_keypoint_to_frames(data: Any, default_size: tuple[int, int] | None = None,
                            coordinates: str = "auto") -> list[FramePose]:
    """POSE_KEYPOINT (a list of frame dicts, or one dict) -> list of FramePose in pixels."""
    if data is None:
        return []
    if isinstance(data, dict):
        data = [data]
    return [dict_to_frame(f, default_size, coordinates) for f in data]
