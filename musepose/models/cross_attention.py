"""Cross-attention over MusePose's single CLIP token, computed exactly without the per-token work.

MusePose conditions its spatial transformers on ONE token: the CLIP image embedding (zeros for the
unconditional branch). With one key, the softmax is exactly 1 for every query, so ``attn2(x, ctx)`` is
``to_out(to_v(ctx))`` for every token of ``x``, whatever ``x`` is. This processor computes that vector per
batch entry and returns it as ``(batch, 1, C)``; the transformer block adds it to its ``(batch, tokens, C)``
hidden states by broadcasting. The query projection, the attention itself and the per-token output
projection (diffusers' ``AttnProcessor2_0`` does all three for every token) are never computed, and no
``tokens``-sized tensor is allocated. Contexts of more than one token fall back to the standard processor.
"""
from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn


class SingleTokenCrossAttnProcessor:
    """``attn2`` for a one-token context: ``to_out(to_v(context))`` per batch entry (module docstring)."""

    def __init__(self):
        self._general = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is None or encoder_hidden_states.shape[1] != 1 or attention_mask is not None \
                or hidden_states.ndim != 3 or attn.norm_cross or attn.residual_connection:
            return self._general(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        value = attn.to_v(encoder_hidden_states)  # (batch, 1, inner): the one value every query receives
        out = attn.to_out[1](attn.to_out[0](value))
        return out / attn.rescale_output_factor


def install_single_token_cross_attention(unet: nn.Module) -> int:
    """Give every spatial transformer's ``attn2`` of ``unet`` the single-token processor; returns the count."""
    count = 0
    for name, module in unet.named_modules():
        if isinstance(module, Attention) and name.endswith("attn2") and "motion_modules" not in name \
                and module.is_cross_attention:
            module.set_processor(SingleTokenCrossAttnProcessor())
            count += 1
    return count
