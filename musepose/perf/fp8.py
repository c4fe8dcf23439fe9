"""Optional fp8 weight storage with upcast compute.

``apply_fp8_storage(module)`` stores the weight of every large ``nn.Linear``/``nn.Conv2d`` inside the
repeated UNet blocks as ``torch.float8_e4m3fn`` (1 byte per weight) with one float scale per output
channel, and registers a forward pre-hook that rebuilds the weight in the compute dtype just for that
layer's call (a forward hook drops the rebuilt copy again). Weights therefore take about half the memory
of fp16 (and half the transfer in block streaming), at the cost of e4m3's 3-bit mantissa: about 3 %
relative error per weight. This is LOSSY: outputs differ from the fp16/fp32 model (tests state the
tolerance). Layers outside the blocks (conv_in, time embedding, output head) stay in the compute dtype,
so ``model.dtype`` still reports the compute dtype.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0


@dataclass
class Fp8Handle:
    layers: list = field(default_factory=list)  # (layer, hooks)
    stored_bytes: int = 0
    original_bytes: int = 0

    def remove(self, dtype: torch.dtype | None = None) -> None:
        """Dequantise back to the compute dtype (the values keep their fp8 rounding)."""
        for layer, hooks in self.layers:
            for hook in hooks:
                hook.remove()
            layer.weight.data = _dequantise(layer)
            del layer._fp8_scale, layer._fp8_compute_dtype
            layer.__dict__.pop("_fp8_scale_cache", None)
        self.layers.clear()


def quantise_fp8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel scaled e4m3 copy of ``weight`` and its float32 scales (shape (out, 1, ...))."""
    w = weight.detach().float()
    amax = w.abs().flatten(1).amax(dim=1).clamp_min(1e-12)
    scale = (amax / FP8_MAX).view(-1, *([1] * (w.ndim - 1)))
    return (w / scale).to(FP8_DTYPE), scale


def _dequantise(layer: nn.Module) -> torch.Tensor:
    scale = layer._fp8_scale
    if scale.device != layer.weight.device:  # keep one copy per device (streaming moves weights around)
        cached = getattr(layer, "_fp8_scale_cache", None)
        if cached is None or cached.device != layer.weight.device:
            cached = scale.to(layer.weight.device)
            layer._fp8_scale_cache = cached
        scale = cached
    return (layer.weight.data.to(torch.float32) * scale).to(layer._fp8_compute_dtype)


def _pre_hook(layer, args):
    layer._fp8_stored = layer.weight.data
    layer.weight.data = _dequantise(layer)


def _post_hook(layer, args, output):
    layer.weight.data = layer._fp8_stored
    del layer._fp8_stored


def _in_blocks(name: str) -> bool:
    return name.startswith(("down_blocks.", "mid_block.", "up_blocks.", "encoder.layers.",
                            "vision_model.encoder.layers."))


def apply_fp8_storage(module: nn.Module, min_numel: int = 4096, only_blocks: bool = True) -> Fp8Handle:
    """Store large Linear/Conv2d weights of ``module`` in fp8 (module docstring). Returns an undo handle.

    The scale stays on the module (``_fp8_scale``) and follows ``.to(device)`` only through the hook,
    which moves it to the weight's device on use (it is small: one float per output channel).
    """
    handle = Fp8Handle()
    for name, layer in module.named_modules():
        if not isinstance(layer, (nn.Linear, nn.Conv2d)) or layer.weight.numel() < min_numel:
            continue
        if only_blocks and not _in_blocks(name):
            continue
        if layer.weight.dtype == FP8_DTYPE:
            continue
        compute = layer.weight.dtype
        handle.original_bytes += layer.weight.numel() * layer.weight.element_size()
        stored, scale = quantise_fp8(layer.weight.data)
        layer.weight.data = stored.to(layer.weight.device)
        layer._fp8_scale = scale
        layer._fp8_compute_dtype = compute
        handle.stored_bytes += stored.numel() + scale.numel() * 4
        hooks = [layer.register_forward_pre_hook(_pre_hook), layer.register_forward_hook(_post_hook)]
        handle.layers.append((layer, hooks))
    return handle


def fake_quantise_fp8_(module: nn.Module, min_numel: int = 4096, only_blocks: bool = True) -> int:
    """Round the same weights through fp8 in place but keep them in the compute dtype (a reference model
    for tests: the fp8-stored model must compute exactly this function). Returns the layer count."""
    count = 0
    for name, layer in module.named_modules():
        if not isinstance(layer, (nn.Linear, nn.Conv2d)) or layer.weight.numel() < min_numel:
            continue
        if only_blocks and not _in_blocks(name):
            continue
        stored, scale = quantise_fp8(layer.weight.data)
        layer.weight.data = (stored.to(torch.float32) * scale).to(layer.weight.dtype)
        count += 1
    return count
