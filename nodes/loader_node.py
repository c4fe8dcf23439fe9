"""MusePose Model Loader: weights from ComfyUI's model folders, cached across queue runs."""
from __future__ import annotations

import hashlib
import logging
import time

import torch

from . import host
from .attention import available_backends
from .bundle import LoadedSet, MusePoseModel
from .download import download_missing
from .model_cache import MODEL_CACHE
from .model_files import file_fingerprint, missing_files, missing_message, resolve_weight_paths
from .options import AUTO, CATEGORY, MODEL_TYPE, OFFLOAD_MODES, PRECISIONS

logger = logging.getLogger("musepose_express")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
STREAMABLE = ("denoising_unet", "reference_unet", "pose_guider")


def resolve_precision(choice: str, device: torch.device) -> torch.dtype:
    """``auto`` = what ComfyUI's model management recommends for a UNet on ``device``."""
    if choice == AUTO:
        return host.auto_dtype(device)
    if choice not in DTYPES:
        raise ValueError(f"unknown precision {choice!r}; use one of {PRECISIONS}")
    return DTYPES[choice]


def load_set(paths, dtype: torch.dtype, offload: str, device: torch.device) -> LoadedSet:
    """Read the weights (cast on load, onto the offload device) and build the pipeline and placement."""
    from ..musepose.pipeline import MusePosePipeline
    from ..musepose.weights import load_models

    started = time.perf_counter()
    logger.info("MusePose: loading weights from disk (%s, offload %s)", str(dtype).replace("torch.", ""), offload)
    models = load_models(paths, dtype=dtype, device=host.offload_device())
    components = models.components()
    if offload == "lowvram":
        for name in STREAMABLE:
            if name in components:
                host.convert_for_streaming(components[name])
                left = host.streaming_report(components[name])
                if left:
                    logger.info("MusePose: %s keeps %d non-streamable module(s) resident", name, len(left))
    placement = host.make_placement(components, dtype, offload, device)
    pipeline = MusePosePipeline(models, placement=placement)
    logger.info("MusePose: weights loaded in %.1f s", time.perf_counter() - started)
    return LoadedSet(models=models, pipeline=pipeline, placement=placement, device=placement.device, dtype=dtype,
                     offload=offload, files=paths.as_dict())


class MusePoseModelLoader:
    DESCRIPTION = ("Load the MusePose networks (denoising UNet + motion module, reference UNet, pose guider, "
                   "CLIP image encoder, SD VAE) from ComfyUI's model folders: models/musepose, models/vae, "
                   "models/clip_vision (extra_model_paths.yaml works), or an official pretrained_weights folder. "
                   "Loaded sets are cached: queueing again reuses them without reading the files. A missing "
                   "file is reported with the exact name and folder it belongs in.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("musepose",)
    OUTPUT_TOOLTIPS = ("The loaded MusePose model set, for MusePose Sampler and MusePose Decode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "weights_path": ("STRING", {"default": "", "tooltip": (
                    "Optional folder with the official pretrained_weights/ layout (or a compact fp16 folder). "
                    "Empty: search models/musepose, models/vae and models/clip_vision.")}),
                "vae": ([AUTO] + host.list_model_files("vae"), {"default": AUTO, "tooltip": (
                    "SD VAE from models/vae (sd-vae-ft-mse). auto: sd-vae-ft-mse by its usual names, then the "
                    "official layout.")}),
                "image_encoder": ([AUTO] + host.list_model_files("clip_vision"), {"default": AUTO, "tooltip": (
                    "CLIP image encoder of sd-image-variations-diffusers from models/clip_vision. auto: "
                    "sd-image-variations-diffusers/image_encoder/, then the official layout.")}),
                "precision": (list(PRECISIONS), {"default": AUTO, "tooltip": (
                    "Weight/compute dtype. auto = ComfyUI's recommendation for this device (fp16/bf16 on most "
                    "GPUs, fp32 on CPU).")}),
                "offload": (list(OFFLOAD_MODES), {"default": "none", "tooltip": (
                    "none: models stay loaded between uses (ComfyUI may still evict them). model: each model is "
                    "on the GPU only while it runs. lowvram: ComfyUI loads what fits and streams the rest of "
                    "the UNet weights layer by layer (slowest, least VRAM).")}),
                "attention": (available_backends(), {"default": "sdpa", "tooltip": (
                    "Attention kernel: PyTorch SDPA, or xformers / sageattention when installed.")}),
                "download_missing": ("BOOLEAN", {"default": False, "tooltip": (
                    "Download missing files from Hugging Face into the model folders (needs huggingface_hub "
                    "and network access). Off: a missing file is an error that says where it goes.")}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, weights_path="", vae=AUTO, image_encoder=AUTO, precision=AUTO, offload="none",
                   attention="sdpa", download_missing=False):
        """Re-run when a weight file changes on disk (mtime/size), not only when a widget changes."""
        try:
            paths = resolve_weight_paths(weights_path, vae, image_encoder)
            return hashlib.sha256(repr(file_fingerprint(paths)).encode()).hexdigest()
        except Exception:
            return float("nan")

    def load(self, weights_path="", vae=AUTO, image_encoder=AUTO, precision=AUTO, offload="none",
             attention="sdpa", download_missing=False, hub_download=None):
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"unknown offload mode {offload!r}; use one of {OFFLOAD_MODES}")
        if attention not in available_backends():
            raise ValueError(f"attention backend {attention!r} is not installed; available: {available_backends()}")
        paths = resolve_weight_paths(weights_path, vae, image_encoder)
        missing = missing_files(paths)
        if missing and download_missing:
            _download(missing, hub_download)
            paths = resolve_weight_paths(weights_path, vae, image_encoder)
            missing = missing_files(paths)
        if missing:
            from ..musepose.weights.errors import MissingWeightsError

            raise MissingWeightsError(missing_message(missing, download_hint=not download_missing))
        device = host.torch_device()
        dtype = resolve_precision(precision, device)
        key = (file_fingerprint(paths), str(dtype), offload, str(device))
        before = MODEL_CACHE.loads
        loaded = MODEL_CACHE.get_or_load(key, lambda: load_set(paths, dtype, offload, device))
        if MODEL_CACHE.loads == before:
            logger.info("MusePose: reusing the cached model set (no weight reload)")
        return (MusePoseModel(loaded, attention=attention),)


def _download(missing, hub_download):
    logger.info("MusePose: downloading missing file(s): %s", ", ".join(missing))
    download_missing(missing, hub_download=hub_download)
