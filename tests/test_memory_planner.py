"""The planner auto decides with: exact weight bytes, FLOPs as torch counts them, and peaks that agree with
the fake-tensor VRAM meter (benchmarks/vram_meter.py) within 10 %."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
FULL_KEYS = json.loads((ROOT / "tests" / "fixtures" / "musepose-full-keys.json").read_text())
MiB = 1 << 20


def test_weight_bytes_are_the_exact_parameter_counts():
    from musepose.pipeline.planner import WeightBytes

    counts = FULL_KEYS["parameter_counts_summary"]
    expected = {
        "reference_unet": counts["reference_unet.pth"],
        "denoising_unet": counts["runtime_denoising_unet_total_parameters"],  # SD-1.5 UNet + motion modules
        "pose_guider": counts["pose_guider.pth"],
        "image_encoder": counts["clip_image_encoder"],
        "vae": counts["vae_sd_vae_ft_mse"],
    }
    weights = WeightBytes.full_size(2)
    for component, parameters in expected.items():
        got = getattr(weights, component)
        # fp16 parameters (+ the motion modules' positional-encoding buffers), each tensor rounded up to
        # 512 bytes like the CUDA caching allocator: within 1 % of 2 bytes per parameter
        assert 2 * parameters <= got <= 2 * parameters * 1.01, component
    assert 5.1e9 < weights.total() < 5.2e9  # "~5 GB in fp16"
    assert weights.denoiser_fixed < 0.01 * weights.denoising_unet  # streaming leaves little resident


def test_fp8_weight_bytes_about_half():
    from musepose.pipeline.planner import WeightBytes

    full, fp8 = WeightBytes.full_size(2), WeightBytes.full_size(2, fp8=True)
    assert 0.5 * full.denoising_unet < fp8.denoising_unet < 0.56 * full.denoising_unet


def _counted_flops(height, width, frames):
    from torch.utils.flop_counter import FlopCounterMode

    from musepose.models.reference_attention import ReferenceAttentionState, install_reference_processors
    from musepose.models.unet_body import spatial_self_attention_names
    from musepose.weights import build_models

    m = build_models(device="meta", components=["reference_unet", "denoising_unet"])
    state = ReferenceAttentionState(feature_dtype=None)
    install_reference_processors(m.reference_unet, state, "write", spatial_self_attention_names(m.reference_unet))
    install_reference_processors(m.denoising_unet, state, "read", spatial_self_attention_names(m.denoising_unet))
    with torch.device("meta"), torch.no_grad():
        state.writing = True
        with FlopCounterMode(display=False) as ref_counter:
            m.reference_unet(torch.randn(1, 4, height // 8, width // 8), 0, torch.randn(1, 1, 768))
        state.writing, state.reading, state.num_uncond = False, True, frames
        x = torch.randn(2, 4, frames, height // 8, width // 8)
        pose = torch.randn(frames, 320, height // 8, width // 8)
        with FlopCounterMode(display=False) as counter:
            m.denoising_unet(x, torch.tensor(999), torch.randn(2, 1, 768), pose)
    return counter.get_total_flops(), ref_counter.get_total_flops()


@pytest.mark.parametrize("height,width,frames", [(64, 64, 4), (96, 64, 6)])
def test_flops_match_torch_flop_counter(height, width, frames):
    from musepose.pipeline.planner import Job, unet_flops

    counted, counted_ref = _counted_flops(height, width, frames)
    job = Job(width, height, frames, frames)
    assert unet_flops(job, 2 * frames, frames) == pytest.approx(counted, rel=0.01)
    assert unet_flops(job, 1, 0, motion=False) == pytest.approx(counted_ref, rel=0.02)


def _planner_name(module_name: str) -> str | None:
    """A UNet layer's name as the planner's walk names it (``down_blocks.1.attentions.0`` -> ``down1.attn0``)."""
    kinds = {"resnets": "resnet", "attentions": "attn", "motion_modules": "motion"}
    if module_name == "conv_norm_out":
        return module_name
    if match := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|motion_modules)\.(\d+)", module_name):
        return f"{match[1]}{match[2]}.{kinds[match[3]]}{match[4]}"
    if match := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(downsamplers|upsamplers)\.0", module_name):
        return f"{match[1]}{match[2]}." + {"downsamplers": "downsample", "upsamplers": "upsample"}[match[3]]
    if match := re.fullmatch(r"mid_block\.(resnets|attentions|motion_modules)\.(\d+)", module_name):
        return f"mid.{kinds[match[1]]}" + (match[2] if match[1] == "resnets" else "")
    return None


def _layers_called(unet, *args) -> list[str]:
    """The layers a real forward pass of ``unet`` calls, in order, by their planner names."""
    called = []
    hooks = [module.register_forward_pre_hook(lambda module, inputs, name=name: called.append(name))
             for module_name, module in unet.named_modules() if (name := _planner_name(module_name))]
    try:
        unet(*args)
    finally:
        for hook in hooks:
            hook.remove()
    return called


def test_the_planner_walks_the_layers_of_the_real_walk():
    """planner.unet_call replays UNetWalk.run by hand: the same layers in the same order, for both UNets.
    The one difference, pinned here: an up block's upsampler runs inside the next up block's first resnet
    (its output is made chunk by chunk there), and the planner counts it as part of that resnet."""
    from musepose.pipeline.planner import Job, unet_call
    from musepose.weights import build_models

    height = width = 64
    frames = 4
    m = build_models(device="meta", components=["reference_unet", "denoising_unet"])
    with torch.device("meta"), torch.no_grad():
        reference = _layers_called(m.reference_unet, torch.randn(1, 4, height // 8, width // 8), 0,
                                   torch.randn(1, 1, 768))
        denoiser = _layers_called(m.denoising_unet, torch.randn(2, 4, frames, height // 8, width // 8),
                                  torch.tensor(999), torch.randn(2, 1, 768))
    job = Job(width, height, frames, frames)
    for called, replayed in ((reference, unet_call(job, 1, 0, None, motion=False).layers),
                             (denoiser, unet_call(job, 2 * frames, frames, None).layers)):
        upsamplers = [name for name in called if name.endswith(".upsample")]
        assert upsamplers == ["up0.upsample", "up1.upsample", "up2.upsample"]
        for name in upsamplers:
            assert called[called.index(name) + 1] == f"up{int(name[2]) + 1}.resnet0"
        assert [name for name in called if name not in upsamplers] == replayed
    assert "conv_norm_out" in denoiser and not any("motion" in name for name in reference)


def test_frame_chunking_bounds_each_call():
    from musepose.models.unet_body import FrameChunking

    assert FrameChunking(None).entries(96, 10 ** 12) == 96
    assert FrameChunking(100).entries(96, 10 ** 12) == 1  # never below one entry
    assert FrameChunking(10 * MiB).entries(96, MiB) == 10
    assert FrameChunking(10 ** 12).entries(96, MiB) == 96


SMALL = dict(unet=dict(block_out_channels=(32, 64, 128, 128), attention_head_dim=8, cross_attention_dim=32,
                       norm_num_groups=8),
             clip={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "patch_size": 32, "image_size": 224, "projection_dim": 32, "hidden_act": "quick_gelu",
                   "layer_norm_eps": 1e-5, "num_channels": 3},
             vae={"act_fn": "silu", "block_out_channels": [16, 32, 64, 64], "down_block_types": ["DownEncoderBlock2D"] * 4,
                  "up_block_types": ["UpDecoderBlock2D"] * 4, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
                  "layers_per_block": 2, "norm_num_groups": 8, "sample_size": 64})


@pytest.mark.parametrize("config", [
    dict(offload="none", cfg_mode="batched"),
    dict(offload="model", cfg_mode="sequential", chunk_bytes=1 * MiB, offload_models=True, pose_cache=False,
         decode_chunk=4),
    dict(offload="lowvram", cfg_mode="sequential", chunk_bytes=512 * 1024, offload_models=True, pose_cache=False,
         weight_budget=2 * MiB, decode_chunk=2),
])
def test_planner_agrees_with_the_meter(config):
    """The CI-sized check of the planner against the meter: the full architecture's layer structure at
    a small width (32..128 channels), 128x128, 16 frames in two windows. benchmarks/RESULTS.md has the
    full-size comparison at 512 and 768."""
    from vram_meter import Run, measure, planner_estimate

    from musepose.config import UNetConfig
    from musepose.pipeline import MemoryConfig

    run = Run(128, 128, 16, 12, 8, unet_config=UNetConfig(**SMALL["unet"]), clip_config=SMALL["clip"],
              vae_config=SMALL["vae"])
    report, used = measure(run, MemoryConfig(**config))
    estimate = planner_estimate(run, used)
    assert estimate.peak_bytes == pytest.approx(report.peak, rel=0.10)
    sampling = estimate.stages["sampling"]
    assert sampling == pytest.approx(report.phases["sampling"], rel=0.10)
