"""Keypoint layouts: COCO-WholeBody 133 as DWPose outputs it, and the OpenPose-18 layout MusePose draws.

A person is kept as small ``[N, 3]`` arrays (x, y, score) in pixels of its frame. Visibility is a
score test (``> VISIBLE_THRESHOLD``), never a magic coordinate: MusePose marks hands/faces with -1 but
keeps guessed body points, and that mix is what let invisible knees drive its leg scales.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: DWPose scores are raw SimCC maxima, not probabilities; 0.3 is the threshold every port uses.
VISIBLE_THRESHOLD = 0.3

# COCO-WholeBody slices (133 points)
WB_BODY = slice(0, 17)
WB_FEET = slice(17, 23)
WB_FACE = slice(23, 91)
WB_LEFT_HAND = slice(91, 112)
WB_RIGHT_HAND = slice(112, 133)

#: OpenPose slot -> index in the 134-point array (neck inserted at 17). Slots 0, 5, 11 stay put.
_OPENPOSE_DST = np.array([1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17])
_OPENPOSE_SRC = np.array([17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3])

OPENPOSE_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)


def _empty(n: int) -> np.ndarray:
    return np.zeros((n, 3), dtype=np.float32)


@dataclass
class PersonPose:
    """One person: OpenPose-18 body, 68 face points, the subject's left and right hands (21 each).

    ``wholebody`` keeps DWPose's raw 133 points (feet included) when the pose came from our own
    extraction; it is None for poses imported from other nodes.
    """

    body: np.ndarray = field(default_factory=lambda: _empty(18))
    face: np.ndarray = field(default_factory=lambda: _empty(68))
    left_hand: np.ndarray = field(default_factory=lambda: _empty(21))
    right_hand: np.ndarray = field(default_factory=lambda: _empty(21))
    wholebody: np.ndarray | None = None

    def copy(self) -> "PersonPose":
        return PersonPose(self.body.copy(), self.face.copy(), self.left_hand.copy(), self.right_hand.copy(),
                          None if self.wholebody is None else self.wholebody.copy())

    def visible_body(self, threshold: float = VISIBLE_THRESHOLD) -> np.ndarray:
        return self.body[:, 2] > threshold

    def body_box(self, threshold: float = VISIBLE_THRESHOLD) -> tuple[float, float, float, float] | None:
        """Bounding box (x0, y0, x1, y1) of the visible body points, or None if fewer than two."""
        pts = self.body[self.visible_body(threshold), :2]
        if len(pts) < 2:
            return None
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())

    def scaled(self, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> "PersonPose":
        """Coordinates mapped by x' = x*sx + dx, y' = y*sy + dy; scores unchanged."""
        def tf(a: np.ndarray | None) -> np.ndarray | None:
            if a is None:
                return None
            b = a.copy()
            b[:, 0] = b[:, 0] * sx + dx
            b[:, 1] = b[:, 1] * sy + dy
            return b
        return PersonPose(tf(self.body), tf(self.face), tf(self.left_hand), tf(self.right_hand), tf(self.wholebody))


@dataclass
class FramePose:
    """All people found in one frame, in pixels of a ``width`` x ``height`` canvas."""

    width: int
    height: int
    people: list[PersonPose] = field(default_factory=list)

    def copy(self) -> "FramePose":
        return FramePose(self.width, self.height, [p.copy() for p in self.people])


def wholebody_to_openpose(keypoints: np.ndarray, scores: np.ndarray,
                          threshold: float = VISIBLE_THRESHOLD) -> PersonPose:
    """Convert DWPose's 133 COCO-WholeBody points of one person to the OpenPose-18 layout.

    Neck = mean of the shoulders, with score 1 when both shoulders are visible and 0 otherwise
    (the MusePose/controlnet_aux convention); it is inserted at index 17 and the first 18 slots
    are re-ordered with one simultaneous gather (a sequential swap would read already-moved slots).
    """
    kp = np.asarray(keypoints, dtype=np.float64).reshape(133, 2)
    sc = np.asarray(scores, dtype=np.float64).reshape(133)
    neck_xy = kp[[5, 6]].mean(axis=0)
    neck_score = 1.0 if (sc[5] > threshold and sc[6] > threshold) else 0.0
    full = np.concatenate([kp, sc[:, None]], axis=1)
    full = np.insert(full, 17, [neck_xy[0], neck_xy[1], neck_score], axis=0)  # 134 points
    full[_OPENPOSE_DST] = full[_OPENPOSE_SRC]
    wb = np.concatenate([kp, sc[:, None]], axis=1).astype(np.float32)
    return PersonPose(
        body=full[:18].astype(np.float32),
        face=full[24:92].astype(np.float32),
        left_hand=full[92:113].astype(np.float32),
        right_hand=full[113:134].astype(np.float32),
        wholebody=wb,
    )
