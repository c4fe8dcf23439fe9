"""Attention backends: PyTorch SDPA (default) or an installed fast kernel, chosen per run.

Every attention of the engine (diffusers' ``AttnProcessor2_0``, our reference attention, the motion
modules) calls ``torch.nn.functional.scaled_dot_product_attention`` at call time. A non-default
backend therefore replaces that function for the duration of a run only (ComfyUI executes one prompt
at a time) and falls back to SDPA for any call the kernel cannot take (masks, dropout, causal,
unsupported head sizes, CPU tensors).
"""
from __future__ import annotations

import contextlib
import importlib.util
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float | None], torch.Tensor]


def _xformers_kernel() -> tuple[Kernel, Callable[[torch.Tensor], bool]]:
    import xformers.ops as xops

    def run(q, k, v, scale):
        # xformers wants (batch, tokens, heads, dim); SDPA callers pass (batch, heads, tokens, dim).
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
        return out.transpose(1, 2)

    return run, lambda q: q.is_cuda


def _sage_kernel() -> tuple[Kernel, Callable[[torch.Tensor], bool]]:
    from sageattention import sageattn

    def run(q, k, v, scale):
        return sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=scale)

    # SageAttention covers head sizes 64/96/128; SD-1.5 heads are 40/80/160, so most calls fall back.
    return run, lambda q: q.is_cuda and q.shape[-1] in (64, 96, 128) and q.dtype in (torch.float16, torch.bfloat16)


#: name -> (module that must be importable, factory)
BACKENDS: dict[str, tuple[str, Callable[[], tuple[Kernel, Callable[[torch.Tensor], bool]]]]] = {
    "xformers": ("xformers", _xformers_kernel),
    "sageattention": ("sageattention", _sage_kernel),
}


def available_backends() -> list[str]:
    """``sdpa`` plus each optional backend whose package is installed."""
    names = ["sdpa"]
    for name, (module, _) in BACKENDS.items():
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Route SDPA calls through backend ``name`` inside the block (``sdpa``: no change)."""
    if name in (None, "", "sdpa"):
        yield
        return
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available: {', '.join(available_backends())}")
    kernel, accepts = BACKENDS[name][1]()
    original = F.scaled_dot_product_attention

    def dispatch(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if attn_mask is None and not dropout_p and not is_causal and not kwargs and query.ndim == 4 and accepts(query):
            return kernel(query, key, value, scale)
        return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                        scale=scale, **kwargs)

    F.scaled_dot_product_attention = dispatch
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original
