"""``python -m musepose plan``: predicted peak memory and time per mode.

The lead wires :func:`add_plan_subcommand` into ``musepose/cli.py`` (its ``_plan_hook``); the module also
runs on its own: ``python -m musepose.perf.cli --width 768 --height 768``.
"""
from __future__ import annotations

import argparse
import json
import sys

from .planner import DEVICES, MODES, choose_mode, plan_all_modes


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--context-frames", type=int, default=48, help="frames per context window")
    p.add_argument("--video-frames", type=int, default=None, help="frames of the whole video (default: one window)")
    p.add_argument("--context-overlap", type=int, default=4)
    p.add_argument("--windows-per-batch", type=int, default=1)
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16")
    p.add_argument("--cfg", type=float, default=3.5)
    p.add_argument("--attention", choices=["flash", "efficient", "cudnn", "math"], default="flash")
    p.add_argument("--chunk-mib", type=float, default=None, help="activation chunk of the chunked modes (256)")
    p.add_argument("--stream-budget-gb", type=float, default=None, help="lowvram: VRAM for streamed blocks (1.0)")
    p.add_argument("--device", choices=sorted(DEVICES), default="h100", help="device model for the time estimate")
    p.add_argument("--efficiency", type=float, default=None, help="fraction of peak FLOP/s assumed (0.45)")
    p.add_argument("--device-memory-gb", type=float, default=None,
                   help="also pick the fastest mode that fits this much memory (choose_mode)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of modes")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_plan_subcommand(subparsers) -> argparse.ArgumentParser:
    """Register ``plan`` on an argparse subparsers object; sets ``func`` so ``args.func(args)`` runs it."""
    p = subparsers.add_parser("plan", help="predict peak VRAM and time per step for each mode (no GPU needed)",
                              description=__doc__)
    _add_arguments(p)
    p.set_defaults(func=run_plan)
    return p


def run_plan(args) -> int:
    kwargs = dict(attention=args.attention, video_frames=args.video_frames, overlap=args.context_overlap,
                  device=args.device, efficiency=args.efficiency,
                  chunk_bytes=args.chunk_mib * 2**20 if args.chunk_mib else None,
                  stream_budget_bytes=args.stream_budget_gb * 1e9 if args.stream_budget_gb is not None else None)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; use {', '.join(MODES)}")
    plans = plan_all_modes(args.width, args.height, args.context_frames, args.cfg, args.dtype,
                           args.windows_per_batch, modes=modes, **kwargs)
    choice = None
    if args.device_memory_gb is not None:
        choice = choose_mode(args.device_memory_gb * 1e9, args.width, args.height, args.context_frames, args.cfg,
                             args.dtype, device=args.device, attention=args.attention, video_frames=args.video_frames,
                             overlap=args.context_overlap)
    if args.json:
        out = {"plans": [{**{k: v for k, v in p.__dict__.items()}, "peak_gb": p.peak_gb} for p in plans]}
        if choice is not None:
            out["choice"] = choice._asdict()
        print(json.dumps(out, indent=1, default=str))
        return 0
    first = plans[0]
    print(f"MusePose plan: {first.width}x{first.height}, {first.frames}-frame windows x {first.windows_per_batch}, "
          f"{first.windows} window(s) per step, cfg {args.cfg}, {args.dtype}, attention {args.attention}; "
          f"time on {args.device} at {(args.efficiency or DEVICES[args.device].efficiency):.0%} of peak (assumed)")
    print(f"FLOPs per window-step: {first.flops_per_window_step / 1e12:.1f} TFLOP "
          f"(floor {first.floor_seconds_per_window_step:.3f} s at 100% of peak)")
    for p in plans:
        print(p.summary())
    if choice is not None:
        verdict = "fits" if choice.fits else "DOES NOT FIT (smallest option shown)"
        print(f"auto for {args.device_memory_gb:g} GB: {choice.mode} ({verdict}); windows/batch "
              f"{choice.windows_per_batch}, cfg {choice.cfg_mode}, chunk "
              + (f"{choice.ff_chunk / 2**20:.0f} MiB" if choice.ff_chunk else "off")
              + (f", stream budget {choice.stream_budget_bytes / 1e9:.2f} GB" if choice.offload == "stream" else "")
              + f", decode chunk {choice.decode_chunk}; peak "
              f"{choice.predicted_peak_bytes / 1e9:.2f} GB")
    print("Predictions (allocated bytes, CUDA context not included). GPU figures are NOT measured yet: "
          "see benchmarks/RESULTS.md.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m musepose.perf.cli", description=__doc__)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_plan(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
