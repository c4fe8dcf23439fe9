"""MusePose's pose guider.

It is the ControlNet conditioning embedding (conv_in, six 3x3 convs with stride 2 on every second one,
SiLU after each, conv_out without activation), with MusePose's channel widths. diffusers ships that exact
module, so we use it rather than writing our own; the state-dict keys (``conv_in``, ``blocks.0..5``,
``conv_out``) match the released ``pose_guider.pth``.
"""
from __future__ import annotations

from typing import Callable

import torch
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

from ..config import POSE_GUIDER_BLOCK_OUT_CHANNELS


class PoseGuider(ControlNetConditioningEmbedding):
    """Pose renders ``(N, 3, H, W)`` in [0, 1] -> features ``(N, C0, H/8, W/8)`` added after ``conv_in``."""

    def __init__(self, conditioning_embedding_channels: int = 320,
                 block_out_channels: tuple[int, ...] = POSE_GUIDER_BLOCK_OUT_CHANNELS):
        super().__init__(conditioning_embedding_channels, conditioning_channels=3,
                         block_out_channels=tuple(block_out_channels))



#: Transient elements per pixel of one frame through the guider: the input (3 channels) and two
#: 16-channel full-resolution maps (a conv output and its SiLU).
POSE_GUIDER_PIXEL_FACTOR = 3 + 2 * 16


class PoseFeatureRows:
    """Pose-guider features of ``entries`` frames, computed on demand for a range of rows.

    ``pixels(a, b)`` returns frames ``a..b`` as ``(b - a, 3, H, W)`` in [0, 1] on the device; the frames
    themselves stay on the host. The denoiser adds :meth:`rows` to ``conv_in``'s output chunk by chunk
    when memory is short, so the features never exist for the whole window; :meth:`all` computes them
    once (the memory policy then keeps them for the run).
    """

    def __init__(self, guider: PoseGuider, pixels: Callable[[int, int], torch.Tensor], entries: int,
                 pixels_per_frame: int, element_size: int):
        self.guider, self.pixels, self.entries = guider, pixels, entries
        self.per_entry_bytes = POSE_GUIDER_PIXEL_FACTOR * pixels_per_frame * element_size

    def rows(self, a: int, b: int) -> torch.Tensor:
        return self.guider(self.pixels(a, b))

    def all(self, chunking) -> torch.Tensor:
        step = chunking.entries(self.entries, self.per_entry_bytes)
        out = None
        for a in range(0, self.entries, step):
            part = self.rows(a, min(a + step, self.entries))
            if out is None:
                out = part.new_empty((self.entries, *part.shape[1:]))
            out[a:a + part.shape[0]] = part
            del part
        return out
