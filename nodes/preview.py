"""Latent previews while sampling.

The engine calls ``on_step`` after every scheduler step with its estimate of the clean latents (in the
sampling scale, which ComfyUI's SD1.5 latent previewer expects); the progress bar shows the newest one.
"""
from __future__ import annotations

from typing import Callable

import torch


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
