"""The memory policy: every memory lever of a run in one settings object, and ``auto``.

Like diffusers' independent ``enable_*`` switches, each lever is a field of :class:`MemoryConfig`:

* ``cfg_mode``: the two classifier-free-guidance halves in one UNet call (``batched``) or one after the
  other (``sequential``: half the activations, same result);
* ``chunk_bytes``: activation chunking (:class:`~musepose.models.unet_body.FrameChunking`): each layer
  call allocates about this many bytes of transients at most (``None``: off);
* ``offload_models``: each network is on the device only while it runs (CLIP, VAE and the reference
  UNet run once per video; sampling then holds only the denoiser and the pose guider);
* ``weight_budget``: the denoising UNet's blocks are streamed to the device within this many bytes
  (the engine's :class:`~musepose.pipeline.streaming.BlockStreamer` standalone, ComfyUI's partial
  loading under ComfyUI); ``None``: the whole denoiser is resident;
* ``pose_cache``: pose-guider features are computed once per window and kept on the device for the
  run; off, they are recomputed in frame chunks inside every UNet call (a few % of the FLOPs, no
  full-size tensor);
* ``decode_chunk`` / ``decode_tiling``: frames per VAE decode call, and diffusers' tiled decoding.

The words: the user asks through :class:`MemorySettings`, whose ``offload`` names a memory level
(``musepose.options.LEVELS``: ``none``, ``model``, ``lowvram``, each with what it moves off the device) or
``auto``; a :class:`MemoryConfig` is one concrete configuration, belonging to one level (its ``offload``)
and setting every lever. A level fixes only ``offload_models`` and whether the UNet is streamed; the other
levers are chosen per run at every level. ``auto`` reads the device's free memory, asks the planner
(:mod:`musepose.pipeline.planner`) for the fastest configuration predicted to fit with a margin, and
keeps the next ones as fallbacks the pipeline steps down to on out-of-memory. fp8 weight storage is not
a lever of a run: it is a weight format chosen when loading (lossy), which the planner takes into
account.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from ..options import LEVELS, SETTINGS, problems
from .planner import Estimate, Job, WeightBytes, estimate, vae_decode_peak

GB = 1e9
MiB = 1 << 20

#: Activation chunk budgets auto tries, largest (fastest) first; ``None`` is no chunking.
CHUNK_CHOICES = (None, 1024 * MiB, 512 * MiB, 256 * MiB, 128 * MiB, 64 * MiB, 32 * MiB)
#: Fraction of the free memory a configuration may plan to use: the rest covers the CUDA caching
#: allocator's slack (reserved minus allocated; the original's published figures are ~1.17x the meter's
#: allocated bytes) and what the planner does not see. A GPU measurement would calibrate it.
SAFETY = 0.82
#: The largest VAE decode chunk auto picks (bigger chunks stop paying off).
MAX_DECODE_CHUNK = 16


@dataclass(frozen=True)
class MemorySettings:
    """What the user asks for. ``auto`` everywhere by default.

    ``decode_chunk`` 0 = as many frames as fit; ``decode_tiling`` forces tiled decoding (auto turns it on
    when one frame does not fit). ``budget_bytes``: device bytes this run may use (weights included);
    ``None`` asks the placement (the device's free memory, ComfyUI's view under ComfyUI).
    ``keep_weights=False`` (one-shot runs such as the CLI) drops a network's weights after its last
    use in the run instead of keeping them for the next run.
    """

    offload: str = SETTINGS["offload"].default
    cfg_mode: str = SETTINGS["cfg_mode"].default
    decode_chunk: int = SETTINGS["decode_chunk"].default
    decode_tiling: bool = False
    budget_bytes: int | None = None
    keep_weights: bool = True

    def validated(self) -> "MemorySettings":
        """Itself; raises InputError naming every setting out of its range (``musepose.options``)."""
        from .preprocess import InputError

        found = problems(offload=self.offload, cfg_mode=self.cfg_mode, decode_chunk=self.decode_chunk)
        if self.budget_bytes is not None and self.budget_bytes <= 0:
            found.append(f"the memory budget must be positive (got {self.budget_bytes} bytes)")
        if found:
            raise InputError("; ".join(found))
        return self


@dataclass(frozen=True)
class MemoryConfig:
    """One concrete choice for every lever (module docstring), with the planner's estimate."""

    offload: str = "none"  # the level this configuration belongs to
    cfg_mode: str = "batched"
    chunk_bytes: int | None = None
    offload_models: bool = False
    weight_budget: int | None = None
    pose_cache: bool = True
    decode_chunk: int = 8
    decode_tiling: bool = False
    estimate: Estimate | None = None

    def describe(self) -> str:
        """One line for the log and the node."""
        parts = [f"offload {self.offload}", f"CFG {self.cfg_mode}",
                 f"activation chunks {self.chunk_bytes // MiB} MiB" if self.chunk_bytes else "no chunking"]
        if self.weight_budget is not None:
            parts.append(f"UNet weights streamed within {self.weight_budget / GB:.2f} GB")
        parts.append("pose features kept per window" if self.pose_cache else "pose features computed per UNet call")
        parts.append(f"decode {self.decode_chunk} frame(s) per call" + (", tiled" if self.decode_tiling else ""))
        if self.estimate is not None:
            parts.append(f"predicted peak {self.estimate.peak_bytes / GB:.2f} GB")
        return ", ".join(parts)


