"""ComfyUI's core ``VIDEO`` type, both ways: pose frames read from a VIDEO input as uint8 (never as the
float32 IMAGE batch Get Video Components makes, 12 bytes a pixel), and a finished mp4 handed back as a VIDEO.

Duck-typed on the VIDEO interface (``get_stream_source``, ``get_components``, ``get_frame_rate``), so the
engine's :class:`~musepose.video.VideoFile` stands in for it outside ComfyUI.
"""
from __future__ import annotations

import numpy as np
import torch

from ...musepose.video import read_video_frames
from . import comfyui

#: VIDEO classes whose ``get_stream_source()`` is the file itself (a path or a ``BytesIO``): decoding it here
#: gives every frame of the video. Other VIDEOs (``VideoFromComponents``: frames already in memory) give theirs.
FILE_BACKED = ("VideoFromFile", "VideoFile")


def video_output(video):
    """ComfyUI's core ``VIDEO`` for a finished file (``VideoFromFile``: Save Video copies its packets, Get
    Video Components decodes it), or the engine's :class:`~musepose.video.VideoFile` outside ComfyUI."""
    if not comfyui.HAS_COMFY:
        return video
    return comfyui.video_from_file(str(video.path))


def _file_source(video):
    """The file to decode ``video`` from (a path or a ``BytesIO``), or None when its frames must come from
    ``get_components()``."""
    if type(video).__name__ not in FILE_BACKED:
        return None
    # ComfyUI 0.19 trims a VideoFromFile (as_trimmed) to a start time and duration it keeps in private
    # attributes and honours only in get_components(); a trimmed one is read through that, whole otherwise.
    if any(getattr(video, f"_VideoFromFile__{name}", 0) for name in ("start_time", "duration")):
        return None
    return video.get_stream_source()


def video_frames(video) -> tuple[np.ndarray | torch.Tensor, float]:
    """``(frames [F, H, W, 3], frames per second)`` of a VIDEO input.

    A file-backed VIDEO (Load Video's) is decoded here straight to uint8, one frame at a time; a VIDEO made
    of components hands over the float IMAGE batch it already holds (no new copy).
    """
    source = _file_source(video)
    if source is not None:
        return read_video_frames(source)
    components = video.get_components()
    return components.images, float(components.frame_rate)


def video_frame_rate(video) -> float:
    """A VIDEO's frame rate, from its metadata (nothing is decoded)."""
    return float(video.get_frame_rate())
