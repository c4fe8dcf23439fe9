"""Latent previews while sampling, and the LATENT layout of the sampler's output.

The engine calls ``on_step`` after every scheduler step with its estimate of the clean latents (in the
sampling scale, which ComfyUI's SD1.5 latent previewer expects); the progress bar shows the newest one.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..musepose.config import VAE_SCALING_FACTOR


def engine_to_latent(latents: torch.Tensor) -> torch.Tensor:
    """Engine latents ``(1, 4, F, h, w)`` (x0.18215) -> LATENT samples ``[F, 4, h, w]`` (raw VAE latents,
    ComfyUI's convention: core VAE Decode decodes them directly)."""
    return (latents[0].permute(1, 0, 2, 3) / VAE_SCALING_FACTOR).contiguous()


class LatestPreview:
    """Keeps the first frame of the newest denoised estimate and renders it on demand."""

    def __init__(self, previewer: Callable[[torch.Tensor], object] | None):
        self.previewer = previewer
        self.latest: torch.Tensor | None = None

    @property
    def enabled(self) -> bool:
        return self.previewer is not None

    def on_step(self, step: int, total: int, denoised: torch.Tensor) -> None:
        self.latest = denoised[:, :, 0].float()

    def image(self):
        if self.previewer is None or self.latest is None:
            return None
        try:
            return self.previewer(self.latest)
        except Exception:  # a preview must never stop sampling
            return None
