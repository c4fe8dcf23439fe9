"""The engine's ``ModelPlacement`` on ComfyUI's model management (:class:`ComfyPlacement`: ``ModelPatcher`` +
``load_models_gpu``, so ComfyUI evicts other models before ours load and can unload ours later), or the
engine's own placement outside ComfyUI (:func:`make_placement`)."""
from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from . import comfyui, free_watch, patchers
from .devices import offload_device
from .patchers import HeldModel, unload_patcher


class ComfyPlacement:
    """The engine's ``ModelPlacement`` on ComfyUI's model management.

    * ``free_memory`` is ComfyUI's view: free device memory plus what the other models ComfyUI has
      loaded occupy (``load_models_gpu`` evicts them when ours need the room), less ComfyUI's reserve;
    * ``use`` calls ``load_models_gpu`` with the stage's activation estimate (the engine's planner), so
      ComfyUI frees room by evicting other models first and may later unload ours; with a weight budget
      (the ``lowvram`` level), ComfyUI's partial loading keeps what fits and streams the rest (the loader
      converts the streamable networks to comfy.ops layers whenever ComfyUI hosts); buffers a partial load
      leaves behind are moved by us;
    * ``release`` unloads; whether a network is released after its use is the engine's memory policy;
    * ``on_comfy_unload`` (set by the loader) is called when ComfyUI itself fully unloads one of these
      models (Free, out-of-memory handling, room for another model), not when we do.
    """

    def __init__(self, modules: dict[str, nn.Module], dtype: torch.dtype,
                 streamable: Iterable[str] = ("denoising_unet", "reference_unet", "pose_guider")):
        if not comfyui.HAS_COMFY:
            raise RuntimeError("ComfyPlacement needs ComfyUI")
        cls = patchers.patcher_class()
        self.device = comfyui.mm.get_torch_device()
        self.offload_device = comfyui.mm.unet_offload_device()
        self.dtype = dtype
        self.on_comfy_unload: Callable[[], None] | None = None
        self._patchers: dict[int, object] = {}
        self._names: dict[int, str] = {}
        self._streamable = set()
        on_detach = comfyui.on_detach_key()
        this = weakref.ref(self)  # no cycle patcher -> callback -> placement -> patcher
        for name, module in modules.items():
            patcher = cls(HeldModel(module, dtype, name), load_device=self.device, offload_device=self.offload_device)
            patcher.add_callback(on_detach, functools.partial(_placement_detached, this))
            self._patchers[id(module)] = patcher
            self._names[id(module)] = name
            if name in streamable:
                self._streamable.add(id(module))

    def patcher(self, module: nn.Module):
        return self._patchers[id(module)]

    def free_memory(self) -> int:
        """What the engine may plan with: free device memory, plus what ComfyUI would unload for our loads
        (its other models on the device; under dynamic VRAM, what its pager can hand back, counted by the
        patcher's own ``get_free_memory``, 0.19+), less ComfyUI's reserve."""
        mm = comfyui.mm
        ours = set(self._patchers.values())
        first = next(iter(self._patchers.values()), None)
        host_free = getattr(first, "get_free_memory", None)  # 0.19+: counts the dynamic pager's memory
        free = int(host_free(self.device) if host_free is not None else mm.get_free_memory(self.device))
        # Dynamic models' weights are in the pager's figure already: count the other models only once.
        others = sum(int(m.loaded_size()) for m in mm.loaded_models() if m not in ours
                     and getattr(m, "load_device", None) == self.device
                     and not (host_free is not None and _is_dynamic(m)))
        return max(0, free + others - int(mm.extra_reserved_memory()))

    @contextlib.contextmanager
    def use(self, *modules: nn.Module, memory_required: int = 0, weight_budget: int | None = None) -> Iterator[None]:
        modules = tuple(m for m in modules if m is not None)
        loading = [self._patchers[id(m)] for m in modules]
        # Only comfy.ops-converted models may be partially loaded: any other layer left on the offload
        # device would meet its input on another device.
        partial = weight_budget is not None and all(id(m) in self._streamable for m in modules)
        with patchers.our_call():
            # The Free watch rides along (it weighs nothing), so it stays listed whatever this load evicts.
            comfyui.mm.load_models_gpu(loading + free_watch.free_watch_patchers(),
                                       memory_required=int(memory_required),
                                       minimum_memory_required=int(memory_required), force_full_load=not partial)
        for module in modules:
            _move_stray_buffers(module, self.device)
        yield

    def release(self, *modules: nn.Module) -> None:
        for module in modules:
            if module is not None:
                unload_patcher(self._patchers[id(module)])

    def unload_all(self) -> None:
        """Unload every model of this set (cache eviction)."""
        for patcher in self._patchers.values():
            unload_patcher(patcher)

    def drop_modules(self) -> None:
        """Let go of the networks (after :meth:`unload_all`): the patchers stay, holding nothing."""
        for patcher in self._patchers.values():
            holder = getattr(patcher, "model", None)
            if isinstance(holder, HeldModel):
                holder.inner = None


def _is_dynamic(patcher) -> bool:
    is_dynamic = getattr(patcher, "is_dynamic", None)
    return bool(is_dynamic()) if callable(is_dynamic) else False


def _placement_detached(placement_ref, patcher, unpatch_all: bool) -> None:
    if not unpatch_all or not patchers.unloaded_by_comfy(unpatch_all):  # (unpatch_all first: also runs at exit)
        return
    placement = placement_ref()
    callback = getattr(placement, "on_comfy_unload", None)
    if callable(callback):
        callback()


def _move_stray_buffers(module: nn.Module, device: torch.device) -> None:
    """A partial load moves parameters only; small buffers (positional encodings) must follow the input."""
    for sub in module.modules():
        for name, buf in list(sub._buffers.items()):
            if buf is not None and buf.device != device:
                sub._buffers[name] = buf.to(device)


def make_placement(modules: dict[str, nn.Module], dtype: torch.dtype, device: torch.device):
    """ComfyPlacement under ComfyUI; the engine's EnginePlacement (with its own block streaming) otherwise."""
    if comfyui.HAS_COMFY:
        return ComfyPlacement(modules, dtype)
    from ...musepose.pipeline.placement import EnginePlacement

    return EnginePlacement(device, offload_device())
