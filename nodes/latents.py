"""The one converter between ComfyUI's LATENT and the engine's latents.

ComfyUI's LATENT is ``{"samples": [F, 4, h, w]}``: raw SD VAE latents, one frame per batch entry (core VAE
Decode decodes them directly). The engine samples and decodes ``(1, 4, F, h, w)`` in the sampling scale
(raw x ``VAE_SCALING_FACTOR``, 0.18215). The Sampler's output goes through :func:`to_latent`, the Decode
nodes' input through :func:`from_latent`; nothing else in ``nodes/`` scales latents.
"""
from __future__ import annotations

import torch

from ..musepose.config import VAE_SCALING_FACTOR


def to_latent(latents: torch.Tensor) -> dict:
    """Engine latents ``(1, 4, F, h, w)`` (sampling scale) -> LATENT ``{"samples": [F, 4, h, w]}`` (raw)."""
    return {"samples": (latents[0].permute(1, 0, 2, 3) / VAE_SCALING_FACTOR).contiguous()}


def from_latent(latent: dict) -> torch.Tensor:
    """LATENT ``{"samples": [F, 4, h, w]}`` (or ``[1, 4, F, h, w]``), raw VAE latents -> the engine's float32
    ``(1, 4, F, h, w)`` in the sampling scale."""
    samples = latent["samples"]
    if samples.ndim == 4:
        samples = samples.permute(1, 0, 2, 3)[None]
    elif not (samples.ndim == 5 and samples.shape[0] == 1):
        raise ValueError(f"expected MusePose latents [frames, 4, H/8, W/8], got shape {tuple(samples.shape)}")
    return samples.float() * VAE_SCALING_FACTOR
