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

    @property
    def window_batches(self) -> int:
        """UNet calls per step: the windows grouped ``windows_per_batch`` at a time (as
        :meth:`~musepose.pipeline.sampler.SamplingSettings.window_batches` groups them)."""
        return math.ceil(self.windows / min(self.windows_per_batch, self.windows))


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
    """Bytes held (``live``) and the peak with its layer (``where``) along a replayed UNet call; ``layers``:
    the layers touched, in order (tests compare them with the real walk's)."""

    def __init__(self, base: float = 0.0):
        self.live = base
        self.peak = base
        self.where = ""
        self.calls = 0  # layer calls (chunks count one each)
        self.layers: list[str] = []

    def touch(self, transient: float, where: str) -> None:
        """A layer that allocates ``transient`` bytes on top of what is live."""
        self.layers.append(where)
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
    beyond what the caller holds; replays ``UNetWalk.run`` (see the module docstring). ``motion``: the
    denoising UNet (motion modules, output head), else the reference UNet; ``pose_rows``: the pose guider
    runs inside the call, on frame chunks."""
    replay = _CallReplay(job, entries, uncond, chunk_bytes, motion)
    skips = replay.conv_in(pose_rows)
    replay.down_blocks(skips)
    hidden = replay.mid_block()
    replay.up_blocks(skips, hidden)
    if motion:
        replay.output_head()
    return replay.tracker


class _CallReplay:
    """:func:`unet_call`'s walk: one method per part of ``UNetWalk.run``, in its order; every layer is
    :meth:`_Tracker.touch`-ed with its transients under a ``where`` named after the UNet's modules
    (``down1.attn0``: ``down_blocks[1].attentions[0]``)."""

    def __init__(self, job: Job, entries: int, uncond: int, chunk_bytes: int | None, motion: bool):
        self.job, self.entries, self.motion = job, entries, motion
        self.s = job.dtype_bytes
        self.chunking = FrameChunking(chunk_bytes)
        self.tokens = _levels(job)
        self.channels = list(job.unet.block_out_channels)
        self.ref_fraction = 1 - uncond / entries
        self.tracker = _Tracker()

    def x(self, c: int, level: int) -> float:
        """Bytes of a ``c``-channel activation of every entry at ``level``."""
        return _r(self.entries * c * self.tokens[level] * self.s)

    # -- layers -------------------------------------------------------------------------------------
    def resnet(self, c_in: int, c_out: int, level: int, sources: int, where: str,
               upsampled_from: int | None = None) -> None:
        """A resnet on ``sources`` concatenated inputs (2 on the up path), the first of an up block also
        running the upsampler of ``upsampled_from`` channels inside its chunks."""
        tr, s, entries, t = self.tracker, self.s, self.entries, self.tokens[level]
        per_entry = (RESNET_FACTOR * c_in + RESNET_FACTOR * c_out) * t * s
        step = self.chunking.entries(entries, per_entry)
        inner = _resnet_transient(c_in, c_out, t, s)
        if step >= entries:
            cat = self.x(c_in, level) if sources > 1 or upsampled_from is not None else 0
            up = self.x(upsampled_from, level) if upsampled_from is not None else 0
            tr.touch(up + cat + entries * inner, where)
            tr.calls += 1
        else:
            out = self.x(c_out, level)
            chunk_in = _r(step * c_in * t * s) if sources > 1 else 0
            up = 2 * _r(step * upsampled_from * t * s) if upsampled_from is not None else 0
            tr.touch(out + up + chunk_in + step * inner + _r(step * c_out * t * s), where)
            tr.calls += math.ceil(entries / step)

    def transformer(self, c: int, level: int, where: str) -> None:
        t = self.tokens[level]
        step = self.chunking.entries(self.entries, TRANSFORMER_FACTOR * c * t * self.s)
        self.tracker.touch(min(step, self.entries) * _transformer_transient(c, t, self.s, self.ref_fraction), where)
        self.tracker.calls += math.ceil(self.entries / step)

    def motion_module(self, c: int, level: int, where: str) -> None:
        t = self.tokens[level]
        positions = self.chunking.entries(t, MOTION_FACTOR * self.entries * c * self.s)
        rows = self.entries // self.job.window_frames * positions
        stats = 2 * _r(self.entries * 32 * 4) if positions < t else 0
        self.tracker.touch(stats + rows * _motion_transient(c, self.job.window_frames, self.s), where)
        self.tracker.calls += math.ceil(t / positions)

    def attend(self, cross_attention: bool, c: int, level: int, where: str) -> None:
        """What follows a resnet: the spatial transformer (cross-attention blocks), the motion module."""
        if cross_attention:
            self.transformer(c, level, where.format("attn"))
        if self.motion:
            self.motion_module(c, level, where.format("motion"))

    # -- the walk -----------------------------------------------------------------------------------
    def conv_in(self, pose_rows: bool) -> list[float]:
        """``conv_in``'s output (+ the pose features): the first skip connection."""
        skips = [self.x(self.channels[0], 0)]
        self.tracker.live += skips[0]
        if pose_rows:  # pose guider on frame chunks, added into conv_in's output
            self.tracker.touch(_pose_guider_chunk(self.job, self.chunking), "pose guider")
        return skips

    def down_blocks(self, skips: list[float]) -> None:
        """Each level's resnets (+ attention, motion), then its downsampler; every output is kept as a skip."""
        tr, boc = self.tracker, self.channels
        c_prev = boc[0]
        for i, c in enumerate(boc):
            cross = self.job.unet.down_block_types[i].startswith("CrossAttn")
            for j in range(self.job.unet.layers_per_block):
                self.resnet(c_prev, c, i, 1, f"down{i}.resnet{j}")
                c_prev = c
                tr.live += self.x(c, i)
                self.attend(cross, c, i, f"down{i}.{{}}{j}")
                skips.append(self.x(c, i))
            if i < len(boc) - 1:
                tr.touch(self.x(c, i + 1), f"down{i}.downsample")
                tr.live += self.x(c, i + 1)
                skips.append(self.x(c, i + 1))

    def mid_block(self) -> float:
        """resnet, attention, motion, resnet (whose output replaces its input); returns the output's bytes."""
        c, level = self.channels[-1], len(self.channels) - 1
        self.resnet(c, c, level, 1, "mid.resnet0")
        self.tracker.live += self.x(c, level)
        self.attend(True, c, level, "mid.{}")
        self.resnet(c, c, level, 1, "mid.resnet1")
        return self.x(c, level)

    def up_blocks(self, skips: list[float], hidden: float) -> None:
        """Each level's resnets on ``cat(hidden, skip)``, each skip freed once used; a level's upsampler runs
        inside the next level's first resnet, chunk by chunk (until then the low-resolution hidden stays)."""
        tr, boc, s = self.tracker, self.channels, self.s
        rev = list(reversed(boc))
        upsampled_from = None
        for i, c in enumerate(rev):
            level = len(boc) - 1 - i
            cross = self.job.unet.up_block_types[i].startswith("CrossAttn")
            for j in range(self.job.unet.layers_per_block + 1):
                skip = skips.pop()
                skip_c = round(skip / (self.entries * self.tokens[level] * s))
                source_c = rev[i - 1] if j == 0 and i > 0 else c
                self.resnet(source_c + skip_c, c, level, 2, f"up{i}.resnet{j}", upsampled_from if j == 0 else None)
                tr.live += self.x(c, level) - hidden - skip
                hidden = self.x(c, level)
                if j == 0:
                    upsampled_from = None
                self.attend(cross, c, level, f"up{i}.{{}}{j}")
            if i < len(boc) - 1:
                upsampled_from = c

    def output_head(self) -> None:
        """The denoiser's ``conv_norm_out -> conv_act -> conv_out``, per frame."""
        boc0, t0, s, entries = self.channels[0], self.tokens[0], self.s, self.entries
        head = _r(entries * self.job.unet.out_channels * t0 * s)
        step = self.chunking.entries(entries, RESNET_FACTOR * boc0 * t0 * s)
        self.tracker.touch(head + min(step, entries) * 2 * boc0 * t0 * s, "conv_norm_out")


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
    everything = weights.total()
    resident = (lambda *names: everything) if not config.offload_models else \
        (lambda *names: sum(getattr(weights, n) for n in names))
    stages, held_weights = _stages_before_sampling(job, resident)
    sampling = _Sampling(config, job, weights)
    stages["pose guider"], stages["sampling"] = sampling.pose_guider_peak(), sampling.peak()
    held_weights["pose guider"] = held_weights["sampling"] = sampling.held
    # decoding
    held_weights["decode"] = resident("vae") if config.offload_models else \
        everything - (weights.denoising_unet - sampling.denoiser)
    stages["decode"] = held_weights["decode"] + vae_decode_peak(job, config.decode_chunk, config.decode_tiling)

    peak_stage = max(stages, key=stages.get)
    before_decode = max(v for key, v in stages.items() if key != "decode")
    flops_step, run = sampling.seconds(device)
    decode = job.video_frames * vae_decode_flops(job) / device.flops * (1.3 if config.decode_tiling else 1.0)
    decode += math.ceil(job.video_frames / config.decode_chunk) * 200 * device.seconds_per_layer_call
    moves = (weights.total() / 10e9) if config.offload_models else 0.0
    seconds = run + decode + moves
    return Estimate(stages=stages, weights=held_weights, peak_bytes=stages[peak_stage], peak_before_decode=before_decode,
                    where=peak_stage + (f" ({sampling.where})" if peak_stage == "sampling" else ""),
                    flops_per_window_step=flops_step / sampling.k, seconds=seconds, sampling_seconds=run)


