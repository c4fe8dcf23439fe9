"""The optional compiled UNet (regional torch.compile) computes the eager function."""
from __future__ import annotations

import shutil

import pytest
import torch

from conftest import WEIGHTS, max_abs, vector_a_settings


def test_compiled_unets_match_eager(vector_a_inputs):
    """Every repeated block of both UNets captured by dynamo (around the reference-attention processors,
    which stay eager; through the single-token cross-attention): the same function, fp32 on the CPU, 1e-4.
    aot_eager runs the captured graphs without generating code, so this checks the capture in about a
    minute; inductor's code generation for every block takes several minutes on two CPU cores (the test
    below checks it on one block; benchmarks/RESULTS.md has the whole-model figures)."""
    from musepose.models.compile import compile_unets
    from musepose.pipeline import MemoryConfig, MusePosePipeline
    from musepose.weights import load_models

    models = load_models(WEIGHTS, dtype=torch.float32)
    eager = MusePosePipeline(models).sample(*vector_a_inputs, vector_a_settings(steps=1), MemoryConfig())
    assert compile_unets(models, "cpu", backend="aot_eager") > 40
    assert any(getattr(m, "_compiled_call_impl", None) is not None for m in models.denoising_unet.modules())
    compiled = MusePosePipeline(models).sample(*vector_a_inputs, vector_a_settings(steps=1), MemoryConfig())
    assert max_abs(compiled, eager) <= 1e-4


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "clang++", "c++")), reason="no C++ compiler")
def test_inductor_compiles_a_block_to_the_same_numbers():
    from diffusers.models.resnet import ResnetBlock2D

    torch.manual_seed(0)
    block = ResnetBlock2D(in_channels=32, out_channels=64, temb_channels=64, groups=8).eval()
    x, temb = torch.randn(3, 32, 16, 16), torch.randn(3, 64)
    with torch.no_grad():
        eager = block(x, temb)
        block.compile(dynamic=True)
        compiled = block(x, temb)
    assert max_abs(compiled, eager) <= 1e-4


def test_missing_compiler_is_said_clearly(monkeypatch):
    from musepose.models import compile as compile_module

    monkeypatch.setattr(compile_module.shutil, "which", lambda name: None)
    with pytest.raises(compile_module.CompileUnavailableError, match="needs a C.. compiler"):
        compile_module.check_compiler(torch.device("cpu"))
