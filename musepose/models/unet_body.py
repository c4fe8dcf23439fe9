"""The down/mid/up walk shared by both MusePose UNets.

diffusers' UNet ``forward`` methods cannot be reused as they are: the denoising UNet must add the pose
features right after ``conv_in`` and the reference UNet has no output head. Both still run diffusers'
own blocks; only this short walk (which is identical in both) is ours.
"""
from __future__ import annotations

import torch
from torch import nn


def timestep_embedding(unet: nn.Module, timestep: torch.Tensor | float | int, batch: int,
                       device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoidal projection (computed in fp32, as diffusers does) followed by the learned MLP."""
    t = torch.as_tensor(timestep, device=device)
    if t.ndim == 0:
        t = t[None]
    t = t.expand(batch)
    t_emb = unet.time_proj(t).to(dtype=dtype)
    return unet.time_embedding(t_emb)


def run_unet_body(unet: nn.Module, sample: torch.Tensor, emb: torch.Tensor,
                  encoder_hidden_states: torch.Tensor, **block_kwargs) -> torch.Tensor:
    """Down blocks, mid block and up blocks of a diffusers UNet on ``conv_in``'s output.

    When the latent size is not a multiple of 2**num_upsamplers, every upsampler is told the exact
    size of its skip connection (nearest interpolation to that size), as the original MusePose does.
    ``block_kwargs`` is ``{"num_frames": F}`` for the motion UNet and empty for the 2D one.
    """
    up_factor = 2 ** getattr(unet, "num_upsamplers", len(unet.up_blocks) - 1)
    forward_upsample_size = any(s % up_factor for s in sample.shape[-2:])

    skips = (sample,)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=encoder_hidden_states,
                                **block_kwargs)
        else:
            sample, res = block(hidden_states=sample, temb=emb, **block_kwargs)
        skips += res

    sample = unet.mid_block(sample, emb, encoder_hidden_states=encoder_hidden_states, **block_kwargs)

    for i, block in enumerate(unet.up_blocks):
        is_final = i == len(unet.up_blocks) - 1
        res = skips[-len(block.resnets):]
        skips = skips[: -len(block.resnets)]
        upsample_size = skips[-1].shape[2:] if (not is_final and forward_upsample_size) else None
        if getattr(block, "has_cross_attention", False):
            sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res,
                           encoder_hidden_states=encoder_hidden_states, upsample_size=upsample_size,
                           **block_kwargs)
        else:
            sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res,
                           upsample_size=upsample_size, **block_kwargs)
    return sample


def spatial_self_attention_names(unet: nn.Module) -> list[str]:
    """Paths of the spatial transformer blocks' self-attentions (``...attentions.N.transformer_blocks.M.attn1``).

    These are where reference attention is written (reference UNet) and read (denoising UNet); motion
    modules' attentions are excluded. Both UNets share the SD-1.5 topology, so equal paths pair up.
    """
    names = []
    for name, _ in unet.named_modules():
        parts = name.split(".")
        if (len(parts) >= 5 and parts[-1] == "attn1" and parts[-3] == "transformer_blocks"
                and "attentions" in parts and "motion_modules" not in parts):
            names.append(name)
    return names
