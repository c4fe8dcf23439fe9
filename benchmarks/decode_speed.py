#!/usr/bin/env python
"""VAE decode time, ours vs the original's frame-by-frame decode, side by side in one process.

The full-size SD VAE with random weights (benchmarks/synthetic.py; no downloads) decodes the same random
latents ``(1, 4, F, H/8, W/8)``:

* ``original``: :class:`original_costs.OriginalCostPipeline`'s decode, one frame per VAE call, as the
  original ``Pose2VideoPipeline.decode_latents`` does;
* ``ours``: ``MusePosePipeline.decode_chunks`` with the chunk the engine picks for this size on this
  device (``--decode-chunk 0``, what the CLI runs), or ``ours:N`` for N frames per call.

Each configuration runs ``--repeats`` times, interleaved (original, ours, original, ours, ...) so that a
machine shared with other work slows both alike. Reported per configuration: wall seconds and CPU
seconds (user + system, this process) per frame, the median over repeats, and each one's ratio to the
original. The outputs are compared too (max abs difference; they must agree to float rounding).

    python benchmarks/decode_speed.py --width 256 --height 256 --frames 8 --repeats 2 --configs original,ours
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def cpu_seconds() -> tuple[float, float]:
    """(user, system) CPU seconds of this process so far: on a machine shared with other work, the CPU time
    a decode takes moves far less than its wall time (which counts the waits for a core)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def decoder(name: str, models, said: list[str]):
    """latents -> video ``[F, H, W, 3]`` for a configuration name (module docstring); each run appends the
    decode line it says ("decode: N frame(s) per VAE call") to ``said``."""
    import torch

    from musepose.pipeline import EnginePlacement, MemorySettings, MusePosePipeline
    from original_costs import OriginalCostPipeline

    if name == "original":
        original = OriginalCostPipeline(models, placement=EnginePlacement("cpu"))
        return lambda latents: original.decode(latents, on_message=said.append)
    pipe = MusePosePipeline(models, placement=EnginePlacement("cpu"))
    memory = MemorySettings(decode_chunk=int(name.partition(":")[2] or 0))
    return lambda latents: torch.cat(list(pipe.decode_chunks(latents, memory, on_message=said.append)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--configs", default="original,ours")
    args = p.parse_args(argv)

    import torch

    from synthetic import random_models

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    models = random_models(torch.float32, "cpu", components=["vae"])
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((1, 4, args.frames, args.height // 8, args.width // 8), generator=generator) * 0.18215
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    said = {name: [] for name in names}
    runs = {name: decoder(name, models, said[name]) for name in names}
    times = {name: ([], []) for name in names}
    outputs = {}
    print(f"VAE decode, full-size random weights, fp32, CPU, {args.threads} threads, {args.width}x{args.height}x"
          f"{args.frames}, {args.repeats} interleaved repeats", flush=True)
    for repeat in range(args.repeats):
        for name in names:
            wall, (user, system) = time.perf_counter(), cpu_seconds()
            outputs[name] = runs[name](latents)
            wall = time.perf_counter() - wall
            user, system = (after - before for after, before in zip(cpu_seconds(), (user, system)))
            times[name][0].append(wall / args.frames)
            times[name][1].append((user + system) / args.frames)
            print(f"  repeat {repeat + 1} {name:10s}: wall {wall:6.1f} s, CPU {user + system:6.1f} s "
                  f"(system {system:5.1f} s)", flush=True)
    base = names[0]
    print(f"\n| configuration | frames per call | wall s/frame | CPU s/frame | wall vs {base} | CPU vs {base} | "
          f"max abs vs {base} |\n|---|---|---|---|---|---|---|")
    for name in names:
        wall, cpu = statistics.median(times[name][0]), statistics.median(times[name][1])
        base_wall, base_cpu = statistics.median(times[base][0]), statistics.median(times[base][1])
        chunk = said[name][-1].split(":")[1].split()[0]
        diff = float((outputs[name] - outputs[base]).abs().max())
        print(f"| {name} | {chunk} | {wall:.2f} | {cpu:.2f} | {wall / base_wall:.2f}x | {cpu / base_cpu:.2f}x | "
              f"{diff:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
