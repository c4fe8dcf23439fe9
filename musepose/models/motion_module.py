"""AnimateDiff "Vanilla" motion module as MusePose runs it.

diffusers' :class:`AnimateDiffTransformer3D` holds exactly the same layers (GroupNorm, proj_in, one
:class:`BasicTransformerBlock` with two sinusoidal-PE temporal self-attentions and a GEGLU feed-forward,
proj_out) and we reuse it for them. Its ``forward`` differs in one place that changes the numbers: it
applies the GroupNorm to the whole ``(B, C, F, H, W)`` clip, so statistics are pooled across frames,
while MusePose (like the original AnimateDiff code) normalises every frame on its own. We therefore
override ``forward`` only, and build the module with the motion module's own 32 groups / eps 1e-6
instead of the UNet's group count that diffusers' motion blocks pass down.
"""
from __future__ import annotations

from typing import Any

import torch
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

from ..config import MotionModuleConfig


class PerFrameNormTemporalTransformer(AnimateDiffTransformer3D):
    """Temporal transformer over the frame axis with per-frame GroupNorm (see module docstring)."""

    @classmethod
    def for_channels(cls, channels: int, config: MotionModuleConfig) -> "PerFrameNormTemporalTransformer":
        module = cls(
            num_attention_heads=config.num_attention_heads,
            attention_head_dim=channels // config.num_attention_heads,
            in_channels=channels,
            num_layers=config.num_transformer_blocks,
            norm_num_groups=config.norm_num_groups,
            cross_attention_dim=None,
            attention_bias=False,
            activation_fn="geglu",
            double_self_attention=True,
            positional_embeddings="sinusoidal",
            num_positional_embeddings=config.max_seq_length,
        )
        module.norm.eps = config.norm_eps
        return module

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        timestep: torch.LongTensor | None = None,
        class_labels: torch.LongTensor | None = None,
        num_frames: int = 1,
        cross_attention_kwargs: dict[str, Any] | None = None,
        positions: int | None = None,
    ) -> torch.Tensor:
        """``hidden_states``: ``(batch * frames, C, H, W)``, frames contiguous per batch item. With
        ``positions``, the work goes that many spatial positions at a time (:meth:`temporal`)."""
        if positions is not None and positions < hidden_states.shape[2] * hidden_states.shape[3]:
            return self.temporal(hidden_states, num_frames, positions)
        batch_frames, channels, height, width = hidden_states.shape
        batch = self._check(batch_frames, num_frames)
        residual = hidden_states
        hidden_states = self.norm(hidden_states)  # per frame: GroupNorm over (C/G, H, W) of one frame
        hidden_states = (
            hidden_states.reshape(batch, num_frames, channels, height, width)
            .permute(0, 3, 4, 1, 2)
            .reshape(batch * height * width, num_frames, channels)
        )
        # _rows inlined: the caller's reference to its input would keep the permuted copy alive
        hidden_states = self.proj_in(hidden_states)
        for block in self.transformer_blocks:
            hidden_states = block(hidden_states=hidden_states, encoder_hidden_states=None)
        hidden_states = self.proj_out(hidden_states)
        hidden_states = (
            hidden_states.reshape(batch, height, width, num_frames, channels)
            .permute(0, 3, 4, 1, 2)
            .reshape(batch_frames, channels, height, width)
        )
        return hidden_states + residual

    def temporal(self, hidden_states: torch.Tensor, num_frames: int, positions: int) -> torch.Tensor:
        """The same function as :meth:`forward`, computed ``positions`` spatial positions at a time and
        added into ``hidden_states`` in place (returned).

        The per-frame GroupNorm statistics are taken first (float32, a few frames at a time), so neither the
        normalised clip nor the transformer's ``8C``-wide feed-forward ever exists for all positions.
        """
        batch_frames, channels, height, width = hidden_states.shape
        batch = self._check(batch_frames, num_frames)
        groups = self.norm.num_groups
        grouped = hidden_states.view(batch_frames, groups, -1)
        mean = torch.empty(batch_frames, groups, 1, device=hidden_states.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        step = max(1, positions * batch_frames // (height * width))  # float copies no larger than a chunk's
        for f in range(0, batch_frames, step):
            var, mu = torch.var_mean(grouped[f:f + step].float(), dim=-1, unbiased=False, keepdim=True)
            mean[f:f + step], rstd[f:f + step] = mu, torch.rsqrt(var + self.norm.eps)
        mean, rstd = mean.view(batch, num_frames, groups, 1, 1), rstd.view(batch, num_frames, groups, 1, 1)
        # Read here rather than through the norm's forward, so they are brought to the input's device here too:
        # under ComfyUI's partial loading a streamed norm keeps its weights on the offload device.
        weight = self.norm.weight.to(hidden_states.device, torch.float32).view(1, 1, groups, channels // groups, 1)
        bias = self.norm.bias.to(hidden_states.device, torch.float32).view(1, 1, groups, channels // groups, 1)
        clip = hidden_states.view(batch, num_frames, groups, channels // groups, height * width)
        for start in range(0, height * width, positions):
            part = clip[..., start:start + positions]
            normed = ((part.float() - mean) * rstd * weight + bias).to(hidden_states.dtype)
            count = normed.shape[-1]
            rows = normed.reshape(batch, num_frames, channels, count).permute(0, 3, 1, 2).reshape(-1, num_frames, channels)
            del normed
            rows = self.proj_in(rows)
            for block in self.transformer_blocks:
                rows = block(hidden_states=rows, encoder_hidden_states=None)
            rows = self.proj_out(rows)
            part += rows.reshape(batch, count, num_frames, groups, channels // groups).permute(0, 2, 3, 4, 1)
            del rows
        return hidden_states

    def _check(self, batch_frames: int, num_frames: int) -> int:
        if batch_frames % num_frames:
            raise ValueError(f"motion module: batch*frames {batch_frames} is not a multiple of {num_frames} frames")
        if num_frames > self.transformer_blocks[0].pos_embed.pe.shape[1]:
            raise ValueError(
                f"a context window of {num_frames} frames exceeds the motion module's positional encoding "
                f"({self.transformer_blocks[0].pos_embed.pe.shape[1]} frames); use fewer context frames"
            )
        return batch_frames // num_frames
