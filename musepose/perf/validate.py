"""Check the planner's activation model against real allocations, without a GPU.

:func:`measured_peak_bytes` runs a callable under ``torch.profiler`` with memory profiling and returns
the highest total of bytes allocated (and not yet freed) during the call, from the profiler's
``[memory]`` events. On the CPU this is what ``torch.cuda.max_memory_allocated`` measures on a GPU
(minus the allocator's rounding), so it validates the activation walk of ``planner.unet_call``.
:func:`denoiser_call_peak` does it for one denoising-UNet call of a loaded model set.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Callable

import torch


def measured_peak_bytes(fn: Callable[[], object]) -> tuple[int, object]:
    """(peak bytes allocated above the level at the start, fn's result) on the CPU allocator."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as fh:
            events = json.load(fh)["traceEvents"]
    finally:
        os.unlink(path)
    memory = sorted((e for e in events if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type") == 0),
                    key=lambda e: e["ts"])
    total = peak = 0
    for event in memory:
        total += int(event["args"]["Bytes"])
        peak = max(peak, total)
    return peak, result


@torch.no_grad()
def denoiser_call_peak(pipe, width: int, height: int, frames: int, cfg: bool = True,
                       cfg_mode: str = "batched") -> dict:
    """Measured CPU activation peaks of one window: ``{"unet": ..., "pose_guider": ...}`` in bytes.

    The reference features are written first (outside the measurement). ``unet`` covers the denoising
    UNet call(s) of one window (both CFG halves: one batched call or two sequential ones, the first
    call's output held during the second), with the window's pose features already computed and held,
    as in ``MusePosePipeline._denoise_windows``; ``pose_guider`` covers computing those features."""
    import numpy as np

    from ..config import VAE_DOWNSCALE
    from ..pipeline.preprocess import PoseFrames

    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    poses = PoseFrames(rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8), width, height)
    cond = pipe.encode_reference(reference, width, height)
    m = pipe.models
    m.pose_guider.to(pipe.device)
    m.denoising_unet.to(pipe.device)
    dtype, device = pipe.dtype, pipe.device
    pose = poses.tensor(list(range(frames))).to(device, dtype)
    pose_peak, features = measured_peak_bytes(lambda: m.pose_guider.encode_frames(pose))
    x = torch.randn(1, 4, frames, height // VAE_DOWNSCALE, width // VAE_DOWNSCALE, device=device, dtype=dtype)
    t = torch.tensor(999, device=device)

    def run():
        if not cfg:
            return pipe._unet(x, t, cond, features, num_uncond=0)
        if cfg_mode == "sequential":
            uncond = pipe._unet(x, t, torch.zeros_like(cond), features, num_uncond=frames)
            return torch.cat([uncond, pipe._unet(x, t, cond, features, num_uncond=0)])
        return pipe._unet(torch.cat([x, x]), t, torch.cat([torch.zeros_like(cond), cond]), features,
                          num_uncond=frames)

    unet_peak, _ = measured_peak_bytes(run)
    return {"unet": unet_peak, "pose_guider": pose_peak}
