"""Memory and time planner for MusePose sampling.

An analytic model, no GPU needed:

* **Weights**: the exact parameter (and buffer) counts of the full-size models, counted from the
  architecture built on the meta device, times the dtype size (fp8 storage: 1 byte per stored weight plus
  its scales). Which components sit on the device at each stage depends on the mode.
* **Activations**: the model walks the denoising UNet (down, mid, up; every resnet, spatial transformer,
  motion module, sampler) for one UNet call of ``N = branches x windows x frames`` entries, keeping the
  skip connections live exactly as the engine does, and adds each layer's transient working set:
  GroupNorm/SiLU/conv temporaries of resnets, Q/K/V/outputs of attention, the concatenated reference K/V
  of reference attention, SDPA workspace (flash/mem-efficient: none beyond the output; math: the
  ``T x T_k`` score matrix), the GEGLU feed-forward (``8C + 4C + 4C`` per token, chunkable), the motion
  modules' temporal attention. The pose guider (per window, or the whole video for the original), the
  reference UNet pass and the VAE decode chunk are separate stages; the peak is the maximum over stages.
* **Time**: FLOPs of one window-step (conv + linear + attention matmuls, counted from the same walk;
  the tests check them against ``torch.utils.flop_counter`` on the meta device) divided by
  ``device peak x efficiency``, plus mode overheads (weight streaming over PCIe, overlapped with compute
  when prefetching; chunking; sequential CFG). ``efficiency`` is an assumption (default 0.45) to be
  calibrated with ``benchmarks/run_gpu.sh``.

All byte figures are "allocated" bytes as ``torch.cuda.max_memory_allocated`` reports them; the CUDA
context (~0.5 GB) and the caching allocator's slack (reserved - allocated, typically 5-15 %) are not in
them.

Public API: :func:`plan`, :func:`plan_all_modes`, :func:`choose_mode`, :data:`MODES`, :data:`DEVICES`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import NamedTuple

from ..config import POSE_GUIDER_BLOCK_OUT_CHANNELS, SD15_UNET, SD_VAE_FT_MSE, MotionModuleConfig, UNetConfig

GB = 1e9
GiB = float(1 << 30)
MiB = float(1 << 20)
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


# -- architecture facts (exact counts from the meta-built models) -------------------------------------

@dataclass(frozen=True)
class ArchCounts:
    """Parameter/buffer element counts per component of one architecture."""

    params: dict  # component -> parameters
    buffers: dict  # component -> floating-point buffer elements (motion PE); int buffers excluded
    fp8_params: dict  # component -> parameters that fp8 storage would store as fp8
    fp8_scales: dict  # component -> per-output-channel scale count
    stream_units: dict  # component -> list of unit parameter counts (streamed UNets)
    stream_resident: dict  # component -> parameters that stay resident while streaming

    def total_params(self) -> int:
        return sum(self.params.values())


@functools.lru_cache(maxsize=4)
def arch_counts(unet_config: UNetConfig = SD15_UNET) -> ArchCounts:
    """Counts from ``build_models(...)`` on the meta device (no memory; about a second after imports)."""
    import torch
    from torch import nn

    from ..weights.loader import build_models
    from .fp8 import _in_blocks
    from .streaming import stream_units, streamable

    models = build_models(unet_config, device="meta")
    params, buffers, fp8_params, fp8_scales, units, resident = {}, {}, {}, {}, {}, {}
    for name, module in models.components().items():
        params[name] = sum(p.numel() for p in module.parameters())
        buffers[name] = sum(b.numel() for b in module.buffers() if b.is_floating_point())
        n8 = s8 = 0
        for sub_name, layer in module.named_modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d)) and layer.weight.numel() >= 4096 and _in_blocks(sub_name):
                n8 += layer.weight.numel()
                s8 += layer.weight.shape[0]
        fp8_params[name], fp8_scales[name] = n8, s8
        if streamable(module):
            unit_list = [sum(p.numel() for p in u.parameters()) + sum(b.numel() for b in u.buffers()
                                                                       if b.is_floating_point())
                         for _, u in stream_units(module)]
            units[name] = unit_list
            resident[name] = params[name] + buffers[name] - sum(unit_list)
    del torch
    return ArchCounts(params, buffers, fp8_params, fp8_scales, units, resident)


def weight_bytes(component: str, dtype: str = "fp16", fp8: bool = False,
                 unet_config: UNetConfig = SD15_UNET) -> int:
    """Bytes of one component's weights (parameters + float buffers) in ``dtype`` (optionally fp8 storage)."""
    counts = arch_counts(unet_config)
    s = DTYPE_BYTES[dtype]
    total = (counts.params[component] + counts.buffers[component]) * s
    if fp8:
        total -= counts.fp8_params[component] * (s - 1)
        total += counts.fp8_scales[component] * 4
    return int(total)


