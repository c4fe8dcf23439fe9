"""The planner: exact weight counts, FLOPs against torch's counter, sane memory ordering, choose_mode."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from musepose.config import SD15_UNET, MotionModuleConfig
from musepose.perf.planner import (DTYPE_BYTES, MODES, ModeChoice, Levers, arch_counts, choose_mode, plan,
                                   plan_all_modes, pose_guider_flops, unet_call, weight_bytes)

ROOT = Path(__file__).resolve().parent.parent
FULL_KEYS = json.loads((ROOT / "tests" / "fixtures" / "musepose-full-keys.json").read_text())


def test_weight_totals_equal_exact_parameter_counts():
    counts = FULL_KEYS["parameter_counts_summary"]
    expected = {
        "reference_unet": counts["reference_unet.pth"],
        "denoising_unet": counts["runtime_denoising_unet_total_parameters"],  # SD-1.5 UNet + motion modules
        "pose_guider": counts["pose_guider.pth"],
        "image_encoder": counts["clip_image_encoder"],
        "vae": counts["vae_sd_vae_ft_mse"],
    }
    arch = arch_counts()
    assert arch.params == expected
    for dtype, size in DTYPE_BYTES.items():
        for component, n in expected.items():
            # parameters x dtype size, plus the motion modules' sinusoidal PE buffers (denoiser only)
            assert weight_bytes(component, dtype) == (n + arch.buffers[component]) * size
    assert arch.buffers["denoising_unet"] > 0 and arch.buffers["reference_unet"] == 0
    total_fp16 = sum(weight_bytes(c, "fp16") for c in expected)
    assert 5.1e9 < total_fp16 < 5.2e9  # the anchors' "~5 GB in fp16"


def test_fp8_weight_bytes_about_half():
    full = weight_bytes("denoising_unet", "fp16")
    fp8 = weight_bytes("denoising_unet", "fp16", fp8=True)
    assert 0.5 * full < fp8 < 0.56 * full


def test_stream_units_cover_the_unet():
    arch = arch_counts()
    units = arch.stream_units["denoising_unet"]
    assert len(units) > 50
    assert sum(units) + arch.stream_resident["denoising_unet"] == \
        arch.params["denoising_unet"] + arch.buffers["denoising_unet"]
    assert arch.stream_resident["denoising_unet"] < 0.01 * arch.params["denoising_unet"]


def _meta_flops(height, width, frames, original=False):
    from torch.utils.flop_counter import FlopCounterMode

    from musepose.models.reference_attention import ReferenceAttentionState, install_reference_processors
    from musepose.models.unet_body import spatial_self_attention_names
    from musepose.weights import build_models

    m = build_models(device="meta", components=["reference_unet", "denoising_unet"])
    state = ReferenceAttentionState(feature_dtype=None)
    install_reference_processors(m.reference_unet, state, "write", spatial_self_attention_names(m.reference_unet))
    install_reference_processors(m.denoising_unet, state, "read", spatial_self_attention_names(m.denoising_unet))
    if original:
        from musepose.perf.original_costs import OriginalCostReadProcessor

        modules = dict(m.denoising_unet.named_modules())
        for name in spatial_self_attention_names(m.denoising_unet):
            modules[name].set_processor(OriginalCostReadProcessor(state, name))
    ref_batch = 2 if original else 1
    with torch.device("meta"), torch.no_grad():
        state.writing = True
        m.reference_unet(torch.randn(ref_batch, 4, height // 8, width // 8), 0, torch.randn(ref_batch, 1, 768))
        state.writing, state.reading, state.num_uncond = False, True, frames
        x = torch.randn(2, 4, frames, height // 8, width // 8)
        pose = torch.randn(frames, 320, height // 8, width // 8)
        with FlopCounterMode(display=False) as counter:
            m.denoising_unet(x, torch.tensor(999), torch.randn(2, 1, 768), pose)
    return counter.get_total_flops()


@pytest.mark.parametrize("original", [False, True])
def test_flops_match_torch_flop_counter(original):
    """The analytic FLOP walk equals torch.utils.flop_counter on the real architecture (meta device)."""
    height = width = 256
    frames = 8
    counted = _meta_flops(height, width, frames, original)
    walk = unet_call(SD15_UNET, MotionModuleConfig(), 2 * frames, frames, height, width, 2, frames,
                     Levers(reference="original" if original else "ours"))
    assert abs(walk.flops - counted) / counted < 0.01


def test_pose_guider_flops_exact():
    from torch.utils.flop_counter import FlopCounterMode

    from musepose.weights import build_models

    pg = build_models(device="meta", components=["pose_guider"]).pose_guider
    with torch.device("meta"), torch.no_grad(), FlopCounterMode(display=False) as counter:
        pg(torch.randn(4, 3, 128, 96))
    assert counter.get_total_flops() == pose_guider_flops(4, 128, 96)


def test_modes_order_and_targets_shape():
    plans = {p.mode: p for p in plan_all_modes(768, 768, 48, 3.5, "fp16")}
    assert set(plans) == set(MODES)
    # memory: original >= fast > sequential > default > lowvram; time: the reverse, within reason
    assert plans["original"].peak_bytes >= plans["fast"].peak_bytes
    assert plans["fast"].peak_bytes > plans["sequential-cfg"].peak_bytes > plans["default"].peak_bytes
    assert plans["default"].peak_bytes > plans["lowvram"].peak_bytes
    assert plans["original"].flops_per_window_step > 1.15 * plans["fast"].flops_per_window_step
    assert plans["default"].seconds_per_window_step <= 1.10 * plans["fast"].seconds_per_window_step
    assert plans["lowvram"].seconds_per_window_step <= 1.5 * plans["fast"].seconds_per_window_step
    for p in plans.values():
        assert 1e9 < p.peak_bytes < 60e9
        assert p.floor_seconds_per_window_step < p.seconds_per_window_step
    # all weights resident in fp16: ~5.1 GB; the default mode keeps only the denoiser (+ pose guider)
    assert plans["fast"].weights_resident_bytes > 5.1e9
    assert 2.6e9 < plans["default"].weights_resident_bytes < 2.7e9


def test_math_backend_costs_more_memory():
    flash = plan(512, 512, 16, 3.5, "fp16", "fast", attention="flash")
    math_ = plan(512, 512, 16, 3.5, "fp16", "fast", attention="math")
    assert math_.peak_bytes > flash.peak_bytes


def test_peak_grows_with_size_and_frames():
    a = plan(512, 512, 48, 3.5, "fp16", "default")
    b = plan(768, 768, 48, 3.5, "fp16", "default")
    c = plan(768, 768, 24, 3.5, "fp16", "default")
    assert b.peak_bytes > a.peak_bytes and b.peak_bytes > c.peak_bytes
    assert plan(512, 512, 48, 1.0, "fp16", "fast").peak_bytes < plan(512, 512, 48, 3.5, "fp16", "fast").peak_bytes


def test_choose_mode():
    big = choose_mode(80e9, 768, 768, 48)
    assert isinstance(big, ModeChoice) and big.fits
    assert big.mode in ("fast", "model-offload")
    mode, windows, cfg_mode, ff_chunk, *rest = big  # unpacks as a tuple
    assert windows >= 1 and cfg_mode in ("batched", "sequential")
    six = choose_mode(6e9, 768, 768, 48)
    assert six.fits and six.predicted_peak_bytes <= 0.9 * 6e9
    four = choose_mode(4e9, 768, 768, 48)
    assert four.fits and four.offload == "stream" and four.stream_budget_bytes is not None
    tiny = choose_mode(0.5e9, 768, 768, 48)
    assert not tiny.fits
    # more memory never makes the choice slower
    times = [choose_mode(g * 1e9, 768, 768, 48).predicted_seconds_per_window_step for g in (4, 6, 12, 24, 80)]
    assert all(t2 <= t1 + 1e-9 for t1, t2 in zip(times, times[1:]))


def test_plan_cli():
    out = subprocess.run([sys.executable, "-m", "musepose.perf.cli", "--width", "768", "--height", "768",
                          "--context-frames", "48", "--dtype", "fp16", "--cfg", "3.5", "--device-memory-gb", "24",
                          "--windows-per-batch", "1"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [l for l in out.stdout.splitlines() if " peak " in l and "GB" in l]
    assert {l.split()[0] for l in lines} >= set(MODES)
    assert "auto for 24 GB" in out.stdout
    js = subprocess.run([sys.executable, "-m", "musepose.perf.cli", "--width", "512", "--height", "512", "--json",
                         "--device-memory-gb", "8"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    data = json.loads(js.stdout)
    assert len(data["plans"]) == len(MODES) and data["choice"]["fits"] in (True, False)


def test_plan_subcommand_registers():
    import argparse

    from musepose.perf.cli import add_plan_subcommand

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_plan_subcommand(sub)
    args = parser.parse_args(["plan", "--width", "512", "--height", "512", "--modes", "default,lowvram"])
    assert args.func(args) == 0


@pytest.mark.parametrize("width,cfg_mode,chunk", [(128, "batched", None), (192, "sequential", None),
                                                   (192, "batched", 64 * 1024)])
def test_activation_model_matches_measured_allocations(width, cfg_mode, chunk):
    """The activation walk against real CPU allocations (torch profiler) of one window on the tiny
    fixture: UNet call(s) within 25 %, pose guider within 10 %."""
    from musepose.config import UNetConfig
    from musepose.perf.levers import enable_activation_chunking
    from musepose.perf.planner import pose_guider_bytes
    from musepose.perf.validate import denoiser_call_peak
    from musepose.pipeline import MusePosePipeline
    from musepose.weights import load_models

    weights = ROOT / "tests" / "fixtures" / "musepose-tiny" / "pretrained_weights"
    models = load_models(weights)
    config = UNetConfig.from_json(weights / "sd-image-variations-diffusers" / "unet" / "config.json")
    pipe = MusePosePipeline(models)
    frames = 8
    handle = enable_activation_chunking(models.denoising_unet, chunk) if chunk else None
    try:
        measured = denoiser_call_peak(pipe, width, width, frames, True, cfg_mode)
    finally:
        if handle:
            handle.remove()
    calls = [(2 * frames, frames)] if cfg_mode == "batched" else [(frames, 0), (frames, frames)]
    predicted = max(unet_call(config, MotionModuleConfig(), n, frames, width, width, 4, n_cond,
                              Levers(chunk_bytes=chunk), pose_entries=frames).peak for n, n_cond in calls)
    assert abs(predicted - measured["unet"]) / measured["unet"] < 0.25, (predicted, measured)
    pg, out = pose_guider_bytes(frames, width, width, 4, 16, out_channels=config.block_out_channels[0])
    assert abs(pg + out - measured["pose_guider"]) / measured["pose_guider"] < 0.10