def _stages_before_sampling(job: Job, resident) -> tuple[dict, dict]:
    """``(peaks, weights)`` of the stages that run once per video: CLIP, VAE encode, the reference UNet.
    ``resident(*names)``: the weight bytes on the device while those networks run."""
    s = job.dtype_bytes
    stages, held_weights = {}, {}
    clip_act = 4 * job.clip_tokens * job.clip_width * s * 8
    held_weights["clip"] = resident("image_encoder")
    stages["clip"] = held_weights["clip"] + clip_act
    held_weights["vae encode"] = resident("vae")
    stages["vae encode"] = held_weights["vae encode"] + vae_encode_peak(job)
    ref = unet_call(job, 1, 0, None, motion=False)
    held_weights["reference"] = resident("reference_unet")
    stages["reference"] = held_weights["reference"] + reference_features(job) + ref.peak
    return stages, held_weights


class _Sampling:
    """The denoising steps of one configuration: what stays on the device around the UNet calls of a window
    batch, the calls themselves (one, or two for sequential guidance) and their time."""

    def __init__(self, config, job: Job, weights: WeightBytes):
        self.config, self.job, self.weights = config, job, weights
        s = job.dtype_bytes
        everything = weights.total()
        self.k = min(job.windows_per_batch, job.windows)
        self.window_entries = self.k * job.window_frames
        self.t0 = (job.width // 8) * (job.height // 8)
        if config.weight_budget is None:
            self.denoiser, self.streamed = weights.denoising_unet, 0.0
        else:
            self.denoiser = weights.denoiser_fixed + min(config.weight_budget,
                                                         weights.denoising_unet - weights.denoiser_fixed)
            self.streamed = max(0.0, weights.denoising_unet - self.denoiser)
        self.held = (everything - weights.denoising_unet + self.denoiser) if not config.offload_models \
            else self.denoiser + weights.pose_guider
        features = reference_features(job)
        kv_cache = 2 * features
        accumulator = (2 if job.guided else 1) * _r(4 * job.video_frames * self.t0 * 4)
        batched = job.guided and config.cfg_mode == "batched"
        latents_in = (2 if batched else 1) * _r(self.window_entries * 4 * self.t0 * s)
        self.pose_out = _r(self.window_entries * job.unet.block_out_channels[0] * self.t0 * s)
        pose_held = job.windows * self.pose_out / self.k if config.pose_cache else 0.0
        self.fixed = self.held + features + kv_cache + accumulator + pose_held + latents_in
        self.calls = self._calls()
        self._walk()

    def _calls(self) -> list[tuple[int, int]]:
        """``(entries, unconditional entries)`` of each UNet call of a window batch."""
        e = self.window_entries
        if self.job.guided and self.config.cfg_mode == "sequential":
            return [(e, e), (e, 0)]
        return [(2 * e, e)] if self.job.guided else [(e, 0)]

    def _walk(self) -> None:
        """The calls' peak (the first call's output is held during the second), where, and layer calls."""
        self.call_peak, self.where, held_outputs, self.layer_calls = 0.0, "", 0.0, 0
        for entries, uncond in self.calls:
            walk = unet_call(self.job, entries, uncond, self.config.chunk_bytes,
                             pose_rows=not self.config.pose_cache)
            self.layer_calls += walk.calls
            if walk.peak + held_outputs > self.call_peak:
                self.call_peak, self.where = walk.peak + held_outputs, walk.where
            held_outputs += _r(entries * 4 * self.t0 * self.job.dtype_bytes)

    def peak(self) -> float:
        return self.fixed + self.call_peak

    def pose_guider_peak(self) -> float:
        """The last window's features are computed while the other windows' are kept (0: no cache)."""
        if not self.config.pose_cache:
            return 0.0
        return self.fixed - self.pose_out + pose_guider_peak(self.job, self.window_entries,
                                                             FrameChunking(self.config.chunk_bytes))

    def seconds(self, device: Device) -> tuple[float, float]:
        """``(FLOPs of a window batch's step, seconds of all the steps)`` on ``device``."""
        job, config, calls = self.job, self.config, self.calls
        unet_total = sum(unet_flops(job, e, u) for e, u in calls)
        pose_per_step = pose_guider_flops(job, self.window_entries) * (len(calls) if not config.pose_cache else 0)
        flops_step = unet_total + pose_per_step
        compute = flops_step / device.flops + self.layer_calls * device.seconds_per_layer_call
        transfer = len(calls) * self.streamed / device.h2d_bytes_per_s
        # prefetching hides most of a transfer behind compute, not all of it (stalls at block boundaries), and
        # every streamed call runs each block's hooks and waits on its copy like an extra layer call
        window_step = max(compute, transfer) + STREAM_STALL * min(compute, transfer)
        if config.weight_budget is not None:
            window_step += len(calls) * self.weights.blocks * device.seconds_per_layer_call
        # the devices run their window batches side by side: a step takes as many rounds as the busiest
        # device has batches (4 batches on 3 devices: 2 rounds)
        rounds = math.ceil(job.window_batches / max(1, job.devices))
        run = job.steps * rounds * window_step
        if config.pose_cache:
            run += pose_guider_flops(job, min(job.windows, rounds * self.k) * job.window_frames) / device.flops
        return flops_step, run
