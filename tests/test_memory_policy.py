"""The memory policy: every configuration computes the exact path's function, auto picks what the issue
asks for, out-of-memory steps down, one-shot runs drop weights, fp8 storage is bounded.

Reference ("exact"): all resident, CFG halves batched, no chunking, pose features kept, on the tiny
fixture in float32. Tolerance 1e-4 max abs on the final latents (|latents| reaches ~7).
"""
from __future__ import annotations

import pytest
import torch

from conftest import WEIGHTS, max_abs, vector_a_settings

TOL = 1e-4
MiB = 1 << 20


@pytest.fixture(scope="module")
def exact(tiny_models, vector_a_inputs):
    from musepose.pipeline import MemoryConfig, MusePosePipeline

    return MusePosePipeline(tiny_models).sample(*vector_a_inputs, vector_a_settings(), MemoryConfig())


def _config(**kwargs):
    from musepose.pipeline import MemoryConfig

    return MemoryConfig(**kwargs)


# chunk budgets small enough that every layer kind (resnets, transformers, motion modules, samplers, the
# pose guider, the output head) really runs in several chunks at 96x96
CHUNK = 1_000_000  # tiny net at 96x96: transformers 2 of 16 frames per chunk, motion modules 25 of 144
#                    positions, resnets 9 frames, the pose guider one frame
CONFIGS = {
    "sequential": dict(cfg_mode="sequential"),
    "model offload": dict(offload="model", offload_models=True),
    "chunked batched": dict(chunk_bytes=CHUNK),
    "chunked sequential, pose rows": dict(cfg_mode="sequential", chunk_bytes=CHUNK, pose_cache=False),
    "model + sequential + chunks": dict(offload="model", offload_models=True, cfg_mode="sequential",
                                        chunk_bytes=CHUNK, pose_cache=False, decode_chunk=3),
    "lowvram streaming": dict(offload="lowvram", offload_models=True, cfg_mode="sequential", chunk_bytes=CHUNK,
                              weight_budget=300_000, pose_cache=False, decode_chunk=1),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_every_configuration_matches_the_exact_path(tiny_models, vector_a_inputs, exact, name):
    from musepose.pipeline import MusePosePipeline

    pipe = MusePosePipeline(tiny_models)
    out = pipe.sample(*vector_a_inputs, vector_a_settings(), _config(**CONFIGS[name]))
    assert max_abs(out, exact) <= TOL, name
    video = pipe.decode(out, pipe.stats.memory[-1])
    assert video.shape == (12, 96, 96, 3) and torch.isfinite(video).all()


def test_streaming_keeps_its_budget_and_gives_the_weights_back(tiny_models, vector_a_inputs, exact):
    """Block streaming (CPU copies stand in for the GPU): within budget, blocks hit on later calls, and
    afterwards every weight is the original tensor again."""
    from musepose.pipeline import MusePosePipeline
    from musepose.pipeline.placement import EnginePlacement

    unet = tiny_models.denoising_unet
    before = {name: p for name, p in unet.named_parameters()}
    seen = {}

    class Watching(EnginePlacement):
        def _stop_streaming(self, module, to_device=None):
            streamer = self.streamers.get(id(module))
            if streamer is not None:
                seen["stats"] = streamer.stats
            super()._stop_streaming(module, to_device)

    budget = 300_000
    pipe = MusePosePipeline(tiny_models, placement=Watching("cpu"))
    out = pipe.sample(*vector_a_inputs, vector_a_settings(),
                      _config(offload="lowvram", offload_models=True, weight_budget=budget, decode_chunk=4))
    assert max_abs(out, exact) <= TOL
    stats = seen["stats"]
    assert stats.loads + stats.prefetches > stats.units  # blocks were evicted and brought back
    assert stats.hits > 0 and stats.over_budget_loads == 0
    assert stats.peak_resident_bytes <= budget
    assert {name: p for name, p in unet.named_parameters()} == before


def test_auto_picks_the_fastest_on_a_big_card_and_fits_small_ones():
    """Planner-level picks for the full-size models (the meter checks the same picks: RESULTS.md)."""
    from musepose.pipeline import MemorySettings
    from musepose.pipeline.memory import choose
    from musepose.pipeline.planner import Job, WeightBytes

    weights = WeightBytes.full_size(2)
    job768 = Job(768, 768, 48, 48)
    big = choose(MemorySettings(), job768, weights, 80e9)[0]
    assert (big.offload, big.cfg_mode, big.chunk_bytes, big.offload_models, big.weight_budget) == \
        ("none", "batched", None, False, None)
    for job, free, target in ((job768, 6e9, 5.0e9), (job768, 4e9, 3.3e9), (Job(512, 512, 48, 48), 4e9, 3.3e9)):
        chain = choose(MemorySettings(), job, weights, free)
        assert chain[0].estimate.peak_bytes <= target, (job.width, free, chain[0].describe())
        # every fallback uses less memory than the configuration before it
        peaks = [c.estimate.peak_before_decode for c in chain]
        assert peaks == sorted(peaks, reverse=True) and len(set(peaks)) == len(peaks)


def test_pinned_level_and_cfg_mode_are_kept():
    from musepose.pipeline import MemorySettings
    from musepose.pipeline.memory import choose
    from musepose.pipeline.planner import Job, WeightBytes

    chain = choose(MemorySettings(offload="model", cfg_mode="batched"), Job(512, 512, 48, 48), WeightBytes.full_size(2),
                   80e9)
    assert all(c.offload == "model" and c.offload_models and c.cfg_mode == "batched" for c in chain)


def _accelerator_error(message: str) -> BaseException:
    """A ``torch.AcceleratorError`` as the CUDA runtime raises it (no public constructor: made like torch's own)."""
    error = torch.AcceleratorError.__new__(torch.AcceleratorError)
    Exception.__init__(error, message)
    return error


OUT_OF_MEMORY_FORMS = {
    "OutOfMemoryError": lambda: torch.OutOfMemoryError("CUDA out of memory (simulated)"),
    # what ComfyUI's dynamic VRAM pager (or a kernel's own allocation) raises instead (ComfyUI PR #12835)
    "AcceleratorError": lambda: _accelerator_error("CUDA error: out of memory (simulated)"),
}


def test_is_out_of_memory_knows_both_forms_and_nothing_else():
    from musepose.device import is_out_of_memory

    assert all(is_out_of_memory(make()) for make in OUT_OF_MEMORY_FORMS.values())
    assert not is_out_of_memory(_accelerator_error("CUDA error: an illegal memory access was encountered"))
    assert not is_out_of_memory(RuntimeError("out of memory"))  # a plain RuntimeError is not the device's


@pytest.mark.parametrize("form", sorted(OUT_OF_MEMORY_FORMS))
def test_out_of_memory_steps_down_and_says_so(tiny_models, vector_a_inputs, exact, monkeypatch, form):
    from musepose.pipeline import MemorySettings, MusePosePipeline

    pipe = MusePosePipeline(tiny_models)
    real = pipe._unet
    calls = {"n": 0}

    def failing_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OUT_OF_MEMORY_FORMS[form]()
        return real(*args, **kwargs)

    monkeypatch.setattr(pipe, "_unet", failing_once)
    said = []
    out = pipe.sample(*vector_a_inputs, vector_a_settings(), MemorySettings(budget_bytes=10 ** 12),
                      on_message=said.append)
    assert max_abs(out, exact) <= TOL
    first, second = pipe.stats.memory
    assert second.estimate.peak_before_decode < first.estimate.peak_before_decode
    assert said[0].startswith("memory: offload none") and "stepping down" in said[1]


def test_out_of_memory_in_the_leanest_configuration_is_raised(tiny_models, vector_a_inputs, monkeypatch):
    from musepose.pipeline import MemorySettings, MusePosePipeline

    pipe = MusePosePipeline(tiny_models)

    def failing(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(pipe, "_unet", failing)
    with pytest.raises(torch.OutOfMemoryError):
        pipe.sample(*vector_a_inputs, vector_a_settings(steps=1), MemorySettings(budget_bytes=10 ** 12))
    assert len(pipe.stats.memory) >= 2  # it tried the fallbacks first


def test_other_device_errors_do_not_step_down(tiny_models, vector_a_inputs, monkeypatch):
    from musepose.pipeline import MemorySettings, MusePosePipeline

    pipe = MusePosePipeline(tiny_models)

    def failing(*args, **kwargs):
        raise _accelerator_error("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(pipe, "_unet", failing)
    with pytest.raises(torch.AcceleratorError, match="illegal memory access"):
        pipe.sample(*vector_a_inputs, vector_a_settings(steps=1), MemorySettings(budget_bytes=10 ** 12))
    assert len(pipe.stats.memory) == 1  # raised at once, no fallback tried


def test_decode_chunk_follows_the_free_memory():
    from musepose.pipeline.memory import plan_decode
    from musepose.pipeline.planner import Job, WeightBytes, vae_decode_peak

    weights = WeightBytes.full_size(2)
    job = Job(768, 768, 48, 48)
    per_frame = vae_decode_peak(job, 1)
    assert 0.8e9 < per_frame < 1.1e9  # one 768x768 frame (the meter measures 0.93 GB)
    assert plan_decode(job, weights, 80e9) == (16, False)
    chunk, tiled = plan_decode(job, weights, 4e9)
    assert not tiled and 2 <= chunk <= 4
    assert plan_decode(job, weights, 1e9) == (1, True)  # not even one frame fits untiled


def test_one_shot_runs_read_each_network_when_needed_and_drop_it_after(vector_a_inputs, exact):
    from musepose.pipeline import MemorySettings, MusePosePipeline
    from musepose.weights import load_models

    models = load_models(WEIGHTS, dtype=torch.float32, lazy=True)
    assert all(p.is_meta for m in models.components().values() for p in m.parameters())
    pipe = MusePosePipeline(models)
    out = pipe.sample(*vector_a_inputs, vector_a_settings(), MemorySettings(keep_weights=False))
    assert max_abs(out, exact) <= TOL
    for name in ("image_encoder", "reference_unet", "denoising_unet", "pose_guider"):
        assert all(p.is_meta for p in getattr(models, name).parameters()), name
    assert not any(p.is_meta for p in models.vae.parameters())  # still needed for decoding
    # a second run reads them again
    again = pipe.sample(*vector_a_inputs, vector_a_settings(), MemorySettings(keep_weights=False))
    assert max_abs(again, exact) <= TOL


def test_bad_memory_settings_are_refused(tiny_models, vector_a_inputs):
    from musepose.pipeline import InputError, MemorySettings, MusePosePipeline

    pipe = MusePosePipeline(tiny_models)
    for settings, match in ((MemorySettings(offload="turbo"), "unknown offload .turbo.; use one of auto, none"),
                            (MemorySettings(cfg_mode="parallel"), "unknown cfg_mode"),
                            (MemorySettings(decode_chunk=-1), "decode_chunk must be at least 0"),
                            (MemorySettings(budget_bytes=0), "budget")):
        with pytest.raises(InputError, match=match):
            pipe.sample(*vector_a_inputs, vector_a_settings(steps=1), settings)


def test_fp8_storage(vector_a_inputs, exact):
    """fp8 storage computes exactly the fake-quantised fp32 model (1e-4), and stays within a stated,
    loose tolerance of the exact model: relative L2 error of the final latents < 15 % and max abs error
    < 15 % of max |latents|. e4m3 keeps 3 mantissa bits (~3 % relative error per weight); the tiny random
    fixture amplifies weight noise more than a trained model, so this checks "small and bounded", not
    quality. Streaming fp8 weights gives the same numbers."""
    from musepose.pipeline import MusePosePipeline
    from musepose.weights import load_models
    from musepose.weights.fp8 import FP8_DTYPE, fp8_layers

    stored = load_models(WEIGHTS, dtype=torch.float32, fp8=True)
    layers = list(fp8_layers(stored.denoising_unet))
    assert layers and all(layer.weight.dtype == FP8_DTYPE for layer in layers)
    stored_bytes = sum(layer.weight.numel() + layer.fp8_scale.numel() * 4 for layer in layers)
    assert stored_bytes < 0.3 * sum(layer.weight.numel() * 4 for layer in layers)  # fp32 -> 1 byte + scales
    assert stored.denoising_unet.dtype == torch.float32  # layers outside the blocks keep the compute dtype
    out_fp8 = MusePosePipeline(stored).sample(*vector_a_inputs, vector_a_settings(), _config())
    streamed = MusePosePipeline(stored).sample(*vector_a_inputs, vector_a_settings(), _config(
        offload="lowvram", offload_models=True, weight_budget=100_000))
    assert max_abs(out_fp8, streamed) <= TOL

    reference = load_models(WEIGHTS, dtype=torch.float32)
    fake_quantise_fp8_(reference.denoising_unet)
    fake_quantise_fp8_(reference.reference_unet)
    out_fake = MusePosePipeline(reference).sample(*vector_a_inputs, vector_a_settings(), _config())
    assert max_abs(out_fp8, out_fake) <= TOL
    rel_l2 = float((out_fp8 - exact).norm() / exact.norm())
    assert rel_l2 < 0.15
    assert max_abs(out_fp8, exact) < 0.15 * float(exact.abs().max())


def test_bf16_chunked_matches_plain_bf16(vector_a_inputs):
    """bf16 stands in for fp16 on the CPU: the chunked, sequential configuration matches the plain bf16
    pipeline within bf16 rounding of the chaotic tiny net (10 % of the latents' range)."""
    from musepose.pipeline import MusePosePipeline
    from musepose.weights import load_models

    models = load_models(WEIGHTS, dtype=torch.bfloat16)
    pipe = MusePosePipeline(models)
    plain = pipe.sample(*vector_a_inputs, vector_a_settings(steps=2), _config())
    chunked = pipe.sample(*vector_a_inputs, vector_a_settings(steps=2),
                          _config(cfg_mode="sequential", chunk_bytes=CHUNK // 2, pose_cache=False))
    assert torch.isfinite(chunked).all()
    assert max_abs(chunked, plain) <= 0.1 * float(plain.abs().max())


def test_chunked_motion_module_follows_a_norm_left_on_the_offload_device(tiny_models):
    """ComfyUI's partial loading (lowvram) leaves a streamed layer's weights on the offload device and casts
    them only in that layer's own forward; the chunked temporal pass reads the GroupNorm's weights itself, so
    it must bring them over (a GPU run at 6 GB failed with "cuda:0 and cpu" before). "meta" stands in for the
    GPU: everything there except the norm."""
    import copy

    module = copy.deepcopy(next(m for m in tiny_models.denoising_unet.modules() if hasattr(m, "temporal")))
    norm = module.norm
    module.to("meta")
    norm.weight = torch.nn.Parameter(torch.ones(norm.weight.shape), requires_grad=False)  # offloaded
    norm.bias = torch.nn.Parameter(torch.zeros(norm.bias.shape), requires_grad=False)
    frames, channels = 4, norm.num_channels
    hidden = torch.zeros(frames, channels, 6, 6, device="meta")
    with torch.no_grad():
        out = module.temporal(hidden, num_frames=frames, positions=12)
    assert out.device.type == "meta" and out.shape == hidden.shape


@torch.no_grad()
def fake_quantise_fp8_(module) -> int:
    """Round the same weights through fp8 in place but keep them in the compute dtype (the reference the
    fp8-stored model must compute exactly). Returns the layer count."""
    from musepose.weights.fp8 import fp8_layers, quantise_fp8

    count = 0
    for layer in fp8_layers(module):
        stored, scale = quantise_fp8(layer.weight)
        layer.weight.copy_((stored.to(torch.float32) * scale).to(layer.weight.dtype))
        count += 1
    return count
