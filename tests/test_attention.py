"""musepose.attention: the attention backend chosen per model set (the Model Loader's ``attention`` widget,
``musepose generate --attention``), never by replacing ``torch.nn.functional.scaled_dot_product_attention``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from conftest import WEIGHTS, vector_a_settings
from musepose import attention


@pytest.fixture()
def fake_backend(monkeypatch):
    """A backend named ``fake`` (installed: its module is torch) whose kernel returns zeros for head size 8
    and records each call; any other head size falls back to SDPA."""
    seen = []

    def factory():
        def kernel(q, k, v, scale):
            seen.append(tuple(q.shape))
            return torch.zeros_like(q)

        return kernel, lambda q: q.shape[-1] == 8

    monkeypatch.setitem(attention.BACKENDS, "fake", ("torch", factory))
    return seen


def _attn() -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=16, heads=2, dim_head=8)


def test_the_backends_offered_are_sdpa_and_the_installed_ones(fake_backend):
    names = attention.available_backends()
    assert names[0] == "sdpa" and "fake" in names
    assert set(names) <= {"sdpa", "fake", "xformers", "sageattention"}
    with pytest.raises(ValueError, match="not installed"):
        attention.set_attention_backend([_attn()], "flash_nonexistent")


def test_a_backend_is_routed_only_for_its_models_attention(fake_backend):
    original = F.scaled_dot_product_attention
    routed, other = _attn(), _attn()
    x = torch.randn(1, 5, 16)
    expected = other(x)
    assert attention.set_attention_backend({"unet": torch.nn.Sequential(routed)}, "fake") == 1
    assert F.scaled_dot_product_attention is original  # the process's SDPA is untouched
    assert attention.attention_backend_of(routed) == "fake" and attention.attention_backend_of(other) == "sdpa"
    out = routed(x)
    assert fake_backend == [(1, 2, 5, 8)]
    assert torch.allclose(out, routed.to_out[0](torch.zeros(1, 5, 16)))  # the kernel's zeros, projected out
    assert torch.equal(other(x), expected) and len(fake_backend) == 1  # another model keeps SDPA
    q = torch.randn(1, 2, 5, 8)
    assert torch.equal(F.scaled_dot_product_attention(q, q, q), original(q, q, q)) and len(fake_backend) == 1
    routed.set_processor(AttnProcessor2_0())  # the pipeline (re)installs processors: the routing stays
    routed(x)
    assert len(fake_backend) == 2


def test_calls_the_kernel_cannot_take_go_to_sdpa(fake_backend):
    routing = attention.KernelRouting(*attention.BACKENDS["fake"][1]())
    q, wide = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 6)
    with routing:
        causal = F.scaled_dot_product_attention(q, q, q, is_causal=True)
        plain = F.scaled_dot_product_attention(wide, wide, wide)  # head size refused by the kernel
        zeros = F.scaled_dot_product_attention(q, q, q, scale=0.5)
    assert len(fake_backend) == 1 and torch.equal(zeros, torch.zeros_like(q))
    assert torch.allclose(causal, F.scaled_dot_product_attention(q, q, q, is_causal=True))
    assert torch.allclose(plain, F.scaled_dot_product_attention(wide, wide, wide))


def test_sdpa_undoes_the_routing_and_the_default_path_gives_identical_latents(fake_backend, vector_a_inputs):
    from musepose.pipeline import MusePosePipeline
    from musepose.weights import load_models

    settings = vector_a_settings(frames=8, steps=1)
    untouched = MusePosePipeline(load_models(WEIGHTS, dtype=torch.float32, device="cpu"))
    expected = untouched.sample(*vector_a_inputs, settings)
    models = load_models(WEIGHTS, dtype=torch.float32, device="cpu")
    assert attention.set_attention_backend(models, "fake") > 0
    assert attention.set_attention_backend(models, "sdpa") == 0
    assert not any("forward" in m.__dict__ for net in models.components().values()
                   for m in attention.attention_modules(net))
    latents = MusePosePipeline(models).sample(*vector_a_inputs, settings)
    assert torch.equal(latents, expected) and fake_backend == []


def test_the_cli_flag_reaches_the_models(monkeypatch, tmp_path):
    from musepose import cli

    parser = cli.build_parser()
    base = ["generate", "--weights-dir", str(WEIGHTS), "--ref", "r.png", "--poses", str(tmp_path)]
    assert parser.parse_args(base).attention == "sdpa"
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--attention", "nonexistent"])
    args = parser.parse_args(base + ["--attention", "xformers", "--precision", "fp32"])
    chosen = []
    monkeypatch.setattr(attention, "set_attention_backend", lambda models, name: chosen.append((models, name)))
    pipe, replicas = cli._pipelines(args, [torch.device("cpu")])
    assert chosen == [(pipe.models, "xformers")] and replicas == []
