"""Memory and time planner: what a run will allocate on the device and how long it will take, without
running it. ``auto`` (:mod:`musepose.pipeline.memory`) decides with it.

* **Weights**: the bytes of each network's tensors (counted on the loaded models, or on the full-size
  architecture built on the meta device), resident by stage as the configuration says.
* **Activations**: a replay of :class:`~musepose.models.unet_body.UNetWalk` for one UNet call, layer by
  layer in the same order, with the same lifetimes (skip connections, in-place residual layers, chunked
  outputs written into one preallocated tensor) and each layer's transients as the diffusers layers
  allocate them; the chunk sizes come from the walk's own :class:`FrameChunking`. Around the calls: the
  reference K/V cache, the float32 prediction accumulator, pose features, the input latents, and the
  stages that are not sampling (CLIP, VAE encode, reference UNet, decode).
* **Time**: the FLOPs of a window-step (convolutions, projections, attention) over an assumed device
  throughput, plus what each lever adds: launches of chunked layers, a second UNet call for sequential
  guidance, weight transfers when streaming (overlapped with compute), pose-guider recomputation.
  Absolute seconds are a model (``DEVICE``); ``auto`` only compares configurations with them.

All byte figures are allocated bytes, as ``torch.cuda.max_memory_allocated`` reports them, each tensor
rounded up to 512 bytes like the CUDA caching allocator; the CUDA context and the allocator's slack are
not included. ``benchmarks/vram_meter.py`` measures the same quantity by running the real code on fake
tensors, and ``tests/test_memory_planner.py`` holds the two within 10 %.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from ..config import (POSE_GUIDER_BLOCK_OUT_CHANNELS, SD15_UNET, SD_VAE_FT_MSE, VAE_DOWNSCALE, MotionModuleConfig,
                      UNetConfig)
from ..models.pose_guider import POSE_GUIDER_PIXEL_FACTOR
from ..models.unet_body import MOTION_FACTOR, RESNET_FACTOR, TRANSFORMER_FACTOR, FrameChunking

BLOCK = 512  # the CUDA caching allocator's rounding


def _r(nbytes: float) -> float:
    return math.ceil(nbytes / BLOCK) * BLOCK


# -- inputs ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """The shape of a run, as far as memory and time go."""

    width: int
    height: int
    window_frames: int
    video_frames: int
    windows: int = 1
    windows_per_batch: int = 1
    steps: int = 20
    guided: bool = True
    dtype_bytes: int = 2
    unet: UNetConfig = SD15_UNET
    motion: MotionModuleConfig = MotionModuleConfig()
    vae: dict = field(default_factory=lambda: dict(SD_VAE_FT_MSE), compare=False, hash=False)
    clip_tokens: int = 257
    clip_width: int = 1024
    devices: int = 1  # devices (GPUs of one process, or ranks) sharing each step's window batches


@dataclass(frozen=True)
class WeightBytes:
    """Device bytes of each network's weights, and of the denoiser's streaming units."""

    reference_unet: int
    denoising_unet: int
    pose_guider: int
    image_encoder: int
    vae: int
    denoiser_fixed: int  # what streaming keeps resident (conv_in, time embedding, output head)
    largest_block: int  # the largest streamed unit
    blocks: int = 0  # how many units the denoiser streams in

    @classmethod
    def from_models(cls, models) -> "WeightBytes":
        from .streaming import stream_units

        sizes = {name: _tensor_bytes(module) for name, module in models.components().items()}
        unet = models.denoising_unet
        blocks = [_tensor_bytes(unit) for _, unit in stream_units(unet)] if unet is not None else [0]
        return cls(reference_unet=sizes.get("reference_unet", 0), denoising_unet=sizes.get("denoising_unet", 0),
                   pose_guider=sizes.get("pose_guider", 0), image_encoder=sizes.get("image_encoder", 0),
                   vae=sizes.get("vae", 0), denoiser_fixed=sizes.get("denoising_unet", 0) - sum(blocks),
                   largest_block=max(blocks), blocks=len(blocks) if unet is not None else 0)

    @classmethod
    def full_size(cls, dtype_bytes: int = 2, fp8: bool = False) -> "WeightBytes":
        """The full-size MusePose networks (exact tensor counts of the meta-built architecture)."""
        return _full_size(dtype_bytes, fp8)

    def total(self) -> int:
        return self.reference_unet + self.denoising_unet + self.pose_guider + self.image_encoder + self.vae


def _tensor_bytes(module) -> int:
    tensors = list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]
    return int(sum(_r(t.numel() * t.element_size()) for t in tensors))


@functools.lru_cache(maxsize=8)
def _full_size(dtype_bytes: int, fp8: bool) -> WeightBytes:
    import torch

    from ..weights.loader import build_models

    dtype = {2: torch.float16, 4: torch.float32}[dtype_bytes]
    models = build_models(device="meta")
    for module in models.components().values():
        module.to(dtype=dtype)
    if fp8:
        from ..weights.fp8 import apply_fp8_storage

        for unet in (models.denoising_unet, models.reference_unet):
            apply_fp8_storage(unet)
    return WeightBytes.from_models(models)


@dataclass(frozen=True)
class Estimate:
    """The planner's prediction for one configuration."""

    stages: dict  # stage -> peak allocated bytes
    weights: dict  # stage -> bytes of weights on the device during it (the rest of the stage is activations)
    peak_bytes: float
    peak_before_decode: float  # the peak of everything but decoding (decoding is sized separately)
    where: str  # the stage (and layer) of the peak
    flops_per_window_step: float
    seconds: float  # the whole run, on the model device
    sampling_seconds: float  # the denoising steps alone (what the time left of a starting run counts)

    @property
    def sampling_peak(self) -> float:
        return self.stages["sampling"]


