"""The down/mid/up walk shared by both MusePose UNets, lean on memory.

diffusers' UNet ``forward`` methods cannot be reused as they are (the denoising UNet adds the pose
features right after ``conv_in``, the reference UNet has no output head), and its block ``forward``
methods are wasteful for video: each block keeps every skip connection it was handed and every layer's
input alive until the block returns, and each layer runs on all ``batch x frames`` entries at once. At
768x768 with 48-frame windows that is several GB of activations that never need to coexist. This walk
calls the same diffusers layers (resnets, spatial transformers, motion modules, samplers) in the same
order as the diffusers blocks, and

* drops each skip connection as soon as the up path has consumed it;
* with :class:`FrameChunking` on, runs every per-frame layer (resnets, spatial transformers, samplers,
  the output head) on a few frames at a time: their transients (GroupNorm/SiLU copies, Q/K/V, the
  reference K/V, the 8C-wide GEGLU projection) then exist for one chunk only, and the residual layers
  (spatial transformers, motion modules: ``x + f(x)``) write their result into their input in place.
  The upsampler runs inside the next resnet's chunks, so its 4x-sized output never exists whole, and the
  up path's channel concatenation is built one chunk at a time. Motion modules take chunks of spatial
  positions (:meth:`~musepose.models.motion_module.PerFrameNormTemporalTransformer.temporal`).

The numbers are diffusers' block forwards' up to float rounding: the same operations on the same rows.

diffusers' own ``set_chunk_feed_forward`` is deliberately not used: it chunks only the feed-forward, so the
resnets' GroupNorm copies, the attention Q/K/V and the upsamplers' 4x outputs would stay whole; chunking
whole frames bounds every layer's transients with one setting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

#: Transient elements per pixel and channel of one entry (batch x frame), by layer kind. They bound what a
#: layer allocates beyond its input and output: a resnet's GroupNorm/SiLU copies and conv outputs; a spatial
#: transformer's GEGLU feed-forward (8C projection + 4C gate + 4C product) with the running hidden states;
#: a motion module's (the same per frame row). ``benchmarks/vram_meter.py`` checks them.
RESNET_FACTOR = 3
TRANSFORMER_FACTOR = 20
MOTION_FACTOR = 20


@dataclass(frozen=True)
class FrameChunking:
    """Activation chunking: each layer call allocates about ``budget_bytes`` of transients at most.

    ``None`` budget (or a chunk covering the whole batch) runs a layer on the whole batch, exactly as
    diffusers would.
    """

    budget_bytes: int | None = None

    def entries(self, total: int, per_entry_bytes: int) -> int:
        """How many entries (batch x frames) one call may take."""
        if self.budget_bytes is None:
            return total
        return max(1, min(total, int(self.budget_bytes // max(per_entry_bytes, 1))))


def timestep_embedding(unet: nn.Module, timestep: torch.Tensor | float | int, batch: int,
                       device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoidal projection (computed in fp32, as diffusers does) followed by the learned MLP."""
    t = torch.as_tensor(timestep, device=device)
    if t.ndim == 0:
        t = t[None]
    t = t.expand(batch)
    t_emb = unet.time_proj(t).to(dtype=dtype)
    return unet.time_embedding(t_emb)


class _Upsampled:
    """An upsampler's output, produced chunk by chunk when its consumer asks for rows ``[a, b)``."""

    def __init__(self, upsampler: nn.Module, source: torch.Tensor, size):
        self.upsampler, self.source, self.size = upsampler, source, size
        height, width = (2 * source.shape[2], 2 * source.shape[3]) if size is None else tuple(size)
        self.shape = (source.shape[0], upsampler.out_channels, height, width)

    def rows(self, a: int, b: int) -> torch.Tensor:
        return self.upsampler(self.source[a:b], output_size=self.size)

    def whole(self) -> torch.Tensor:
        return self.upsampler(self.source, output_size=self.size)


