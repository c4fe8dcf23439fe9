"""Weight streaming within a budget (the engine's own; under ComfyUI its partial loading does this job).

:class:`BlockStreamer` keeps a UNet's block weights on the host and brings each block to the device just
before it runs (forward pre-hooks), prefetching the next block on a side CUDA stream so the copy overlaps
compute. Blocks stay resident while they fit in ``budget_bytes``; when room is needed, the block that
finished most recently is evicted first, which is the right victim for a sweep that repeats every call
(the blocks at the start of the sweep stay resident and hit on the next call).

* *Units* are the children of every block's module lists (each resnet, spatial transformer, motion
  module, down/up sampler); the rest of the UNet (conv_in, time embedding, output head: a few MB) stays
  on the device while streaming.
* Masters live on the offload device (pinned on CUDA). A unit is loaded by putting device copies into
  its modules' parameter/buffer slots and evicted by putting the masters back (weights are read-only:
  nothing is copied back). Replacing slot entries rather than assigning ``.data`` works for every tensor
  type (fp8 storage, fake tensors of the memory meter).
* On the CPU (device == offload device) the same logic runs with real copies, so budgets and hit/miss
  accounting are testable without a GPU (:attr:`stats`).

diffusers' group offloading (``enable_group_offload`` with streams) streams every group on every call:
it has no residency budget, so a card that can hold 80 % of the UNet would still move all of it each
call. This streamer keeps what fits resident and moves only the rest.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn


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


def _slots(module: nn.Module) -> list[tuple[dict, str]]:
    """Every (slot dict, name) holding a tensor in ``module`` and its children."""
    out = []
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            out.extend((store, name) for name, t in store.items() if t is not None)
    return out


def _moved(tensor: torch.Tensor, device: torch.device, non_blocking: bool = False) -> torch.Tensor:
    copy = tensor.detach().to(device, non_blocking=non_blocking, copy=True)
    return nn.Parameter(copy, requires_grad=False) if isinstance(tensor, nn.Parameter) else copy


class _Unit:
    def __init__(self, module: nn.Module):
        self.module = module
        self.slots = _slots(module)
        self.masters = [store[name] for store, name in self.slots]
        self.nbytes = sum(t.numel() * t.element_size() for t in self.masters)
        self.resident = False
        self.in_use = False
        self.event = None  # CUDA event of a pending prefetch
        self.staged: list[torch.Tensor] | None = None
        self.hooks: list = []

    def install(self, tensors: list[torch.Tensor]) -> None:
        for (store, name), tensor in zip(self.slots, tensors):
            store[name] = tensor


class BlockStreamer:
    """Streams ``module``'s blocks to ``device`` within ``budget_bytes`` (module docstring)."""

    def __init__(self, module: nn.Module, device: torch.device | str, budget_bytes: int,
                 offload_device: torch.device | str = "cpu", prefetch: bool = True):
        self.module = module
        self.device = torch.device(device)
        self.offload_device = torch.device(offload_device)
        self.budget_bytes = int(budget_bytes)
        self.prefetch = prefetch
        self.stats = StreamingStats()
        self._copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._resident: "OrderedDict[int, _Unit]" = OrderedDict()  # most recently finished last
        self._order: list[_Unit] = []
        self._recording: list[_Unit] | None = []
        self.units = [_Unit(unit) for _, unit in stream_units(module)]
        unit_ids = {id(t) for u in self.units for t in u.masters}
        self._fixed = [(store, name) for store, name in _slots(module) if id(store[name]) not in unit_ids]
        self._attach()

    # -- attaching ----------------------------------------------------------------------------------
    def _attach(self) -> None:
        for store, name in self._fixed:  # conv_in, time embedding, head: resident while streaming
            if store[name].device != self.device:
                store[name] = _moved(store[name], self.device)
        pin = self.device.type == "cuda"
        for unit in self.units:
            if any(t.device != self.offload_device for t in unit.masters):
                unit.masters = [_moved(t, self.offload_device) for t in unit.masters]
            if pin:
                unit.masters = [_pinned(t) for t in unit.masters]
            unit.install(unit.masters)
            unit.hooks = [unit.module.register_forward_pre_hook(self._pre_hook(unit)),
                          unit.module.register_forward_hook(self._post_hook(unit), always_call=True)]
        self.stats.units = len(self.units)

    def detach(self, to_device: torch.device | str | None = None) -> None:
        """Remove the hooks and put every weight on ``to_device`` (default: the offload device)."""
        target = torch.device(to_device) if to_device is not None else self.offload_device
        for unit in self.units:
            for hook in unit.hooks:
                hook.remove()
            self._evict(unit)
            if target != self.offload_device:
                unit.install([_moved(t, target) for t in unit.masters])
        for store, name in self._fixed:
            if store[name].device != target:
                store[name] = _moved(store[name], target)
        self.units = []

    # -- residency ------------------------------------------------------------------------------------
    def _copies(self, unit: _Unit, non_blocking: bool) -> list[torch.Tensor]:
        return [_moved(t, self.device, non_blocking) for t in unit.masters]

    def _make_room(self, needed: int, keep: tuple[_Unit, ...]) -> bool:
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
                stream = torch.cuda.current_stream(self.device)
                stream.wait_event(unit.event)
                for tensor in unit.staged:
                    tensor.record_stream(stream)
                unit.install(unit.staged)
                unit.event, unit.staged = None, None
            self.stats.hits += 1
            return
        if not self._make_room(unit.nbytes, (unit,)):
            self.stats.over_budget_loads += 1
        unit.install(self._copies(unit, non_blocking=False))
        self.stats.loads += 1
        self._account(unit)

    def _prefetch(self, unit: _Unit, current: _Unit) -> None:
        if unit.resident or unit is current or not self._make_room(unit.nbytes, (unit, current)):
            return
        if self._copy_stream is not None:
            # Sources are read-only pinned masters and every staged tensor is record_stream'ed onto the
            # compute stream before use, so the copy needs no wait on the compute stream.
            with torch.cuda.stream(self._copy_stream):
                unit.staged = self._copies(unit, non_blocking=True)
                unit.event = torch.cuda.Event()
                unit.event.record(self._copy_stream)
        else:
            unit.install(self._copies(unit, non_blocking=False))
        self.stats.prefetches += 1
        self._account(unit)

    def _evict(self, unit: _Unit) -> None:
        if not unit.resident:
            return
        if unit.event is not None:
            unit.event.synchronize()
            unit.event, unit.staged = None, None
        unit.install(unit.masters)
        unit.resident = False
        self._resident.pop(id(unit), None)
        self.stats.resident_bytes -= unit.nbytes

    # -- hooks ------------------------------------------------------------------------------------------
    def _pre_hook(self, unit: _Unit):
        def hook(module, args):
            unit.in_use = True
            self._load(unit)
            if self._recording is not None:
                self._recording.append(unit)
            elif self.prefetch and self._order:
                index = self._order.index(unit) if unit in self._order else -1
                self._prefetch(self._order[(index + 1) % len(self._order)], unit)
        return hook

    def _post_hook(self, unit: _Unit):
        def hook(module, args, output):
            unit.in_use = False
            if unit.resident:
                self._resident.move_to_end(id(unit))  # most recently finished: first victim
            if self._recording is not None and len(set(map(id, self._recording))) == len(self.units) \
                    and unit is self._recording[-1]:
                self._order = list(dict.fromkeys(self._recording))  # one full sweep seen: the order
                self._recording = None
            if self.stats.resident_bytes > self.budget_bytes:
                self._make_room(0, ())
        return hook


def _pinned(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.is_pinned():
        return tensor
    pinned = tensor.pin_memory()
    return nn.Parameter(pinned, requires_grad=False) if isinstance(tensor, nn.Parameter) else pinned
