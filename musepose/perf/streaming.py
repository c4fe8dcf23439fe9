"""Low-VRAM weight streaming: a placement that keeps UNet weights on the CPU and brings each block's
weights to the GPU just before it runs, within a VRAM budget, prefetching the next block on a side
CUDA stream.

:class:`StreamingPlacement` implements the engine's ``ModelPlacement`` protocol (``device``,
``use(*modules, memory_required=0)``, ``release(*modules)``), so ``MusePosePipeline(models,
placement=StreamingPlacement("cuda", budget_bytes=...))`` is all it takes.

* A *streamed* module is any module with ``down_blocks``/``up_blocks`` (both UNets). Its *units* are
  the children of every block's module lists (each resnet, spatial transformer, motion module,
  down/up sampler); everything else of it (conv_in, time embedding, output head: a few MB) stays on the
  device while the module is in use. Other modules (CLIP, VAE, pose guider) are moved whole, as in
  ``offload='model'``.
* Units are loaded by forward pre-hooks. The execution order is learnt on the first call; from then on,
  when a unit starts, the next one is copied ahead on a side stream (CUDA) so the copy overlaps compute.
* Residency: units stay on the device while they fit in ``budget_bytes``; when space is needed the
  most recently *finished* unit is evicted first (the right victim for a cyclic sweep: the units at the
  start of the sweep stay resident and are hits on the next call). ``budget_bytes=None`` keeps all.
* Master copies live on ``offload_device`` (pinned when the device is CUDA); eviction just drops the
  device copy (weights are read-only), so nothing is copied back.
* On the CPU (device == offload device) the same logic runs with real copies, so the budget and the
  hit/miss accounting can be tested without a GPU; :attr:`stats` records them.
"""
from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..pipeline.placement import module_device

logger = logging.getLogger(__name__)


@dataclass
class StreamingStats:
    loads: int = 0
    hits: int = 0
    prefetches: int = 0
    bytes_moved: int = 0
    resident_bytes: int = 0
    peak_resident_bytes: int = 0
    over_budget_loads: int = 0
    units: int = 0
    largest_unit_bytes: int = 0


def streamable(module: nn.Module) -> bool:
    return hasattr(module, "down_blocks") and hasattr(module, "up_blocks")