class UNetWalk:
    """One forward pass through a diffusers UNet's blocks (see the module docstring).

    ``block_kwargs`` is ``{"num_frames": F}`` for the motion UNet and empty for the 2D one;
    ``between_layers`` is called after every layer (the pipeline's interrupt check);
    ``reference_state`` (if given) is told which batch entries a chunked spatial transformer runs on.
    """

    def __init__(self, unet: nn.Module, emb: torch.Tensor, context: torch.Tensor, num_frames: int | None = None,
                 chunking: FrameChunking | None = None, between_layers: Callable[[], None] | None = None,
                 reference_state=None):
        self.unet, self.emb, self.context = unet, emb, context
        self.num_frames = num_frames
        self.chunking = chunking or FrameChunking()
        self.between_layers = between_layers
        self.state = reference_state

    # -- per-layer helpers ------------------------------------------------------------------------
    def _tick(self) -> None:
        if self.between_layers is not None:
            self.between_layers()

    def _rows(self, emb_or_context: torch.Tensor, a: int, b: int, total: int) -> torch.Tensor:
        return emb_or_context[a:b] if emb_or_context.shape[0] == total else emb_or_context

    def resnet(self, resnet: nn.Module, sources: list) -> torch.Tensor:
        """``resnet(cat(sources, dim=1), emb)``; sources are tensors or :class:`_Upsampled`.

        The list is emptied as soon as its tensors are no longer needed (after the concatenation, or
        after the last chunk), so a caller that hands over its only references frees them early.
        """
        total, _, height, width = sources[0].shape
        c_in = sum(s.shape[1] for s in sources)
        element = self.emb.element_size()
        per_entry = (RESNET_FACTOR * c_in + RESNET_FACTOR * resnet.out_channels) * height * width * element
        step = self.chunking.entries(total, per_entry)
        if step >= total:
            parts = [s.whole() if isinstance(s, _Upsampled) else s for s in sources]
            sources.clear()
            x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            del parts
            return resnet(x, self.emb)
        out = None
        for a in range(0, total, step):
            b = min(a + step, total)
            parts = [s.rows(a, b) if isinstance(s, _Upsampled) else s[a:b] for s in sources]
            x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            del parts
            y = resnet(x, self._rows(self.emb, a, b, total))
            del x
            if out is None:
                out = y.new_empty((total, *y.shape[1:]))
            out[a:b] = y
            del y
        sources.clear()
        return out

    def per_frame(self, layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                  per_entry_factor: float) -> torch.Tensor:
        """``layer(x)`` for a layer that treats entries independently (samplers, output head)."""
        total = x.shape[0]
        per_entry = per_entry_factor * x[0].numel() * x.element_size()
        step = self.chunking.entries(total, per_entry)
        if step >= total:
            return layer(x)
        out = None
        for a in range(0, total, step):
            y = layer(x[a:a + step])
            if out is None:
                out = y.new_empty((total, *y.shape[1:]))
            out[a:a + step] = y
            del y
        return out

    def transformer(self, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A spatial transformer (residual, per frame); chunked, it overwrites ``x`` chunk by chunk."""
        total = x.shape[0]
        per_entry = TRANSFORMER_FACTOR * x[0].numel() * x.element_size()
        step = self.chunking.entries(total, per_entry)
        if step >= total:
            return attn(x, encoder_hidden_states=self.context, return_dict=False)[0]
        try:
            for a in range(0, total, step):
                b = min(a + step, total)
                if self.state is not None:
                    self.state.entry_offset = a
                x[a:b] = attn(x[a:b], encoder_hidden_states=self._rows(self.context, a, b, total),
                              return_dict=False)[0]
        finally:
            if self.state is not None:
                self.state.entry_offset = 0
        return x

    def motion(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A motion module (residual, per spatial position); chunked, it overwrites ``x`` in place."""
        total, channels, height, width = x.shape
        per_position = MOTION_FACTOR * total * channels * x.element_size()
        positions = self.chunking.entries(height * width, per_position)
        if positions >= height * width:
            return module(x, num_frames=self.num_frames)
        return module(x, num_frames=self.num_frames, positions=positions)

    # -- the walk ---------------------------------------------------------------------------------
    def run(self, sample: torch.Tensor) -> torch.Tensor:
        """Down blocks, mid block and up blocks on ``conv_in``'s output.

        When the latent size is not a multiple of 2**num_upsamplers, every upsampler is told the exact
        size of its skip connection (nearest interpolation to that size), as the original MusePose does.
        """
        unet = self.unet
        up_factor = 2 ** getattr(unet, "num_upsamplers", len(unet.up_blocks) - 1)
        forward_upsample_size = any(s % up_factor for s in sample.shape[-2:])

        skips = [sample]
        hidden = sample
        del sample
        for block in unet.down_blocks:
            for i, resnet in enumerate(block.resnets):
                hidden = self.resnet(resnet, [hidden])
                hidden = self._attend(block, i, hidden)
                skips.append(hidden)
                self._tick()
            if block.downsamplers is not None:
                for downsampler in block.downsamplers:
                    hidden = self.per_frame(downsampler, hidden, RESNET_FACTOR)
                skips.append(hidden)
                self._tick()

        mid = unet.mid_block
        hidden = self.resnet(mid.resnets[0], [hidden])
        for i, resnet in enumerate(mid.resnets[1:]):
            sources = [self._attend(mid, i, hidden)]
            hidden = None
            hidden = self.resnet(resnet, sources)
            self._tick()

        pending = None  # an upsampler's output, consumed by the next block's first resnet
        for index, block in enumerate(unet.up_blocks):
            for i, resnet in enumerate(block.resnets):
                sources = [hidden if pending is None else pending, skips.pop()]
                hidden = pending = None  # the resnet holds the only references: it frees them early
                hidden = self.resnet(resnet, sources)
                hidden = self._attend(block, i, hidden)
                self._tick()
            if block.upsamplers is not None:
                is_final = index == len(unet.up_blocks) - 1
                size = skips[-1].shape[2:] if (not is_final and forward_upsample_size) else None
                for upsampler in block.upsamplers[:-1]:
                    hidden = self.per_frame(lambda h, u=upsampler: u(h, output_size=size), hidden, 4 * RESNET_FACTOR)
                pending = _Upsampled(block.upsamplers[-1], hidden, size)
        if pending is not None:
            hidden = pending.whole()
        return hidden

    def _attend(self, block: nn.Module, i: int, hidden: torch.Tensor) -> torch.Tensor:
        """The spatial transformer and motion module that follow resnet ``i`` (mid block: resnet ``i+1``)."""
        attentions = getattr(block, "attentions", None)
        if attentions is not None and i < len(attentions):
            hidden = self.transformer(attentions[i], hidden)
        motion_modules = getattr(block, "motion_modules", None)
        if motion_modules is not None and i < len(motion_modules):
            hidden = self.motion(motion_modules[i], hidden)
        return hidden


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
