"""MusePose's reference UNet ("ReferenceNet").

A diffusers ``UNet2DConditionModel`` without its output head: MusePose's copy of the class has no
``conv_norm_out``/``conv_out`` (its checkpoint has 682 keys), because the UNet runs only for the
self-attention inputs its transformer blocks record. It runs once per video, at timestep 0.
"""
from __future__ import annotations

from typing import Callable

import torch
from diffusers import UNet2DConditionModel

from ..config import UNetConfig
from .cross_attention import install_single_token_cross_attention
from .unet_body import UNetWalk, timestep_embedding


class MusePoseReferenceUNet(UNet2DConditionModel):
    """Reference UNet; its forward returns nothing: features reach the denoiser via reference attention."""

    #: What ``compile_repeated_blocks`` compiles (musepose.models.compile).
    _repeated_blocks = ("ResnetBlock2D", "Transformer2DModel", "PerFrameNormTemporalTransformer")

    @classmethod
    def build(cls, config: UNetConfig) -> "MusePoseReferenceUNet":
        model = cls(**config.unet2d_kwargs())
        model.conv_norm_out = None
        model.conv_act = None
        model.conv_out = None
        install_single_token_cross_attention(model)
        return model

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                encoder_hidden_states: torch.Tensor, between_layers: Callable[[], None] | None = None) -> None:
        emb = timestep_embedding(self, timestep, sample.shape[0], sample.device, self.dtype)
        hidden = self.conv_in(sample)
        UNetWalk(self, emb, encoder_hidden_states, between_layers=between_layers).run(hidden)
        return None
