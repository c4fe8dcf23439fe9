"""Latent previews through ComfyUI's own SD1.5 previewer (none outside ComfyUI)."""
from __future__ import annotations

import logging
from typing import Callable

import torch

from . import comfyui

logger = logging.getLogger("musepose_express")


def make_previewer() -> Callable[[torch.Tensor], object] | None:
    """``latents (1, 4, h, w) -> preview`` for ProgressBar updates (sampling scale), or None."""
    if not comfyui.HAS_COMFY:
        return None
    try:
        previewer = comfyui.sd15_previewer(torch.device("cpu"))
    except Exception as exc:  # previews are a nicety; never fail a run over them
        logger.debug("MusePose: no latent previewer (%s)", exc)
        return None
    if previewer is None:
        return None
    return lambda latents: previewer.decode_latent_to_preview_image("JPEG", latents)
