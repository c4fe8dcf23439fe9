#!/usr/bin/env python
"""FLOP floor of one window-step, and how close measured window-steps get to it.

For each size: FLOPs of one window-step (both CFG halves, one 48-frame window) counted two ways, the
planner's analytic walk and torch.utils.flop_counter on the real architecture on the meta device; the
floor time at the device's datasheet peak and at the measured dense fp16 GEMM peak (an 8192^3 matmul);
and, given a bench JSONL (--results), the measured window-step time of each mode as a multiple of the
floor. Target: our fastest mode within 2x of the floor.

    python benchmarks/flop_floor.py --sizes 768,512 --frames 48 --results results.jsonl --out floor.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def meta_flops(height: int, width: int, frames: int, cfg: bool = True) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from musepose.models.reference_attention import ReferenceAttentionState, install_reference_processors
    from musepose.models.unet_body import spatial_self_attention_names
    from musepose.weights import build_models

    m = build_models(device="meta", components=["reference_unet", "denoising_unet", "pose_guider"])
    state = ReferenceAttentionState(feature_dtype=None)
    install_reference_processors(m.reference_unet, state, "write", spatial_self_attention_names(m.reference_unet))
    install_reference_processors(m.denoising_unet, state, "read", spatial_self_attention_names(m.denoising_unet))
    b = 2 if cfg else 1
    with torch.device("meta"), torch.no_grad():
        state.writing = True
        m.reference_unet(torch.randn(1, 4, height // 8, width // 8), 0, torch.randn(1, 1, 768))
        state.writing, state.reading, state.num_uncond = False, True, frames if cfg else 0
        with FlopCounterMode(display=False) as counter:
            pose = m.pose_guider(torch.randn(frames, 3, height, width))
            m.denoising_unet(torch.randn(b, 4, frames, height // 8, width // 8), torch.tensor(999),
                             torch.randn(b, 1, 768), pose)
    return float(counter.get_total_flops())


def gemm_peak(device: str = "cuda", n: int = 8192, dtype: str = "fp16") -> float | None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return None
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    reps = 20
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - started)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="768,512")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--device", default="h100", help="planner device entry for the datasheet peak")
    p.add_argument("--results", default=None, help="bench JSONL to compare against")
    p.add_argument("--no-gemm", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from musepose.perf.planner import DEVICES, plan

    peak = DEVICES[args.device].peak_flops
    measured_peak = None if args.no_gemm else gemm_peak()
    results = []
    if args.results and Path(args.results).exists():
        results = [json.loads(l) for l in Path(args.results).read_text().splitlines() if l.strip()]
    lines = [f"FLOP floor (datasheet peak {peak / 1e12:.0f} TFLOP/s"
             + (f", measured fp16 GEMM peak {measured_peak / 1e12:.0f} TFLOP/s" if measured_peak else "") + ")", "",
             "| size | frames | TFLOP/window-step (planner) | TFLOP (torch counter) | floor s (datasheet) | floor s (GEMM) |",
             "|---|---|---|---|---|---|"]
    floors = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        analytic = plan(size, size, args.frames, 3.5, "fp16", "fast").flops_per_window_step
        counted = meta_flops(size, size, args.frames)
        floor = counted / peak
        floor_gemm = counted / measured_peak if measured_peak else None
        floors[size] = (floor, floor_gemm)
        lines.append(f"| {size}x{size} | {args.frames} | {analytic / 1e12:.1f} | {counted / 1e12:.1f} | {floor:.3f} | "
                     + (f"{floor_gemm:.3f} |" if floor_gemm else "- |"))
    if results:
        lines += ["", "| size | mode | s/window-step | x floor (datasheet) | x floor (GEMM) | vs original |",
                  "|---|---|---|---|---|---|"]
        for r in results:
            if "error" in r or r.get("width") not in floors or r.get("frames") != r.get("context_frames"):
                continue
            floor, floor_gemm = floors[r["width"]]
            base = next((o for o in results if o.get("mode") == "original" and o.get("width") == r["width"]
                         and "error" not in o), None)
            vs = f"{base['seconds_per_step'] / r['seconds_per_step']:.2f}x faster" if base and base is not r else ""
            lines.append(f"| {r['width']} | {r['mode']} | {r['seconds_per_step']:.3f} | {r['seconds_per_step'] / floor:.2f} | "
                         + (f"{r['seconds_per_step'] / floor_gemm:.2f}" if floor_gemm else "-") + f" | {vs} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
