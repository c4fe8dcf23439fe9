#!/usr/bin/env python
"""Measured vs predicted activation memory of one window, on the CPU, full-size architecture.

No GPU needed: the CPU allocator's live bytes are recorded with the torch profiler during the denoising
UNet call(s) of one window (random full-size weights, fp32), for ours (batched CFG, sequential CFG,
sequential + activation chunking) and for the original algorithm's costs, next to the planner's
activation prediction for the same call. This is the CPU stand-in for max_memory_allocated.

CPU caveat: oneDNN reorders each convolution's weight into a temporary of the weight's size on every
call (the largest, a 2560->1280 3x3 conv, is 112.5 MiB in fp32), so small sizes are dominated by that
floor; use 256x256x16 or more, where activations are far larger. GPUs have cuDNN workspaces instead.

    python benchmarks/activation_check.py --width 128 --height 128 --frames 8 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--chunk-mib", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import torch

    from musepose.config import SD15_UNET, MotionModuleConfig
    from musepose.perf.levers import enable_activation_chunking
    from musepose.perf.original_costs import OriginalCostPipeline
    from musepose.perf.planner import Levers, unet_call
    from musepose.perf.synthetic import random_models
    from musepose.perf.validate import denoiser_call_peak
    from musepose.pipeline import MusePosePipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    models = random_models(torch.float32, "cpu")
    W, H, F = args.width, args.height, args.frames
    chunk = int(args.chunk_mib * 2**20)
    rows = []
    cases = [("fast (batched CFG)", "ours", "batched", None), ("sequential CFG", "ours", "sequential", None),
             ("default (sequential + chunking)", "ours", "sequential", chunk),
             ("original algorithm", "original", "batched", None)]
    for label, kind, cfg_mode, chunk_bytes in cases:
        pipe = OriginalCostPipeline(models) if kind == "original" else MusePosePipeline(models)
        handle = enable_activation_chunking(models.denoising_unet, chunk_bytes) if chunk_bytes else None
        started = time.perf_counter()
        try:
            if kind == "original":
                pipe._cfg = True
            measured = denoiser_call_peak(pipe, W, H, F, True, cfg_mode)
        finally:
            if handle:
                handle.remove()
        calls = [(2 * F, F)] if cfg_mode == "batched" else [(F, 0), (F, F)]
        levers = Levers(chunk_bytes=chunk_bytes, reference="original" if kind == "original" else "ours")
        pose_entries = 0 if kind == "original" else F
        predicted = max(unet_call(SD15_UNET, MotionModuleConfig(), n, F, H, W, 4, nc, levers, pose_entries).peak
                        for n, nc in calls)
        row = {"case": label, "measured_mb": round(measured["unet"] / 2**20, 1),
               "predicted_mb": round(predicted / 2**20, 1), "seconds": round(time.perf_counter() - started, 1)}
        rows.append(row)
        print(row, flush=True)
    print()
    reorder = max(m.weight.numel() * 4 for m in models.denoising_unet.modules() if isinstance(m, torch.nn.Conv2d))
    print(f"CPU conv-weight reorder floor (largest conv weight, fp32): {reorder / 2**20:.1f} MiB")
    print(f"| case ({W}x{H}x{F}, fp32, cfg) | measured UNet-call peak MiB | planner MiB | error |")
    print("|---|---|---|---|")
    for r in rows:
        err = (r["predicted_mb"] - r["measured_mb"]) / r["measured_mb"]
        print(f"| {r['case']} | {r['measured_mb']:.1f} | {r['predicted_mb']:.1f} | {err:+.0%} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
