#!/usr/bin/env python
"""MusePose Express benchmark: time per step and peak memory per mode, next to the planner's prediction.

Builds the full-size architecture with random weights (meta device, then materialised in the chosen
dtype; no downloads), runs ``--steps`` denoising steps at W x H x frames in each mode, then decodes.
Every mode runs in its own subprocess so each peak is clean (CUDA: max_memory_allocated/reserved;
CPU: peak RSS of the child, which includes all weights in RAM).

    python benchmarks/bench.py --smoke                       # tiny config, seconds (CI)
    python benchmarks/bench.py --device cpu --dtype fp32 --width 256 --height 256 --frames 16 \\
        --context-frames 16 --steps 1 --modes fast,original
    python benchmarks/bench.py --device cuda --dtype fp16 --width 768 --height 768 --frames 48 \\
        --context-frames 48 --steps 3 --modes original,fast,default,lowvram --json out.json

Mode 'original' reproduces the original MusePose algorithm's costs (musepose/perf/original_costs.py).
The first step of a run is included in the mean only when there is a single step (``--steps 1``);
otherwise it is reported separately as warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

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
    p.add_argument("--modes", default="original,fast,sequential-cfg,model-offload,default,lowvram",
                   help="comma-separated modes (see `python -m musepose plan`)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None, help="default: fp16 on CUDA, fp32 on CPU")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--frames", type=int, default=16, help="video frames")
    p.add_argument("--context-frames", type=int, default=16)
    p.add_argument("--context-overlap", type=int, default=4)
    p.add_argument("--windows-per-batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--cfg", type=float, default=3.5)
    p.add_argument("--chunk-mib", type=float, default=None, help="activation chunk for chunked modes")
    p.add_argument("--stream-budget-gb", type=float, default=None, help="lowvram block budget")
    p.add_argument("--attention", default="auto", help="SDPA backend: auto, flash, efficient, cudnn, math")
    p.add_argument("--no-decode", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="append one JSON line per mode to this file")
    p.add_argument("--markdown", default=None, help="write the result table (markdown) to this file")
    p.add_argument("--timeout", type=float, default=None, help="seconds per mode (subprocess is killed after)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def run_child(args) -> dict:
    import numpy as np
    import torch

    from musepose.config import UNetConfig
    from musepose.device import DTYPES
    from musepose.perf.modes import setup_mode
    from musepose.perf.planner import MODES, plan
    from musepose.perf.levers import apply_sdpa_backend
    from musepose.perf.synthetic import random_models
    from musepose.pipeline import SamplingSettings

    mode = args.child
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if args.device == "auto" else args.device))
    dtype_name = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    dtype = DTYPES[dtype_name]
    spec = MODES[mode]
    if args.smoke:
        unet_config = UNetConfig(**SMOKE_UNET)
        clip, vae = SMOKE_CLIP, SMOKE_VAE
    else:
        from musepose.config import SD15_UNET

        unet_config, clip, vae = SD15_UNET, None, None
    started = time.perf_counter()
    # materialise on the compute device (fast random init), then park on the CPU for offloading modes
    models = random_models(dtype, device, unet_config=unet_config, clip_config=clip, vae_config=vae)
    if spec.placement != "none" and device.type != "cpu":
        for module in models.components().values():
            module.to("cpu")
        torch.cuda.empty_cache()
    build_s = time.perf_counter() - started
    chunk = int(args.chunk_mib * 2**20) if args.chunk_mib else None
    budget = int(args.stream_budget_gb * 1e9) if args.stream_budget_gb is not None else None
    setup = setup_mode(models, device, mode, chunk_bytes=chunk, stream_budget_bytes=budget,
                       windows_per_batch=args.windows_per_batch, decode_chunk=8)
    rng = np.random.default_rng(0)
    W, H = args.width, args.height
    reference = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    poses = np.zeros((args.frames, H, W, 3), dtype=np.uint8)
    for i in range(args.frames):  # sparse bright strokes, like pose renders
        poses[i, (i * 7) % H: (i * 7) % H + max(2, H // 32), W // 4: 3 * W // 4] = 255
    settings = SamplingSettings(width=W, height=H, num_frames=args.frames, steps=args.steps, guidance=args.cfg,
                                seed=0, context_frames=args.context_frames, context_overlap=args.context_overlap,
                                **setup.settings_overrides)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    if args.attention != "auto":  # restrict the UNets only (the VAE's 512-wide head cannot use flash)
        for unet in (models.denoising_unet, models.reference_unet):
            setup.handles.append(apply_sdpa_backend(unet, args.attention, device, dtype))
    pipe = setup.pipeline
    started = time.perf_counter()
    latents = pipe.sample(reference, poses, settings)
    if device.type == "cuda":
        torch.cuda.synchronize()
    sample_s = time.perf_counter() - started
    sampling_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    decode_s = None
    finite = bool(torch.isfinite(latents).all())
    if not args.no_decode:
        started = time.perf_counter()
        video = pipe.decode(latents, setup.decode_chunk)
        if device.type == "cuda":
            torch.cuda.synchronize()
        decode_s = time.perf_counter() - started
        finite = finite and bool(torch.isfinite(video).all())
    steps = pipe.stats.seconds_per_step
    timed = steps[1:] if len(steps) > 1 else steps
    result = {
        "mode": mode, "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else "cpu", "dtype": dtype_name, "width": W, "height": H, "frames": args.frames,
        "context_frames": args.context_frames, "windows_per_batch": args.windows_per_batch, "cfg": args.cfg,
        "steps": args.steps, "smoke": bool(args.smoke), "threads": torch.get_num_threads(),
        "build_seconds": round(build_s, 2), "reference_seconds": round(pipe.stats.reference_seconds, 3),
        "seconds_per_step": round(sum(timed) / len(timed), 4), "step_seconds": [round(s, 4) for s in steps],
        "sample_seconds": round(sample_s, 3), "decode_seconds": round(decode_s, 3) if decode_s is not None else None,
        "decode_chunk": setup.decode_chunk, "finite": finite, **setup.settings_overrides,
    }
    if device.type == "cuda":
        result["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 3)
        result["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved(device) / 1e9, 3)
        result["sampling_peak_allocated_gb"] = round(sampling_peak / 1e9, 3)
    result["peak_rss_gb"] = round(_peak_rss_bytes() / 1e9, 3)
    if hasattr(pipe.placement, "stats"):
        st = pipe.placement.stats
        result["stream_stats"] = {"loads": st.loads, "hits": st.hits, "prefetches": st.prefetches,
                                  "gb_moved": round(st.bytes_moved / 1e9, 2),
                                  "peak_resident_gb": round(st.peak_resident_bytes / 1e9, 3)}
    # the planner's prediction (full-size architecture) for the same settings
    pdtype = dtype_name
    prediction = plan(W, H, args.context_frames, args.cfg, pdtype, mode, windows_per_batch=args.windows_per_batch,
                      chunk_bytes=chunk, stream_budget_bytes=budget, video_frames=args.frames,
                      overlap=args.context_overlap,
                      device="h100" if device.type == "cuda" else "cpu",
                      attention="flash" if args.attention in ("auto", "flash") else args.attention)
    result["planner_peak_gb"] = round(prediction.peak_bytes / 1e9, 3)
    result["planner_peak_stage"] = prediction.peak_stage
    result["planner_seconds_per_window_step"] = round(prediction.seconds_per_window_step, 4)
    result["planner_floor_seconds_per_window_step"] = round(prediction.floor_seconds_per_window_step, 4)
    result["planner_tflop_per_window_step"] = round(prediction.flops_per_window_step / 1e12, 3)
    result["windows"] = prediction.windows
    setup.remove()
    return result


def table(results: list[dict]) -> str:
    cuda = any(r.get("device", "").startswith("cuda") for r in results)
    base = next((r for r in results if r["mode"] == "original"), None)
    lines = ["| mode | s/step | vs original | peak " + ("alloc / reserved GB" if cuda else "RSS GB") +
             " | planner peak GB | planner s/window-step | decode s (chunk) | finite |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['mode']} | error: {r['error'][:80]} | | | | | | |")
            continue
        ratio = f"{base['seconds_per_step'] / r['seconds_per_step']:.2f}x faster" if base and r is not base else ""
        mem = (f"{r['peak_allocated_gb']:.2f} / {r['peak_reserved_gb']:.2f}" if cuda else f"{r['peak_rss_gb']:.2f}")
        dec = f"{r['decode_seconds']:.2f} ({r['decode_chunk']})" if r.get("decode_seconds") is not None else "-"
        lines.append(f"| {r['mode']} | {r['seconds_per_step']:.3f} | {ratio} | {mem} | {r['planner_peak_gb']:.2f} | "
                     f"{r['planner_seconds_per_window_step']:.3f} | {dec} | {r['finite']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse(argv)
    if args.smoke:
        args.width = args.height = 64
        args.frames = args.context_frames = 4
        args.context_overlap = 1
        args.steps = 1
        if args.modes == parse([]).modes:
            args.modes = "original,fast,default,lowvram"
    if args.child:
        print("RESULT " + json.dumps(run_child(args)), flush=True)
        return 0
    results = []
    argv = list(argv if argv is not None else sys.argv[1:])
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        started = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--child", mode],
                                  capture_output=True, text=True, cwd=str(REPO), timeout=args.timeout)
        except subprocess.TimeoutExpired:
            proc = subprocess.CompletedProcess([], 124, "", f"timed out after {args.timeout:g} s")
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            result = {"mode": mode, "error": " / ".join(tail) or f"exit {proc.returncode}"}
        else:
            result = json.loads(line[len("RESULT "):])
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        results.append(result)
        if "error" in result:
            print(f"{mode}: ERROR {result['error']}", flush=True)
        else:
            mem = (f"peak alloc {result['peak_allocated_gb']:.2f} GB / reserved {result['peak_reserved_gb']:.2f} GB"
                   if "peak_allocated_gb" in result else f"peak RSS {result['peak_rss_gb']:.2f} GB")
            print(f"{mode}: {result['seconds_per_step']:.3f} s/step, {mem}; planner: peak {result['planner_peak_gb']:.2f} GB, "
                  f"{result['planner_seconds_per_window_step']:.3f} s/window-step", flush=True)
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
