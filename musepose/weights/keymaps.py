"""Official checkpoint key names -> our module key names, and checkpoint identification.

Only two renamings exist:
* motion modules: the original nests ``temporal_transformer`` and names the two temporal attentions
  ``attention_blocks.{0,1}`` with ``norms.{0,1}`` and ``ff_norm``; diffusers' temporal transformer (which
  we reuse) calls them ``attn1``/``attn2``, ``norm1``/``norm2``, ``norm3``. The ``pos_encoder.pe`` buffers
  are dropped: the original rebuilds them at construction and so do we.
* the SD VAE written by diffusers 0.4 uses ``query/key/value/proj_attn`` for its mid-block attentions.
Everything else (UNets, pose guider, CLIP) already uses the names of the diffusers/transformers classes.
"""
from __future__ import annotations

import re

_MOTION_RENAMES = [
    (".temporal_transformer.", "."),
    (".attention_blocks.0.", ".attn1."),
    (".attention_blocks.1.", ".attn2."),
    (".norms.0.", ".norm1."),
    (".norms.1.", ".norm2."),
    (".ff_norm.", ".norm3."),
]
_VAE_LEGACY = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_VAE_LEGACY_RE = re.compile(r"^((?:encoder|decoder)\.mid_block\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$")


def is_motion_pe_key(key: str) -> bool:
    """The sinusoidal PE buffers the original stores but never loads (it drops every key ending in ``pe``)."""
    return key.endswith(".pe") and "motion_modules" in key


def motion_key(key: str) -> str:
    """``down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight``
    -> ``down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.weight``."""
    for old, new in _MOTION_RENAMES:
        key = key.replace(old, new)
    return key


def vae_key(key: str) -> str:
    match = _VAE_LEGACY_RE.match(key)
    if match:
        return f"{match.group(1)}{_VAE_LEGACY[match.group(2)]}.{match.group(3)}"
    return key


# -- identification -------------------------------------------------------------------------------

DESCRIPTIONS = {
    "denoising_unet": "MusePose denoising_unet.pth (SD-1.5 UNet keys with conv_out, no motion modules)",
    "reference_unet": "MusePose reference_unet.pth (SD-1.5 UNet keys without conv_norm_out/conv_out)",
    "pose_guider": "MusePose pose_guider.pth (conv_in, blocks.0-5, conv_out)",
    "motion_module": "MusePose/AnimateDiff motion_module.pth (only '...motion_modules...' keys)",
    "ldm_unet": "a Stable Diffusion UNet in the original LDM layout (input_blocks/middle_block/output_blocks), "
                "e.g. a ComfyUI diffusion_models file, not a MusePose checkpoint",
    "sd_checkpoint": "a full Stable Diffusion checkpoint (model.diffusion_model / first_stage_model / "
                     "cond_stage_model), not a MusePose checkpoint",
    "diffusers_motion_unet": "a diffusers UNet with motion modules already merged (AnimateDiff UNetMotionModel)",
    "clip_vision": "a CLIP vision encoder (vision_model.*)",
    "vae": "a VAE (encoder.*/decoder.*)",
    "unknown": "an unrecognised checkpoint",
}


def identify(keys: list[str] | set[str]) -> str:
    """Best guess of what a state dict is, from its key names alone."""
    keys = set(keys)
    if not keys:
        return "unknown"
    if any(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for k in keys):
        return "sd_checkpoint"
    if any(k.startswith(("input_blocks.", "middle_block.", "output_blocks.")) for k in keys):
        return "ldm_unet"
    if any(k.startswith("vision_model.") for k in keys):
        return "clip_vision"
    if any(k.startswith(("encoder.", "decoder.", "quant_conv.")) for k in keys):
        return "vae"
    has_motion = any("motion_modules" in k for k in keys)
    if has_motion and all("motion_modules" in k for k in keys):
        return "motion_module"
    if has_motion:
        return "diffusers_motion_unet"
    if "blocks.0.weight" in keys and "conv_out.weight" in keys and not any(k.startswith("down_blocks") for k in keys):
        return "pose_guider"
    if any(k.startswith("down_blocks.") for k in keys):
        return "denoising_unet" if "conv_out.weight" in keys else "reference_unet"
    return "unknown"