# -- the model device -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Device:
    """Throughput figures the time model uses (an H100-class GPU by default: auto only compares)."""

    flops: float = 989e12 * 0.45  # fp16 tensor-core peak x an assumed efficiency
    h2d_bytes_per_s: float = 25e9  # pinned host -> device copies
    seconds_per_layer_call: float = 60e-6  # kernel launches of one layer call (a chunk of it)


DEVICE = Device()
#: Fraction of the overlapped weight transfers that still stalls compute when streaming (an assumption).
STREAM_STALL = 0.3


# -- the UNet walk replay ---------------------------------------------------------------------------------

class _Tracker:
    def __init__(self, base: float = 0.0):
        self.live = base
        self.peak = base
        self.where = ""
        self.calls = 0  # layer calls (chunks count one each)

    def touch(self, transient: float, where: str) -> None:
        if self.live + transient > self.peak:
            self.peak, self.where = self.live + transient, where


def _levels(job: Job) -> list[int]:
    """Tokens per UNet level (stride-2 convs with padding 1 give ceil(h/2))."""
    h, w = job.height // VAE_DOWNSCALE, job.width // VAE_DOWNSCALE
    out = []
    for _ in job.unet.block_out_channels:
        out.append(h * w)
        h, w = (h + 1) // 2, (w + 1) // 2
    return out


def _resnet_transient(c_in: int, c_out: int, t: int, s: int) -> float:
    """Bytes a diffusers ResnetBlock2D allocates for one entry beyond its input and output: GroupNorm and
    SiLU copies of the input, then conv/time-embedding/norm/SiLU intermediates, the shortcut, the sum."""
    xi, xo = c_in * t * s, c_out * t * s
    shortcut = c_in != c_out
    return max(2 * xi, xi + xo, (3 if shortcut else 2) * xo)


def _transformer_transient(c: int, t: int, s: int, ref_fraction: float) -> float:
    """One entry of a Transformer2DModel beyond its input: at the GEGLU feed-forward, the running hidden
    states, attn2's output (still referenced), norm3's output and the 8C projection + 4C gate + 4C product;
    at attn1, Q/K/V, the output buffer and the reference-extended K/V."""
    x = c * t * s
    attn1 = 7 * x + 5 * x * ref_fraction
    ff = 19 * x
    return max(attn1, ff)


def _motion_transient(c: int, frames: int, s: int) -> float:
    """One spatial position of a motion module over ``frames`` frames, beyond its input: the permuted copy,
    then the same feed-forward working set as a spatial transformer's."""
    return 20 * c * frames * s


