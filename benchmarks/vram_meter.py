#!/usr/bin/env python
"""VRAM meter: the real pipeline at full model size on fake tensors, counted like the CUDA caching allocator.

No GPU, no weights, little RAM, seconds per run: every tensor is a ``FakeTensor`` (shapes, dtypes and
devices, no data, no arithmetic). The ``meta`` device plays the GPU and ``cpu`` the host. A
``TorchDispatchMode`` sees every tensor the code creates; each storage that lands on the simulated GPU is
counted, rounded up to 512 bytes as the CUDA caching allocator rounds a block, from its creation until it
dies (a weak reference to the storage tells). So the figure is what ``torch.cuda.max_memory_allocated``
would report for the same run: the CUDA context and the allocator's slack (reserved minus allocated)
are not in it.

Three things are adapted so the real code can run on fake tensors, none of which changes what lands on
the device:

* ``F.scaled_dot_product_attention`` is counted as the flash / memory-efficient kernels run it (the
  output plus a float32 log-sum-exp per query row): its math decomposition, which fake tensors would
  otherwise take, materialises the L x L scores that no GPU kernel allocates;
* ``Module.to`` replaces fake parameters instead of swapping their contents (torch swaps fake tensors,
  which fails on weak references the fake-tensor machinery keeps);
* the noise scheduler, which works on host tensors and branches on timestep values, is replaced by a
  stand-in that keeps the shapes.

    python benchmarks/vram_meter.py --width 768 --height 768 --frames 48 --free-gb 6
    python benchmarks/vram_meter.py --width 512 --height 512 --offload none --cfg-mode batched
    python benchmarks/vram_meter.py --width 768 --height 768 --original

It prints the whole-run peak, the peak of each phase (CLIP, VAE encode, reference UNet, pose guider,
sampling, decode), weights vs activations at the peak, the largest live tensors there, and the
planner's prediction for the same configuration.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

BLOCK = 512
GB = 1e9
MiB = 1 << 20
DEVICE = torch.device("meta")  # the simulated GPU


class FlashAttentionCost(TorchFunctionMode):
    """SDPA as the fused kernels allocate it: the output and a float32 log-sum-exp per query row."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            query, _, value = args[:3]
            out = query.new_empty((*query.shape[:-1], value.shape[-1]))
            logsumexp = query.new_empty(query.shape[:-1], dtype=torch.float32)
            del logsumexp
            return out
        return func(*args, **kwargs)


@dataclass
class Live:
    nbytes: int
    label: str
    weight: bool


@dataclass
class MeterReport:
    peak: int = 0
    peak_phase: str = ""
    peak_weights: int = 0
    phases: dict = field(default_factory=dict)
    top: list = field(default_factory=list)  # (bytes, label) of the largest activations at the peak
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"peak {self.peak / GB:.3f} GB in {self.peak_phase} (weights {self.peak_weights / GB:.3f} GB, "
                 f"activations {(self.peak - self.peak_weights) / GB:.3f} GB)",
                 "phases: " + ", ".join(f"{k} {v / GB:.3f}" for k, v in self.phases.items()),
                 "largest activations at the peak:"]
        lines += [f"  {n / MiB:9.1f} MiB  {label}" for n, label in self.top]
        return "\n".join(lines)


