"""Random full-size weights for benchmarks: build on meta, materialise in the target dtype, no downloads.

The values are random (no image comes out), but every tensor has the real shape, so memory use and
speed are those of the real models. Initialisation keeps activations finite: fan-in-scaled normal
weights, zero biases, unit norm scales; the motion modules' sinusoidal position encodings and CLIP's
``position_ids`` are rebuilt exactly as the loader builds them.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from musepose.config import SD15_UNET, UNetConfig
from musepose.weights.loader import ALL_COMPONENTS, MusePoseModels, _derived_motion_pe, build_models


@torch.no_grad()
def init_random_(module: nn.Module, generator: torch.Generator | None = None, gain: float = 0.7) -> nn.Module:
    """Fill every parameter of a materialised module in place (see module docstring)."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Conv2d, nn.Conv1d, nn.Conv3d)):
            fan_in = sub.weight[0].numel()
            _normal_(sub.weight, gain / math.sqrt(fan_in), generator)
            if sub.bias is not None:
                sub.bias.zero_()
        elif isinstance(sub, (nn.GroupNorm, nn.LayerNorm)):
            if getattr(sub, "weight", None) is not None:
                sub.weight.fill_(1.0)
            if getattr(sub, "bias", None) is not None:
                sub.bias.zero_()
        else:
            for name, param in sub.named_parameters(recurse=False):
                _normal_(param, 0.02, generator)
    for name, buf in list(module.named_buffers()):
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if name.endswith("pos_embed.pe"):
            buf.copy_(_derived_motion_pe(name, tuple(buf.shape)).to(buf.dtype))
        elif attr == "position_ids":
            owner.register_buffer(attr, torch.arange(buf.shape[-1], device=buf.device).expand(buf.shape),
                                  persistent=False)
    return module


def _normal_(tensor: torch.Tensor, std: float, generator: torch.Generator | None) -> None:
    if tensor.device.type == "cpu" or generator is None:
        # fp16 normal_ is fine on CUDA; on the CPU draw in fp32 for speed and precision.
        if tensor.dtype in (torch.float16, torch.bfloat16) and tensor.device.type == "cpu":
            tensor.copy_(torch.empty(tensor.shape, dtype=torch.float32).normal_(0.0, std, generator=generator))
        else:
            tensor.normal_(0.0, std, generator=generator if tensor.device.type == "cpu" else None)
    else:
        tensor.normal_(0.0, std)


def random_models(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                  unet_config: UNetConfig = SD15_UNET, components=ALL_COMPONENTS, seed: int = 0,
                  clip_config: dict | None = None, vae_config: dict | None = None) -> MusePoseModels:
    """The full-size (default) MusePose architecture with random weights in ``dtype`` on ``device``."""
    device = torch.device(device)
    models = build_models(unet_config, clip_config=clip_config, vae_config=vae_config, device="meta",
                          components=components)
    generator = torch.Generator("cpu").manual_seed(seed) if device.type == "cpu" else None
    if device.type == "cuda":
        torch.manual_seed(seed)
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # .to(dtype) on a ModelMixin warns about fp32 modules (none here)
    try:
        for module in models.components().values():
            module.to(dtype=dtype)  # on meta: free; materialise directly in the target dtype
    finally:
        diffusers_logging.set_verbosity(level)
    for name, module in models.components().items():
        module.to_empty(device=device)
        init_random_(module, generator)
        # the CLIP position_ids buffer is int64 and was rebuilt above; pe buffers follow the model dtype
        module.requires_grad_(False)
        module.eval()
    models.dtype = dtype
    return models
