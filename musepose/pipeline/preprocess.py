"""Image preprocessing, bit-compatible with the original MusePose pipeline.

* CLIP branch: the original reference image -> 224x224 with PIL bicubic -> /255 -> OpenAI mean/std.
* VAE branch: RGB, resized to W x H with Lanczos when the size differs, mapped to [-1, 1].
* Pose frames: same resize, kept in [0, 1]. Frames stay uint8 on the CPU until their window needs them.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
from PIL import Image

from ..options import ASPECT_MODES
from ..config import CLIP_IMAGE_SIZE, CLIP_MEAN, CLIP_STD, VAE_DOWNSCALE

logger = logging.getLogger(__name__)



class InputError(ValueError):
    """Bad user input (sizes, frame counts, NaN...), reported before any model runs."""


def round_size(width: int, height: int, warn: bool = True) -> tuple[int, int]:
    """Round W/H down to multiples of 8 (as the original's image processor does), warning when it changes
    (``warn=False``: a caller whose settings are validated later, which warns then)."""
    if width < VAE_DOWNSCALE or height < VAE_DOWNSCALE:
        raise InputError(f"width and height must be at least {VAE_DOWNSCALE} (got {width}x{height})")
    new_w, new_h = width - width % VAE_DOWNSCALE, height - height % VAE_DOWNSCALE
    if warn and (new_w, new_h) != (width, height):
        logger.warning("width/height %dx%d are not multiples of 8: using %dx%d", width, height, new_w, new_h)
    return new_w, new_h


def to_uint8_rgb(image) -> np.ndarray:
    """PIL image, uint8 array or float array/tensor in [0, 1] (``[H, W, 3]``) -> uint8 ``[H, W, 3]``."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InputError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    image = image[..., :3]
    if image.dtype == np.uint8:
        return image
    if not np.isfinite(image).all():
        raise InputError("the image contains NaN or infinite values")
    return (np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def clip_pixel_values(reference: np.ndarray) -> torch.Tensor:
    """``(1, 3, 224, 224)`` float32 CLIP input, from the original (not the VAE-sized) reference image."""
    image = Image.fromarray(reference).resize((CLIP_IMAGE_SIZE, CLIP_IMAGE_SIZE), Image.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def fit_frame(frame: np.ndarray, width: int, height: int, mode: str = "stretch") -> np.ndarray:
    """Bring one uint8 frame to ``width x height``: ``stretch`` (the original: plain Lanczos resize),
    ``crop`` (centre-crop to the target aspect, then resize) or ``pad`` (fit inside, black borders)."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    image = Image.fromarray(frame)
    if mode == "stretch":
        return np.asarray(image.resize((width, height), Image.LANCZOS))
    if mode == "crop":
        scale = max(width / w, height / h)
        crop_w, crop_h = min(w, round(width / scale)), min(h, round(height / scale))
        left, top = (w - crop_w) // 2, (h - crop_h) // 2
        return np.asarray(image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.LANCZOS))
    if mode == "pad":
        scale = min(width / w, height / h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = Image.new("RGB", (width, height))
        canvas.paste(image.resize((new_w, new_h), Image.LANCZOS), ((width - new_w) // 2, (height - new_h) // 2))
        return np.asarray(canvas)
    raise InputError(f"unknown aspect mode {mode!r}; use one of {ASPECT_MODES}")


def vae_image_tensor(reference: np.ndarray, width: int, height: int, mode: str = "stretch") -> torch.Tensor:
    """``(1, 3, H, W)`` float32 in [-1, 1]."""
    array = fit_frame(reference, width, height, mode).astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None] * 2.0 - 1.0


class PoseFrames:
    """The pose renders of a video, kept as uint8 ``[F, H, W, 3]`` on the CPU at the target size.

    Only the frames of the current window are turned into float tensors, so a long video never sits
    on the GPU (the original converts and runs the whole video through the pose guider at once).
    """

    def __init__(self, frames, width: int, height: int, mode: str = "stretch"):
        if isinstance(frames, torch.Tensor):
            if frames.is_floating_point() and not torch.isfinite(frames).all():
                raise InputError("the pose frames contain NaN or infinite values")
            frames = frames.detach().cpu().numpy()
        if isinstance(frames, (list, tuple)) and not frames:
            raise InputError("no pose frames were given")
        if not isinstance(frames, (list, tuple)):
            frames = np.asarray(frames)
            if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
                raise InputError(f"pose frames must be [frames, H, W, 3], got shape {frames.shape}")
            if frames.shape[0] == 0:
                raise InputError("no pose frames were given (0 frames)")
        if isinstance(frames, (list, tuple)) or frames.dtype != np.uint8:
            # Frame by frame into one uint8 array: a whole-video float expression (an IMAGE batch from
            # ComfyUI is float32) would make several float copies of the video at once.
            first = to_uint8_rgb(frames[0])
            converted = np.empty((len(frames), *first.shape), dtype=np.uint8)
            for i, frame in enumerate(frames):
                converted[i] = to_uint8_rgb(frame)
            frames = converted
        frames = frames[..., :3]
        self.width, self.height, self.mode = width, height, mode
        src_h, src_w = frames.shape[1:3]
        if (src_w, src_h) != (width, height):
            aspect_note = ""
            if mode == "stretch" and not math.isclose(src_w / src_h, width / height, rel_tol=0.01):
                aspect_note = " (aspect ratio differs: the poses are stretched; use aspect mode crop or pad to avoid it)"
            logger.warning("pose frames are %dx%d; resizing them to %dx%d with %s%s", src_w, src_h, width, height,
                           mode, aspect_note)
            # Once, up front: every window of every step reads these frames again. Filled in place: a list
            # of resized frames then np.stack would hold them twice.
            fitted = np.empty((frames.shape[0], height, width, 3), dtype=np.uint8)
            for i, frame in enumerate(frames):
                fitted[i] = fit_frame(frame, width, height, mode)
            frames = fitted
        self.frames = np.ascontiguousarray(frames)

    def __len__(self) -> int:
        return self.frames.shape[0]

    def tensor(self, indices: list[int]) -> torch.Tensor:
        """``(len(indices), 3, H, W)`` float32 in [0, 1]."""
        return torch.from_numpy(self.frames[indices]).permute(0, 3, 1, 2).float().div_(255.0)
