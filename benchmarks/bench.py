#!/usr/bin/env python
"""MusePose Express benchmark: time per step and peak memory per memory configuration, side by side.

Builds the full-size architecture with random weights (meta device, then materialised in the chosen
dtype; no downloads), runs ``--steps`` denoising steps at W x H x frames with each configuration, then
decodes. Every configuration runs in its own subprocess, so each peak is clean (CUDA:
max_memory_allocated / max_memory_reserved; CPU: the child's peak RSS, weights included).

Configurations (``--configs``, comma-separated):

* ``original``: the original MusePose algorithm's costs (benchmarks/original_costs.py);
* ``fastest``: everything resident, CFG halves batched, no chunking (what auto picks on a big card);
* ``auto:GB@SIZE``: what auto picks for the full-size job at SIZE x SIZE x 48 with GB free, e.g.
  ``auto:6@768``. When this run is smaller than SIZE (a CPU stand-in), its chunk and weight budgets are
  scaled so every layer runs in about as many chunks, and the same share of the UNet streams, as at SIZE.

    python benchmarks/bench.py --smoke                                       # tiny config, seconds (CI)
    python benchmarks/bench.py --device cpu --precision fp32 --width 256 --height 256 --frames 16 \\
        --context-frames 16 --steps 2 --threads 2 --configs original,fastest,auto:6@768,auto:4@768
    python benchmarks/bench.py --device cuda --precision fp16 --width 768 --height 768 --frames 48 \\
        --configs original,fastest,auto:6@768,auto:4@768 --json out.jsonl

The first step of a run is warm-up: with ``--steps`` > 1 it is reported separately.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

GB = 1e9
SMOKE_UNET = dict(block_out_channels=(32, 32, 32, 32), attention_head_dim=8, cross_attention_dim=16,
                  norm_num_groups=8)
SMOKE_CLIP = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "patch_size": 32, "image_size": 224, "projection_dim": 16, "hidden_act": "quick_gelu",
              "layer_norm_eps": 1e-5, "num_channels": 3}
SMOKE_VAE = {"act_fn": "silu", "block_out_channels": [8, 16, 16, 16], "down_block_types": ["DownEncoderBlock2D"] * 4,
             "up_block_types": ["UpDecoderBlock2D"] * 4, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
             "layers_per_block": 2, "norm_num_groups": 4, "sample_size": 64}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny architecture, 64x64, 4 frames, 1 step (CI)")
    p.add_argument("--configs", default="original,fastest,auto:6@768,auto:4@768")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default=None,
                   help="default: fp16 on CUDA, fp32 on CPU")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--frames", type=int, default=16, help="video frames")
    p.add_argument("--context-frames", type=int, default=16)
    p.add_argument("--context-overlap", type=int, default=4)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--cfg", type=float, default=3.5)
    p.add_argument("--no-decode", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="append one JSON line per configuration to this file")
    p.add_argument("--markdown", default=None, help="write the result table (markdown) to this file")
    p.add_argument("--timeout", type=float, default=None, help="seconds per configuration")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def resolve_config(name: str, job, weights):
    """The MemoryConfig a configuration name stands for, for this run's job (module docstring)."""
    from musepose.pipeline import MemoryConfig, MemorySettings
    from musepose.pipeline.memory import choose
    from musepose.pipeline.planner import Job, WeightBytes, estimate

    if name in ("original", "fastest"):
        config = MemoryConfig(decode_chunk=1 if name == "original" else 8)
    elif name.startswith("auto:"):
        free, _, size = name[len("auto:"):].partition("@")
        size = int(size or job.width)
        full = Job(size, size, 48, 48, guided=job.guided, dtype_bytes=2)  # a 20-step run at that size
        full_weights = WeightBytes.full_size(2)
        config = choose(MemorySettings(), full, full_weights, float(free) * GB)[0]
        scale = (job.width * job.height * job.window_frames * job.dtype_bytes) / (size * size * 48 * 2)
        config = replace(config, decode_chunk=min(config.decode_chunk, job.video_frames),
                         chunk_bytes=int(config.chunk_bytes * scale) if config.chunk_bytes else None,
                         weight_budget=int(config.weight_budget * weights.denoising_unet / full_weights.denoising_unet)
                         if config.weight_budget is not None else None)
    else:
        raise ValueError(f"unknown configuration {name!r}")
    return replace(config, estimate=estimate(config, job, weights))


