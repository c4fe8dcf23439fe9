"""MusePose sampling: reference encoding, windowed denoising, decoding.

The numbers follow the original ``Pose2VideoPipeline`` (see tests/fixtures/musepose-tiny/vector_a);
the memory use does not:

* the pose guider runs per window on that window's frames, never on the whole video;
* the reference UNet runs once, on the conditional branch only (the unconditional branch never reads
  the reference), and its features are projected to K/V once per layer, then broadcast to every frame;
* the unconditional branch's self-attention is computed once, without the reference;
* latents and the noise-prediction accumulator stay float32 while the networks run in their dtype;
* decoding goes in frame chunks, retried with smaller chunks on out-of-memory.

Beyond the original: a ``static`` schedule, ``pyramid`` blending, several windows per UNet call
(``context_batch_size``), and averaging (not summing) overlaps when guidance <= 1.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..config import VAE_DOWNSCALE, VAE_SCALING_FACTOR
from ..models.reference_attention import ReferenceAttentionState, install_reference_processors
from ..models.unet_body import spatial_self_attention_names
from ..weights.loader import MusePoseModels
from .context import BLENDS, SCHEDULES, context_windows, window_weights
from .placement import EnginePlacement, ModelPlacement
from .preprocess import ASPECT_MODES, InputError, PoseFrames, clip_pixel_values, round_size, to_uint8_rgb, vae_image_tensor
from .schedulers import SCHEDULERS, make_scheduler

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
#: ``on_step(step, total_steps, denoised)``: after each scheduler step, with the scheduler's estimate of the
#: clean latents ``(1, 4, F, h, w)`` (float32, CPU; previews show it).
StepCallback = Callable[[int, int, torch.Tensor], None]
CFG_MODES = ("batched", "sequential")


@dataclass
class SamplingSettings:
    """Everything that decides the output besides the weights and the images."""

    width: int = 512
    height: int = 512
    num_frames: int | None = None  # None: as many as there are pose frames
    steps: int = 20
    guidance: float = 3.5
    seed: int = 0
    context_frames: int = 48
    context_overlap: int = 4
    context_schedule: str = "uniform"
    context_batch_size: int = 1
    blend: str = "flat"
    scheduler: str = "ddim"
    aspect: str = "stretch"
    cfg_mode: str = "batched"  # "sequential": run the two guidance halves one after the other (less memory)

    def validated(self, available_frames: int) -> "SamplingSettings":
        """A copy with W/H rounded to multiples of 8 and the frame count settled; raises InputError otherwise."""
        width, height = round_size(int(self.width), int(self.height))
        if available_frames < 1:
            raise InputError("no pose frames were given (0 frames)")
        frames = available_frames if self.num_frames is None else int(self.num_frames)
        if frames < 1:
            raise InputError(f"the number of frames must be at least 1 (got {frames})")
        if frames > available_frames:
            logger.warning("%d frames requested but only %d pose frames given: generating %d frames",
                           frames, available_frames, available_frames)
            frames = available_frames
        if self.steps < 1:
            raise InputError(f"steps must be at least 1 (got {self.steps})")
        if not np.isfinite(self.guidance):
            raise InputError("guidance must be a finite number")
        if self.context_frames < 1:
            raise InputError(f"context frames must be at least 1 (got {self.context_frames})")
        if not 0 <= self.context_overlap < self.context_frames:
            raise InputError(f"context overlap ({self.context_overlap}) must be >= 0 and smaller than context "
                             f"frames ({self.context_frames})")
        if self.context_batch_size < 1:
            raise InputError("context batch size must be at least 1")
        for value, allowed, what in ((self.context_schedule, SCHEDULES, "context schedule"),
                                     (self.blend, BLENDS, "blending"), (self.aspect, ASPECT_MODES, "aspect mode"),
                                     (self.scheduler, tuple(SCHEDULERS), "scheduler"),
                                     (self.cfg_mode, CFG_MODES, "CFG mode")):
            if value not in allowed:
                raise InputError(f"unknown {what} {value!r}; use one of {', '.join(allowed)}")
        copy = SamplingSettings(**{**self.__dict__, "width": width, "height": height, "num_frames": frames})
        return copy


@dataclass
class SamplingStats:
    """Timings of the last run (seconds) for the CLI's report."""

    seconds_per_step: list[float] = field(default_factory=list)
    reference_seconds: float = 0.0
    decode_seconds: float = 0.0