def candidates(settings: MemorySettings, job: Job, weights: WeightBytes) -> list[MemoryConfig]:
    """Every configuration the settings allow, each with its estimate (decode levers left at defaults)."""
    levels = list(LEVELS) if settings.offload == "auto" else [settings.offload]
    cfg_modes = ["batched"] if not job.guided else (
        ["batched", "sequential"] if settings.cfg_mode == "auto" else [settings.cfg_mode])
    out = []
    for level in levels:
        spec = LEVELS[level]  # which levers the level fixes
        for cfg_mode in cfg_modes:
            for chunk in CHUNK_CHOICES:
                for pose_cache in (True, False):
                    config = MemoryConfig(offload=level, cfg_mode=cfg_mode, chunk_bytes=chunk,
                                          offload_models=spec.offload_models, pose_cache=pose_cache,
                                          weight_budget=0 if spec.streamed else None,
                                          decode_chunk=1, decode_tiling=settings.decode_tiling)
                    out.append(replace(config, estimate=estimate(config, job, weights)))
    return out


def _with_weight_budget(config: MemoryConfig, job: Job, weights: WeightBytes, limit: float) -> MemoryConfig:
    """A streamed configuration gets all the room its activations leave (at least two blocks)."""
    if config.weight_budget is None:
        return config
    room = limit - config.estimate.peak_bytes  # the estimate was made with a zero budget
    budget = int(max(2 * weights.largest_block, min(weights.denoising_unet, room)))
    config = replace(config, weight_budget=budget)
    return replace(config, estimate=estimate(config, job, weights))


def _with_decode(config: MemoryConfig, settings: MemorySettings, job: Job, weights: WeightBytes,
                 limit: float) -> MemoryConfig:
    """The sampling configuration with its decode levers (:func:`decode_levers`): the room is what the
    weights held during decoding leave of ``limit``."""
    chunk, tiled = decode_levers(
        settings, job, lambda: limit - (weights.vae if config.offload_models else config.estimate.weights["decode"]),
        config.decode_tiling)
    config = replace(config, decode_chunk=chunk, decode_tiling=tiled)
    return replace(config, estimate=estimate(config, job, weights))


def decode_levers(settings: MemorySettings, job: Job, room: Callable[[], float], tiling: bool) -> tuple[int, bool]:
    """Frames per VAE decode call and tiling: the user's chunk (at most the video's frames), else the most
    frames (<= 16) whose decoding fits in ``room()`` bytes of activations, tiled when one frame does not fit
    untiled (``tiling``: tiled in any case)."""
    if settings.decode_chunk:
        return min(int(settings.decode_chunk), job.video_frames), tiling
    return decode_chunk_for(job, room(), tiling)


def decode_config(settings: MemorySettings, job: Job, weights: Callable[[], WeightBytes],
                  free_bytes: Callable[[], float]) -> MemoryConfig:
    """The configuration of a decode on its own (no sampling run's configuration to follow): the settings'
    level, and the decode levers for the VAE alone on the device (:func:`plan_decode`). ``job``: the
    latents' size; ``weights``/``free_bytes`` are asked only when the settings leave the chunk to auto."""
    settings = settings.validated()
    chunk, tiled = decode_levers(settings, job, lambda: _decode_room(weights(), free_bytes()),
                                 settings.decode_tiling)
    return MemoryConfig(offload=settings.offload, offload_models=settings.offload != "none",
                        decode_chunk=chunk, decode_tiling=tiled)


def decode_chunk_for(job: Job, room: float, tiling: bool = False) -> tuple[int, bool]:
    """The most frames (<= 16) whose decoding fits in ``room`` bytes of activations, and whether tiling is
    needed (one frame does not fit untiled)."""
    for tiled in ((tiling,) if tiling else (False, True)):
        for chunk in range(min(MAX_DECODE_CHUNK, job.video_frames), 0, -1):
            if vae_decode_peak(job, chunk, tiled) <= room:
                return chunk, tiled
    return 1, True


def plan_decode(job: Job, weights: WeightBytes, free_bytes: float, tiling: bool = False) -> tuple[int, bool]:
    """Decode chunk and tiling for a decode on its own (the VAE alone on the device)."""
    return decode_chunk_for(job, _decode_room(weights, free_bytes), tiling)


def _decode_room(weights: WeightBytes, free_bytes: float) -> float:
    """The activation bytes a decode on its own may use: the usable part of the free memory, less the VAE."""
    return free_bytes * SAFETY - weights.vae


def choose(settings: MemorySettings, job: Job, weights: WeightBytes, free_bytes: float) -> list[MemoryConfig]:
    """Configurations to run with, best first: the fastest predicted to fit ``SAFETY x free_bytes``, then
    the ones to step down to on out-of-memory (each predicted to use less memory than the one before).
    When nothing is predicted to fit, the least memory-hungry configuration comes first."""
    settings = settings.validated()
    limit = free_bytes * SAFETY
    options = [_with_weight_budget(c, job, weights, limit) for c in candidates(settings, job, weights)]
    fitting = [c for c in options if c.estimate.peak_before_decode <= limit]
    chain = [_fastest(fitting) if fitting else min(options, key=lambda c: c.estimate.peak_before_decode)]
    while len(chain) < 4:
        lower = [c for c in options if c.estimate.peak_before_decode < 0.9 * chain[-1].estimate.peak_before_decode]
        if not lower:
            break
        chain.append(_fastest(lower))
    return [_with_decode(c, settings, job, weights, limit) for c in chain]


def _fastest(configs: list[MemoryConfig]) -> MemoryConfig:
    """The fastest configuration (the leanest of equally fast ones)."""
    return min(configs, key=lambda c: (c.estimate.seconds, c.estimate.peak_before_decode))
