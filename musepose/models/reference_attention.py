"""Reference attention ("ReferenceNet") as diffusers attention processors.

The reference UNet's spatial self-attentions *write* their inputs (the norm1 outputs of the reference
image); the denoising UNet's matching self-attentions *read* them: a frame attends over its own tokens
concatenated with the reference tokens. MusePose's classifier-free guidance makes the unconditional half
plain self-attention (no reference).

Compared with the original implementation, the read side
* projects the reference tokens to K/V once per layer and reuses them for every frame, window and
  step (the original repeats the raw features once per frame and projects every copy);
* computes the unconditional half once, without the reference (the original computes it with the
  reference, then recomputes and overwrites it).

Frame chunking (``musepose.models.unet_body``) may run a spatial transformer on a slice of the batch;
``entry_offset`` says where that slice starts, so the processor knows which of its entries are
unconditional.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


@dataclass
class ReferenceAttentionState:
    """Shared, explicit state of one pipeline run: the written features and the batch layout.

    ``num_uncond`` is how many leading entries of the denoiser's ``(batch * frames)`` axis are the
    unconditional branch (plain self-attention); ``entry_offset`` is the index of the first entry a chunked
    call runs on. ``feature_dtype`` is the storage dtype of the written
    features: the original always stores them as float16, even in a float32 run, so fp32 runs default
    to float16 storage to give the same numbers.
    """

    features: dict[str, torch.Tensor] = field(default_factory=dict)
    kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # projected reference K/V
    writing: bool = False
    reading: bool = False
    num_uncond: int = 0
    feature_dtype: torch.dtype | None = torch.float16
    entry_offset: int = 0

    def clear(self) -> None:
        """Forget the reference (features and their K/V): they hold device memory between runs otherwise."""
        self.features.clear()
        self.kv.clear()
        self.writing = self.reading = False
        self.num_uncond = self.entry_offset = 0

    def uncond_entries(self, batch: int) -> int:
        """How many of the ``batch`` entries of the current call are unconditional."""
        return max(0, min(batch, self.num_uncond - self.entry_offset))


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, dim = x.shape
    return x.view(batch, tokens, heads, dim // heads).transpose(1, 2)


def _check_plain_self_attention(attn: Attention) -> None:
    if attn.spatial_norm is not None or attn.group_norm is not None or attn.norm_q is not None \
            or attn.norm_k is not None or attn.residual_connection or attn.rescale_output_factor != 1.0:
        raise NotImplementedError("reference attention supports plain SD-1.x self-attention layers only")


class ReferenceWriteProcessor:
    """Records the self-attention input of a reference-UNet block, then attends as usual."""

    def __init__(self, state: ReferenceAttentionState, name: str):
        self.state, self.name = state, name
        self._inner = AttnProcessor2_0()

    # Runs outside torch.compile's regions (musepose.models.compile): the run's state it reads would make
    # every compiled block recompile for each value it takes (chunk offsets, branch sizes).
    @torch.compiler.disable
    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        if self.state.writing:
            dtype = self.state.feature_dtype or hidden_states.dtype
            self.state.features[self.name] = hidden_states.detach().to(dtype, copy=True)
        return self._inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReferenceReadProcessor:
    """Self-attention whose conditional entries also attend to the reference tokens of this layer."""

    def __init__(self, state: ReferenceAttentionState, name: str):
        self.state, self.name = state, name
        self._inner = AttnProcessor2_0()

    def reference_kv(self, attn: Attention, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K/V of the reference tokens, projected once per run (kept in the state): ``(R, heads, L_ref, d)``."""
        cached = self.state.kv.get(self.name)
        if cached is None or cached[0].device != like.device or cached[0].dtype != like.dtype:
            ref = self.state.features[self.name].to(device=like.device, dtype=like.dtype)
            cached = (_heads(attn.to_k(ref), attn.heads), _heads(attn.to_v(ref), attn.heads))
            self.state.kv[self.name] = cached
        return cached

    @torch.compiler.disable  # see ReferenceWriteProcessor.__call__
    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        state = self.state
        if not state.reading or self.name not in state.features or encoder_hidden_states is not None \
                or attention_mask is not None:
            return self._inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        _check_plain_self_attention(attn)

        batch, tokens, _ = hidden_states.shape
        n_uncond = state.uncond_entries(batch)
        query = _heads(attn.to_q(hidden_states), attn.heads)
        key = _heads(attn.to_k(hidden_states), attn.heads)
        value = _heads(attn.to_v(hidden_states), attn.heads)
        out = torch.empty_like(query)
        if n_uncond:
            out[:n_uncond] = F.scaled_dot_product_attention(query[:n_uncond], key[:n_uncond], value[:n_uncond])
        ref_k, ref_v = self.reference_kv(attn, query)
        n_cond = batch - n_uncond
        if n_cond:
            if ref_k.shape[0] not in (1, n_cond):
                raise ValueError(f"{ref_k.shape[0]} reference images for {n_cond} conditional frames")
            k = torch.cat([key[n_uncond:], ref_k.expand(n_cond, -1, -1, -1)], dim=2)
            v = torch.cat([value[n_uncond:], ref_v.expand(n_cond, -1, -1, -1)], dim=2)
            del key, value
            out[n_uncond:] = F.scaled_dot_product_attention(query[n_uncond:], k, v)
        out = out.transpose(1, 2).reshape(batch, tokens, -1).to(query.dtype)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


def install_reference_processors(unet: torch.nn.Module, state: ReferenceAttentionState, mode: str,
                                 names: list[str]) -> None:
    """Give the named self-attentions of ``unet`` a write (``mode='write'``) or read processor."""
    cls = {"write": ReferenceWriteProcessor, "read": ReferenceReadProcessor}[mode]
    modules = dict(unet.named_modules())
    for name in names:
        modules[name].set_processor(cls(state, name))
    if mode == "read":
        unet.reference_state = state
