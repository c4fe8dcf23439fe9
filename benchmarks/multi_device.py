#!/usr/bin/env python
"""Time per denoising step on 1 device against N: devices of one process (threads), or torchrun ranks.

Full-size architecture with random weights (benchmarks/synthetic.py; no downloads), the same weights on
every device. The first step is a warm-up and is left out of the time per step. Reports, per device
count: seconds per step, the speed-up over one device, the ideal speed-up (rounds of window batches:
``ceil(batches / 1) / ceil(batches / N)``), the planner's predicted ratio, the largest difference of the
final latents from the one-device run, and each device's peak memory.

    # devices of one process (default: every visible GPU), counts 1..N
    python benchmarks/multi_device.py --devices cuda:0,cuda:1 --width 512 --height 512 --frames 180
    # one process per GPU (NCCL); rank 0 also runs the one-device baseline and compares
    torchrun --nproc-per-node 2 benchmarks/multi_device.py --distributed --width 512 --height 512 --frames 180
    # seconds on the CPU (tiny architecture, two CPU workers): checks the script, not a figure
    python benchmarks/multi_device.py --smoke

At 512x512 with 48-frame windows and overlap 4, 180 frames are 4 windows: 2 GPUs can at best halve a
step (2 rounds instead of 4), 3 GPUs too, 4 GPUs quarter it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

GB = 1e9


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", default=None, help="comma-separated (default: every visible GPU, else cpu,cpu)")
    p.add_argument("--counts", default=None, help="device counts to time, e.g. 1,2,4 (default 1..N)")
    p.add_argument("--distributed", action="store_true", help="run as torchrun ranks (one GPU each)")
    p.add_argument("--smoke", action="store_true", help="tiny architecture on the CPU, seconds")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default=None,
                   help="default: fp16 on CUDA, fp32 on the CPU")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--frames", type=int, default=180)
    p.add_argument("--context-frames", type=int, default=48)
    p.add_argument("--context-overlap", type=int, default=4)
    p.add_argument("--windows-per-batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=3, help="the first is a warm-up")
    p.add_argument("--cfg", type=float, default=3.5)
    p.add_argument("--offload", default="none", help="memory level of every device (default none: all resident)")
    p.add_argument("--json", default=None, help="append one JSON line per device count to this file")
    args = p.parse_args(argv)
    if args.smoke:
        args.width = args.height = 64
        args.frames, args.context_frames, args.context_overlap, args.steps = 12, 4, 1, 2
    return args


def build(args, device):
    """Random full-size (or smoke) models on ``device``: the same numbers for the same seed on any device."""
    import torch

    from musepose.config import SD15_UNET, UNetConfig
    from musepose.device import DTYPES
    from synthetic import random_models

    precision = args.precision or ("fp16" if device.type == "cuda" else "fp32")
    if args.smoke:
        from bench import SMOKE_CLIP, SMOKE_UNET, SMOKE_VAE

        unet, clip, vae = UNetConfig(**SMOKE_UNET), SMOKE_CLIP, SMOKE_VAE
    else:
        unet, clip, vae = SD15_UNET, None, None
    torch.manual_seed(0)
    return random_models(DTYPES[precision], device, unet_config=unet, clip_config=clip, vae_config=vae), precision


def inputs(args):
    import numpy as np

    from musepose.pipeline import SamplingSettings

    W, H = args.width, args.height
    settings = SamplingSettings(width=W, height=H, frames=args.frames, steps=args.steps, cfg=args.cfg, seed=0,
                                context_frames=args.context_frames, context_overlap=args.context_overlap,
                                windows_per_batch=args.windows_per_batch).validated(args.frames)
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    poses = np.zeros((args.frames, H, W, 3), dtype=np.uint8)
    for i in range(args.frames):  # sparse bright strokes, like pose renders
        poses[i, (i * 7) % H: (i * 7) % H + max(2, H // 32), W // 4: 3 * W // 4] = 255
    return settings, reference, poses


def timed_run(pipe, settings, reference, poses, memory, devices, **kwargs):
    """(latents, seconds per step after the warm-up, peak allocated GB per CUDA device)."""
    import torch

    cuda = [d for d in devices if d.type == "cuda"]
    for d in cuda:
        torch.cuda.synchronize(d)
        torch.cuda.reset_peak_memory_stats(d)
    latents = pipe.sample(reference, poses, settings, memory, **kwargs)
    for d in cuda:
        torch.cuda.synchronize(d)
    steps = pipe.stats.seconds_per_step
    timed = steps[1:] if len(steps) > 1 else steps
    peaks = {str(d): round(torch.cuda.max_memory_allocated(d) / GB, 2) for d in cuda}
    return latents, sum(timed) / len(timed), peaks


def predicted(settings, models, count: int) -> float:
    """The planner's predicted sampling time for ``count`` devices (the configuration auto would pick)."""
    from musepose.pipeline import MemoryConfig
    from musepose.pipeline.planner import WeightBytes, estimate

    job = replace(settings.job(models), devices=count)
    return estimate(MemoryConfig(), job, WeightBytes.from_models(models)).seconds


