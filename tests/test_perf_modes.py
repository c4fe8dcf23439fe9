"""Every optimised mode computes the exact mode's function on the tiny fixture (CPU, float32).

Reference: MusePosePipeline with batched CFG, one window per call, no levers ("exact"). Tolerance 1e-4
max abs on the final latents (|latents| reaches ~7), as the issue asks; fp8 storage is lossy and is
checked two ways (see test_fp8_storage).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from musepose.pipeline import EnginePlacement, MusePosePipeline, SamplingSettings
from musepose.weights import load_models

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "musepose-tiny"
TOL = 1e-4


@pytest.fixture(scope="module")
def inputs():
    from musepose.video import read_frames, read_image_rgb

    reference = read_image_rgb(FIXTURE / "vector_a" / "inputs" / "ref.png")
    poses, _ = read_frames(FIXTURE / "vector_a" / "inputs" / "pose")
    return reference, poses


def _models(dtype=torch.float32):
    return load_models(FIXTURE / "pretrained_weights", dtype=dtype)


def _settings(**overrides):
    base = dict(width=96, height=96, num_frames=12, steps=3, guidance=3.5, seed=42, context_frames=8,
                context_overlap=4)
    base.update(overrides)
    return SamplingSettings(**base)


@pytest.fixture(scope="module")
def models():
    return _models()


@pytest.fixture(scope="module")
def exact(models, inputs):
    return MusePosePipeline(models).sample(*inputs, _settings())


def _maxdiff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


def test_exact_matches_vector_a(exact):
    reference = np.load(FIXTURE / "vector_a" / "final_latents.npy")
    assert float(np.abs(exact.numpy() - reference).max()) < 1e-3


def test_activation_chunking_matches(models, inputs, exact):
    from musepose.perf.levers import ChunkedAttnProcessor, ChunkedReferenceReadProcessor, enable_activation_chunking

    pipe = MusePosePipeline(models)
    # a tiny chunk so that every FF, attention and resnet really runs in several chunks at this size
    handle = enable_activation_chunking(models.denoising_unet, chunk_bytes=512 * 1024)
    try:
        kinds = {type(m.processor) for m in models.denoising_unet.modules() if hasattr(m, "processor")}
        assert ChunkedReferenceReadProcessor in kinds and ChunkedAttnProcessor in kinds
        assert any(type(m).__name__.startswith("FrameChunked") for m in models.denoising_unet.modules())
        keys_before = set(models.denoising_unet.state_dict())
        out = pipe.sample(*inputs, _settings())
        assert set(models.denoising_unet.state_dict()) == keys_before
    finally:
        handle.remove()
    assert not any(type(m).__name__.startswith("FrameChunked") for m in models.denoising_unet.modules())
    assert _maxdiff(out, exact) < TOL


def test_feed_forward_chunk_divides_any_shape():
    from musepose.perf.levers import _largest_divisor_at_most

    assert _largest_divisor_at_most(96, 40) == 32
    assert _largest_divisor_at_most(97, 40) == 1
    assert _largest_divisor_at_most(12, 100) == 12


def test_sequential_cfg_matches(models, inputs, exact):
    out = MusePosePipeline(models).sample(*inputs, _settings(cfg_mode="sequential"))
    assert _maxdiff(out, exact) < TOL


def test_two_windows_per_batch_match(models, inputs, exact):
    out = MusePosePipeline(models).sample(*inputs, _settings(context_batch_size=2))
    assert _maxdiff(out, exact) < TOL


def test_model_offload_matches(models, inputs, exact):
    pipe = MusePosePipeline(models, placement=EnginePlacement("cpu", offload="model"))
    assert _maxdiff(pipe.sample(*inputs, _settings()), exact) < TOL


def test_streaming_placement_matches_within_budget(models, inputs, exact):
    from musepose.perf.streaming import StreamingPlacement, stream_units

    units = [sum(p.numel() * p.element_size() for p in u.parameters()) for _, u in stream_units(models.denoising_unet)]
    budget = int(0.4 * sum(units))
    assert budget >= 2 * max(units)
    before = {n: p.data_ptr() for n, p in models.denoising_unet.named_parameters()}
    placement = StreamingPlacement("cpu", budget_bytes=budget)
    out = MusePosePipeline(models, placement=placement).sample(*inputs, _settings(cfg_mode="sequential"))
    assert _maxdiff(out, exact) < TOL
    stats = placement.stats
    assert stats.peak_resident_bytes <= budget
    assert stats.over_budget_loads == 0
    assert stats.loads > 0 and stats.prefetches > 0 and stats.hits > 0
    assert stats.bytes_moved > sum(units)  # streamed more than once: the budget really bit
    # after the run every parameter points at its master copy again
    assert {n: p.data_ptr() for n, p in models.denoising_unet.named_parameters()} == before


def test_streaming_unlimited_budget_loads_once(models, inputs, exact):
    from musepose.perf.streaming import StreamingPlacement

    placement = StreamingPlacement("cpu", budget_bytes=None)
    out = MusePosePipeline(models, placement=placement).sample(*inputs, _settings())
    assert _maxdiff(out, exact) < TOL
    # two UNets, each unit loaded once per use; every later call is a hit
    assert placement.stats.loads + placement.stats.prefetches == placement.stats.units


def test_original_cost_mode_matches_default(models, inputs, exact):
    from musepose.perf.original_costs import OriginalCostPipeline, OriginalCostReadProcessor

    pipe = OriginalCostPipeline(models)
    assert any(isinstance(getattr(m, "processor", None), OriginalCostReadProcessor)
               for m in models.denoising_unet.modules())
    out = pipe.sample(*inputs, _settings())
    assert _maxdiff(out, exact) < TOL
    # its features were written for the CFG-doubled batch, as the original does
    assert all(f.shape[0] == 2 for f in pipe.state.features.values())


def test_original_cost_decode_is_frame_at_a_time(models, exact):
    from musepose.perf.original_costs import OriginalCostPipeline

    ours = MusePosePipeline(models).decode(exact, chunk_size=8)
    theirs = OriginalCostPipeline(models).decode(exact)
    assert _maxdiff(ours, theirs) < 1e-5


def test_setup_mode_every_mode(inputs, exact):
    """The mode bundles used by the benchmark and `auto` all compute the same function."""
    from musepose.perf.modes import setup_mode
    from musepose.perf.planner import MODES

    models = _models()
    for mode in MODES:
        if MODES[mode].fp8:
            continue
        setup = setup_mode(models, "cpu", mode, chunk_bytes=512 * 1024, stream_budget_bytes=200_000)
        try:
            out = setup.pipeline.sample(*inputs, _settings(**setup.settings_overrides))
        finally:
            setup.remove()
        assert _maxdiff(out, exact) < TOL, mode


def test_fp8_storage(inputs, exact):
    """fp8 storage computes exactly the fake-quantised fp32 model (1e-4), and stays within a stated,
    loose tolerance of the exact model: relative L2 error of the final latents < 15 % and max abs error
    < 15 % of max |latents|. e4m3 keeps 3 mantissa bits (~3 % relative error per weight); the tiny random
    fixture amplifies weight noise more than a trained model (measured here: 8 % relative L2, max abs
    0.52 of 7.1), so this checks "small and bounded", not quality."""
    from musepose.perf.fp8 import FP8_DTYPE, apply_fp8_storage, fake_quantise_fp8_

    stored = _models()
    handles = [apply_fp8_storage(stored.denoising_unet), apply_fp8_storage(stored.reference_unet)]
    assert any(p.dtype == FP8_DTYPE for p in stored.denoising_unet.parameters())
    assert stored.denoising_unet.dtype == torch.float32  # layers outside the blocks keep the compute dtype
    assert handles[0].stored_bytes < 0.3 * handles[0].original_bytes  # fp32 -> 1 byte + scales
    out_fp8 = MusePosePipeline(stored).sample(*inputs, _settings())

    reference = _models()
    fake_quantise_fp8_(reference.denoising_unet)
    fake_quantise_fp8_(reference.reference_unet)
    out_fake = MusePosePipeline(reference).sample(*inputs, _settings())
    assert _maxdiff(out_fp8, out_fake) < TOL
    rel_l2 = float((out_fp8 - exact).norm() / exact.norm())
    print(f"fp8 vs exact: relative L2 {rel_l2:.4f}, max abs {_maxdiff(out_fp8, exact):.4f}")
    assert rel_l2 < 0.15
    assert _maxdiff(out_fp8, exact) < 0.15 * float(exact.abs().max())


def test_fp8_with_streaming(inputs):
    from musepose.perf.fp8 import apply_fp8_storage
    from musepose.perf.streaming import StreamingPlacement

    a = _models()
    apply_fp8_storage(a.denoising_unet)
    plain = MusePosePipeline(a).sample(*inputs, _settings(steps=1))
    placement = StreamingPlacement("cpu", budget_bytes=150_000)
    streamed = MusePosePipeline(a, placement=placement).sample(*inputs, _settings(steps=1))
    assert _maxdiff(plain, streamed) < TOL
    assert placement.stats.loads > 0


def test_bf16_chunked_default_mode(inputs):
    """bf16 stands in for fp16 on the CPU (CPU fp16 kernels are slow or missing for some ops): the
    chunked 'default' bundle matches the plain bf16 pipeline within bf16 rounding."""
    from musepose.perf.modes import setup_mode

    models = _models(torch.bfloat16)
    plain = MusePosePipeline(models).sample(*inputs, _settings(steps=2))
    setup = setup_mode(models, "cpu", "default", chunk_bytes=512 * 1024)
    try:
        out = setup.pipeline.sample(*inputs, _settings(steps=2, **setup.settings_overrides))
    finally:
        setup.remove()
    assert torch.isfinite(out).all()
    assert _maxdiff(out, plain) < 0.05 * float(plain.abs().max())


def test_chunked_decode_matches(models, exact):
    pipe = MusePosePipeline(models)
    assert _maxdiff(pipe.decode(exact, chunk_size=1), pipe.decode(exact, chunk_size=12)) < 1e-5


def test_sdpa_backend_selection_and_assertion():
    import torch.nn.functional as F

    from musepose.perf.levers import BackendUnavailableError, SdpaBackendLog, sdpa_backend

    q = torch.randn(2, 8, 16, 40)
    with sdpa_backend("math"), SdpaBackendLog() as log:
        F.scaled_dot_product_attention(q, q, q)
    assert log.backends == {"math"} and log.calls == 1
    with sdpa_backend("flash"), SdpaBackendLog() as log:  # the CPU flash kernel
        F.scaled_dot_product_attention(q, q, q)
    assert log.backends == {"flash"}
    with pytest.raises(BackendUnavailableError):
        with sdpa_backend("efficient", "cpu", torch.float32):
            pass
    with pytest.raises(ValueError):
        with sdpa_backend("bogus"):
            pass


def test_pipeline_under_sdpa_backend_matches(models, inputs, exact):
    from musepose.perf.levers import SdpaBackendLog, apply_sdpa_backend, sdpa_backend

    with sdpa_backend("math", "cpu", torch.float32), SdpaBackendLog() as log:
        out = MusePosePipeline(models).sample(*inputs, _settings(steps=1))
    assert log.backends == {"math"}
    base = MusePosePipeline(models).sample(*inputs, _settings(steps=1))
    assert _maxdiff(out, base) < TOL
    # restricted to the denoiser only: the rest of the pipeline keeps torch's choice (flash on CPU)
    handle = apply_sdpa_backend(models.denoising_unet, "math", "cpu", torch.float32)
    try:
        with SdpaBackendLog() as log:
            out = MusePosePipeline(models).sample(*inputs, _settings(steps=1))
    finally:
        handle.remove()
    assert log.backends == {"math", "flash"}
    assert _maxdiff(out, base) < TOL