# -- devices -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Device:
    name: str
    peak_flops: float  # dense fp16/bf16 tensor-core FLOP/s (fp32 for the CPU entry)
    memory_bytes: float
    h2d_bytes_per_s: float  # pinned host -> device copy bandwidth
    efficiency: float = 0.45  # assumed fraction of peak a window-step reaches (calibrate on hardware)


DEVICES = {
    "h100": Device("NVIDIA H100 80GB SXM", 989e12, 80 * GB, 25e9),
    "h100-pcie": Device("NVIDIA H100 PCIe", 756e12, 80 * GB, 25e9),
    "h200": Device("NVIDIA H200", 989e12, 141 * GB, 25e9),
    "a100": Device("NVIDIA A100", 312e12, 80 * GB, 20e9),
    "l4": Device("NVIDIA L4", 121e12, 24 * GB, 12e9),
    "rtx4090": Device("NVIDIA RTX 4090", 165e12, 24 * GB, 20e9),
    "rtx3090": Device("NVIDIA RTX 3090", 71e12, 24 * GB, 20e9),
    "rtx3060": Device("NVIDIA RTX 3060 12GB", 25e12, 12 * GB, 12e9),
    "cpu": Device("CPU (2 cores, fp32)", 0.1e12, 24 * GB, 10e9, efficiency=1.0),
}


# -- modes ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModeSpec:
    """A bundle of levers. ``placement``: 'none' (all resident), 'model' (each model on the device only
    while it runs), 'stream' (UNet blocks streamed within a budget). ``chunk``: activation chunking."""

    name: str
    placement: str
    cfg_mode: str
    chunk: bool
    fp8: bool = False
    original: bool = False
    description: str = ""


MODES = {
    "original": ModeSpec("original", "none", "batched", False, original=True,
                         description="the original MusePose algorithm's costs (all models resident, whole-video "
                                     "pose guider, per-frame reference bank, uncond attention twice)"),
    "fast": ModeSpec("fast", "none", "batched", False,
                     description="everything resident, CFG halves batched, no chunking (our fastest)"),
    "sequential-cfg": ModeSpec("sequential-cfg", "none", "sequential", False,
                               description="fast + CFG halves one after the other"),
    "model-offload": ModeSpec("model-offload", "model", "batched", False,
                              description="each model on the device only while it runs, CFG batched"),
    "default": ModeSpec("default", "model", "sequential", True,
                        description="model offload + sequential CFG + activation chunking"),
    "lowvram": ModeSpec("lowvram", "stream", "sequential", True,
                        description="default + UNet blocks streamed from pinned CPU memory within a budget"),
    "lowvram-fp8": ModeSpec("lowvram-fp8", "stream", "sequential", True, fp8=True,
                            description="lowvram with fp8 weight storage (lossy; half the streamed bytes)"),
}


# -- shapes ----------------------------------------------------------------------------------------------

