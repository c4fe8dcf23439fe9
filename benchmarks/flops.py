#!/usr/bin/env python
"""FLOPs per window-step, counted by ``torch.utils.flop_counter`` on the real code (meta device: no memory,
no arithmetic), before and after the exact cuts, and for the original algorithm.

A window-step is one window's share of one denoising step: both classifier-free-guidance halves of the
denoising UNet, plus the pose guider when it runs every step. Variants:

* ``original``: the original algorithm's attention costs (per-frame reference bank, unconditional
  self-attention computed twice) and its pose guider once per window per step;
* ``before cuts``: ours with diffusers' cross-attention (every query projected against the single CLIP
  token) and the pose guider once per window per step;
* ``after cuts``: the single-token cross-attention (``to_out(to_v(token))`` once per entry) and pose
  features computed once per window per run (not counted per step).

    python benchmarks/flops.py --sizes 512,768 --frames 48
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def window_step_flops(size: int, frames: int, variant: str) -> float:
    from musepose.models.reference_attention import ReferenceAttentionState, install_reference_processors
    from musepose.models.unet_body import spatial_self_attention_names
    from musepose.weights import build_models

    m = build_models(device="meta", components=["reference_unet", "denoising_unet", "pose_guider"])
    state = ReferenceAttentionState(feature_dtype=None)
    install_reference_processors(m.reference_unet, state, "write", spatial_self_attention_names(m.reference_unet))
    install_reference_processors(m.denoising_unet, state, "read", spatial_self_attention_names(m.denoising_unet))
    if variant in ("original", "before cuts"):
        for name, module in m.denoising_unet.named_modules():
            if name.endswith("attn2") and "motion_modules" not in name:
                module.set_processor(AttnProcessor2_0())
    if variant == "original":
        from original_costs import OriginalCostReadProcessor

        modules = dict(m.denoising_unet.named_modules())
        for name in spatial_self_attention_names(m.denoising_unet):
            modules[name].set_processor(OriginalCostReadProcessor(state, name))
    h = w = size // 8
    with torch.device("meta"), torch.no_grad():
        state.writing = True
        m.reference_unet(torch.randn(2 if variant == "original" else 1, 4, h, w), 0,
                         torch.randn(2 if variant == "original" else 1, 1, 768))
        state.writing, state.reading, state.num_uncond = False, True, frames
        with FlopCounterMode(display=False) as counter:
            pose = m.pose_guider(torch.randn(frames, 3, size, size))
            if variant == "after cuts":
                counter.flop_counts.clear()  # computed once per window per run, not per step
            m.denoising_unet(torch.randn(2, 4, frames, h, w), torch.tensor(999), torch.randn(2, 1, 768), pose)
    return float(counter.get_total_flops())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="512,768")
    p.add_argument("--frames", type=int, default=48)
    args = p.parse_args(argv)
    print("| size | original | before cuts | after cuts | cut | after vs original |")
    print("|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        o, b, a = (window_step_flops(size, args.frames, v) / 1e12 for v in ("original", "before cuts", "after cuts"))
        print(f"| {size}x{size}x{args.frames} | {o:.1f} TFLOP | {b:.1f} TFLOP | {a:.1f} TFLOP | "
              f"-{(1 - a / b) * 100:.1f} % | {o / a:.2f}x fewer |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
