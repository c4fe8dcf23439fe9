"""Context windows over the frame axis and how overlapping predictions are blended.

``uniform`` reproduces the original MusePose scheduler at step 0 with stride 1 (it always passes step 0,
so windows never shift): starts 0, C-O, 2(C-O), ... while start < F - O, each window C consecutive
indices taken modulo F, so a last window that runs past the end wraps around to frame 0.
``static`` never wraps: the last window slides back to end on the last frame.
"""
from __future__ import annotations

import torch

from ..options import BLENDINGS, CONTEXT_SCHEDULES


def context_windows(num_frames: int, context_frames: int, overlap: int, schedule: str = "uniform") -> list[list[int]]:
    if num_frames < 1:
        raise ValueError("the video needs at least one frame")
    if context_frames < 1:
        raise ValueError("context frames must be at least 1")
    if not 0 <= overlap < context_frames:
        raise ValueError(f"context overlap ({overlap}) must be >= 0 and smaller than context frames ({context_frames})")
    if schedule not in CONTEXT_SCHEDULES:
        raise ValueError(f"unknown context schedule {schedule!r}; use one of {CONTEXT_SCHEDULES}")
    if num_frames <= context_frames:
        return [list(range(num_frames))]
    step = context_frames - overlap
    starts = list(range(0, num_frames - overlap, step))
    if schedule == "uniform":
        return [[i % num_frames for i in range(s, s + context_frames)] for s in starts]
    windows: list[list[int]] = []
    for s in starts:
        s = min(s, num_frames - context_frames)
        window = list(range(s, s + context_frames))
        if not windows or windows[-1] != window:
            windows.append(window)
        if s + context_frames >= num_frames:
            break
    return windows


def window_weights(length: int, blend: str = "flat") -> torch.Tensor:
    """Per-position weights of one window: ``flat`` = all ones (the original), ``pyramid`` = 1, 2, ..., 2, 1."""
    if blend == "flat":
        return torch.ones(length)
    if blend == "pyramid":
        ramp = torch.arange(1, length + 1, dtype=torch.float32)
        return torch.minimum(ramp, ramp.flip(0))
    raise ValueError(f"unknown blending {blend!r}; use one of {BLENDINGS}")