def unet_call(job: Job, entries: int, uncond: int, chunk_bytes: int | None, motion: bool = True,
              pose_rows: bool = False) -> _Tracker:
    """Peak bytes of one UNet call on ``entries`` (batch x frames) entries, ``uncond`` of them unconditional,
    beyond what the caller holds; replays ``UNetWalk.run`` (see the module docstring)."""
    s = job.dtype_bytes
    chunking = FrameChunking(chunk_bytes)
    tokens = _levels(job)
    boc = list(job.unet.block_out_channels)
    layers = job.unet.layers_per_block
    down_attn = [t.startswith("CrossAttn") for t in job.unet.down_block_types]
    up_attn = [t.startswith("CrossAttn") for t in job.unet.up_block_types]
    frames = job.window_frames
    ref_fraction = 1 - uncond / entries
    tr = _Tracker()

    def x(c: int, level: int, n: int = entries) -> float:
        return _r(n * c * tokens[level] * s)

    def resnet(c_in: int, c_out: int, level: int, sources: int, where: str, upsampled_from: int | None = None) -> None:
        t = tokens[level]
        per_entry = (RESNET_FACTOR * c_in + RESNET_FACTOR * c_out) * t * s
        step = chunking.entries(entries, per_entry)
        inner = _resnet_transient(c_in, c_out, t, s)
        if step >= entries:
            cat = x(c_in, level) if sources > 1 or upsampled_from is not None else 0
            up = x(upsampled_from, level) if upsampled_from is not None else 0
            tr.touch(up + cat + entries * inner, where)
            tr.calls += 1
        else:
            out = x(c_out, level)
            chunk_in = _r(step * c_in * t * s) if sources > 1 else 0
            up = 2 * _r(step * upsampled_from * t * s) if upsampled_from is not None else 0
            tr.touch(out + up + chunk_in + step * inner + _r(step * c_out * t * s), where)
            tr.calls += math.ceil(entries / step)

    def transformer(c: int, level: int, where: str) -> None:
        t = tokens[level]
        step = chunking.entries(entries, TRANSFORMER_FACTOR * c * t * s)
        tr.touch(min(step, entries) * _transformer_transient(c, t, s, ref_fraction), where)
        tr.calls += math.ceil(entries / step)

    def motion_module(c: int, level: int, where: str) -> None:
        t = tokens[level]
        positions = chunking.entries(t, MOTION_FACTOR * entries * c * s)
        rows = entries // frames * positions
        stats = 2 * _r(entries * 32 * 4) if positions < t else 0
        tr.touch(stats + rows * _motion_transient(c, frames, s), where)
        tr.calls += math.ceil(t / positions)

    # conv_in (+ pose features) -> the first skip
    skips = [x(boc[0], 0)]
    tr.live += skips[0]
    if pose_rows:  # pose guider on frame chunks, added into conv_in's output
        tr.touch(_pose_guider_chunk(job, chunking), "pose guider")
    c_prev = boc[0]
    for i, c in enumerate(boc):
        for j in range(layers):
            resnet(c_prev, c, i, 1, f"down{i}.resnet{j}")
            c_prev = c
            tr.live += x(c, i)
            if down_attn[i]:
                transformer(c, i, f"down{i}.attn{j}")
            if motion:
                motion_module(c, i, f"down{i}.motion{j}")
            skips.append(x(c, i))
        if i < len(boc) - 1:
            tr.touch(x(c, i + 1), f"down{i}.downsample")
            tr.live += x(c, i + 1)
            skips.append(x(c, i + 1))
    # mid block: resnet, (attention, motion, resnet)
    c, level = boc[-1], len(boc) - 1
    resnet(c, c, level, 1, "mid.resnet0")
    tr.live += x(c, level)
    transformer(c, level, "mid.attn")
    if motion:
        motion_module(c, level, "mid.motion")
    resnet(c, c, level, 1, "mid.resnet1")  # output replaces the input
    hidden = x(c, level)
    # up path
    rev = list(reversed(boc))
    upsampled_from = None
    for i, c in enumerate(rev):
        level = len(boc) - 1 - i
        for j in range(layers + 1):
            skip = skips.pop()
            skip_c = round(skip / (entries * tokens[level] * s))
            source_c = (rev[i - 1] if j == 0 and i > 0 else c) if (j > 0 or i > 0) else rev[0]
            resnet(source_c + skip_c, c, level, 2, f"up{i}.resnet{j}", upsampled_from if j == 0 else None)
            tr.live += x(c, level) - hidden - skip
            hidden = x(c, level)
            if j == 0:
                upsampled_from = None
            if up_attn[i]:
                transformer(c, level, f"up{i}.attn{j}")
            if motion:
                motion_module(c, level, f"up{i}.motion{j}")
        if i < len(boc) - 1:
            upsampled_from = c  # consumed by the next block's first resnet, chunk by chunk
            # until then the low-resolution hidden stays (already counted in live)
    if motion:  # the denoiser's output head, per frame
        head = _r(entries * job.unet.out_channels * tokens[0] * s)
        step = chunking.entries(entries, RESNET_FACTOR * boc[0] * tokens[0] * s)
        tr.touch(head + min(step, entries) * 2 * boc[0] * tokens[0] * s, "conv_norm_out")
    return tr


