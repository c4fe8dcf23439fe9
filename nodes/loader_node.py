"""MusePose Model Loader: weights from ComfyUI's model folders, cached across queue runs."""
from __future__ import annotations

import functools
import hashlib
import logging
import time
import weakref

import torch

from . import host
from .bundle import LoadedSet, MusePoseModel
from .download import download_missing
from .model_cache import MODEL_CACHE
from .model_files import file_fingerprint, missing_files, missing_message, resolve_weight_paths
from .options import AUTO, CATEGORY, MODEL_TYPE, OFFLOAD_LEVELS, PRECISIONS, setting_with, widget

logger = logging.getLogger("musepose_express")

STREAMABLE = ("denoising_unet", "reference_unet", "pose_guider")


def attention_widget() -> tuple:
    """The ``attention`` setting's widget, offering the backends installed here (``sdpa`` always)."""
    from ..musepose.attention import available_backends

    return widget("attention", setting_with("attention", choices=tuple(available_backends())))


def resolve_precision(choice: str, device: torch.device) -> torch.dtype:
    """The compute dtype: ``auto`` = what ComfyUI's model management recommends for a UNet on ``device``;
    ``fp8`` computes in fp16 (the UNets' large weights are stored as fp8 on top)."""
    from ..musepose.device import DTYPES

    if choice == AUTO:
        return host.auto_dtype(device)
    if choice not in DTYPES:
        raise ValueError(f"unknown precision {choice!r}; use one of {PRECISIONS}")
    return DTYPES[choice]


def load_set(paths, dtype: torch.dtype, device: torch.device, fp8: bool = False, compile: bool = False) -> LoadedSet:
    """Read the weights (cast on load, onto the offload device) and build the pipeline and placement.

    The set serves every offload mode: under ComfyUI the streamable networks always get comfy.ops layer
    classes (they behave as plain torch layers while fully loaded, and let ComfyUI stream their weights
    when only part fits), so switching the offload mode never reads the files again.
    """
    from ..musepose.pipeline import MusePosePipeline
    from ..musepose.weights import load_models

    started = time.perf_counter()
    logger.info("MusePose: loading weights from disk (%s)", str(dtype).replace("torch.", ""))
    models = load_models(paths, dtype=dtype, device=host.offload_device(), fp8=fp8)
    components = models.components()
    for name in STREAMABLE:
        if name in components and host.convert_for_streaming(components[name]):
            left = host.streaming_report(components[name])
            if left:
                logger.info("MusePose: %s keeps %d non-streamable module(s) resident", name, len(left))
    if compile:  # before the networks are wrapped: compiling changes how each block is called, not its weights
        from ..musepose.models.compile import compile_unets

        compile_unets(models, device)
    placement = host.make_placement(components, dtype, device)
    pipeline = MusePosePipeline(models, placement=placement)
    logger.info("MusePose: weights loaded in %.1f s", time.perf_counter() - started)
    loaded = LoadedSet(models=models, pipeline=pipeline, placement=placement, device=placement.device, dtype=dtype,
                       files=paths.as_dict())
    if hasattr(placement, "on_comfy_unload"):
        placement.on_comfy_unload = functools.partial(_released_by_comfy, weakref.ref(loaded))
    return loaded


def _released_by_comfy(loaded_ref) -> None:
    """ComfyUI unloaded one of this set's models (to make room, or on its own): let the cache drop it."""
    loaded = loaded_ref()
    if loaded is not None:
        MODEL_CACHE.release(loaded, reason="ComfyUI unloaded the MusePose models")


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
                "precision": widget("precision"),
                "offload": widget("offload"),
                "attention": attention_widget(),
                "download_missing": ("BOOLEAN", {"default": False, "tooltip": (
                    "Download missing files from Hugging Face into the model folders (needs huggingface_hub "
                    "and network access). Off: a missing file is an error that says where it goes.")}),
            },
            # Optional, and last: saved workflows and API prompts without it keep working (one device).
            "optional": {
                "extra_devices": ("STRING", {"default": "", "tooltip": (
                    "More GPUs for the Sampler, e.g. cuda:1,cuda:2: each holds its own copy of the denoising "
                    "UNet (read from the files on its first run) and takes a share of every step's windows, "
                    "next to ComfyUI's GPU. Same video, faster on long videos. ComfyUI does not manage these "
                    "copies: they are freed with the model set (ComfyUI's Free / Unload models). Empty: "
                    "ComfyUI's GPU only.")}),
                "compile": ("BOOLEAN", {"default": False, "tooltip": (
                    "torch.compile the UNets' repeated blocks (resnets, transformers, motion modules): same "
                    "video, faster steps on a GPU once compiled; the first run compiles (minutes). Needs Triton "
                    "on a GPU, a C++ compiler on the CPU.")}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, weights_path="", vae=AUTO, image_encoder=AUTO, precision=AUTO, offload=AUTO,
                   attention="sdpa", download_missing=False, extra_devices="", compile=False):
        """Re-run when a weight file changes on disk (mtime/size), not only when a widget changes."""
        try:
            paths = resolve_weight_paths(weights_path, vae, image_encoder)
            return hashlib.sha256(repr(file_fingerprint(paths)).encode()).hexdigest()
        except Exception:
            return float("nan")

    def load(self, weights_path="", vae=AUTO, image_encoder=AUTO, precision=AUTO, offload=AUTO,
             attention="sdpa", download_missing=False, extra_devices="", compile=False, hub_download=None):
        if offload not in OFFLOAD_LEVELS:
            raise ValueError(f"unknown offload level {offload!r}; use one of {OFFLOAD_LEVELS}")
        from ..musepose.attention import available_backends

        if attention not in available_backends():
            raise ValueError(f"attention backend {attention!r} is not installed; available: {available_backends()}")
        devices = host.extra_devices(extra_devices)  # checked before anything is read
        loaded = cached_set(weights_path, vae, image_encoder, precision, download_missing, hub_download, compile)
        # The extra devices are a per-run choice like the offload level: the cached set keeps one replica per
        # extra device once used, and frees them with the set (LoadedSet.close).
        return (MusePoseModel(loaded, attention=attention, offload=offload, extra_devices=devices),)


def cached_set(weights_path="", vae=AUTO, image_encoder=AUTO, precision=AUTO, download_missing=False,
               hub_download=None, compile=False) -> LoadedSet:
    """The loaded set for these files and this precision: from the cache, or read from disk."""
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
    fp8 = precision == "fp8"
    # The weights' identity: files, precision (fp8 included), compiled or not, device. The offload level is a
    # per-run choice.
    key = (file_fingerprint(paths), str(dtype), fp8, bool(compile), str(device))
    before = MODEL_CACHE.loads
    loaded = MODEL_CACHE.get_or_load(key, lambda: load_set(paths, dtype, device, fp8, compile))
    if MODEL_CACHE.loads == before:
        logger.info("MusePose: reusing the cached model set (no weight reload)")
    # what an output of this set does once the set is released: the same choices, read again
    loaded.reopen = functools.partial(cached_set, weights_path, vae, image_encoder, precision, compile=compile)
    return loaded


def _download(missing, hub_download):
    logger.info("MusePose: downloading missing file(s): %s", ", ".join(missing))
    download_missing(missing, hub_download=hub_download)