class MusePosePipeline:
    """One loaded model set plus the sampling procedure. Thread-unsafe; one run at a time."""

    def __init__(self, models: MusePoseModels, device: torch.device | str | None = None,
                 placement: ModelPlacement | None = None):
        self.models = models
        self.placement = placement or EnginePlacement(device or "cpu")
        self.device = self.placement.device
        self.dtype = models.dtype
        self.state = ReferenceAttentionState(feature_dtype=torch.float16 if self.dtype == torch.float32 else None)
        self._attention_sites = [(unet, mode, spatial_self_attention_names(unet))
                                 for unet, mode in ((models.reference_unet, "write"), (models.denoising_unet, "read"))
                                 if unet is not None]
        self._bind_processors()
        self.stats = SamplingStats()

    def _bind_processors(self) -> None:
        """Point the UNets' reference-attention processors at this pipeline's state.

        Several pipelines may share one loaded model set (a model cache does exactly that); the processors
        are bound when a pipeline runs, so each run reads the features its own reference wrote.
        """
        for unet, mode, names in self._attention_sites:
            if getattr(unet.get_submodule(names[0]).processor, "state", None) is not self.state:
                install_reference_processors(unet, self.state, mode, names)

    # -- stages ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_reference(self, reference, width: int, height: int, aspect: str = "stretch",
                         trace: dict | None = None) -> torch.Tensor:
        """CLIP embedding + reference features. Returns the ``(1, 1, D)`` conditional CLIP embedding."""
        m = self.models
        self._bind_processors()
        reference = to_uint8_rgb(reference)
        pixels = clip_pixel_values(reference)
        with self.placement.use(m.image_encoder):
            embeds = m.image_encoder(pixels.to(self.device, self.dtype)).image_embeds
        self.placement.release(m.image_encoder)
        cond = embeds[:, None, :]

        image = vae_image_tensor(reference, width, height, aspect)
        with self.placement.use(m.vae):
            ref_latents = m.vae.encode(image.to(self.device, self.dtype)).latent_dist.mean * VAE_SCALING_FACTOR

        self.state.clear()
        with self.placement.use(m.reference_unet):
            self.state.writing = True
            try:
                self._run_reference_unet(ref_latents, cond)
            finally:
                self.state.writing = False
        self.placement.release(m.reference_unet)
        if trace is not None:
            trace.update(clip_pixel_values=pixels, clip_image_embeds=embeds.float().cpu(),
                         ref_image_latents=ref_latents.float().cpu(),
                         reference_features={k: v.float().cpu() for k, v in self.state.features.items()})
        return cond

    def _run_reference_unet(self, ref_latents: torch.Tensor, cond: torch.Tensor) -> None:
        """The reference UNet at t = 0, conditional branch only: the unconditional branch never reads the
        reference, so its features would be computed for nothing (the original computes them)."""
        self.models.reference_unet(ref_latents, 0, encoder_hidden_states=cond)

    def initial_noise(self, settings: SamplingSettings) -> torch.Tensor:
        """Float32 noise from a CPU generator: the same numbers on every device."""
        shape = (1, 4, settings.num_frames, settings.height // VAE_DOWNSCALE, settings.width // VAE_DOWNSCALE)
        generator = torch.Generator("cpu").manual_seed(int(settings.seed))
        return torch.randn(shape, generator=generator, dtype=torch.float32)

    @torch.no_grad()
    def sample(self, reference, pose_frames, settings: SamplingSettings,
               progress: ProgressCallback | None = None, check_interrupt: Callable[[], None] | None = None,
               trace: dict | None = None, on_step: StepCallback | None = None) -> torch.Tensor:
        """Denoised latents ``(1, 4, F, H/8, W/8)`` float32 on the CPU (before the 1/0.18215 scaling)."""
        if not isinstance(pose_frames, PoseFrames):
            n = len(pose_frames) if not isinstance(pose_frames, (np.ndarray, torch.Tensor)) else pose_frames.shape[0]
            settings = settings.validated(n)
            pose_frames = PoseFrames(pose_frames, settings.width, settings.height, settings.aspect)
        else:
            settings = settings.validated(len(pose_frames))
        m = self.models
        cfg = settings.guidance > 1.0
        started = time.perf_counter()
        cond = self.encode_reference(reference, settings.width, settings.height, settings.aspect, trace)
        self.stats = SamplingStats(reference_seconds=time.perf_counter() - started)

        scheduler = make_scheduler(settings.scheduler)
        scheduler.set_timesteps(settings.steps, device="cpu")
        latents = self.initial_noise(settings) * scheduler.init_noise_sigma
        frames = settings.num_frames
        windows = context_windows(frames, settings.context_frames, settings.context_overlap, settings.context_schedule)
        batches = [windows[i:i + settings.context_batch_size]
                   for i in range(0, len(windows), settings.context_batch_size)]
        weights = [window_weights(len(w), settings.blend) for w in windows]
        weight_sum = torch.zeros(frames)
        for window, w in zip(windows, weights):
            weight_sum.index_add_(0, torch.tensor(window), w)
        if trace is not None:
            trace.update(init_latents=latents.clone(), windows=windows, timesteps=scheduler.timesteps.tolist(),
                         noise_pred_steps=[], latents_steps=[latents.clone()])

        total_units = len(scheduler.timesteps) * len(batches)
        done = 0
        branches = 2 if cfg else 1
        context = torch.cat([torch.zeros_like(cond), cond]) if cfg else cond

        with self.placement.use(m.denoising_unet, m.pose_guider):
            for step_index, t in enumerate(scheduler.timesteps):
                step_started = time.perf_counter()
                accumulated = torch.zeros((branches, *latents.shape[1:]), device=self.device, dtype=torch.float32)
                for batch_windows in batches:
                    if check_interrupt is not None:
                        check_interrupt()
                    pred = self._denoise_windows(latents, batch_windows, t, scheduler, pose_frames, context, cfg,
                                                 settings.cfg_mode)
                    for j, window in enumerate(batch_windows):
                        index = torch.tensor(window, device=self.device)
                        w = weights[windows.index(window)].to(self.device).view(1, 1, -1, 1, 1)
                        for branch in range(branches):
                            contribution = pred[branch * len(batch_windows) + j].float()[None] * w
                            accumulated[branch:branch + 1].index_add_(2, index, contribution)
                    done += 1
                    if progress is not None:
                        progress(done, total_units)
                noise_pred = (accumulated / weight_sum.to(self.device).view(1, 1, -1, 1, 1)).cpu()
                if cfg:
                    uncond, text = noise_pred.chunk(2)
                    noise_pred = uncond + settings.guidance * (text - uncond)
                step_output = scheduler.step(noise_pred, t, latents)
                latents = step_output.prev_sample
                if on_step is not None:
                    denoised = getattr(step_output, "pred_original_sample", None)
                    on_step(step_index + 1, len(scheduler.timesteps), latents if denoised is None else denoised)
                if trace is not None:
                    trace["noise_pred_steps"].append(noise_pred.clone())
                    trace["latents_steps"].append(latents.clone())
                self.stats.seconds_per_step.append(time.perf_counter() - step_started)
        self.placement.release(m.denoising_unet, m.pose_guider)
        return latents

    def _denoise_windows(self, latents, batch_windows, t, scheduler, pose_frames: PoseFrames, context, cfg,
                         cfg_mode: str = "batched"):
        """UNet output for ``len(batch_windows)`` windows, ``[uncond..., cond...]`` under CFG.

        ``batched`` runs both guidance halves in one call (the original); ``sequential`` runs them one after
        the other, halving the activation memory for the same result.
        """
        m = self.models
        x = torch.cat([latents[:, :, w] for w in batch_windows])  # (k, 4, C, h, w) float32 CPU
        x = scheduler.scale_model_input(x, t).to(self.device, self.dtype)
        k, _, window_len = x.shape[:3]
        frame_ids = [i for w in batch_windows for i in w]
        pose = pose_frames.tensor(frame_ids).to(self.device, self.dtype)
        pose_features = m.pose_guider.encode_frames(pose)
        t = t.to(self.device)
        if not cfg:
            return self._unet(x, t, context.repeat_interleave(k, dim=0), pose_features, num_uncond=0)
        if cfg_mode == "sequential":
            uncond = self._unet(x, t, context[:1].repeat_interleave(k, dim=0), pose_features, num_uncond=k * window_len)
            cond = self._unet(x, t, context[1:].repeat_interleave(k, dim=0), pose_features, num_uncond=0)
            return torch.cat([uncond, cond])
        return self._unet(torch.cat([x, x]), t, context.repeat_interleave(k, dim=0), pose_features,
                          num_uncond=k * window_len)

    def _unet(self, x, t, encoder_states, pose_features, num_uncond: int) -> torch.Tensor:
        """One denoising-UNet call; the first ``num_uncond`` (batch*frame) entries skip the reference."""
        self._bind_processors()
        self.state.reading = True
        self.state.num_uncond = num_uncond
        try:
            return self.models.denoising_unet(x, t, encoder_hidden_states=encoder_states, pose_features=pose_features)
        finally:
            self.state.reading = False

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk_size: int = 8,
               progress: ProgressCallback | None = None, check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
        """Latents ``(1, 4, F, h, w)`` -> video ``[F, H, W, 3]`` float32 in [0, 1] on the CPU.

        Frames are decoded ``chunk_size`` at a time; on out-of-memory the chunk is halved and retried.
        """
        m = self.models
        started = time.perf_counter()
        frames = latents[0].permute(1, 0, 2, 3) / VAE_SCALING_FACTOR  # (F, 4, h, w)
        outputs = []
        index = 0
        chunk = max(1, int(chunk_size))
        with self.placement.use(m.vae):
            while index < frames.shape[0]:
                if check_interrupt is not None:
                    check_interrupt()
                part = frames[index:index + chunk].to(self.device, self.dtype)
                try:
                    image = m.vae.decode(part).sample
                except torch.OutOfMemoryError:
                    if chunk == 1:
                        raise
                    chunk = max(1, chunk // 2)
                    logger.warning("out of memory while decoding: retrying with %d frames per chunk", chunk)
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                outputs.append((image.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu())
                index += part.shape[0]
                if progress is not None:
                    progress(index, frames.shape[0])
        self.stats.decode_seconds = time.perf_counter() - started
        return torch.cat(outputs)

    def __call__(self, reference, pose_frames, settings: SamplingSettings, decode_chunk_size: int = 8,
                 progress: ProgressCallback | None = None, check_interrupt: Callable[[], None] | None = None,
                 trace: dict | None = None) -> torch.Tensor:
        latents = self.sample(reference, pose_frames, settings, progress, check_interrupt, trace)
        if trace is not None:
            trace["final_latents"] = latents.clone()
        return self.decode(latents, decode_chunk_size, check_interrupt=check_interrupt)
