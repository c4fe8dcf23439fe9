"""ModelPatcher glue shared by the placement and the Free watch: which patcher class holds our networks,
whether the host pages models dynamically, and telling our own unloads from ComfyUI's.

Model management goes through public ComfyUI calls only: ``load_models_gpu``, ``loaded_models``, the
patcher's own ``detach`` and its ``ON_DETACH`` callbacks; never the private loaded-model list.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch
from torch import nn

from . import comfyui


def patcher_class():
    """The ModelPatcher class the pack's networks (and its Free watch) are held by: always the plain,
    non-dynamic ``ModelPatcher``.

    Newer ComfyUI (0.19+, dynamic VRAM on NVIDIA) swaps ``comfy.model_patcher.CoreModelPatcher`` for
    ``ModelPatcherDynamic`` at start, which pages every converted layer on demand: whole-model offload,
    the lowvram weight budget and ``force_full_load`` would then stop meaning what the engine's planner
    assumes, a weightless model would get a zero-size dynamic buffer, and torch.compile would graph-break
    on the weight casts. With the plain class the pack keeps its own measured levers (the planner stays
    within a few % of the meter) and ComfyUI still evicts its dynamic models when ours need the room
    (``free_memory`` unloads dynamic models for non-dynamic loads). docs/PERFORMANCE.md says what was
    measured under dynamic VRAM.
    """
    return comfyui.model_patcher_module().ModelPatcher


def dynamic_vram() -> bool:
    """Whether the host pages models through dynamic VRAM (comfy-aimdo started: ComfyUI 0.19+ on NVIDIA)."""
    if not comfyui.HAS_COMFY:
        return False
    memory_management = comfyui.memory_management_module()
    return bool(getattr(memory_management, "aimdo_enabled", False))


def memory_host_note() -> str | None:
    """What the Sampler says about the host's memory manager when it matters (dynamic VRAM on), else None."""
    if not dynamic_vram():
        return None
    return ("memory: ComfyUI's dynamic VRAM is on; MusePose loads its networks with a non-dynamic patcher and "
            "keeps its own memory policy (the memory line below), counting what ComfyUI can page out "
            "as free")


# Detaches (unloads) that this pack asks for itself: offload after use, single-use models, cache
# eviction, and whatever ComfyUI evicts while one of our own load_models_gpu calls makes room. Only
# unloads outside these count as "ComfyUI unloaded our models". Prompts run one at a time in ComfyUI's
# worker thread, and /free is handled by that same thread between prompts.
_own_calls = 0
_own_lock = threading.RLock()


@contextlib.contextmanager
def our_call() -> Iterator[None]:
    """Marks model management calls the pack makes itself (their unloads are not ComfyUI's)."""
    global _own_calls
    with _own_lock:
        _own_calls += 1
    try:
        yield
    finally:
        with _own_lock:
            _own_calls -= 1


def unloaded_by_comfy(unpatch_all: bool) -> bool:
    """An ``ON_DETACH`` that is a real unload (weights back to the offload device) ComfyUI decided on.

    ``detach(unpatch_all=False)`` is not an unload: ComfyUI calls it when it re-lists a model that is
    already loaded, and when a patcher is garbage-collected.
    """
    return bool(unpatch_all) and _own_calls == 0


class HeldModel(nn.Module):
    """What a ``ModelPatcher`` wraps: a thin holder around one of our networks.

    ModelPatcher writes bookkeeping attributes (``device``, ...) onto the module it holds; diffusers and
    transformers models expose ``device`` as a read-only property, so they cannot be held directly.
    """

    def __init__(self, inner: nn.Module, dtype: torch.dtype, name: str):
        super().__init__()
        self.inner = inner
        self._dtype = dtype
        self.label = name

    def get_dtype(self) -> torch.dtype:
        return self._dtype


def unload_patcher(patcher) -> None:
    """Unload one of our models: the patcher's own public ``detach`` (weights back to the offload device).

    ComfyUI 0.8.0 has no public call that unloads one given model. ``detach`` restores the weights and
    puts them on the offload device; ComfyUI's list entry for it then counts the model as wholly
    offloaded: the next ``load_models_gpu`` of it loads it again, and its own ``free_memory`` passes over
    it at no cost.
    """
    with our_call():
        patcher.detach(unpatch_all=True)
    comfyui.mm.soft_empty_cache()
