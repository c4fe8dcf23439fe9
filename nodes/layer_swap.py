"""Swap the classes of layer instances in place, keeping their parameters.

ComfyUI's partial loader streams weights only for layers of its own ``comfy.ops`` classes. Our
networks are built from plain torch/diffusers layers, so under ``offload='lowvram'`` the host swaps
each ``nn.Linear``/``nn.Conv2d``/... instance's class for a castable twin (a subclass of the same torch
class). No tensor is copied and the forward is unchanged until a layer is actually offloaded.
No ComfyUI import here: the host passes the class mapping.
"""
from __future__ import annotations

from torch import nn


def swap_layer_classes(module: nn.Module, mapping: dict[type, type]) -> int:
    """Give every submodule whose exact type is a key of ``mapping`` the mapped class; returns the count.

    Exact types only (a subclass may override ``forward``); layers without a weight (non-affine norms)
    are left alone since there is nothing to stream. Each target must subclass its source, so
    ``isinstance`` checks and attribute layouts stay valid.
    """
    count = 0
    for sub in module.modules():
        target = mapping.get(type(sub))
        if target is None or target is type(sub):
            continue
        if not issubclass(target, type(sub)):
            raise TypeError(f"{target.__name__} does not subclass {type(sub).__name__}; refusing the swap")
        if getattr(sub, "weight", None) is None:
            continue
        sub.__class__ = target
        count += 1
    return count


def unstreamable_modules(module: nn.Module, castable: tuple[type, ...]) -> list[str]:
    """Submodules holding their own parameters whose class cannot stream (they must fit or stay resident)."""
    names = []
    for name, sub in module.named_modules():
        if isinstance(sub, castable):
            continue
        if any(True for _ in sub.parameters(recurse=False)):
            names.append(name or type(sub).__name__)
    return names
