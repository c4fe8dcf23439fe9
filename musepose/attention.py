"""Attention backends per model: PyTorch SDPA (the default) or an installed fast kernel.

Every attention of the engine (diffusers' ``AttnProcessor2_0``, the reference attention, the motion modules)
calls ``torch.nn.functional.scaled_dot_product_attention``. :func:`set_attention_backend` routes those calls
to another kernel for one model set only: each attention module of its networks gets a ``forward`` that runs
the module's own forward inside a :class:`~torch.overrides.TorchFunctionMode` which sends the SDPA calls it
sees to the kernel. ``torch.nn.functional.scaled_dot_product_attention`` itself is never replaced, so other
models of the process (ComfyUI's, another set) keep SDPA. A call the kernel cannot take (masks, dropout,
causal, unsupported head sizes, CPU tensors) goes to SDPA.

The wrapper sits on the attention module, not on its processor, so it stays when the pipeline installs or
rebinds the reference-attention processors. ``sdpa`` removes the wrappers: the default path runs exactly the
networks' own code.
"""
from __future__ import annotations

import importlib.util
import types
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

#: ``kernel(q, k, v, scale) -> out`` on SDPA's layout ``(batch, heads, tokens, dim)``.
Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "float | None"], torch.Tensor]
#: Whether the kernel takes a query of that dtype, device and head size.
Accepts = Callable[[torch.Tensor], bool]

DEFAULT = "sdpa"
_SDPA = F.scaled_dot_product_attention
_ROUTED = "_musepose_attention_backend"  # attribute of a routed attention module: the backend's name


def _xformers_kernel() -> tuple[Kernel, Accepts]:
    import xformers.ops as xops

    def run(q, k, v, scale):
        # xformers wants (batch, tokens, heads, dim); SDPA callers pass (batch, heads, tokens, dim).
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
        return out.transpose(1, 2)

    return run, lambda q: q.is_cuda


def _sage_kernel() -> tuple[Kernel, Accepts]:
    from sageattention import sageattn

    def run(q, k, v, scale):
        return sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=scale)

    # SageAttention covers head sizes 64/96/128; SD-1.5 heads are 40/80/160, so most calls fall back.
    return run, lambda q: q.is_cuda and q.shape[-1] in (64, 96, 128) and q.dtype in (torch.float16, torch.bfloat16)


#: name -> (module that must be importable, factory of (kernel, accepts))
BACKENDS: dict[str, tuple[str, Callable[[], tuple[Kernel, Accepts]]]] = {
    "xformers": ("xformers", _xformers_kernel),
    "sageattention": ("sageattention", _sage_kernel),
}


def available_backends() -> list[str]:
    """``sdpa`` plus each optional backend whose package is installed (the names the node and the CLI offer)."""
    names = [DEFAULT]
    for name, (module, _) in BACKENDS.items():
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


class KernelRouting(TorchFunctionMode):
    """Sends the plain SDPA calls made while it is active to ``kernel``; everything else runs as called."""

    def __init__(self, kernel: Kernel, accepts: Accepts):
        super().__init__()
        self.kernel, self.accepts = kernel, accepts

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _SDPA and _plain_call(args, kwargs) and self.accepts(args[0]):
            return self.kernel(args[0], args[1], args[2], kwargs.get("scale"))
        return func(*args, **kwargs)


def _plain_call(args, kwargs) -> bool:
    """An SDPA call a kernel can take: q, k, v of 4 dimensions, no mask, no dropout, not causal."""
    if len(args) != 3 or set(kwargs) - {"attn_mask", "dropout_p", "is_causal", "scale"}:
        return False
    return (kwargs.get("attn_mask") is None and not kwargs.get("dropout_p") and not kwargs.get("is_causal")
            and args[0].ndim == 4)


def attention_modules(module: nn.Module) -> Iterable[nn.Module]:
    """The attention modules of a network: diffusers' ``Attention`` (anything with ``set_processor``)."""
    return (m for m in module.modules() if callable(getattr(m, "set_processor", None)))


def _routed_forward(self: nn.Module, *args, **kwargs):
    with KernelRouting(*self._musepose_attention_kernel):
        return type(self).forward(self, *args, **kwargs)


def set_attention_backend(models, name: str = DEFAULT) -> int:
    """Route the attention of ``models``' networks through backend ``name``; returns how many modules.

    ``models``: a ``MusePoseModels`` (its ``components()``), a dict of networks or an iterable of them.
    ``sdpa`` undoes any earlier routing. Raises ValueError for a name that is unknown or not installed.
    """
    if name not in available_backends():
        raise ValueError(f"attention backend {name!r} is not installed; available: {available_backends()}")
    kernel = None if name == DEFAULT else BACKENDS[name][1]()
    count = 0
    for network in _networks(models):
        for module in attention_modules(network):
            module.__dict__.pop("forward", None)
            module.__dict__.pop(_ROUTED, None)
            module.__dict__.pop("_musepose_attention_kernel", None)
            if kernel is not None:
                module._musepose_attention_kernel = kernel
                module.forward = types.MethodType(_routed_forward, module)  # deep copies rebind to the copy
                setattr(module, _ROUTED, name)
                count += 1
    return count


def attention_backend_of(module: nn.Module) -> str:
    """The backend an attention module is routed through (``sdpa`` when none)."""
    return getattr(module, _ROUTED, DEFAULT)


def _networks(models) -> list[nn.Module]:
    if hasattr(models, "components"):
        return list(models.components().values())
    if isinstance(models, dict):
        return list(models.values())
    if isinstance(models, nn.Module):
        return [models]
    return list(models)
