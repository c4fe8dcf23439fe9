"""The ``comfy.ops`` class swap that lets ComfyUI's partial loading stream our weights (the lowvram level)."""
from __future__ import annotations

from torch import nn

from ..layer_swap import swap_layer_classes, unstreamable_modules
from . import comfyui


def comfy_layer_classes() -> dict[type, type]:
    """torch layer class -> the ``comfy.ops.disable_weight_init`` twin that can stream its weights.

    ``disable_weight_init`` runs the plain torch forward while the layer is resident and casts its
    weights to the input's device on every call once ComfyUI's partial loader sets
    ``comfy_cast_weights`` (a layer left on the offload device). Empty without ComfyUI.
    """
    if not comfyui.HAS_COMFY:
        return {}
    base = comfyui.ops_module().disable_weight_init
    return {nn.Linear: base.Linear, nn.Conv1d: base.Conv1d, nn.Conv2d: base.Conv2d, nn.GroupNorm: base.GroupNorm,
            nn.LayerNorm: base.LayerNorm, nn.Embedding: base.Embedding}


def convert_for_streaming(module: nn.Module) -> int:
    """Swap the layer classes of ``module`` (in place, parameters kept) for comfy.ops ones; returns the count."""
    mapping = comfy_layer_classes()
    if not mapping:
        return 0
    return swap_layer_classes(module, mapping)


def streaming_report(module: nn.Module) -> list[str]:
    """Names of submodules holding weights that ComfyUI's partial loader could not stream."""
    castable = tuple(set(comfy_layer_classes().values()))
    return unstreamable_modules(module, castable) if castable else []