def _level_sizes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """Latent (h, w) per UNet level; stride-2 convs with padding 1 give ceil(h/2)."""
    h, w = height // 8, width // 8
    sizes = [(h, w)]
    for _ in range(levels - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


# -- the UNet walk ---------------------------------------------------------------------------------------

@dataclass
class Walk:
    """Accumulates FLOPs and tracks live/peak bytes of one network call."""

    s: int  # bytes per activation element
    live: float = 0.0
    peak: float = 0.0
    peak_where: str = ""
    flops: float = 0.0

    def touch(self, transient: float, where: str) -> None:
        if self.live + transient > self.peak:
            self.peak, self.peak_where = self.live + transient, where


@dataclass(frozen=True)
class Levers:
    chunk_bytes: float | None = None  # activation chunk budget (None: unchunked)
    attention: str = "flash"  # flash | efficient | cudnn | math
    reference: str = "ours"  # none | ours | original


def _chunk_fraction(total_rows: float, channels: int, s: int, factor: int, levers: Levers) -> float:
    if levers.chunk_bytes is None:
        return 1.0
    rows = max(1.0, levers.chunk_bytes // (channels * s * factor))
    return min(1.0, rows / total_rows)


def _resnet(walk: Walk, n: int, c_in: int, c_out: int, t: int, where: str, temb_dim: int = 1280,
            levers: "Levers | None" = None) -> None:
    xi, xo = n * c_in * t * walk.s, n * c_out * t * walk.s
    transient = max(2 * xi, xi + xo, 3 * xo)
    if levers is not None and levers.chunk_bytes is not None:
        per_entry = c_in * t * walk.s * 3
        f = min(1.0, max(1.0, levers.chunk_bytes // per_entry) / n)
        if f < 1.0:
            transient = xo + f * transient
    walk.touch(transient, where)
    walk.flops += n * (2 * 9 * c_in * c_out * t + 2 * 9 * c_out * c_out * t + 2 * temb_dim * c_out)
    if c_in != c_out:
        walk.flops += n * 2 * c_in * c_out * t


def _attention_block(walk: Walk, n: int, c: int, t: int, heads: int, kv_tokens_cond: int, n_cond: int,
                     levers: Levers, where: str) -> float:
    """Self-attention (spatial attn1 with reference, or temporal) transient bytes; adds FLOPs."""
    x = n * c * t * walk.s
    s = walk.s
    reference = kv_tokens_cond > t
    if levers.reference == "original" and reference:
        # bank (per frame copy) + [h, bank] + K, V of it + Q + out + merged + to_out; then uncond redo.
        kv = kv_tokens_cond / t
        transient = x * (kv - 1) + x * kv + 2 * x * kv + x + 3 * x
        n_unc = n - n_cond
        walk.flops += n * (2 * c * c * t + 2 * 2 * c * c * kv_tokens_cond + 4 * t * kv_tokens_cond * c + 2 * c * c * t)
        walk.flops += n_unc * (3 * 2 * c * c * t + 4 * t * t * c + 2 * c * c * t)
        scores = n * heads * t * kv_tokens_cond * s * 2 if levers.attention == "math" else 0
        return transient + scores
    rows = n * t
    factor = 10 if reference else 6
    f = _chunk_fraction(rows, c, s, factor, levers)
    n_unc = n - n_cond
    if levers.chunk_bytes is None:
        # engine processor: Q, K, V, output buffer for the whole batch; concatenated K/V per cond chunk
        concat = 2 * n_cond * c * kv_tokens_cond * s if reference else 0
        transient = max(4 * x + concat + n_cond * c * t * s, 6 * x)
        chunk_entries = n
    else:
        chunk_entries = max(1.0, f * n)
        transient = x + f * factor * x
    if levers.attention == "math":
        transient += chunk_entries * heads * t * (kv_tokens_cond if reference else t) * s * 2
    else:
        transient += chunk_entries * heads * t * 4  # logsumexp workspace
    walk.flops += n * (4 * 2 * c * c * t)  # q, k, v, out projections of the frame tokens
    walk.flops += n_cond * 4 * t * kv_tokens_cond * c + n_unc * 4 * t * t * c
    return transient


def _feed_forward(walk: Walk, n: int, c: int, t: int, levers: Levers) -> float:
    x = n * c * t * walk.s
    g = _chunk_fraction(n * t, c, walk.s, 16, levers)
    walk.flops += n * 24 * c * c * t
    return (16 * g + (2 if g < 1 else 1)) * x


def _spatial_transformer(walk: Walk, n: int, c: int, t: int, heads: int, cross_dim: int, n_cond: int,
                         ref_tokens: int, levers: Levers, where: str) -> None:
    x = n * c * t * walk.s
    walk.flops += n * (2 * c * c * t) * 2  # proj_in, proj_out (1x1 convs)
    walk.touch(2 * x, where + " proj_in")
    base = x  # h (the block's running hidden states)
    kv = t + ref_tokens if (levers.reference != "none" and ref_tokens) else t
    attn1 = _attention_block(walk, n, c, t, heads, kv, n_cond if kv > t else 0, levers, where)
    walk.touch(base + x + max(attn1, 2 * x), where + " attn1")  # >= h, norm, attn out, h + attn out
    # cross attention: one context token
    f = _chunk_fraction(n * t, c, walk.s, 6, levers)
    attn2 = x + f * 6 * x if levers.chunk_bytes is not None else 5 * x
    walk.flops += n * (2 * 2 * c * c * t + 2 * 2 * cross_dim * c + 4 * t * c)
    walk.touch(base + x + max(attn2, 2 * x), where + " attn2")
    ff = _feed_forward(walk, n, c, t, levers)
    walk.touch(base + x + ff, where + " ff")
    walk.touch(3 * x, where + " proj_out")


def _motion_module(walk: Walk, n: int, c: int, t: int, frames: int, heads: int, levers: Levers, where: str) -> None:
    x = n * c * t * walk.s
    s = walk.s
    walk.flops += n * (2 * c * c * t) * 2  # proj_in, proj_out
    walk.touch(2 * x, where + " norm/permute")
    base = x
    for _ in range(2):  # two temporal self-attentions
        f = _chunk_fraction(n * t, c, s, 6, levers)
        if levers.chunk_bytes is None:
            attn = 6 * x
        else:
            attn = x + f * 6 * x
        if levers.attention == "math":
            attn += (n / frames) * t * heads * frames * frames * s * 2 * (f if levers.chunk_bytes else 1)
        walk.flops += n * (4 * 2 * c * c * t) + n * 4 * frames * c * t
        walk.touch(base + 2 * x + max(attn, 2 * x), where + " temporal attn")
    ff = _feed_forward(walk, n, c, t, levers)
    walk.touch(base + x + ff, where + " ff")
    walk.touch(3 * x, where + " proj_out")


def unet_call(config: UNetConfig, motion: MotionModuleConfig | None, n: int, frames: int, height: int, width: int,
              s: int, n_cond: int, levers: Levers, pose_entries: int = 0) -> Walk:
    """One UNet forward of ``n`` (batch x frames) entries; ``motion=None`` for the 2D reference UNet.

    ``n_cond``: entries that read the reference (the rest are the unconditional branch).
    ``pose_entries``: entries of pose features held during the call (the denoiser's pose input).
    """
    walk = Walk(s=s)
    boc = list(config.block_out_channels)
    levels = len(boc)
    sizes = _level_sizes(height, width, levels)
    tokens = [h * w for h, w in sizes]
    heads = config.attention_head_dim
    layers = config.layers_per_block
    has_attn_down = [t.startswith("CrossAttn") for t in config.down_block_types]
    has_attn_up = [t.startswith("CrossAttn") for t in config.up_block_types]
    mheads = motion.num_attention_heads if motion else 0

    def x(c, level):
        return n * c * tokens[level] * s

    def ref_tokens(level):
        return tokens[level] if levers.reference != "none" else 0

    # inputs: latents, pose features, embeddings
    walk.live = n * config.in_channels * tokens[0] * s + pose_entries * boc[0] * tokens[0] * s
    walk.flops += n * 2 * 9 * config.in_channels * boc[0] * tokens[0]
    walk.flops += 2 * (boc[0] * boc[0] * 4 + (boc[0] * 4) ** 2)  # time embedding MLP (once per call)
    walk.touch(2 * x(boc[0], 0), "conv_in + pose")
    skips = [x(boc[0], 0)]
    walk.live += skips[-1]
    hidden = skips[-1]  # the current hidden is the last skip in the down path
    c_prev = boc[0]
    for i, c in enumerate(boc):
        t = tokens[i]
        for j in range(layers):
            _resnet(walk, n, c_prev if j == 0 else c, c, t, f"down{i}.resnet{j}", levers=levers)
            c_prev = c
            if has_attn_down[i]:
                _spatial_transformer(walk, n, c, t, heads, config.cross_attention_dim, n_cond,
                                     ref_tokens(i), levers, f"down{i}.attn{j}")
            if motion:
                _motion_module(walk, n, c, t, frames, mheads, levers, f"down{i}.motion{j}")
            skips.append(x(c, i))
            walk.live += skips[-1]
        if i < levels - 1:
            walk.flops += n * 2 * 9 * c * c * tokens[i + 1]
            walk.touch(x(c, i + 1), f"down{i}.downsample")
            skips.append(x(c, i + 1))
            walk.live += skips[-1]
    # mid block
    c = boc[-1]
    t = tokens[-1]
    _resnet(walk, n, c, c, t, "mid.resnet0", levers=levers)
    walk.live += x(c, levels - 1)  # mid hidden (skips stay live)
    _spatial_transformer(walk, n, c, t, heads, config.cross_attention_dim, n_cond, ref_tokens(levels - 1),
                         levers, "mid.attn")
    if motion:
        _motion_module(walk, n, c, t, frames, mheads, levers, "mid.motion")
    _resnet(walk, n, c, c, t, "mid.resnet1", levers=levers)
    hidden = x(c, levels - 1)
    # up path
    rev = list(reversed(boc))
    prev_out = rev[0]
    for i, c in enumerate(rev):
        level = levels - 1 - i
        t = tokens[level]
        input_channel = rev[min(i + 1, levels - 1)]
        block_skips = skips[-(layers + 1):]  # held by the caller until the block returns
        skips = skips[: -(layers + 1)]
        for j in range(layers + 1):
            skip_c = input_channel if j == layers else c
            c_in = (prev_out if j == 0 else c) + skip_c
            # concatenation: hidden (c_in - skip_c) + skip -> new tensor
            walk.touch(x(c_in, level), f"up{i}.cat{j}")
            walk.live += x(c_in, level) - hidden
            _resnet(walk, n, c_in, c, t, f"up{i}.resnet{j}", levers=levers)
            walk.live += x(c, level) - x(c_in, level)
            hidden = x(c, level)
            if has_attn_up[i]:
                _spatial_transformer(walk, n, c, t, heads, config.cross_attention_dim, n_cond, ref_tokens(level),
                                     levers, f"up{i}.attn{j}")
            if motion:
                _motion_module(walk, n, c, t, frames, mheads, levers, f"up{i}.motion{j}")
        walk.live -= sum(block_skips)
        prev_out = c
        if i < levels - 1:
            t_up = tokens[level - 1]
            walk.flops += n * 2 * 9 * c * c * t_up
            walk.touch(2 * x(c, level - 1), f"up{i}.upsample")
            walk.live += x(c, level - 1) - hidden
            hidden = x(c, level - 1)
    if motion is not None:  # output head of the denoiser
        walk.touch(2 * x(boc[0], 0), "conv_norm_out")
        walk.flops += n * 2 * 9 * boc[0] * config.out_channels * tokens[0]
    return walk


def pose_guider_bytes(frames: int, height: int, width: int, s: int, chunk: int | None = 16,
                      channels=POSE_GUIDER_BLOCK_OUT_CHANNELS, out_channels: int = 320) -> tuple[float, float]:
    """(transient peak, output bytes) of the pose guider on ``frames`` frames in chunks of ``chunk``."""
    per = chunk if chunk else frames
    per = min(per, frames)
    hw = height * width
    peak = 2 * per * channels[0] * hw * s  # two full-resolution 16-channel tensors (conv output + SiLU output)
    out = frames * out_channels * (height // 8) * (width // 8) * s
    return peak, out


def pose_guider_flops(frames: int, height: int, width: int, channels=POSE_GUIDER_BLOCK_OUT_CHANNELS,
                      out_channels: int = 320) -> float:
    hw = height * width
    c = list(channels)
    flops = 2 * 9 * 3 * c[0] * hw
    res = hw
    for i in range(len(c) - 1):
        flops += 2 * 9 * c[i] * c[i] * res
        res = math.ceil(height / 2 ** (i + 1)) * math.ceil(width / 2 ** (i + 1))
        flops += 2 * 9 * c[i] * c[i + 1] * res
    flops += 2 * 9 * c[-1] * out_channels * res
    return frames * flops


def vae_decode_activation_bytes(width: int, height: int, frames: int = 1, s: int = 2, tiled: bool = False,
                                tile_px: int = 256, attention: str = "math", vae_config: dict | None = None) -> float:
    """Transient bytes of decoding ``frames`` frames at once: the widest full-resolution resnet of the decoder
    (input + norm/SiLU temporaries: 3 x C x H x W) or, tiled, of one tile; plus the mid-block attention's
    score matrix (one head of width 512: flash cannot run it, so it is assumed to fall back to math)."""
    cfg = vae_config or SD_VAE_FT_MSE
    boc = list(cfg["block_out_channels"])
    if tiled:
        width = height = min(tile_px, max(width, height))
    hw = width * height
    # the decoder's up path: channels reversed; the last upsampler feeds a 256->128 resnet at full res
    widest_full = max(boc[1], boc[0])
    peak = 3 * widest_full * hw * s
    t0 = (width // 8) * (height // 8)
    if attention == "math":
        peak = max(peak, 2 * t0 * t0 * s + 4 * boc[-1] * t0 * s)
    return frames * peak


def vae_decode_flops(width: int, height: int, vae_config: dict | None = None) -> float:
    cfg = vae_config or SD_VAE_FT_MSE
    boc = list(reversed(cfg["block_out_channels"]))
    t0 = (width // 8) * (height // 8)
    flops = 2 * 9 * 4 * boc[0] * t0  # conv_in
    flops += 2 * (2 * 2 * 9 * boc[0] ** 2 * t0) + 4 * 2 * boc[0] ** 2 * t0 + 4 * t0 * t0 * boc[0]  # mid
    c_prev, t = boc[0], t0
    for i, c in enumerate(boc):
        for j in range(3):
            ci = c_prev if j == 0 else c
            flops += 2 * 9 * ci * c * t + 2 * 9 * c * c * t + (2 * ci * c * t if ci != c else 0)
        c_prev = c
        if i < len(boc) - 1:
            t *= 4
            flops += 2 * 9 * c * c * t
    flops += 2 * 9 * boc[-1] * 3 * t
    return flops


# -- the plan ------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """Prediction for one mode. Bytes are allocated bytes (see module docstring)."""

    mode: str
    width: int
    height: int
    frames: int
    windows_per_batch: int
    cfg: float
    dtype: str
    cfg_mode: str
    chunk_bytes: float | None
    attention: str
    placement: str
    fp8: bool
    stream_budget_bytes: float | None
    decode_chunk: int
    peak_bytes: float
    peak_stage: str
    stages: dict = field(default_factory=dict)  # stage -> peak bytes
    weights_resident_bytes: float = 0.0
    flops_per_window_step: float = 0.0
    seconds_per_window_step: float = 0.0
    floor_seconds_per_window_step: float = 0.0
    seconds_per_step: float = 0.0
    windows: int = 1
    device: str = "h100"
    notes: list = field(default_factory=list)

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GB

    def summary(self) -> str:
        extra = []
        if self.chunk_bytes:
            extra.append(f"chunk {self.chunk_bytes / MiB:.0f} MiB")
        if self.stream_budget_bytes is not None:
            extra.append(f"stream budget {self.stream_budget_bytes / GB:.2f} GB")
        if self.fp8:
            extra.append("fp8 weights")
        lever = (", " + ", ".join(extra)) if extra else ""
        return (f"{self.mode:15s} peak {self.peak_gb:6.2f} GB ({self.peak_stage}); "
                f"{self.seconds_per_window_step:7.3f} s/window-step on {self.device} "
                f"[cfg {self.cfg_mode}, windows/batch {self.windows_per_batch}, placement {self.placement}{lever}]")


def count_windows(video_frames: int, context_frames: int, overlap: int) -> int:
    if video_frames <= context_frames:
        return 1
    step = context_frames - overlap
    return len(range(0, video_frames - overlap, step))


def plan(width: int = 768, height: int = 768, frames: int = 48, cfg: float = 3.5, dtype: str = "fp16",
         mode: str = "default", windows_per_batch: int = 1, attention: str = "flash",
         chunk_bytes: float | None = None, stream_budget_bytes: float | None = None, decode_chunk: int | None = None,
         video_frames: int | None = None, overlap: int = 4, device: str | Device = "h100",
         efficiency: float | None = None, unet_config: UNetConfig = SD15_UNET,
         motion: MotionModuleConfig = MotionModuleConfig(), prefetch: bool = True) -> Plan:
    """Predict peak memory and time for one mode (see module docstring).

    ``chunk_bytes``/``stream_budget_bytes``/``decode_chunk`` default to what the mode would pick
    (chunking: 256 MiB; streaming: 1 GB of block weights; decode: fits beside the sampling peak).
    ``video_frames`` (default: one window) matters for the original's whole-video pose guider and the
    number of windows per step.
    """
    spec = MODES[mode]
    dev = DEVICES[device] if isinstance(device, str) else device
    eff = efficiency if efficiency is not None else dev.efficiency
    s = DTYPE_BYTES[dtype]
    width, height = width - width % 8, height - height % 8
    video_frames = video_frames or frames
    win_frames = min(frames, video_frames)
    windows = count_windows(video_frames, frames, overlap)
    k = 1 if spec.original else max(1, min(windows_per_batch, windows))
    guided = cfg > 1.0
    cfg_mode = spec.cfg_mode if guided else "batched"
    chunk = (chunk_bytes if chunk_bytes is not None else 256 * MiB) if spec.chunk else None
    levers = Levers(chunk_bytes=chunk, attention=attention, reference="original" if spec.original else "ours")
    notes = []
    h8, w8 = height // 8, width // 8
    t0 = h8 * w8

    # weights
    comps = ("reference_unet", "denoising_unet", "pose_guider", "image_encoder", "vae")
    wb = {c: weight_bytes(c, dtype, fp8=spec.fp8 and c in ("denoising_unet", "reference_unet"), unet_config=unet_config)
          for c in comps}
    all_weights = sum(wb.values())
    counts = arch_counts(unet_config)
    budget = None
    if spec.placement == "stream":
        budget = stream_budget_bytes if stream_budget_bytes is not None else 1.0 * GB
        unit_bytes = max(counts.stream_units["denoising_unet"]) * (1 if spec.fp8 else s)
        budget = max(budget, 2 * unit_bytes)  # a unit and its prefetched successor must fit
        den_resident = counts.stream_resident["denoising_unet"] * s + min(budget, wb["denoising_unet"])
        ref_resident = counts.stream_resident["reference_unet"] * s + min(budget, wb["reference_unet"])
    else:
        den_resident, ref_resident = wb["denoising_unet"], wb["reference_unet"]

    def resident(stage: str) -> float:
        if spec.placement == "none":
            return all_weights
        if stage == "reference":
            return ref_resident
        if stage == "sampling":
            return den_resident + wb["pose_guider"]
        if stage in ("encode", "decode"):
            return wb["vae"]
        return 0.0

    stages = {}
    # reference stage: the reference UNet once (batch 1; the original runs the CFG-doubled batch 2)
    ref_n = 2 if (spec.original and guided) else 1
    ref_walk = unet_call(unet_config, None, ref_n, 1, height, width, s, 0, Levers(chunk, attention, "none"))
    ref_features = sum(tokens * c for tokens, c in _ref_layers(unet_config, height, width)) * s * ref_n
    stages["reference"] = resident("reference") + ref_walk.peak + ref_features
    # VAE encode of the reference image (1 frame) ~ one decode frame
    stages["encode"] = resident("encode") + vae_decode_activation_bytes(width, height, 1, s)

    # sampling: one window batch
    branches = 2 if guided else 1
    calls = [(branches * k * win_frames, k * win_frames if guided else k * win_frames)]
    if guided and cfg_mode == "sequential":
        calls = [(k * win_frames, 0), (k * win_frames, k * win_frames)]
    elif guided:
        calls = [(2 * k * win_frames, k * win_frames)]
    else:
        calls = [(k * win_frames, k * win_frames)]
    # reference K/V cache (ours: projected once per layer) or the raw features (original)
    kv_cache = 2 * ref_features / ref_n if not spec.original else ref_features
    accumulator = branches * 4 * video_frames * t0 * 4  # float32 per-frame sums on the device
    fixed = kv_cache + accumulator + ref_features
    pose_peak, pose_out = pose_guider_bytes(k * win_frames, height, width, s, None if spec.original else 16)
    if spec.original:
        pose_peak, pose_out = pose_guider_bytes(video_frames, height, width, s, None)
        held_pose = pose_out + 2 * (pose_out * win_frames / video_frames)  # whole video kept + CFG-doubled slice
        pose_entries_live = 0
        stages["pose guider"] = resident("sampling") + fixed + pose_peak + pose_out
    else:
        held_pose = 0
        pose_entries_live = k * win_frames
        stages["pose guider"] = resident("sampling") + fixed + pose_peak + pose_out
    flops = 0.0
    call_peak, call_where = 0.0, ""
    previous_outputs = 0.0
    for n, n_cond in calls:
        walk = unet_call(unet_config, motion, n, win_frames, height, width, s, n_cond, levers, pose_entries_live)
        flops += walk.flops
        total = walk.peak + previous_outputs
        if total > call_peak:
            call_peak, call_where = total, walk.peak_where
        previous_outputs += n * 4 * t0 * s
    stages["sampling"] = resident("sampling") + fixed + held_pose + call_peak
    flops += pose_guider_flops(k * win_frames, height, width) if not spec.original else 0.0

    # decoding: chunk frames beside whatever stays resident
    per_frame = vae_decode_activation_bytes(width, height, 1, s, attention="math")
    if decode_chunk is None:
        if spec.original:
            decode_chunk = 1
        else:
            room = max(stages["sampling"], stages["reference"]) - resident("decode") - fixed
            decode_chunk = int(max(1, min(16, room // per_frame)))
    stages["decode"] = resident("decode") + decode_chunk * per_frame + video_frames * 3 * height * width * 0  # output goes to CPU

    peak_stage = max(stages, key=stages.get)
    peak = stages[peak_stage]
    where = call_where if peak_stage == "sampling" else peak_stage

    # time
    compute = flops / (dev.peak_flops * eff)
    overhead = 1.0
    if cfg_mode == "sequential" and guided:
        overhead += 0.03  # two launches of half the batch
    if chunk is not None:
        overhead += 0.02 + 0.01 * max(0.0, math.log2(256 * MiB / chunk))
    seconds = compute * overhead
    if spec.placement == "stream":
        streamed = max(0.0, wb["denoising_unet"] - budget) if budget is not None else 0.0
        # with an MRU policy the resident part is a hit; the rest crosses PCIe on every call
        transfer = len(calls) * streamed / dev.h2d_bytes_per_s
        seconds = max(seconds, transfer) * 1.05 if prefetch else seconds + transfer
        notes.append(f"streams {streamed / GB:.2f} GB per UNet call")
    if spec.fp8:
        seconds += len(calls) * wb["denoising_unet"] * 3 / 2e12  # upcast pass over the weights (HBM)
    if spec.original:
        # the original's extra reference-attention FLOPs are already in `flops`; the whole-video pose guider
        # runs once per video: spread over the steps of one run it is small, so it is not added here
        pass
    floor = flops / dev.peak_flops
    return Plan(mode=mode, width=width, height=height, frames=win_frames, windows_per_batch=k, cfg=cfg, dtype=dtype,
                cfg_mode=cfg_mode, chunk_bytes=chunk, attention=attention, placement=spec.placement, fp8=spec.fp8,
                stream_budget_bytes=budget, decode_chunk=decode_chunk, peak_bytes=peak, peak_stage=where,
                stages=stages, weights_resident_bytes=resident("sampling"), flops_per_window_step=flops / k,
                seconds_per_window_step=seconds / k, floor_seconds_per_window_step=floor / k,
                seconds_per_step=seconds / k * windows, windows=windows, device=dev.name if isinstance(device, Device) else device,
                notes=notes)


def _ref_layers(config: UNetConfig, height: int, width: int) -> list[tuple[int, int]]:
    """(tokens, channels) of every spatial self-attention that writes/reads reference features."""
    sizes = _level_sizes(height, width, len(config.block_out_channels))
    out = []
    for i, (c, kind) in enumerate(zip(config.block_out_channels, config.down_block_types)):
        if kind.startswith("CrossAttn"):
            out += [(sizes[i][0] * sizes[i][1], c)] * config.layers_per_block
    out.append((sizes[-1][0] * sizes[-1][1], config.block_out_channels[-1]))
    rev = list(reversed(config.block_out_channels))
    for i, (c, kind) in enumerate(zip(rev, config.up_block_types)):
        level = len(rev) - 1 - i
        if kind.startswith("CrossAttn"):
            out += [(sizes[level][0] * sizes[level][1], c)] * (config.layers_per_block + 1)
    return out


def plan_all_modes(width: int = 768, height: int = 768, frames: int = 48, cfg: float = 3.5, dtype: str = "fp16",
                   windows_per_batch: int = 1, modes=tuple(MODES), **kwargs) -> list[Plan]:
    return [plan(width, height, frames, cfg, dtype, mode, windows_per_batch=windows_per_batch, **kwargs)
            for mode in modes]


# -- automatic choice ----------------------------------------------------------------------------------

class ModeChoice(NamedTuple):
    """What :func:`choose_mode` picked. Unpacks as a tuple in this field order."""

    mode: str  # a key of MODES
    windows_per_batch: int  # SamplingSettings.context_batch_size
    cfg_mode: str  # SamplingSettings.cfg_mode: "batched" | "sequential"
    ff_chunk: int | None  # activation chunk bytes for enable_activation_chunking (None: off)
    offload: str  # "none" | "model" | "stream"
    stream_budget_bytes: int | None  # StreamingPlacement budget (offload == "stream")
    fp8: bool  # apply_fp8_storage to the UNets
    decode_chunk: int  # frames per VAE decode call
    predicted_peak_bytes: int
    predicted_seconds_per_window_step: float
    fits: bool  # False: nothing fits; this is the smallest-memory configuration


def choose_mode(free_bytes: float, width: int, height: int, frames: int, cfg: float = 3.5, dtype: str = "fp16",
                device: str | Device = "h100", attention: str = "flash", safety: float = 0.9,
                allow_fp8: bool = False, max_windows_per_batch: int = 4, video_frames: int | None = None,
                overlap: int = 4) -> ModeChoice:
    """The fastest mode and window batch whose predicted peak fits in ``safety * free_bytes``.

    ``free_bytes``: device memory MusePose may use in total (weights + activations), e.g. free VRAM
    after ComfyUI unloaded other models. ``frames``: context window length. ``device`` only scales the
    time estimate (it does not change which mode fits). fp8 (lossy) is considered only when
    ``allow_fp8``. Returns a :class:`ModeChoice`; if nothing fits, the smallest-memory candidate with
    ``fits=False``.
    """
    limit = free_bytes * safety
    candidates: list[Plan] = []
    windows = count_windows(video_frames or frames, frames, overlap)
    for mode, spec in MODES.items():
        if spec.original or (spec.fp8 and not allow_fp8):
            continue
        batches = range(1, max(1, min(max_windows_per_batch, windows)) + 1)
        chunks = [None] if not spec.chunk else [512 * MiB, 256 * MiB, 128 * MiB, 64 * MiB, 32 * MiB]
        for k in batches:
            for chunk in chunks:
                if spec.placement == "stream":
                    base = plan(width, height, frames, cfg, dtype, mode, k, attention, chunk, stream_budget_bytes=0,
                                video_frames=video_frames, overlap=overlap, device=device)
                    full = weight_bytes("denoising_unet", dtype, spec.fp8)
                    room = limit - base.peak_bytes + (base.stream_budget_bytes or 0)
                    budget = max(0.0, min(full, room))
                    candidates.append(plan(width, height, frames, cfg, dtype, mode, k, attention, chunk,
                                           stream_budget_bytes=budget, video_frames=video_frames, overlap=overlap,
                                           device=device))
                else:
                    candidates.append(plan(width, height, frames, cfg, dtype, mode, k, attention, chunk,
                                           video_frames=video_frames, overlap=overlap, device=device))
    fitting = [p for p in candidates if p.peak_bytes <= limit]
    if fitting:
        best = min(fitting, key=lambda p: (round(p.seconds_per_window_step, 4), p.peak_bytes))
        fits = True
    else:
        best = min(candidates, key=lambda p: p.peak_bytes)
        fits = False
    return ModeChoice(mode=best.mode, windows_per_batch=best.windows_per_batch, cfg_mode=best.cfg_mode,
                      ff_chunk=int(best.chunk_bytes) if best.chunk_bytes else None, offload=best.placement,
                      stream_budget_bytes=int(best.stream_budget_bytes) if best.stream_budget_bytes is not None else None,
                      fp8=best.fp8, decode_chunk=best.decode_chunk, predicted_peak_bytes=int(best.peak_bytes),
                      predicted_seconds_per_window_step=best.seconds_per_window_step, fits=fits)
