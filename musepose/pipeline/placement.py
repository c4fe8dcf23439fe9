"""Where models live while the pipeline runs.

The pipeline never calls ``.to(device)`` on a model itself: it asks a placement object to make a model
usable (``use``) and says when it is done with it for this run (``release``). The engine's own placement
(here) keeps models resident (``offload='none'``) or moves each one to the compute device only while it
is used (``offload='model'``). The ComfyUI host supplies its own placement backed by ComfyUI's model
management, so the same sampling code runs in both.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Protocol

import torch
from torch import nn

OFFLOAD_MODES = ("none", "model")


class ModelPlacement(Protocol):
    device: torch.device

    def use(self, *modules: nn.Module, memory_required: int = 0) -> contextlib.AbstractContextManager: ...

    def release(self, *modules: nn.Module) -> None: ...


def module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


class EnginePlacement:
    """Standalone placement: ``none`` keeps every model on ``device``; ``model`` offloads each after use."""

    def __init__(self, device: torch.device | str = "cpu", offload: str = "none",
                 offload_device: torch.device | str = "cpu"):
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"unknown offload mode {offload!r}; standalone mode supports {OFFLOAD_MODES}")
        self.device = torch.device(device)
        self.offload = offload
        self.offload_device = torch.device(offload_device)

    @contextlib.contextmanager
    def use(self, *modules: nn.Module, memory_required: int = 0) -> Iterator[None]:
        for module in modules:
            if module_device(module) != self.device:
                module.to(self.device)
        try:
            yield
        finally:
            if self.offload == "model":
                self.release(*modules)

    def release(self, *modules: nn.Module) -> None:
        if self.offload == "none" or self.device == self.offload_device:
            return
        for module in modules:
            module.to(self.offload_device)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
