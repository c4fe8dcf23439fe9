"""Driving video -> aligned pose renders: the whole pose stage of ``musepose generate`` in one call."""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from ..video import read_frames
from .align import AlignOptions, AlignResult, align_poses
from .cache import DEFAULT_POSE_CACHE, PoseCache
from .draw import RENDER_SHORT_SIDE, render_poses
from .extract import DWPoseExtractor, get_extractor
from .frames import FrameSelection
from .layout import FramePose
from .models import find_dwpose_models

DEFAULT_FPS = 25.0

_ALIGN_KEYS = {"align_frame", "person", "ref_fit", "smooth", "smooth_min_cutoff", "smooth_beta", "threshold"}
_SELECT_KEYS = {"start_frame", "every_nth", "max_frames"}
_DRAW_KEYS = {"draw_hands", "draw_face", "render_short_side"}


def extractor_for_dir(dwpose_dir: str | os.PathLike, cache: PoseCache | None = DEFAULT_POSE_CACHE,
                      device=None, backend: str = "auto") -> DWPoseExtractor:
    """Extractor for the two ONNX files in ``dwpose_dir`` (flat, or the HF ``yzd-v/DWPose`` layout).

    ``device``: where DWPose runs (torch.device or "cpu"/"cuda[:N]"/"mps"; None = a GPU when torch sees
    one, else the CPU); ``backend``: "auto", "torch" or "onnxruntime" (see
    :func:`musepose.pose.models.resolve_runtime`).
    """
    return get_extractor(find_dwpose_models([str(dwpose_dir)], include_controlnet_aux=False), cache, device=device,
                         backend=backend)


def split_options(options: dict[str, Any]) -> tuple[FrameSelection, dict[str, Any], dict[str, Any]]:
    """Split keyword options into frame selection, AlignOptions fields and drawing options.

    A selection option given as None takes its default (callers pass unset CLI flags through).
    """
    unknown = set(options) - _ALIGN_KEYS - _SELECT_KEYS - _DRAW_KEYS
    if unknown:
        raise TypeError(f"unknown pose option(s): {', '.join(sorted(unknown))}")
    sel = FrameSelection(**{k: int(v) for k, v in options.items() if k in _SELECT_KEYS and v is not None})
    align = {k: v for k, v in options.items() if k in _ALIGN_KEYS}
    draw = {k: v for k, v in options.items() if k in _DRAW_KEYS}
    return sel, align, draw


def align_and_render(reference: FramePose, driving: list[FramePose], width: int, height: int, fps: float,
                     draw_hands: bool = True, draw_face: bool = False,
                     render_short_side: int = RENDER_SHORT_SIDE,
                     check_interrupt: Callable[[], None] | None = None,
                     **align: Any) -> tuple[np.ndarray, AlignResult]:
    """Align poses to the reference and draw them MusePose-style at W x H.

    ``check_interrupt`` is called per frame while aligning and drawing and may raise to cancel.
    """
    result = align_poses(reference, driving, width, height, AlignOptions(fps=fps, **align), check_interrupt)
    renders = render_poses(result.frames, width, height, check_interrupt=check_interrupt, person=0,
                           render_short_side=render_short_side, draw_hands=draw_hands, draw_face=draw_face)
    return renders, result


def driving_video_to_pose_frames(dwpose_dir: str | os.PathLike, ref_image_rgb_uint8: np.ndarray,
                                 video_path: str | os.PathLike, width: int, height: int,
                                 progress: Callable[[int, int], None] | None = None,
                                 check_interrupt: Callable[[], None] | None = None,
                                 cache: PoseCache | None = DEFAULT_POSE_CACHE,
                                 default_fps: float = DEFAULT_FPS, device=None, backend: str = "auto",
                                 **align_options: Any) -> tuple[np.ndarray, float]:
    """Detect, align and render the driving video's poses for this reference image.

    Returns (uint8 ``[F, height, width, 3]`` pose renders, fps of the selected frames). Options:
    start_frame, every_nth, max_frames (frame selection); align_frame ("auto" or int), person
    ("largest"/"most_central"), ref_fit ("stretch"/"crop"/"pad"), smooth, smooth_min_cutoff,
    smooth_beta, threshold (alignment); draw_hands, draw_face, render_short_side (drawing).
    ``video_path`` may also be an image folder (then ``default_fps`` is assumed). ``device`` and
    ``backend``: where and with what DWPose runs (see :func:`extractor_for_dir`). Selection options
    given as None take their defaults.
    Frames without a person are reported once by the alignment (which fills them), not per frame.
    """
    selection, align, draw = split_options(align_options)
    frames, fps = read_frames(video_path, max_frames=selection.frames_needed())
    idx = selection.indices(len(frames))
    if not idx:
        raise ValueError(f"frame selection {selection} leaves no frames of the {len(frames)} in {video_path}")
    extractor = extractor_for_dir(dwpose_dir, cache, device, backend)
    reference = extractor.extract([np.asarray(ref_image_rgb_uint8, dtype=np.uint8)[..., :3]],
                                  check_interrupt=check_interrupt, report_missing=False)[0]
    driving = extractor.extract((frames[i] for i in idx), progress=progress,
                                check_interrupt=check_interrupt, total=len(idx), report_missing=False)
    out_fps = selection.fps(fps or default_fps)
    renders, _ = align_and_render(reference, driving, width, height, out_fps, check_interrupt=check_interrupt,
                                  **draw, **align)
    return renders, out_fps