class AllocatorMeter(TorchDispatchMode):
    """Counts storages created on the simulated device (module docstring)."""

    def __init__(self, top: int = 10):
        super().__init__()
        self.live: dict[int, Live] = {}
        self.total = 0
        self.report = MeterReport()
        self.phase = "setup"
        self.weights_flag = 0  # > 0 while weights are being placed on the device
        self.modules: list[str] = []  # names of the modules running (innermost last)
        self._top = top

    def _freed(self, key: int) -> None:
        entry = self.live.pop(key, None)
        if entry is not None:
            self.total -= entry.nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device != DEVICE:
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key in self.live:
                continue
            nbytes = -(-storage.nbytes() // BLOCK) * BLOCK
            where = self.modules[-1] if self.modules else self.phase
            self.live[key] = Live(nbytes, f"{where}: {func.__name__} {tuple(tensor.shape)} {tensor.dtype}",
                                  self.weights_flag > 0)
            weakref.finalize(storage, self._freed, key)
            self.total += nbytes
            self._peaks()
        return out

    def _peaks(self) -> None:
        r = self.report
        if self.total > r.phases.get(self.phase, 0):
            r.phases[self.phase] = self.total
        if self.total > r.peak:
            r.peak, r.peak_phase = self.total, self.phase
            r.peak_weights = sum(e.nbytes for e in self.live.values() if e.weight)
            acts = sorted((e for e in self.live.values() if not e.weight), key=lambda e: -e.nbytes)[:self._top]
            r.top = [(e.nbytes, e.label) for e in acts]

    def mark_weights(self, module: nn.Module) -> None:
        """Re-label the storages of ``module``'s tensors as weights (they were made by plain ops)."""
        for tensor in list(module.parameters()) + list(module.buffers()):
            entry = self.live.get(tensor.untyped_storage()._cdata)
            if entry is not None:
                entry.weight = True


def _fake_module_to(self, *args, **kwargs):
    """``Module.to`` for fake tensors: replace each parameter/buffer by its moved copy."""
    device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
    for sub in self.modules():
        for store in (sub._parameters, sub._buffers):
            for name, tensor in list(store.items()):
                if tensor is None:
                    continue
                new_dtype = dtype if (dtype is not None and tensor.is_floating_point()) else tensor.dtype
                new_device = device if device is not None else tensor.device
                if tensor.device == new_device and tensor.dtype == new_dtype:
                    continue
                moved = tensor.detach().to(device=new_device, dtype=new_dtype)
                store[name] = nn.Parameter(moved, requires_grad=False) if isinstance(tensor, nn.Parameter) else moved
    return self


class StandInScheduler:
    """Host-side scheduler stand-in: keeps the shapes, computes nothing (device memory is unaffected)."""

    init_noise_sigma = 1.0

    def set_timesteps(self, steps: int, device="cpu") -> None:
        self.timesteps = torch.arange(steps)

    def scale_model_input(self, sample, timestep):
        return sample

    def step(self, noise_pred, timestep, sample):
        class Output:
            prev_sample = sample + noise_pred
            pred_original_sample = prev_sample
        return Output()


@contextlib.contextmanager
def fake_runtime(meter: AllocatorMeter):
    """Fake tensors, the meter, flash-style SDPA costs, and the adaptations of the module docstring."""
    from musepose.pipeline import sampler, streaming

    saved = (nn.Module.to, sampler.make_scheduler, streaming._moved)

    def moved(tensor, device, non_blocking=False):  # streamed weight copies are weights
        meter.weights_flag += 1
        try:
            return saved[2](tensor, device, non_blocking)
        finally:
            meter.weights_flag -= 1

    def module_to(self, *args, **kwargs):  # whole-model moves: weights
        meter.weights_flag += 1
        try:
            return _fake_module_to(self, *args, **kwargs)
        finally:
            meter.weights_flag -= 1

    nn.Module.to = module_to
    sampler.make_scheduler = lambda name: StandInScheduler()
    streaming._moved = moved
    def enter(module, args):
        meter.modules.append(getattr(module, "_meter_name", type(module).__name__))

    def leave(module, args, output):
        meter.modules.pop()

    handles = [nn.modules.module.register_module_forward_pre_hook(enter),
               nn.modules.module.register_module_forward_hook(leave, always_call=True)]
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), meter, FlashAttentionCost():
            yield
    finally:
        nn.Module.to, sampler.make_scheduler, streaming._moved = saved
        for handle in handles:
            handle.remove()


PHASES = {"image_encoder": "clip", "vae": "vae encode", "reference_unet": "reference",
          "pose_guider": "pose guider", "denoising_unet": "sampling"}


def _label_phases(models, placement, meter: AllocatorMeter) -> None:
    """Name every module for the top list; a phase starts when its network is brought to the device (so
    the move counts in it), and the pose guider's own phase when it runs outside a UNet call."""
    for component, module in models.components().items():
        for name, sub in module.named_modules():
            sub._meter_name = f"{component}.{name}" if name else component
    use = placement.use

    def phased_use(*modules, **kwargs):
        names = [models.name_of(m) for m in modules if m is not None]
        if meter.phase != "decode":
            meter.phase = PHASES["denoising_unet" if "denoising_unet" in names else names[0]]
        return use(*modules, **kwargs)

    placement.use = phased_use

    def guider(module, args):  # on its own (features kept per window), not inside a UNet call
        if "denoising_unet" not in meter.modules:
            meter.phase = "pose guider"

    def denoiser(module, args):
        meter.phase = "sampling"

    models.pose_guider.register_forward_pre_hook(guider)
    models.denoising_unet.register_forward_pre_hook(denoiser)


@dataclass(frozen=True)
class Run:
    width: int = 768
    height: int = 768
    frames: int = 48
    context_frames: int = 48
    context_overlap: int = 4
    windows_per_batch: int = 1
    cfg: float = 3.5
    steps: int = 1
    dtype: str = "fp16"
    unet_config: object = None  # a smaller UNetConfig for quick checks (None: full size)
    clip_config: dict | None = None
    vae_config: dict | None = None

    def settings(self):
        """The pipeline's settings for this run (a ``SamplingSettings``)."""
        from musepose.pipeline import SamplingSettings

        return SamplingSettings(width=self.width, height=self.height, frames=self.frames, steps=self.steps,
                                cfg=self.cfg, context_frames=self.context_frames,
                                context_overlap=self.context_overlap, windows_per_batch=self.windows_per_batch)


