"""MusePose's 3D denoising UNet: SD-1.5 spatial blocks + AnimateDiff motion modules + pose features.

Built from diffusers' ``UNetMotionModel`` blocks (resnets, spatial transformers, down/up samplers and
the motion-block wiring resnet -> attention -> motion module), with two differences from diffusers,
both needed to compute MusePose's function:

* the motion modules are :class:`PerFrameNormTemporalTransformer` (per-frame GroupNorm, 32 groups);
* ``forward`` adds the pose guider's features to ``conv_in``'s output before the down blocks.

Motion-module positional encodings index the frame's position inside the window it is given.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from diffusers import UNetMotionModel

from ..config import MotionModuleConfig, UNetConfig
from .cross_attention import install_single_token_cross_attention
from .motion_module import PerFrameNormTemporalTransformer
from .unet_body import RESNET_FACTOR, FrameChunking, UNetWalk, timestep_embedding

_MOTION_BLOCK_TYPES = {
    "CrossAttnDownBlock2D": "CrossAttnDownBlockMotion",
    "DownBlock2D": "DownBlockMotion",
    "CrossAttnUpBlock2D": "CrossAttnUpBlockMotion",
    "UpBlock2D": "UpBlockMotion",
}


class MusePoseDenoisingUNet(UNetMotionModel):
    """``forward(sample (B, 4, F, h, w), t, encoder_hidden_states (B, L, D), pose_features)`` -> ``(B, 4, F, h, w)``."""

    @classmethod
    def build(cls, config: UNetConfig, motion: MotionModuleConfig = MotionModuleConfig()) -> "MusePoseDenoisingUNet":
        try:
            down = tuple(_MOTION_BLOCK_TYPES[t] for t in config.down_block_types)
            up = tuple(_MOTION_BLOCK_TYPES[t] for t in config.up_block_types)
        except KeyError as exc:
            raise ValueError(f"unsupported UNet block type {exc} in the base UNet config") from exc
        model = cls(
            in_channels=config.in_channels, out_channels=config.out_channels,
            down_block_types=down, up_block_types=up,
            block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
            downsample_padding=config.downsample_padding, mid_block_scale_factor=config.mid_block_scale_factor,
            act_fn=config.act_fn, norm_num_groups=config.norm_num_groups, norm_eps=config.norm_eps,
            cross_attention_dim=config.cross_attention_dim, use_linear_projection=config.use_linear_projection,
            num_attention_heads=config.attention_head_dim,
            motion_max_seq_length=motion.max_seq_length, motion_num_attention_heads=motion.num_attention_heads,
            use_motion_mid_block=True,
        )
        for block in [*model.down_blocks, model.mid_block, *model.up_blocks]:
            block.motion_modules = nn.ModuleList(
                PerFrameNormTemporalTransformer.for_channels(m.in_channels, motion) for m in block.motion_modules
            )
        install_single_token_cross_attention(model)
        return model

    #: What ``compile_repeated_blocks`` compiles (musepose.models.compile).
    _repeated_blocks = ("ResnetBlock2D", "Transformer2DModel", "PerFrameNormTemporalTransformer")
    #: Activation chunking of the next calls (see :class:`~musepose.models.unet_body.FrameChunking`).
    chunking: FrameChunking = FrameChunking()
    #: The reference-attention state the read processors use (set when they are installed).
    reference_state = None

    def enable_frame_chunking(self, budget_bytes: int | None) -> None:
        """Bound each layer's transient activations to about ``budget_bytes`` (``None``: off)."""
        self.chunking = FrameChunking(budget_bytes)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                encoder_hidden_states: torch.Tensor, pose_features: torch.Tensor | None = None,
                between_layers: Callable[[], None] | None = None) -> torch.Tensor:
        """Denoise one batch of windows.

        ``pose_features``: ``(P * F, C0, h, w)`` for ``P`` windows, where the batch ``B`` is a multiple of
        ``P`` (B = 2P under classifier-free guidance). The same features are added to every copy, without
        materialising the copies. ``between_layers`` is called after every layer (interrupt checks).
        """
        batch, channels, frames, height, width = sample.shape
        emb = timestep_embedding(self, timestep, batch, sample.device, self.dtype)
        emb = emb.repeat_interleave(frames, dim=0)
        context = encoder_hidden_states.repeat_interleave(frames, dim=0)

        hidden = sample.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
        hidden = self.conv_in(hidden)
        if pose_features is not None:
            self._add_pose(hidden, pose_features)

        walk = UNetWalk(self, emb, context, num_frames=frames, chunking=self.chunking,
                        between_layers=between_layers, reference_state=self.reference_state)
        hidden = walk.run(hidden)
        hidden = walk.per_frame(self._head, hidden, RESNET_FACTOR)
        return hidden.reshape(batch, frames, -1, height, width).permute(0, 2, 1, 3, 4)

    def _add_pose(self, hidden: torch.Tensor, pose_features) -> None:
        """Add the pose features to ``conv_in``'s output in place, to every copy (the CFG halves).

        ``pose_features``: a tensor, or :class:`~musepose.models.pose_guider.PoseFeatureRows` computed here
        in frame chunks (the features then never exist for the whole window)."""
        entries = pose_features.shape[0] if isinstance(pose_features, torch.Tensor) else pose_features.entries
        copies = hidden.shape[0] // entries
        if copies * entries != hidden.shape[0]:
            raise ValueError(f"pose features for {entries} frames do not fit the UNet input {tuple(hidden.shape)}")
        if isinstance(pose_features, torch.Tensor):
            if pose_features.shape[1:] != hidden.shape[1:]:
                raise ValueError(f"pose features {tuple(pose_features.shape)} do not fit the UNet input "
                                 f"{tuple(hidden.shape)}")
            hidden.view(copies, *pose_features.shape).add_(pose_features)
            return
        step = self.chunking.entries(entries, pose_features.per_entry_bytes)
        for a in range(0, entries, step):
            b = min(a + step, entries)
            features = pose_features.rows(a, b)
            for copy in range(copies):
                hidden[copy * entries + a:copy * entries + b] += features
            del features

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