def run_child(args) -> dict:
    import numpy as np
    import torch

    from musepose.config import SD15_UNET, UNetConfig
    from musepose.device import DTYPES, peak_rss_bytes
    from musepose.pipeline import EnginePlacement, MusePosePipeline, SamplingSettings
    from musepose.pipeline.planner import WeightBytes
    from synthetic import random_models

    name = args.child
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if args.device == "auto" else args.device))
    precision = args.precision or ("fp16" if device.type == "cuda" else "fp32")
    dtype = DTYPES[precision]
    unet_config, clip, vae = (UNetConfig(**SMOKE_UNET), SMOKE_CLIP, SMOKE_VAE) if args.smoke else (SD15_UNET, None, None)
    started = time.perf_counter()
    models = random_models(dtype, device, unet_config=unet_config, clip_config=clip, vae_config=vae)
    W, H = args.width, args.height
    settings = SamplingSettings(width=W, height=H, frames=args.frames, steps=args.steps, cfg=args.cfg, seed=0,
                                context_frames=args.context_frames,
                                context_overlap=args.context_overlap).validated(args.frames)
    config = resolve_config(name, settings.job(models), WeightBytes.from_models(models))
    if config.offload_models and device.type != "cpu" and name != "original":
        for module in models.components().values():
            module.to("cpu")
        torch.cuda.empty_cache()
    build_s = time.perf_counter() - started
    if name == "original":
        from original_costs import OriginalCostPipeline

        pipe = OriginalCostPipeline(models, placement=EnginePlacement(device))
    else:
        pipe = MusePosePipeline(models, placement=EnginePlacement(device))
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    poses = np.zeros((args.frames, H, W, 3), dtype=np.uint8)
    for i in range(args.frames):  # sparse bright strokes, like pose renders
        poses[i, (i * 7) % H: (i * 7) % H + max(2, H // 32), W // 4: 3 * W // 4] = 255
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    latents = pipe.sample(reference, poses, settings, config)
    if device.type == "cuda":
        torch.cuda.synchronize()
    sample_s = time.perf_counter() - started
    sampling_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    decode_s = None
    finite = bool(torch.isfinite(latents).all())
    if not args.no_decode:
        started = time.perf_counter()
        video = pipe.decode(latents, config)
        if device.type == "cuda":
            torch.cuda.synchronize()
        decode_s = time.perf_counter() - started
        finite = finite and bool(torch.isfinite(video).all())
    steps = pipe.stats.seconds_per_step
    timed = steps[1:] if len(steps) > 1 else steps
    result = {
        "config": name, "memory": config.describe(), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "precision": precision,
        "width": W, "height": H, "frames": args.frames, "context_frames": args.context_frames, "cfg": args.cfg,
        "steps": args.steps, "smoke": bool(args.smoke), "threads": torch.get_num_threads(),
        "build_seconds": round(build_s, 2), "reference_seconds": round(pipe.stats.reference_seconds, 3),
        "seconds_per_step": round(sum(timed) / len(timed), 4), "step_seconds": [round(s, 4) for s in steps],
        "sample_seconds": round(sample_s, 3), "decode_seconds": round(decode_s, 3) if decode_s is not None else None,
        "decode_chunk": config.decode_chunk, "finite": finite,
        "planner_peak_gb": round(config.estimate.peak_bytes / GB, 3),
        "planner_tflop_per_window_step": round(config.estimate.flops_per_window_step / 1e12, 3),
    }
    if device.type == "cuda":
        result["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / GB, 3)
        result["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved(device) / GB, 3)
        result["sampling_peak_allocated_gb"] = round(sampling_peak / GB, 3)
    result["peak_rss_gb"] = round(peak_rss_bytes() / GB, 3)
    return result


def table(results: list[dict]) -> str:
    cuda = any(r.get("device", "").startswith("cuda") for r in results)
    base = next((r for r in results if r["config"] == "fastest"), None)
    lines = ["| configuration | s/step | vs fastest | peak " + ("alloc / reserved GB" if cuda else "RSS GB") +
             " | planner peak GB | reference s | decode s (chunk) | levers |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['config']} | error: {r['error'][:80]} | | | | | | |")
            continue
        ratio = f"{r['seconds_per_step'] / base['seconds_per_step']:.2f}x" if base else ""
        mem = (f"{r['peak_allocated_gb']:.2f} / {r['peak_reserved_gb']:.2f}" if cuda else f"{r['peak_rss_gb']:.2f}")
        dec = f"{r['decode_seconds']:.2f} ({r['decode_chunk']})" if r.get("decode_seconds") is not None else "-"
        lines.append(f"| {r['config']} | {r['seconds_per_step']:.3f} | {ratio} | {mem} | {r['planner_peak_gb']:.2f} | "
                     f"{r['reference_seconds']:.2f} | {dec} | {r['memory']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse(argv)
    if args.smoke:
        args.width = args.height = 64
        args.frames = args.context_frames = 4
        args.context_overlap = 1
        args.steps = 1
    if args.child:
        print("RESULT " + json.dumps(run_child(args)), flush=True)
        return 0
    results = []
    argv = list(argv if argv is not None else sys.argv[1:])
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        started = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--child", name],
                                  capture_output=True, text=True, cwd=str(REPO), timeout=args.timeout)
        except subprocess.TimeoutExpired:
            proc = subprocess.CompletedProcess([], 124, "", f"timed out after {args.timeout:g} s")
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            result = {"config": name, "error": " / ".join(tail) or f"exit {proc.returncode}"}
        else:
            result = json.loads(line[len("RESULT "):])
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        results.append(result)
        if "error" in result:
            print(f"{name}: ERROR {result['error']}", flush=True)
        else:
            print(f"{name}: {result['seconds_per_step']:.3f} s/step, peak RSS {result['peak_rss_gb']:.2f} GB; "
                  f"{result['memory']}", flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(result) + "\n")
    print()
    print(table(results))
    if args.markdown:
        Path(args.markdown).write_text(table(results) + "\n")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