def report(rows: list[dict], json_path: str | None) -> None:
    print("| devices | s/step | speed-up | ideal (rounds) | planner (whole run) | max abs diff vs 1 | peak GB per device |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['devices']} | {r['seconds_per_step']:.3f} | {r['speedup']:.2f}x | {r['ideal']:.2f}x | "
              f"{r['planner']:.2f}x | {r['max_abs_diff']:.2e} | {r['peaks'] or '-'} |")
        if json_path:
            with open(json_path, "a") as f:
                f.write(json.dumps(r) + "\n")


def in_process(args) -> int:
    import torch

    from musepose.pipeline import EnginePlacement, MemorySettings, MusePosePipeline
    from musepose.pipeline.parallel import release_replica, replicate

    if args.devices:
        devices = [torch.device(d) for d in args.devices.split(",")]
    elif torch.cuda.device_count() > 1:
        devices = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    else:
        devices = [torch.device("cpu")] * 2
    counts = [int(c) for c in args.counts.split(",")] if args.counts else list(range(1, len(devices) + 1))
    models, precision = build(args, devices[0])
    pipe = MusePosePipeline(models, placement=EnginePlacement(devices[0]))
    replicas = []
    for device in devices[1:max(counts)]:
        replica = replicate(pipe, device)  # a copy of the first device's weights...
        for module in replica.models.components().values():
            module.to(device)  # ...moved to its own device now
        replicas.append(replica)
    settings, reference, poses = inputs(args)
    memory = MemorySettings(offload=args.offload)
    batches = len(settings.window_batches())
    print(f"{args.width}x{args.height}x{args.frames}, {len(settings.windows())} windows of {args.context_frames} "
          f"in {batches} batches, {precision}, devices {', '.join(map(str, devices[:max(counts)]))}",
          file=sys.stderr)
    rows, baseline = [], None
    for count in counts:
        latents, per_step, peaks = timed_run(pipe, settings, reference, poses, memory, devices[:count],
                                             replicas=replicas[:count - 1])
        if baseline is None:
            baseline = (latents, per_step, predicted(settings, models, count), count)
        rows.append(dict(devices=count, mode="threads", seconds_per_step=per_step,
                         speedup=baseline[1] / per_step,
                         ideal=math.ceil(batches / baseline[3]) / math.ceil(batches / count),
                         planner=baseline[2] / predicted(settings, models, count),
                         max_abs_diff=float((latents - baseline[0]).abs().max()), peaks=peaks,
                         width=args.width, height=args.height, frames=args.frames, precision=precision,
                         smoke=args.smoke, names=[torch.cuda.get_device_name(d) if d.type == "cuda" else "cpu"
                                                  for d in devices[:count]]))
    for replica in replicas:
        release_replica(replica)
    report(rows, args.json)
    return 0


def distributed(args) -> int:
    import torch.distributed as dist

    from musepose.pipeline import EnginePlacement, MemorySettings, MusePosePipeline
    from musepose.pipeline.distributed import start_group

    group = start_group("cpu" if args.smoke else "auto", timeout_s=1800)
    models, precision = build(args, group.device)
    pipe = MusePosePipeline(models, placement=EnginePlacement(group.device))
    settings, reference, poses = inputs(args)
    memory = MemorySettings(offload=args.offload)
    latents, per_step, peaks = timed_run(pipe, settings, reference, poses, memory, [group.device], group=group)
    rows = None
    if group.rank == 0:  # the one-device baseline, while the others wait
        single, single_step, _ = timed_run(pipe, settings, reference, poses, memory, [group.device])
        batches = len(settings.window_batches())
        n = group.world_size
        rows = [dict(devices=n, mode="ranks", seconds_per_step=per_step, speedup=single_step / per_step,
                     ideal=batches / math.ceil(batches / n),
                     planner=predicted(settings, models, 1) / predicted(settings, models, n),
                     max_abs_diff=float((latents - single).abs().max()), peaks=peaks, one_device_seconds=single_step,
                     width=args.width, height=args.height, frames=args.frames, precision=precision,
                     smoke=args.smoke, backend=group.backend)]
    dist.barrier()
    if rows:
        report(rows, args.json)
    group.close()
    return 0


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    torch.set_flush_denormal(True)
    return distributed(args) if args.distributed else in_process(args)


if __name__ == "__main__":
    sys.exit(main())
