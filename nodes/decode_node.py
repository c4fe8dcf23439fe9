"""MusePose Decode: video latents -> IMAGE batch, in frame chunks sized to free memory."""
from __future__ import annotations

import logging

import torch

from . import host
from ..musepose.config import VAE_SCALING_FACTOR
from .attention import attention_backend
from .options import CATEGORY, MODEL_TYPE

logger = logging.getLogger("musepose_express")


def to_engine_latents(samples: torch.Tensor) -> torch.Tensor:
    """LATENT samples ``[F, 4, h, w]`` (or ``[1, 4, F, h, w]``), raw VAE latents -> the engine's
    ``(1, 4, F, h, w)`` in the sampling scale (x0.18215)."""
    if samples.ndim == 4:
        samples = samples.permute(1, 0, 2, 3)[None]
    elif not (samples.ndim == 5 and samples.shape[0] == 1):
        raise ValueError(f"expected MusePose latents [frames, 4, H/8, W/8], got shape {tuple(samples.shape)}")
    return samples * VAE_SCALING_FACTOR


class MusePoseDecode:
    DESCRIPTION = ("Decode MusePose Sampler latents into video frames with the SD VAE of the loaded model set. "
                   "Frames are decoded in chunks (0 = as many as free memory allows); on out-of-memory the chunk "
                   "is halved and retried. Tiling decodes each frame in tiles for very large frames.")
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The video frames, an IMAGE batch [frames, H, W, 3].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "musepose": (MODEL_TYPE, {"tooltip": "From MusePose Model Loader (its VAE is used)."}),
                "latent": ("LATENT", {"tooltip": "From MusePose Sampler (or any SD1.5 video LATENT): [frames, 4, H/8, W/8]."}),
                "chunk_size": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip": (
                    "Frames decoded per VAE call. 0 = auto from free memory. Smaller = less VRAM.")}),
                "tiling": ("BOOLEAN", {"default": False, "tooltip": (
                    "Decode each frame in overlapping tiles (diffusers VAE tiling): for large frames on small "
                    "GPUs; slightly slower, may show faint seams.")}),
            }
        }

    def decode(self, musepose, latent, chunk_size=0, tiling=False):
        latents = to_engine_latents(latent["samples"]).float()
        progress = host.Progress(latents.shape[2])

        def on_progress(done: int, total: int) -> None:
            progress.update(done - progress.value)

        with attention_backend(musepose.attention):
            video = musepose.pipeline.decode(latents, musepose.memory(decode_chunk=int(chunk_size), decode_tiling=bool(tiling)),
                                             progress=on_progress, check_interrupt=host.check_interrupt,
                                             on_message=host.say)
        return (video.contiguous(),)
