"""Activation-memory estimates handed to ComfyUI's ``load_models_gpu`` for each stage.

ComfyUI frees ``model size x 1.1 + max(minimum inference memory, estimate + reserve)`` before loading,
and in lowvram mode sizes the weight budget as free memory minus the *minimum* estimate. So these
numbers decide what gets evicted and how much of the UNet stays resident: they are per *one window*
(never the whole video), since the sampler only ever runs one window batch at a time.

The per-element constants are deliberately round upper-range figures for SD-1.5-sized networks with
SDPA attention (the same order as the factor ComfyUI uses for SD1.5: ~10 KiB per latent pixel per
byte of dtype per sample); they are not measured on a GPU here (no GPU on the dev machine): refine them
from ``torch.cuda.max_memory_allocated`` when one is available.
"""
from __future__ import annotations

import torch

#: Denoising/reference UNet activations, bytes per latent pixel per sample per byte of dtype.
UNET_BYTES_PER_LATENT_PIXEL = 12 * 1024
#: Pose guider: a few 16-channel full-resolution maps per frame, bytes per pixel per byte of dtype.
POSE_GUIDER_BYTES_PER_PIXEL = 64
#: VAE decode (SD VAE, 512-channel conv stack at full resolution), bytes per output pixel per byte of dtype.
VAE_DECODE_BYTES_PER_PIXEL = 2400
#: VAE encode, bytes per input pixel per byte of dtype.
VAE_ENCODE_BYTES_PER_PIXEL = 1800
#: CLIP ViT-L/14 at 224x224, batch 1.
CLIP_BYTES = 256 * 2**20


def dtype_size(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4


def window_memory(width: int, height: int, window_frames: int, windows_per_batch: int, guidance: float,
                  cfg_mode: str, dtype: torch.dtype) -> tuple[int, int]:
    """(normal, minimum) bytes for one denoising call: UNet over a window batch plus its pose guider.

    The minimum is one window with the guidance halves run one after the other, i.e. what the
    smallest configuration of the same resolution and window length needs.
    """
    size = dtype_size(dtype)
    latent_pixels = (width // 8) * (height // 8)
    branches = 2 if guidance > 1.0 and cfg_mode == "batched" else 1
    samples = window_frames * windows_per_batch * branches
    unet = samples * latent_pixels * size * UNET_BYTES_PER_LATENT_PIXEL
    guider = window_frames * windows_per_batch * width * height * size * POSE_GUIDER_BYTES_PER_PIXEL
    minimum = window_frames * latent_pixels * size * UNET_BYTES_PER_LATENT_PIXEL \
        + window_frames * width * height * size * POSE_GUIDER_BYTES_PER_PIXEL
    return unet + guider, minimum


def reference_memory(width: int, height: int, dtype: torch.dtype) -> int:
    """Reference UNet, one image."""
    return (width // 8) * (height // 8) * dtype_size(dtype) * UNET_BYTES_PER_LATENT_PIXEL


def vae_encode_memory(width: int, height: int, dtype: torch.dtype) -> int:
    return width * height * dtype_size(dtype) * VAE_ENCODE_BYTES_PER_PIXEL


def vae_decode_memory(width: int, height: int, frames: int, dtype: torch.dtype) -> int:
    return frames * width * height * dtype_size(dtype) * VAE_DECODE_BYTES_PER_PIXEL


def auto_decode_chunk(free_bytes: int, width: int, height: int, frames: int, dtype: torch.dtype,
                      weights_bytes: int = 0) -> int:
    """Frames per VAE decode call that fit in ``free_bytes`` (at least 1, at most all frames)."""
    per_frame = vae_decode_memory(width, height, 1, dtype)
    usable = max(0, free_bytes - weights_bytes)
    return int(max(1, min(frames, usable // max(per_frame, 1))))