def stream_units(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The units a UNet is streamed in (see module docstring), in registration order."""
    units = []
    blocks = [(f"down_blocks.{i}", b) for i, b in enumerate(module.down_blocks)]
    if getattr(module, "mid_block", None) is not None:
        blocks.append(("mid_block", module.mid_block))
    blocks += [(f"up_blocks.{i}", b) for i, b in enumerate(module.up_blocks)]
    for block_name, block in blocks:
        for list_name, child in block.named_children():
            if isinstance(child, nn.ModuleList):
                for j, unit in enumerate(child):
                    units.append((f"{block_name}.{list_name}.{j}", unit))
            elif any(True for _ in child.parameters()):
                units.append((f"{block_name}.{list_name}", child))
    return units


def _tensor_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + \
        sum(b.numel() * b.element_size() for b in module.buffers())


class _Unit:
    def __init__(self, name: str, module: nn.Module):
        self.name, self.module = name, module
        self.tensors = [t for t in list(module.parameters()) + list(module.buffers())]
        self.masters = [t.data for t in self.tensors]
        self.nbytes = sum(t.numel() * t.element_size() for t in self.masters)
        self.resident = False
        self.in_use = False
        self.event = None  # CUDA event of a pending async copy
        self.staged: list[torch.Tensor] | None = None
        self.hooks = []


class StreamingPlacement:
    """Block-streaming placement (module docstring). ``budget_bytes``: device bytes for streamed units."""

    def __init__(self, device: torch.device | str = "cuda", budget_bytes: int | None = None,
                 offload_device: torch.device | str = "cpu", pin_memory: bool | None = None, prefetch: bool = True):
        self.device = torch.device(device)
        self.offload_device = torch.device(offload_device)
        self.budget_bytes = budget_bytes
        self.pin_memory = (self.device.type == "cuda") if pin_memory is None else pin_memory
        self.prefetch = prefetch
        self.stats = StreamingStats()
        self._units: dict[int, list[_Unit]] = {}  # id(module) -> units
        self._order: dict[int, list[_Unit]] = {}  # learnt execution order
        self._recording: dict[int, list[_Unit]] = {}
        self._resident: "OrderedDict[int, _Unit]" = OrderedDict()  # id(unit) -> unit, most recently finished last
        self._copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._attached: dict[int, nn.Module] = {}

    # -- placement protocol ------------------------------------------------------------------------
    @contextlib.contextmanager
    def use(self, *modules: nn.Module, memory_required: int = 0) -> Iterator[None]:
        for module in modules:
            if module is None:
                continue
            if streamable(module):
                self._attach(module)
            elif module_device(module) != self.device:
                module.to(self.device)
        try:
            yield
        finally:
            self.release(*modules)

    def release(self, *modules: nn.Module) -> None:
        for module in modules:
            if module is None:
                continue
            if id(module) in self._attached:
                self._detach(module)
            elif self.device != self.offload_device:
                module.to(self.offload_device)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- attaching ----------------------------------------------------------------------------------
    def _attach(self, module: nn.Module) -> None:
        key = id(module)
        if key in self._attached:
            return
        if self.device != self.offload_device and module_device(module) != self.offload_device:
            module.to(self.offload_device)
        units = [_Unit(name, unit) for name, unit in stream_units(module)]
        unit_params = {id(t) for u in units for t in u.tensors}
        # the non-streamed remainder (conv_in, time embedding, output head) lives on the device
        for sub in module.modules():
            for name, tensor in list(sub.named_parameters(recurse=False)) + list(sub.named_buffers(recurse=False)):
                if id(tensor) not in unit_params and tensor.device != self.device:
                    tensor.data = tensor.data.to(self.device)
        if self.pin_memory:
            for unit in units:
                unit.masters = [m if m.is_pinned() else m.pin_memory() for m in unit.masters]
                for tensor, master in zip(unit.tensors, unit.masters):
                    tensor.data = master
        for unit in units:
            unit.hooks = [unit.module.register_forward_pre_hook(self._make_pre_hook(key, unit)),
                          unit.module.register_forward_hook(self._make_post_hook(unit))]
        self._units[key] = units
        self._recording[key] = []
        self._attached[key] = module
        self.stats.units += len(units)
        self.stats.largest_unit_bytes = max([self.stats.largest_unit_bytes] + [u.nbytes for u in units])

    def _detach(self, module: nn.Module) -> None:
        key = id(module)
        for unit in self._units.pop(key, []):
            for hook in unit.hooks:
                hook.remove()
            self._evict(unit)
        self._order.pop(key, None)
        self._recording.pop(key, None)
        del self._attached[key]
        if self.device != self.offload_device:
            for tensor in list(module.parameters()) + list(module.buffers()):
                if tensor.device != self.offload_device:
                    tensor.data = tensor.data.to(self.offload_device)

    # -- residency -----------------------------------------------------------------------------------
    def _copy(self, unit: _Unit, non_blocking: bool) -> list[torch.Tensor]:
        if self.device == self.offload_device:
            return [m.clone() for m in unit.masters]  # real copies: residency costs real memory on CPU
        return [m.to(self.device, non_blocking=non_blocking) for m in unit.masters]

    def _make_room(self, needed: int, keep: tuple[_Unit, ...]) -> bool:
        if self.budget_bytes is None:
            return True
        for victim_key in reversed(list(self._resident)):
            if self.stats.resident_bytes + needed <= self.budget_bytes:
                break
            victim = self._resident[victim_key]
            if victim in keep or victim.in_use:
                continue
            self._evict(victim)
        return self.stats.resident_bytes + needed <= self.budget_bytes

    def _account(self, unit: _Unit) -> None:
        unit.resident = True
        self._resident[id(unit)] = unit
        self._resident.move_to_end(id(unit), last=False)  # not finished yet: least likely victim
        self.stats.resident_bytes += unit.nbytes
        self.stats.bytes_moved += unit.nbytes
        self.stats.peak_resident_bytes = max(self.stats.peak_resident_bytes, self.stats.resident_bytes)

    def _load(self, unit: _Unit) -> None:
        if unit.resident:
            if unit.event is not None:  # prefetched: wait for the copy, then install it
                torch.cuda.current_stream(self.device).wait_event(unit.event)
                for tensor, staged in zip(unit.tensors, unit.staged):
                    staged.record_stream(torch.cuda.current_stream(self.device))
                    tensor.data = staged
                unit.event, unit.staged = None, None
            self.stats.hits += 1
            return
        if not self._make_room(unit.nbytes, (unit,)):
            self.stats.over_budget_loads += 1
        for tensor, copy in zip(unit.tensors, self._copy(unit, non_blocking=False)):
            tensor.data = copy
        self.stats.loads += 1
        self._account(unit)

    def _prefetch(self, unit: _Unit, current: _Unit) -> None:
        if unit.resident or unit is current:
            return
        if not self._make_room(unit.nbytes, (unit, current)):
            return  # no room: it will be loaded synchronously when it runs
        if self._copy_stream is not None:
            # No wait on the compute stream: sources are read-only pinned masters, and every staged tensor
            # is record_stream'ed onto the compute stream before use, so the allocator keeps it safe.
            with torch.cuda.stream(self._copy_stream):
                unit.staged = self._copy(unit, non_blocking=True)
                unit.event = torch.cuda.Event()
                unit.event.record(self._copy_stream)
        else:
            for tensor, copy in zip(unit.tensors, self._copy(unit, non_blocking=False)):
                tensor.data = copy
        self.stats.prefetches += 1
        self._account(unit)

    def _evict(self, unit: _Unit) -> None:
        if not unit.resident:
            return
        if unit.event is not None:
            unit.event.synchronize()
            unit.event, unit.staged = None, None
        for tensor, master in zip(unit.tensors, unit.masters):
            tensor.data = master
        unit.resident = False
        self._resident.pop(id(unit), None)
        self.stats.resident_bytes -= unit.nbytes

    # -- hooks -----------------------------------------------------------------------------------------
    def _make_pre_hook(self, key: int, unit: _Unit):
        def hook(module, args):
            unit.in_use = True
            self._load(unit)
            recording = self._recording.get(key)
            if recording is not None and key not in self._order:
                recording.append(unit)
            order = self._order.get(key)
            if self.prefetch and order:
                index = order.index(unit) if unit in order else -1
                self._prefetch(order[(index + 1) % len(order)], unit)
            return None
        return hook

    def _make_post_hook(self, unit: _Unit):
        def hook(module, args, output):
            unit.in_use = False
            if unit.resident:
                self._resident.move_to_end(id(unit))  # most recently finished: first victim
            # learn the order once a full sweep was seen
            for key, units in self._units.items():
                if unit in units and key not in self._order:
                    seen = self._recording.get(key, [])
                    if len(seen) >= len(units) and unit is seen[-1]:
                        self._order[key] = list(dict.fromkeys(seen))
            if self.budget_bytes is not None and self.stats.resident_bytes > self.budget_bytes:
                self._make_room(0, ())
            return None
        return hook