def build(run: Run, on_device: bool):
    """The MusePose networks as fake tensors, on the simulated GPU or on the host."""
    from musepose.config import SD15_UNET
    from musepose.device import DTYPES
    from musepose.weights.loader import build_models

    dtype = DTYPES[run.dtype]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        models = build_models(run.unet_config or SD15_UNET, clip_config=run.clip_config, vae_config=run.vae_config,
                              device=DEVICE if on_device else "cpu")
    finally:
        torch.set_default_dtype(previous)
    for module in models.components().values():
        module.requires_grad_(False).eval()
    models.dtype = dtype
    return models


def measure(run: Run, memory, original: bool = False) -> tuple[MeterReport, object]:
    """Meter one run (CLIP, VAE encode, reference pass, ``steps`` denoising steps over all windows, decode).

    ``memory``: a ``MemoryConfig`` (applied as is) or ``MemorySettings`` (auto decides, with its
    ``budget_bytes`` as the free memory). Returns the report and the configuration that ran.
    """
    from musepose.pipeline import EnginePlacement, MemoryConfig, MusePosePipeline

    meter = AllocatorMeter()
    started = time.perf_counter()
    with fake_runtime(meter), torch.no_grad():
        meter.phase = "load"
        resident = original or (isinstance(memory, MemoryConfig) and not memory.offload_models)
        models = build(run, on_device=resident)
        for module in models.components().values():
            meter.mark_weights(module)
        placement = EnginePlacement(DEVICE)
        _label_phases(models, placement, meter)
        if original:
            from original_costs import OriginalCostPipeline

            pipe = OriginalCostPipeline(models, placement=placement)
        else:
            pipe = MusePosePipeline(models, placement=placement)
        rng = np.random.default_rng(0)
        reference = rng.integers(0, 256, (run.height, run.width, 3), dtype=np.uint8)
        poses = rng.integers(0, 256, (run.frames, run.height, run.width, 3), dtype=np.uint8)
        latents = pipe.sample(reference, poses, run.settings(), memory)
        config = pipe.stats.memory[-1]
        meter.phase = "decode"
        pipe.decode(latents, config)
    meter.report.seconds = time.perf_counter() - started
    return meter.report, config


def planner_estimate(run: Run, config):
    from musepose.pipeline.planner import WeightBytes, estimate

    settings = run.settings().validated(run.frames)
    with torch.device("meta"):
        models = build(run, on_device=True)
    job = settings.job(models)
    return estimate(config, job, WeightBytes.from_models(models))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--frames", type=int, default=48, help="video frames")
    p.add_argument("--context-frames", type=int, default=48)
    p.add_argument("--context-overlap", type=int, default=4)
    p.add_argument("--windows-per-batch", type=int, default=1)
    p.add_argument("--cfg", type=float, default=3.5)
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16")
    p.add_argument("--free-gb", type=float, default=None, help="free memory auto decides with (default: 80)")
    p.add_argument("--offload", default="auto", help="pin a level: none, model, lowvram")
    p.add_argument("--cfg-mode", default="auto", help="pin batched or sequential")
    p.add_argument("--original", action="store_true", help="the original algorithm's costs")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from musepose.pipeline import MemorySettings

    run = Run(args.width, args.height, args.frames, args.context_frames, args.context_overlap, args.windows_per_batch,
              args.cfg, dtype=args.dtype)
    memory = MemorySettings(offload=args.offload, cfg_mode=args.cfg_mode,
                            budget_bytes=int((args.free_gb if args.free_gb is not None else 80) * GB))
    report, config = measure(run, memory, original=args.original)
    prediction = planner_estimate(run, config)
    if args.json:
        print(json.dumps({"run": {k: v for k, v in run.__dict__.items() if not k.endswith("_config")},
                          "config": config.describe(), "peak": report.peak, "phases": report.phases,
                          "peak_weights": report.peak_weights, "planner_peak": prediction.peak_bytes,
                          "planner_stages": prediction.stages}, indent=1))
        return 0
    print(f"{run.width}x{run.height}x{run.frames} ({run.context_frames}-frame windows), cfg {run.cfg}, {run.dtype}: "
          + ("original algorithm's costs" if args.original else config.describe()))
    print(report.summary())
    print(f"planner: peak {prediction.peak_bytes / GB:.3f} GB in {prediction.where}; "
          + ", ".join(f"{k} {v / GB:.3f}" for k, v in prediction.stages.items()))
    print(f"metered in {report.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
