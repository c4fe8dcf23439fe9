"""Cancel acts within about a second at any size: the engine checks between the UNet's layers, between
decode chunks and pose frames, not only between windows (issue 9: at 768 one window took 410 s).

The request is made from inside the denoiser (a forward hook on a resnet of its second down block, during the only
window), so the test does not depend on how fast the machine is: a pipeline that checked only between
windows would finish the window and return instead of raising.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

# Narrow channels at 512x512: ~50 M UNet weights but full-resolution token counts, so one 6-frame window
# takes tens of seconds on two CPU cores while the weights stay small.
UNET = dict(block_out_channels=(64, 128, 256, 256), attention_head_dim=8, cross_attention_dim=64, norm_num_groups=32)
CLIP = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
        "patch_size": 32, "image_size": 224, "projection_dim": 64, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
        "num_channels": 3}
VAE = {"act_fn": "silu", "block_out_channels": [16, 32, 64, 64], "down_block_types": ["DownEncoderBlock2D"] * 4,
       "up_block_types": ["UpDecoderBlock2D"] * 4, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
       "layers_per_block": 2, "norm_num_groups": 8, "sample_size": 64}
MAX_LATENCY_S = 1.0


class Cancelled(Exception):
    pass


def test_cancel_inside_a_long_window_acts_within_a_second():
    from synthetic import random_models

    from musepose.config import UNetConfig
    from musepose.pipeline import MemoryConfig, MusePosePipeline, SamplingSettings

    models = random_models(torch.float32, "cpu", unet_config=UNetConfig(**UNET), clip_config=CLIP, vae_config=VAE)
    pipe = MusePosePipeline(models)
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (6, 512, 512, 3), dtype=np.uint8)
    settings = SamplingSettings(width=512, height=512, steps=1, context_frames=6)
    config = MemoryConfig(cfg_mode="sequential", chunk_bytes=64 << 20)

    pipe.sample(reference, poses, settings, config)  # one window, one step, uninterrupted: its length
    window_seconds = pipe.stats.seconds_per_step[0]

    requested: dict[str, float] = {}

    def request_on_first_call(module, args):
        requested.setdefault("at", time.perf_counter())

    def check():
        if "at" in requested:
            raise Cancelled()

    hook = models.denoising_unet.down_blocks[1].resnets[0].register_forward_pre_hook(request_on_first_call)
    try:
        with pytest.raises(Cancelled):
            pipe.sample(reference, poses, settings, config, check_interrupt=check)
        stopped = time.perf_counter()
    finally:
        hook.remove()
    latency = stopped - requested["at"]
    print(f"window {window_seconds:.1f} s, cancel latency {latency * 1000:.0f} ms")
    assert latency < MAX_LATENCY_S
    # the request came early in the window: stopping at the window's end would have taken far longer
    assert latency < window_seconds / 5, f"stopped {latency:.2f} s after the request in a {window_seconds:.1f} s window"
    # the pipeline works again after a cancel
    again = pipe.sample(reference, poses[:4], SamplingSettings(width=64, height=64, steps=1, context_frames=4,
                                                              context_overlap=1), config)
    assert torch.isfinite(again).all()
