"""Optional ``torch.compile`` of the UNets' repeated blocks (regional compilation; off by default).

Compiling the repeated units (resnets, spatial transformers, motion modules) rather than a whole UNet
keeps the compile short (identical blocks share graphs), and leaves the engine's Python walk, its
activation chunking and the reference-attention state outside the compiled regions. Shapes are marked
dynamic because chunked layers see several batch sizes. Uses diffusers' ``compile_repeated_blocks`` (the
UNets list their block classes in ``_repeated_blocks``) where diffusers has it (>= 0.35), and the same
loop here on older versions.
"""
from __future__ import annotations

import shutil

import torch

#: Class names of the blocks compiled (both UNets set ``_repeated_blocks`` to this).
REPEATED_BLOCKS = ("ResnetBlock2D", "Transformer2DModel", "PerFrameNormTemporalTransformer")
CXX_COMPILERS = ("g++", "clang++", "c++", "cl")
#: Graphs dynamo may keep per code object (blocks of one class with different shapes each need one).
RECOMPILE_LIMIT = 128


class CompileUnavailableError(RuntimeError):
    """``torch.compile`` cannot run here (no C++ compiler for the CPU backend, no Triton for CUDA)."""


def check_compiler(device: torch.device) -> None:
    """Fail with a clear message before compiling when the backend's toolchain is missing."""
    if device.type == "cpu" and not any(shutil.which(c) for c in CXX_COMPILERS):
        raise CompileUnavailableError(
            "compiling the UNet on the CPU needs a C++ compiler (g++ or clang++) on the PATH, and none was "
            "found: install one (e.g. apt install g++) or run without compiling")
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError as exc:
            raise CompileUnavailableError(
                "compiling the UNet on a GPU needs Triton (pip install triton; it comes with Linux CUDA builds "
                "of torch): run without compiling, or install it") from exc


def compile_unets(models, device: torch.device | str, mode: str | None = None, backend: str = "inductor") -> int:
    """Compile the repeated blocks of both UNets in place; returns how many blocks were compiled.

    Call before the first run; the first run then pays the compile time. ``backend`` is torch.compile's
    (tests use ``aot_eager``: the same graph capture without code generation)."""
    device = torch.device(device)
    if backend == "inductor":
        check_compiler(device)
    # Every block instance is its own region and the instances of one class differ (channels, shortcut
    # convs): dynamo's default of 8 graphs per code object would leave most of them eager.
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
    count = 0
    for unet in (models.denoising_unet, models.reference_unet):
        if unet is None:
            continue
        if hasattr(unet, "compile_repeated_blocks"):
            unet.compile_repeated_blocks(mode=mode, dynamic=True, backend=backend)
        else:  # diffusers < 0.35: the same regional compilation
            for module in unet.modules():
                if type(module).__name__ in REPEATED_BLOCKS:
                    module.compile(mode=mode, dynamic=True, backend=backend)
        count += sum(type(m).__name__ in REPEATED_BLOCKS for m in unet.modules())
    return count

