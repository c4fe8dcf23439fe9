"""Devices and precision: ComfyUI's ``model_management`` decides where and in which precision models run;
outside ComfyUI the engine's own choice (CUDA when available, fp16 there, fp32 elsewhere)."""
from __future__ import annotations

import re

import torch

from . import comfyui


def torch_device() -> torch.device:
    """The compute device: ComfyUI's choice, or CUDA when available outside ComfyUI."""
    if comfyui.HAS_COMFY:
        return comfyui.mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where idle model weights live (CPU, or the GPU under ComfyUI's --highvram)."""
    if comfyui.HAS_COMFY:
        return comfyui.mm.unet_offload_device()
    return torch.device("cpu")


def auto_dtype(device: torch.device, parameters: int = 0) -> torch.dtype:
    """The precision ComfyUI recommends for a UNet of ``parameters`` weights on ``device``.

    Outside ComfyUI: fp16 on CUDA, fp32 elsewhere.
    """
    if comfyui.HAS_COMFY:
        return comfyui.mm.unet_dtype(device=device, model_params=parameters,
                                     supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    if device.type == "cuda":
        return torch.float16
    return torch.float32


def empty_cache() -> None:
    """Give cached device memory back (ComfyUI's soft empty, or torch's)."""
    if comfyui.HAS_COMFY:
        comfyui.mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def extra_devices(text: str) -> tuple[torch.device, ...]:
    """The Model Loader's ``extra_devices``: more devices (``cuda:1, cuda:2``) sharing the Sampler's windows
    with ComfyUI's own device. ComfyUI manages its device only: the replicas on these are the pack's
    (made on a device's first run, freed with the model set: ComfyUI's Free, or another set loaded)."""
    main = torch_device()
    if main.type == "cuda" and main.index is None:
        main = torch.device("cuda", torch.cuda.current_device())
    devices: list[torch.device] = []
    for name in re.split(r"[,\s]+", str(text or "").strip()):
        if name:
            devices.append(_extra_device(name, main, devices))
    return tuple(devices)


def _extra_device(name: str, main: torch.device, listed: list[torch.device]) -> torch.device:
    """One name of ``extra_devices`` as a device, or a ValueError that says what is wrong with it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"extra_devices: {name!r} is not a device name; write e.g. cuda:1,cuda:2") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.index is None:
            raise ValueError(f"extra_devices: give numbered GPUs (cuda:1), not {name!r}")
        if device.index >= count:
            raise ValueError(f"extra_devices: {name} does not exist: this machine has {count} CUDA GPU(s)")
        if device == main or device in listed:
            raise ValueError(f"extra_devices: {name} is listed twice (ComfyUI's own device is {main}, which "
                             "always takes part)")
    elif device.type != "cpu":  # cpu: a second worker thread on the CPU (what the tests use)
        raise ValueError(f"extra_devices: {name}: only CUDA GPUs can share the Sampler's windows")
    return device