def _pose_chunk(job: Job, chunking: FrameChunking, frames: int) -> float:
    """Transients of the pose guider on one chunk of ``frames`` frames, as ``PoseFeatureRows`` chunks them."""
    per_frame = POSE_GUIDER_PIXEL_FACTOR * job.width * job.height * job.dtype_bytes
    return chunking.entries(frames, per_frame) * per_frame


def _pose_guider_chunk(job: Job, chunking: FrameChunking) -> float:
    """Pose features added inside a UNet call: one chunk's guider transients and its features."""
    features = job.unet.block_out_channels[0] * (job.width // VAE_DOWNSCALE) * (job.height // VAE_DOWNSCALE)
    frames = job.window_frames * job.windows_per_batch
    per_frame = POSE_GUIDER_PIXEL_FACTOR * job.width * job.height * job.dtype_bytes
    return _pose_chunk(job, chunking, frames) * (1 + features * job.dtype_bytes / per_frame)


def pose_guider_peak(job: Job, frames: int, chunking: FrameChunking) -> float:
    """The pose guider on ``frames`` frames, chunked as the configuration chunks: output + one chunk."""
    pixels = job.width * job.height
    out = _r(frames * job.unet.block_out_channels[0] * (pixels // VAE_DOWNSCALE ** 2) * job.dtype_bytes)
    return out + _pose_chunk(job, chunking, frames)


# -- the other stages ------------------------------------------------------------------------------------

def vae_decode_peak(job: Job, frames: int, tiled: bool = False) -> float:
    """Transients of decoding ``frames`` frames at once: the full-resolution up blocks of the decoder
    (input + GroupNorm/SiLU copies + conv outputs of its widest resnet at full resolution), the output."""
    boc = list(job.vae["block_out_channels"])
    width, height = (min(job.width, 512), min(job.height, 512)) if tiled else (job.width, job.height)
    pixels = width * height
    s = job.dtype_bytes
    # the last upsampler's output at full resolution, then the first full-resolution resnet's GroupNorm and
    # SiLU copies of it, all ``boc[1]`` channels wide
    return frames * 3 * boc[1] * pixels * s + _r(frames * 3 * job.width * job.height * 4)


def vae_encode_peak(job: Job) -> float:
    """The encoder's first full-resolution resnet: its input, GroupNorm/SiLU copies and conv outputs."""
    boc = list(job.vae["block_out_channels"])
    pixels = job.width * job.height
    return 5 * boc[0] * pixels * job.dtype_bytes


def reference_features(job: Job) -> float:
    """Bytes of the reference features of every spatial self-attention (one image)."""
    tokens = _levels(job)
    boc = list(job.unet.block_out_channels)
    total = 0.0
    for i, c in enumerate(boc):
        if job.unet.down_block_types[i].startswith("CrossAttn"):
            total += job.unet.layers_per_block * _r(tokens[i] * c * job.dtype_bytes)
    total += _r(tokens[-1] * boc[-1] * job.dtype_bytes)
    for i, c in enumerate(reversed(boc)):
        if job.unet.up_block_types[i].startswith("CrossAttn"):
            total += (job.unet.layers_per_block + 1) * _r(tokens[len(boc) - 1 - i] * c * job.dtype_bytes)
    return total


# -- FLOPs ------------------------------------------------------------------------------------------------

def unet_flops(job: Job, entries: int, uncond: int, motion: bool = True) -> float:
    """Multiply-adds x 2 of one UNet call (convolutions, projections, attention), as torch's FLOP counter
    counts them."""
    tokens = _levels(job)
    boc = list(job.unet.block_out_channels)
    layers = job.unet.layers_per_block
    cross = job.unet.cross_attention_dim
    frames = job.window_frames
    cond = entries - uncond
    flops = entries * 2 * 9 * job.unet.in_channels * boc[0] * tokens[0]

    def resnet(c_in, c_out, t):
        f = 2 * 9 * c_in * c_out * t + 2 * 9 * c_out * c_out * t + 2 * boc[0] * 4 * c_out
        return entries * (f + (2 * c_in * c_out * t if c_in != c_out else 0))

    def transformer(c, t):
        per = 2 * 2 * c * c * t  # proj_in, proj_out
        per += 4 * 2 * c * c * t  # attn1 q, k, v, out
        per += 2 * cross * c + 2 * c * c  # attn2 over one token: to_out(to_v(token)), once per entry
        per += 24 * c * c * t  # GEGLU feed-forward
        attn1 = cond * (4 * t * 2 * t * c + 0) + uncond * 4 * t * t * c
        return entries * per + attn1

    def motion_module(c, t):
        per = 2 * 2 * c * c * t + 2 * (4 * 2 * c * c * t + 4 * frames * c * t) + 24 * c * c * t
        return entries * per

    c_prev = boc[0]
    for i, c in enumerate(boc):
        for _ in range(layers):
            flops += resnet(c_prev, c, tokens[i])
            c_prev = c
            if job.unet.down_block_types[i].startswith("CrossAttn"):
                flops += transformer(c, tokens[i])
            if motion:
                flops += motion_module(c, tokens[i])
        if i < len(boc) - 1:
            flops += entries * 2 * 9 * c * c * tokens[i + 1]
    c, t = boc[-1], tokens[-1]
    flops += 2 * resnet(c, c, t) + transformer(c, t) + (motion_module(c, t) if motion else 0)
    rev = list(reversed(boc))
    prev = rev[0]
    for i, c in enumerate(rev):
        level = len(boc) - 1 - i
        skip_channels = [c] * layers + [rev[min(i + 1, len(boc) - 1)]]
        for j in range(layers + 1):
            flops += resnet((prev if j == 0 else c) + skip_channels[j], c, tokens[level])
            if job.unet.up_block_types[i].startswith("CrossAttn"):
                flops += transformer(c, tokens[level])
            if motion:
                flops += motion_module(c, tokens[level])
        prev = c
        if i < len(boc) - 1:
            flops += entries * 2 * 9 * c * c * tokens[level - 1]
    if motion:
        flops += entries * 2 * 9 * boc[0] * job.unet.out_channels * tokens[0]
    return float(flops)


def pose_guider_flops(job: Job, frames: int) -> float:
    h, w = job.height, job.width
    c = list(POSE_GUIDER_BLOCK_OUT_CHANNELS)
    flops = 2 * 9 * 3 * c[0] * h * w
    for i in range(len(c) - 1):
        flops += 2 * 9 * c[i] * c[i] * math.ceil(h / 2 ** i) * math.ceil(w / 2 ** i)
        flops += 2 * 9 * c[i] * c[i + 1] * math.ceil(h / 2 ** (i + 1)) * math.ceil(w / 2 ** (i + 1))
    flops += 2 * 9 * c[-1] * job.unet.block_out_channels[0] * (h // 8) * (w // 8)
    return float(frames * flops)


def vae_decode_flops(job: Job) -> float:
    boc = list(reversed(job.vae["block_out_channels"]))
    t = (job.width // 8) * (job.height // 8)
    flops = 2 * 9 * 4 * boc[0] * t + 2 * (2 * 2 * 9 * boc[0] ** 2 * t) + 4 * 2 * boc[0] ** 2 * t + 4 * t * t * boc[0]
    c_prev = boc[0]
    for i, c in enumerate(boc):
        for j in range(3):
            ci = c_prev if j == 0 else c
            flops += 2 * 9 * ci * c * t + 2 * 9 * c * c * t + (2 * ci * c * t if ci != c else 0)
        c_prev = c
        if i < len(boc) - 1:
            t *= 4
            flops += 2 * 9 * c * c * t
    return float(flops + 2 * 9 * boc[-1] * 3 * t)


# -- the estimate -----------------------------------------------------------------------------------------

def estimate(config, job: Job, weights: WeightBytes, device: Device = DEVICE) -> Estimate:
    """Peak memory per stage and the run's time for ``config`` (a :class:`~musepose.pipeline.memory.MemoryConfig`)."""
    s = job.dtype_bytes
    everything = weights.total()
    resident = (lambda *names: everything) if not config.offload_models else \
        (lambda *names: sum(getattr(weights, n) for n in names))
    k = min(job.windows_per_batch, job.windows)
    window_entries = k * job.window_frames
    t0 = (job.width // 8) * (job.height // 8)
    features = reference_features(job)
    stages, held_weights = {}, {}
    clip_act = 4 * job.clip_tokens * job.clip_width * s * 8
    held_weights["clip"] = resident("image_encoder")
    stages["clip"] = held_weights["clip"] + clip_act
    held_weights["vae encode"] = resident("vae")
    stages["vae encode"] = held_weights["vae encode"] + vae_encode_peak(job)
    ref = unet_call(job, 1, 0, None, motion=False)
    held_weights["reference"] = resident("reference_unet")
    stages["reference"] = held_weights["reference"] + features + ref.peak

    # sampling
    if config.weight_budget is None:
        denoiser = weights.denoising_unet
        streamed = 0.0
    else:
        denoiser = weights.denoiser_fixed + min(config.weight_budget, weights.denoising_unet - weights.denoiser_fixed)
        streamed = max(0.0, weights.denoising_unet - denoiser)
    held = (everything - weights.denoising_unet + denoiser) if not config.offload_models \
        else denoiser + weights.pose_guider
    kv_cache = 2 * features
    accumulator = (2 if job.guided else 1) * _r(4 * job.video_frames * t0 * 4)
    latents_in = (2 if (job.guided and config.cfg_mode == "batched") else 1) * _r(window_entries * 4 * t0 * s)
    pose_out = _r(window_entries * job.unet.block_out_channels[0] * t0 * s)
    if config.pose_cache:
        pose_held = job.windows * pose_out / k
        pose_stage = pose_guider_peak(job, window_entries, FrameChunking(config.chunk_bytes))
    else:
        pose_held = 0.0
        pose_stage = 0.0
    fixed = held + features + kv_cache + accumulator + pose_held + latents_in
    if job.guided and config.cfg_mode == "sequential":
        calls = [(window_entries, window_entries), (window_entries, 0)]
    elif job.guided:
        calls = [(2 * window_entries, window_entries)]
    else:
        calls = [(window_entries, 0)]
    call_peak, where, held_outputs, layer_calls = 0.0, "", 0.0, 0
    for entries, uncond in calls:
        walk = unet_call(job, entries, uncond, config.chunk_bytes, pose_rows=not config.pose_cache)
        layer_calls += walk.calls
        if walk.peak + held_outputs > call_peak:
            call_peak, where = walk.peak + held_outputs, walk.where
        held_outputs += _r(entries * 4 * t0 * s)
    # the last window's features are computed while the other windows' are kept
    stages["pose guider"] = fixed - pose_out + pose_stage if config.pose_cache else 0.0
    stages["sampling"] = fixed + call_peak
    held_weights["pose guider"] = held_weights["sampling"] = held

    # decoding
    held_weights["decode"] = resident("vae") if config.offload_models else everything - (weights.denoising_unet - denoiser)
    stages["decode"] = held_weights["decode"] + vae_decode_peak(job, config.decode_chunk, config.decode_tiling)

    peak_stage = max(stages, key=stages.get)
    before_decode = max(v for key, v in stages.items() if key != "decode")

    # time
    unet_total = sum(unet_flops(job, e, u) for e, u in calls)
    pose_per_step = pose_guider_flops(job, window_entries) * (len(calls) if not config.pose_cache else 0)
    flops_step = unet_total + pose_per_step
    compute = flops_step / device.flops + layer_calls * device.seconds_per_layer_call
    transfer = len(calls) * streamed / device.h2d_bytes_per_s
    # prefetching hides most of a transfer behind compute, not all of it (stalls at block boundaries), and
    # every streamed call runs each block's hooks and waits on its copy like an extra layer call
    window_step = max(compute, transfer) + STREAM_STALL * min(compute, transfer)
    if config.weight_budget is not None:
        window_step += len(calls) * weights.blocks * device.seconds_per_layer_call
    # the devices run their window batches side by side: a step takes as many rounds as the busiest
    # device has batches (4 batches on 3 devices: 2 rounds)
    rounds = math.ceil(math.ceil(job.windows / k) / max(1, job.devices))
    run = job.steps * rounds * window_step
    if config.pose_cache:
        run += pose_guider_flops(job, min(job.windows, rounds * k) * job.window_frames) / device.flops
    decode = job.video_frames * vae_decode_flops(job) / device.flops * (1.3 if config.decode_tiling else 1.0)
    decode += math.ceil(job.video_frames / config.decode_chunk) * 200 * device.seconds_per_layer_call
    moves = (weights.total() / 10e9) if config.offload_models else 0.0
    seconds = run + decode + moves
    return Estimate(stages=stages, weights=held_weights, peak_bytes=stages[peak_stage], peak_before_decode=before_decode,
                    where=peak_stage + (f" ({where})" if peak_stage == "sampling" else ""),
                    flops_per_window_step=flops_step / k, seconds=seconds, sampling_seconds=run)
