"""Context windows, blending, and the sampling options beyond the original."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import max_abs, vector_a_settings


def test_uniform_schedule_wraps_around_like_the_original():
    from musepose.pipeline import context_windows

    assert context_windows(12, 8, 4) == [list(range(8)), list(range(4, 12))]
    assert context_windows(10, 8, 4) == [list(range(8)), [4, 5, 6, 7, 8, 9, 0, 1]]
    assert context_windows(5, 8, 4) == [[0, 1, 2, 3, 4]]
    # 150 frames, 48/4 (the official defaults after skip): starts 0, 44, 88, 132; the last wraps.
    windows = context_windows(150, 48, 4)
    assert [w[0] for w in windows] == [0, 44, 88, 132] and windows[-1][-1] == (132 + 47) % 150


def test_static_schedule_slides_the_last_window_back():
    from musepose.pipeline import context_windows

    assert context_windows(10, 8, 4, "static") == [list(range(8)), list(range(2, 10))]
    windows = context_windows(150, 48, 4, "static")
    assert windows[-1] == list(range(102, 150)) and all(max(w) < 150 for w in windows)
    covered = sorted({i for w in windows for i in w})
    assert covered == list(range(150))


def test_pyramid_weights():
    from musepose.pipeline import window_weights

    assert window_weights(6, "pyramid").tolist() == [1, 2, 3, 3, 2, 1]
    assert window_weights(5, "pyramid").tolist() == [1, 2, 3, 2, 1]
    assert window_weights(4, "flat").tolist() == [1, 1, 1, 1]


def _constant_unet(pipe, monkeypatch, values):
    """Replace the UNet by one that returns, for window n of a step, the constant values[n]."""
    calls = {"n": 0}

    def fake(x, t, encoder_states, pose_features, num_uncond, check_interrupt=None):
        value = values[calls["n"] % len(values)]
        calls["n"] += 1
        return torch.full_like(x, value)

    monkeypatch.setattr(pipe, "_unet", fake)
    return calls


def test_guidance_at_most_one_averages_overlaps(tiny_models, vector_a_inputs, monkeypatch):
    """The original sums overlapping predictions when CFG is off (a bug); we average them."""
    from musepose.pipeline import MusePosePipeline

    pipe = MusePosePipeline(tiny_models)
    _constant_unet(pipe, monkeypatch, [1.0, 3.0])
    trace = {}
    pipe.sample(*vector_a_inputs, vector_a_settings(cfg=1.0, steps=1), trace=trace)
    pred = trace["noise_pred_steps"][0][0, 0, :, 0, 0]
    assert pred[:4].tolist() == [1.0] * 4          # window 0 only
    assert pred[4:8].tolist() == [2.0] * 4         # both windows: mean, not the sum 4
    assert pred[8:].tolist() == [3.0] * 4          # window 1 only


def test_pyramid_blending_weights_the_window_centres(tiny_models, vector_a_inputs, monkeypatch):
    from musepose.pipeline import MusePosePipeline

    pipe = MusePosePipeline(tiny_models)
    _constant_unet(pipe, monkeypatch, [0.0, 1.0])
    trace = {}
    pipe.sample(*vector_a_inputs, vector_a_settings(cfg=1.0, steps=1, blending="pyramid"), trace=trace)
    pred = trace["noise_pred_steps"][0][0, 0, :, 0, 0]
    # frame 4: weight 4 (pos 4 of 8 in window 0: min(5, 4)=4) vs 1 (pos 0 of window 1) -> 1/5
    assert pred[4].item() == pytest.approx(1 / 5)
    assert pred[7].item() == pytest.approx(4 / 5)


@pytest.mark.parametrize("overrides", [
    dict(windows_per_batch=2),
    dict(windows_per_batch=3, context_frames=4, context_overlap=1),
])
def test_several_windows_per_call_match_the_exact_mode(tiny_models, vector_a_inputs, overrides):
    """Several windows per UNet call compute the same function (fp32: 1e-4)."""
    from musepose.pipeline import MusePosePipeline

    pipe = MusePosePipeline(tiny_models)
    base = {k: v for k, v in overrides.items() if k in ("context_frames", "context_overlap")}
    exact = pipe.sample(*vector_a_inputs, vector_a_settings(**base))
    fast = pipe.sample(*vector_a_inputs, vector_a_settings(**overrides))
    assert max_abs(fast, exact) <= 1e-4


def test_reference_tokens_are_not_copied_per_frame(tiny_models, vector_a_inputs, monkeypatch):
    """The reference K/V are projected once per layer per run, not once per frame/window/step."""
    from musepose.models import reference_attention as ra
    from musepose.pipeline import MusePosePipeline

    pipe = MusePosePipeline(tiny_models)
    projections = {"n": 0}
    real = ra.ReferenceReadProcessor.reference_kv

    def counting(self, attn, like):
        before = self.state.kv.get(self.name)
        result = real(self, attn, like)
        if self.state.kv.get(self.name) is not before:
            projections["n"] += 1
        return result

    monkeypatch.setattr(ra.ReferenceReadProcessor, "reference_kv", counting)
    pipe.sample(*vector_a_inputs, vector_a_settings())
    assert projections["n"] == 16  # 16 spatial blocks, 2 windows x 3 steps: still one projection each


def test_other_schedulers_run(tiny_models, vector_a_inputs):
    from musepose.options import SCHEDULERS
    from musepose.pipeline import MusePosePipeline

    pipe = MusePosePipeline(tiny_models)
    for name in SCHEDULERS:
        latents = pipe.sample(*vector_a_inputs, vector_a_settings(scheduler=name, steps=2))
        assert torch.isfinite(latents).all(), name


def test_bf16_is_close_to_fp32(vector_a_inputs, vector_a_run):
    from conftest import WEIGHTS
    from musepose.pipeline import MusePosePipeline
    from musepose.weights import load_models

    trace, _, _ = vector_a_run
    pipe = MusePosePipeline(load_models(WEIGHTS, dtype=torch.bfloat16))
    latents = pipe.sample(*vector_a_inputs, vector_a_settings())
    assert latents.dtype == torch.float32
    # bf16 keeps 8 mantissa bits; on the chaotic tiny net the final latents stay within 10 % of their range.
    assert max_abs(latents, trace["final_latents"]) <= 0.1 * trace["final_latents"].abs().max().item()


def test_progress_counts_steps_times_windows_and_interrupt_stops_between_windows(tiny_models, vector_a_inputs):
    from musepose.pipeline import MusePosePipeline

    pipe = MusePosePipeline(tiny_models)
    seen = []
    pipe.sample(*vector_a_inputs, vector_a_settings(), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 6) for i in range(1, 7)]  # 3 steps x 2 windows

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def interrupt():
        calls["n"] += 1
        if calls["n"] == 3:
            raise Stop()

    with pytest.raises(Stop):
        pipe.sample(*vector_a_inputs, vector_a_settings(), check_interrupt=interrupt)
    # the pipeline is reusable after an interrupt
    again = pipe.sample(*vector_a_inputs, vector_a_settings(steps=1))
    assert torch.isfinite(again).all()


def test_pipelines_sharing_one_model_set_do_not_interfere(tiny_models, vector_a_inputs, vector_a_run):
    """A model cache hands the same loaded models to several pipelines; each run must read its own reference."""
    from musepose.pipeline import MusePosePipeline

    trace, _, _ = vector_a_run
    first, second = MusePosePipeline(tiny_models), MusePosePipeline(tiny_models)
    other_reference = np.ascontiguousarray(vector_a_inputs[0][::-1])
    second.sample(other_reference, vector_a_inputs[1], vector_a_settings(steps=1))
    assert max_abs(first.sample(*vector_a_inputs, vector_a_settings()), trace["final_latents"]) <= 1e-6
