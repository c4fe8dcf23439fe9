"""Node definitions and the small helpers behind the nodes (no weights needed)."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from test_nodes_support import load_pack

OUR_IDS = ("MusePoseModelLoader", "MusePoseSampler", "MusePoseDecode", "MusePoseDecodeToVideo")


@pytest.fixture(scope="module")
def pack():
    return load_pack()


def test_stable_ids_category_description_and_tooltips(pack):
    for node_id in OUR_IDS:
        cls = pack.NODE_CLASS_MAPPINGS[node_id]
        assert cls.CATEGORY == "MusePose"
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("MusePose ")
        assert callable(getattr(cls, cls.FUNCTION))
        for group in cls.INPUT_TYPES().values():
            for name, spec in group.items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)


def test_option_lists_are_the_engines_own(pack):
    """One vocabulary: the widget option lists are musepose.options' tuples, which the engine checks against
    (the scheduler table, the context module, preprocessing, the memory policy and the CLI use them)."""
    import importlib

    options = pack.nodes.options
    engine = importlib.import_module(pack.__name__ + ".musepose.options")
    schedulers = importlib.import_module(pack.__name__ + ".musepose.pipeline.schedulers")
    for name in ("SCHEDULERS", "CONTEXT_SCHEDULES", "BLENDINGS", "ASPECT_MODES", "CFG_MODES", "OFFLOAD_LEVELS",
                 "PRECISIONS"):
        assert getattr(options, name) is getattr(engine, name), name
    assert tuple(schedulers.SCHEDULERS) == engine.SCHEDULERS
    device = importlib.import_module(pack.__name__ + ".musepose.device")
    assert set(device.DTYPES) == set(engine.PRECISIONS) - {"auto"}
    nodes = pack.NODE_CLASS_MAPPINGS
    inputs = {**nodes["MusePoseSampler"].INPUT_TYPES()["required"], **nodes["MusePoseModelLoader"].INPUT_TYPES()["required"]}
    for widget, values in (("scheduler", engine.SCHEDULERS), ("context_schedule", engine.CONTEXT_SCHEDULES),
                           ("blending", engine.BLENDINGS), ("aspect", engine.ASPECT_MODES),
                           ("cfg_mode", engine.CFG_MODES), ("offload", engine.OFFLOAD_LEVELS),
                           ("precision", engine.PRECISIONS)):
        assert tuple(inputs[widget][0]) == values, widget
    assert inputs["offload"][1]["default"] == "auto" and inputs["cfg_mode"][1]["default"] == "auto"
    required = pack.NODE_CLASS_MAPPINGS["MusePoseSampler"].INPUT_TYPES()["required"]
    assert required["scheduler"][1]["default"] == "ddim"
    assert required["seed"][1]["control_after_generate"] is True


def test_layer_swap_keeps_parameters_and_output():
    from test_nodes_support import load_pack

    swap = load_pack().nodes.layer_swap

    class CastLinear(nn.Linear):
        calls = 0

        def forward(self, x):
            CastLinear.calls += 1
            return super().forward(x)

    class CastNorm(nn.GroupNorm):
        pass

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.GroupNorm(2, 8), nn.GroupNorm(2, 8, affine=False), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    before = model(x)
    weight = model[0].weight
    count = swap.swap_layer_classes(model, {nn.Linear: CastLinear, nn.GroupNorm: CastNorm})
    assert count == 3  # the non-affine norm has nothing to stream
    assert type(model[0]) is CastLinear and type(model[1]) is CastNorm and type(model[2]) is nn.GroupNorm
    assert model[0].weight is weight
    assert torch.equal(model(x), before) and CastLinear.calls == 2
    assert swap.unstreamable_modules(model, (CastLinear, CastNorm)) == []
    with pytest.raises(TypeError):
        swap.swap_layer_classes(nn.Sequential(nn.Conv2d(1, 1, 1)), {nn.Conv2d: CastLinear})


def test_preview_keeps_the_first_frame_of_the_latest_step(pack):
    preview = pack.nodes.preview
    shown = []
    latest = preview.LatestPreview(lambda latents: shown.append(latents) or "jpeg")
    assert latest.enabled and latest.image() is None
    for k in range(3):
        latest.on_step(k + 1, 3, torch.full((1, 4, 5, 2, 2), float(k)))
    assert latest.image() == "jpeg" and shown[-1].shape == (1, 4, 2, 2) and shown[-1][0, 0, 0, 0] == 2.0
    assert not preview.LatestPreview(None).enabled and preview.LatestPreview(None).image() is None


def test_latent_layout_round_trip(pack):
    """Sampler output is ComfyUI's raw-VAE LATENT [F, 4, h, w]; Decode brings it back to the engine's scale."""
    engine = torch.randn(1, 4, 5, 3, 2)
    latent = pack.nodes.latents.to_latent(engine)
    assert latent["samples"].shape == (5, 4, 3, 2)
    assert torch.allclose(latent["samples"][2], engine[0, :, 2] / 0.18215)
    assert torch.allclose(pack.nodes.latents.from_latent(latent), engine, atol=1e-6)


def test_model_cache_capacity_and_eviction(pack):
    cache_mod = pack.nodes.model_cache
    closed = []

    class Item:
        def __init__(self, n):
            self.n = n

        def close(self):
            closed.append(self.n)

    cache = cache_mod.ModelCache(capacity=1)
    a = cache.get_or_load("a", lambda: Item(1))
    assert cache.get_or_load("a", lambda: Item(99)) is a and cache.loads == 1 and cache.hits == 1
    cache.get_or_load("b", lambda: Item(2))
    assert closed == [1] and len(cache) == 1 and cache.loads == 2


def test_sampler_validate_inputs_judges_the_window_inputs_only(pack):
    """ComfyUI pins VALIDATE_INPUTS' message on every argument it takes: it takes context_frames and
    context_overlap only, so a bad overlap is never blamed on width/height (their min/max stay ComfyUI's)."""
    import inspect

    sampler = pack.NODE_CLASS_MAPPINGS["MusePoseSampler"]
    assert list(inspect.signature(sampler.VALIDATE_INPUTS).parameters) == ["context_frames", "context_overlap"]
    ok = dict(context_frames=48, context_overlap=4)
    assert sampler.VALIDATE_INPUTS(**ok) is True
    assert sampler.VALIDATE_INPUTS(context_frames=None, context_overlap=None) is True  # linked
    assert sampler.VALIDATE_INPUTS(context_frames=128, context_overlap=127) is True
    for change, expected in (
            (dict(context_overlap=48), "context_overlap (48) must be smaller than context_frames (48)"),
            (dict(context_frames=8, context_overlap=9), "context_overlap (9) must be smaller than context_frames (8)"),
            (dict(context_overlap=-1), "context_overlap must be at least 0 (got -1)"),
            (dict(context_frames=129), "at most 128 frames per window"),
            (dict(context_frames=0, context_overlap=None), "context_frames must be at least 1")):
        result = sampler.VALIDATE_INPUTS(**{**ok, **change})
        assert isinstance(result, str) and expected in result, (change, result)


def test_sampler_checks_every_input_when_it_runs(pack):
    """A linked width is only known when the node runs: the same checks, with the reason, before any work."""
    sampler = pack.NODE_CLASS_MAPPINGS["MusePoseSampler"]
    for change, expected in ((dict(width=4096), "width must be at most 2048 (got 4096): MusePose was trained at "
                                                "512-768; use a smaller size and upscale the video afterwards"),
                             (dict(height=8192), "height must be at most 2048 (got 8192)"),
                             (dict(width=56), "width must be at least 64 (got 56)"),
                             (dict(context_frames=8, context_overlap=8), "must be smaller than context_frames (8)")):
        image = torch.zeros(1, 8, 8, 3)  # no model: the check comes before any work
        with pytest.raises(ValueError, match=re.escape(expected)):
            sampler().sample(None, image, image, **{"width": 512, "height": 512, **change})


def test_size_limits_and_widget_ranges(pack):
    options = pack.nodes.options
    assert options.MIN_RESOLUTION < options.NORMAL_RESOLUTION < options.MAX_RESOLUTION == 2048
    assert options.MAX_CONTEXT_FRAMES == 128
    required = pack.NODE_CLASS_MAPPINGS["MusePoseSampler"].INPUT_TYPES()["required"]
    assert required["width"][1]["max"] == required["height"][1]["max"] == 2048
    assert required["width"][1]["min"] == 64
    assert required["context_frames"][1]["max"] == 128 and required["context_overlap"][1]["max"] == 127


def test_large_sizes_are_warned_with_the_planners_memory_and_time(pack):
    """Between the normal range and the refusal, the Sampler says how much memory and time a run needs."""
    import importlib

    weights = importlib.import_module(pack.__name__ + ".musepose.weights.loader")
    pipeline = importlib.import_module(pack.__name__ + ".musepose.pipeline")
    models = weights.build_models(device="meta")
    models.dtype = torch.float16
    note = importlib.import_module(pack.__name__ + ".musepose.pipeline.outlook").large_run_note
    normal = pipeline.SamplingSettings(width=768, height=768).validated(48)
    assert note(normal, models) is None
    big = pipeline.SamplingSettings(width=1536, height=1536).validated(48)
    text = note(big, models)
    assert "1536x1536 is above MusePose's usual range" in text and " GB " in text and " min " in text
