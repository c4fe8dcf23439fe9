"""Where models live while the pipeline runs.

The pipeline never calls ``.to(device)`` on a model itself: it asks a placement object to make models
usable (``use``) and says when it is done with them (``release``); whether a model is released after its
use is the memory policy's call (:mod:`musepose.pipeline.memory`). The engine's own placement (here)
moves whole models, or streams a UNet's blocks within a weight budget (:class:`BlockStreamer`). The
ComfyUI host supplies its own placement backed by ComfyUI's model management, so the same sampling code
runs in both.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Protocol

import torch
from torch import nn

from .streaming import BlockStreamer, streamable


class ModelPlacement(Protocol):
    device: torch.device
    offload_device: torch.device

    def free_memory(self) -> int:
        """Bytes this run may use on the device (weights and activations), as the placement sees it."""

    def use(self, *modules: nn.Module, memory_required: int = 0,
            weight_budget: int | None = None) -> contextlib.AbstractContextManager:
        """Make ``modules`` usable on the device for the body. ``memory_required``: activation bytes the body
        needs beside the weights; ``weight_budget``: device bytes a streamable module's weights may take
        (``None``: the whole module)."""

    def release(self, *modules: nn.Module) -> None:
        """Move ``modules`` off the device."""


def module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


def bytes_on(device: torch.device, *modules: nn.Module) -> int:
    """Bytes of ``modules``' tensors that sit on ``device`` (what a new run may reuse or move away)."""
    total = 0
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.device == device:
                total += tensor.numel() * tensor.element_size()
    return total


def free_device_memory(device: torch.device) -> int:
    """Free bytes on a CUDA device (the driver's free memory plus what torch's cache holds unused); on
    other devices the available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    import psutil

    return int(psutil.virtual_memory().available)


class EnginePlacement:
    """Standalone placement: whole-model moves, or block streaming for a UNet given a weight budget."""

    def __init__(self, device: torch.device | str = "cpu", offload_device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.offload_device = torch.device(offload_device)
        self.streamers: dict[int, BlockStreamer] = {}

    def free_memory(self) -> int:
        return free_device_memory(self.device)

    @contextlib.contextmanager
    def use(self, *modules: nn.Module, memory_required: int = 0, weight_budget: int | None = None) -> Iterator[None]:
        for module in modules:
            # On the CPU (device == offload device) streaming makes real copies: pointless for speed, but it
            # is what lets tests check budgets and results without a GPU.
            if weight_budget is not None and streamable(module):
                if id(module) not in self.streamers:
                    self.streamers[id(module)] = BlockStreamer(module, self.device, weight_budget, self.offload_device)
            elif module_device(module) != self.device:
                self._stop_streaming(module)
                module.to(self.device)
        try:
            yield
        finally:
            for module in modules:  # streaming is set up per use: the next use may have another budget
                self._stop_streaming(module, to_device=self.offload_device)

    def _stop_streaming(self, module: nn.Module, to_device: torch.device | None = None) -> None:
        streamer = self.streamers.pop(id(module), None)
        if streamer is not None:
            streamer.detach(to_device)

    def release(self, *modules: nn.Module) -> None:
        if self.device == self.offload_device:
            return
        for module in modules:
            self._stop_streaming(module)
            module.to(self.offload_device)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
