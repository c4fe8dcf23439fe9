"""Every fixed fact about the MusePose architecture and sampler, in one place.

The values come from the official release (``configs/inference_v2.yaml``, ``test_stage_2.py``) and the
third-party configs it loads. They are stated here so the rest of the engine never hard-codes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: The SD VAE latent scale MusePose hard-codes (it does not read it from the VAE config).
VAE_SCALING_FACTOR = 0.18215
#: Spatial down-sampling factor of the SD VAE.
VAE_DOWNSCALE = 8

#: CLIP image preprocessing: resize to 224x224 (PIL bicubic), /255, OpenAI mean/std.
CLIP_IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: The pose guider of the released checkpoint (the class default (16, 32, 64, 128) is NOT what ships).
POSE_GUIDER_BLOCK_OUT_CHANNELS = (16, 32, 96, 256)

#: DDIM settings of inference_v2.yaml after the 2024-06-14 fix (``scaled_linear``, not ``linear``).
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}


@dataclass(frozen=True)
class MotionModuleConfig:
    """AnimateDiff "Vanilla" motion modules as configured by inference_v2.yaml.

    ``norm_num_groups``/``norm_eps`` are hard-coded in the original motion module and do NOT follow the
    UNet config (the tiny fixture uses 8 UNet groups precisely so a mix-up shows).
    """

    num_attention_heads: int = 8
    num_transformer_blocks: int = 1
    max_seq_length: int = 128
    norm_num_groups: int = 32
    norm_eps: float = 1e-6


@dataclass(frozen=True)
class UNetConfig:
    """The subset of the base ``sd-image-variations-diffusers/unet/config.json`` both UNets are built from."""

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    attention_head_dim: int = 8  # diffusers' legacy name: this is the number of heads in SD-1.x
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    in_channels: int = 4
    out_channels: int = 4
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    act_fn: str = "silu"
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    use_linear_projection: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, data: dict) -> "UNetConfig":
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {}
        for key in known:
            if key in data and data[key] is not None:
                value = data[key]
                kwargs[key] = tuple(value) if isinstance(value, list) else value
        heads = kwargs.get("attention_head_dim", 8)
        if not isinstance(heads, int):
            raise ValueError(f"per-block attention_head_dim {heads} is not supported (SD-1.x UNets use one int)")
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def unet2d_kwargs(self) -> dict:
        """Constructor arguments for diffusers ``UNet2DConditionModel``."""
        return dict(
            in_channels=self.in_channels, out_channels=self.out_channels,
            down_block_types=self.down_block_types, up_block_types=self.up_block_types,
            block_out_channels=self.block_out_channels, layers_per_block=self.layers_per_block,
            attention_head_dim=self.attention_head_dim, cross_attention_dim=self.cross_attention_dim,
            norm_num_groups=self.norm_num_groups, norm_eps=self.norm_eps,
            downsample_padding=self.downsample_padding, mid_block_scale_factor=self.mid_block_scale_factor,
            act_fn=self.act_fn, flip_sin_to_cos=self.flip_sin_to_cos, freq_shift=self.freq_shift,
            use_linear_projection=self.use_linear_projection,
        )


#: Full-size configs, used when building the real architecture without any file (benchmarks, key test).
SD15_UNET = UNetConfig()
CLIP_VIT_L14 = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "patch_size": 14, "image_size": 224, "projection_dim": 768, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5, "num_channels": 3,
}
SD_VAE_FT_MSE = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "sample_size": 256,
}
