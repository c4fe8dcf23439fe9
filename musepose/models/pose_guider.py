"""MusePose's pose guider.

It is the ControlNet conditioning embedding (conv_in, six 3x3 convs with stride 2 on every second one,
SiLU after each, conv_out without activation), with MusePose's channel widths. diffusers ships that exact
module, so we use it rather than writing our own; the state-dict keys (``conv_in``, ``blocks.0..5``,
``conv_out``) match the released ``pose_guider.pth``.
"""
from __future__ import annotations

import torch
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

from ..config import POSE_GUIDER_BLOCK_OUT_CHANNELS


class PoseGuider(ControlNetConditioningEmbedding):
    """Pose renders ``(N, 3, H, W)`` in [0, 1] -> features ``(N, C0, H/8, W/8)`` added after ``conv_in``."""

    def __init__(self, conditioning_embedding_channels: int = 320,
                 block_out_channels: tuple[int, ...] = POSE_GUIDER_BLOCK_OUT_CHANNELS):
        super().__init__(conditioning_embedding_channels, conditioning_channels=3,
                         block_out_channels=tuple(block_out_channels))

    def encode_frames(self, frames: torch.Tensor, chunk_size: int = 16) -> torch.Tensor:
        """Run per frame in chunks so a long video never sits at full resolution in 16+ channels at once."""
        outputs = [self(frames[i:i + chunk_size]) for i in range(0, frames.shape[0], chunk_size)]
        return torch.cat(outputs, dim=0)
