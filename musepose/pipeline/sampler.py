"""MusePose sampling: reference encoding, windowed denoising, decoding, under one memory policy.

The numbers follow the original ``Pose2VideoPipeline`` (see tests/fixtures/musepose-tiny/vector_a);
the memory use does not:

* the reference UNet runs once, on the conditional branch only (the unconditional branch never reads
  the reference), and its features are projected to K/V once per layer, then broadcast to every frame;
* the unconditional branch's self-attention is computed once, without the reference;
* pose-guider features are computed once per window for the whole run (or, when memory is short, in
  frame chunks inside each UNet call), never for the whole video at once;
* latents and the noise-prediction accumulator stay float32 while the networks run in their dtype;
* every memory lever (:mod:`musepose.pipeline.memory`) is chosen per run, ``auto`` by default, and an
  out-of-memory error steps down to the next configuration instead of failing;
* decoding goes in frame chunks sized to the free memory.

Beyond the original: a ``static`` schedule, ``pyramid`` blending, several windows per UNet call
(``windows_per_batch``), and averaging (not summing) overlaps when cfg <= 1.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch

from ..config import VAE_DOWNSCALE, VAE_SCALING_FACTOR
from ..host_memory import release_free_host_memory
from ..models.reference_attention import ReferenceAttentionState, install_reference_processors
from ..models.unet_body import spatial_self_attention_names
from ..weights.loader import MusePoseModels
from ..options import SAMPLING_FIELDS, SETTINGS, problems
from .context import context_windows, window_weights
from .denoiser import DenoiserSession
from .memory import MemoryConfig, MemorySettings, choose, decode_config
from .parallel import WindowDealer
from .placement import EnginePlacement, ModelPlacement, bytes_on
from .planner import Job, WeightBytes
from .preprocess import InputError, PoseFrames, clip_pixel_values, round_size, to_uint8_rgb, vae_image_tensor
from .resume import Checkpoints, run_fingerprint, step_state
from .schedulers import make_scheduler
from .stats import SamplingStats
from .timeleft import clock, seconds_left

if TYPE_CHECKING:
    from .distributed import DistributedGroup

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
#: ``on_step(step, total_steps, denoised)``: after each scheduler step, with the scheduler's estimate of the
#: clean latents ``(1, 4, F, h, w)`` (float32, CPU; previews show it).
StepCallback = Callable[[int, int, torch.Tensor], None]
#: ``on_message(text)``: what the user should know about this run (the configuration picked, step-downs).
MessageCallback = Callable[[str], None]


@dataclass
class SamplingSettings:
    """Everything that decides the output besides the weights and the images. Field names, defaults and
    ranges are ``musepose.options.SETTINGS``' (the Sampler node's widgets and the command line's flags)."""

    width: int = SETTINGS["width"].default
    height: int = SETTINGS["height"].default
    frames: int | None = SETTINGS["frames"].default  # None: as many as there are pose frames
    steps: int = SETTINGS["steps"].default
    cfg: float = SETTINGS["cfg"].default
    seed: int = SETTINGS["seed"].default
    context_frames: int = SETTINGS["context_frames"].default
    context_overlap: int = SETTINGS["context_overlap"].default
    context_schedule: str = SETTINGS["context_schedule"].default
    windows_per_batch: int = SETTINGS["windows_per_batch"].default
    blending: str = SETTINGS["blending"].default
    scheduler: str = SETTINGS["scheduler"].default
    aspect: str = SETTINGS["aspect"].default

    def validated(self, available_frames: int) -> "SamplingSettings":
        """A copy with W/H rounded down to multiples of 8 and the frame count settled; raises InputError
        naming every setting out of its range (``musepose.options``: the one check every surface uses)."""
        if available_frames < 1:
            raise InputError("no pose frames were given (0 frames)")
        found = problems(**{name: getattr(self, name) for name in SAMPLING_FIELDS})
        if found:
            raise InputError("; ".join(found))
        width, height = round_size(int(self.width), int(self.height))
        frames = available_frames if self.frames is None else int(self.frames)
        if frames > available_frames:
            logger.warning("%d frames were asked for but only %d pose frames were given: generating %d frames",
                           frames, available_frames, available_frames)
            frames = available_frames
        return replace(self, width=width, height=height, frames=frames)

    def windows(self) -> list[list[int]]:
        """The context windows: each a list of frame indices (settings must be validated)."""
        return context_windows(self.frames, self.context_frames, self.context_overlap, self.context_schedule)

    def window_batches(self) -> list[list[list[int]]]:
        """The windows grouped ``windows_per_batch`` at a time (the last group may be smaller): each group
        is one UNet call of a step."""
        windows, size = self.windows(), self.windows_per_batch
        return [windows[i:i + size] for i in range(0, len(windows), size)]

    def job(self, models: MusePoseModels) -> Job:
        """The planner's view of this run with these networks (settings must be validated)."""
        return Job(width=self.width, height=self.height, window_frames=min(self.context_frames, self.frames),
                   video_frames=self.frames, windows=len(self.windows()), windows_per_batch=self.windows_per_batch,
                   steps=self.steps, guided=self.cfg > 1.0, dtype_bytes=torch.finfo(models.dtype).bits // 8,
                   unet=models.unet_config, vae=_vae_config(models), **_clip_shape(models))


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
        self._say: MessageCallback = logger.info

    def _bind_processors(self) -> None:
        """Point the UNets' reference-attention processors at this pipeline's state.

        Several pipelines may share one loaded model set (a model cache does exactly that); the processors
        are bound when a pipeline runs, so each run reads the features its own reference wrote.
        """
        for unet, mode, names in self._attention_sites:
            if getattr(unet.get_submodule(names[0]).processor, "state", None) is not self.state:
                install_reference_processors(unet, self.state, mode, names)

    # -- memory policy ------------------------------------------------------------------------------
    def plan_memory(self, settings: SamplingSettings, memory: MemorySettings | MemoryConfig | None = None
                    ) -> list[MemoryConfig]:
        """The configurations this run will use, best first (the rest are out-of-memory fallbacks)."""
        if isinstance(memory, MemoryConfig):
            return [memory]
        memory = (memory or MemorySettings()).validated()
        free = memory.budget_bytes
        if free is None:  # what is free, plus our own networks already on the device
            free = self.placement.free_memory() + bytes_on(self.device, *self.models.components().values())
        return choose(memory, settings.job(self.models), WeightBytes.from_models(self.models), free)

    @contextlib.contextmanager
    def _using(self, config: MemoryConfig, *modules, memory_required: int = 0, weight_budget: int | None = None):
        """Make ``modules`` usable on the device; afterwards offload them if the configuration says so."""
        modules = tuple(m for m in modules if m is not None)
        for module in modules:
            self.models.materialize(module, self.placement.offload_device)
        with self.placement.use(*modules, memory_required=memory_required, weight_budget=weight_budget):
            yield
        if config.offload_models:
            self.placement.release(*modules)

    def _done_with(self, config: MemoryConfig, keep: bool, *modules) -> None:
        """A network's last use in this run: offload it, or drop its weights (one-shot runs)."""
        for module in modules:
            if module is None:
                continue
            if not keep and self.models.can_drop(module):
                self.placement.release(module)
                self.models.drop(module)
            elif config.offload_models:
                self.placement.release(module)

    # -- stages ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_reference(self, reference, width: int, height: int, aspect: str = "stretch",
                         trace: dict | None = None, config: MemoryConfig | None = None, keep_weights: bool = True,
                         check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
        """CLIP embedding + reference features. Returns the ``(1, 1, D)`` conditional CLIP embedding."""
        m = self.models
        config = config or MemoryConfig()
        self._bind_processors()
        reference = to_uint8_rgb(reference)
        pixels = clip_pixel_values(reference)
        with self._using(config, m.image_encoder):
            embeds = m.image_encoder(pixels.to(self.device, self.dtype)).image_embeds
        self._done_with(config, keep_weights, m.image_encoder)
        cond = embeds[:, None, :]

        image = vae_image_tensor(reference, width, height, aspect)
        with self._using(config, m.vae):
            ref_latents = m.vae.encode(image.to(self.device, self.dtype)).latent_dist.mean * VAE_SCALING_FACTOR

        self.state.clear()
        with self._using(config, m.reference_unet):
            self.state.writing = True
            try:
                self._run_reference_unet(ref_latents, cond, check_interrupt)
            finally:
                self.state.writing = False
        self._done_with(config, keep_weights, m.reference_unet)
        if trace is not None:
            trace.update(clip_pixel_values=pixels, clip_image_embeds=embeds.float().cpu(),
                         ref_image_latents=ref_latents.float().cpu(),
                         reference_features={k: v.float().cpu() for k, v in self.state.features.items()})
        return cond

    def _run_reference_unet(self, ref_latents: torch.Tensor, cond: torch.Tensor,
                            check_interrupt: Callable[[], None] | None = None) -> None:
        """The reference UNet at t = 0, conditional branch only: the unconditional branch never reads the
        reference, so its features would be computed for nothing (the original computes them)."""
        self.models.reference_unet(ref_latents, 0, encoder_hidden_states=cond, between_layers=check_interrupt)

    def initial_noise(self, settings: SamplingSettings) -> torch.Tensor:
        """Float32 noise from a CPU generator: the same numbers on every device."""
        shape = (1, 4, settings.frames, settings.height // VAE_DOWNSCALE, settings.width // VAE_DOWNSCALE)
        generator = torch.Generator("cpu").manual_seed(int(settings.seed))
        return torch.randn(shape, generator=generator, dtype=torch.float32)

    @torch.no_grad()
    def sample(self, reference, pose_frames, settings: SamplingSettings,
               memory: MemorySettings | MemoryConfig | None = None,
               progress: ProgressCallback | None = None, check_interrupt: Callable[[], None] | None = None,
               trace: dict | None = None, on_step: StepCallback | None = None,
               on_message: MessageCallback | None = None, replicas: Sequence["MusePosePipeline"] = (),
               group: "DistributedGroup | None" = None, checkpoints: Checkpoints | None = None) -> torch.Tensor:
        """Denoised latents ``(1, 4, F, H/8, W/8)`` float32 on the CPU (before the 1/0.18215 scaling).

        ``replicas``: pipelines on more devices of this process (:func:`~musepose.pipeline.parallel.replicate`)
        that share each step's window batches with this one. ``group``: this process's rank in a
        torch.distributed run (:mod:`musepose.pipeline.distributed`): it runs its share of the batches
        and the ranks' predictions are summed. Either way the result is the one-device result.
        ``checkpoints``: keeps the state after each step (:mod:`musepose.pipeline.resume`); a saved state of
        this run is continued, to the latents an uninterrupted run ends with. ``progress`` counts the whole
        run's window batches (a resumed run starts past the finished steps); :attr:`stats` has the time left.
        """
        settings, pose_frames = _prepared(settings, pose_frames)
        fingerprint = (run_fingerprint(settings, reference, pose_frames, self.models)
                       if group is not None or checkpoints is not None else None)
        if group is not None:
            group.check_same_run(fingerprint)
        say = on_message or logger.info
        keep = memory.keep_weights if isinstance(memory, MemorySettings) else True
        configs = self.plan_memory(settings, memory)
        self.stats = SamplingStats(memory=[configs[0]])
        scheduler, latents, resumed = self._starting_point(settings, checkpoints, fingerprint, group, say)
        first_step = resumed.step if resumed else 0
        if first_step == settings.steps:  # sampling had finished (what failed came after it)
            return latents
        skipped = min(resumed.step_downs, len(configs) - 1) if resumed else 0
        configs = configs[skipped:]
        self.stats.memory = [configs[0]]
        say("memory: " + configs[0].describe() + (" (where the interrupted run had stepped down to)" if skipped else ""))
        context = self._guidance_context(reference, settings, trace, configs[0], keep, check_interrupt)
        plan = _window_plan(settings)
        if trace is not None:
            trace.update(init_latents=latents.clone(), windows=plan[0], timesteps=scheduler.timesteps.tolist(),
                         noise_pred_steps=[], latents_steps=[latents.clone()])
        # This process's batches (a rank's share), dealt over its devices; results come back in order.
        batch_ids = range(len(plan[1])) if group is None else group.share(len(plan[1]))
        dealer = WindowDealer(self, configs, replicas, settings, pose_frames, memory, check_interrupt, say, batch_ids,
                              session_factory=DenoiserSession)
        steps, per_step = len(scheduler.timesteps), len(dealer.batch_ids)
        self.stats.units_per_step, self.stats.units_left = per_step, (steps - first_step) * per_step
        _say_time_ahead(say, resumed, self.stats, configs[0], self.device)
        unit_done = self._unit_counter(first_step * per_step, steps * per_step, progress)
        try:
            dealer.start()
            for step_index in range(first_step, steps):
                t = scheduler.timesteps[step_index]
                step_started = time.perf_counter()
                noise_pred = self._noise_prediction(dealer, latents, t, scheduler, context, settings, plan, group,
                                                    f"step {step_index + 1}: summing the predictions", unit_done)
                step_output = scheduler.step(noise_pred, t, latents)
                latents = step_output.prev_sample
                if group is not None:
                    group.step_done(step_index + 1, latents)
                if checkpoints is not None:
                    checkpoints.save(step_state(step_index + 1, steps, latents, scheduler, fingerprint,
                                                self.stats.unit_seconds, skipped + len(self.stats.memory) - 1),
                                     self.stats.elapsed(), write=group is None or group.rank == 0)
                _report_step(step_index + 1, steps, step_output, noise_pred, on_step, trace)
                self.stats.seconds_per_step.append(time.perf_counter() - step_started)
        finally:
            dealer.stop(keep)
            self.state.clear()  # the reference features and their K/V are done with
            release_free_host_memory()  # the step temporaries' freed heap, before a decode stacks on it
        self._done_with(dealer.config, keep, self.models.denoising_unet, self.models.pose_guider)
        return latents

    def _guidance_context(self, reference, settings: SamplingSettings, trace: dict | None, config: MemoryConfig,
                          keep: bool, check_interrupt: Callable[[], None] | None) -> torch.Tensor:
        """The reference encoded (its features written for the denoiser) and the CLIP context the UNet calls
        take: ``(2, 1, D)`` ``[uncond (zeros), cond]`` under guidance, else ``(1, 1, D)``."""
        cond = self.encode_reference(reference, settings.width, settings.height, settings.aspect, trace, config,
                                     keep, check_interrupt)
        self.stats.reference_seconds = time.perf_counter() - self.stats.started
        return torch.cat([torch.zeros_like(cond), cond]) if settings.cfg > 1.0 else cond

    def _unit_counter(self, done: int, total: int, progress: ProgressCallback | None) -> Callable[[], None]:
        """What to call after each window batch: it times the batch (:attr:`stats`) and reports
        ``progress(done, total)``, counting on from the ``done`` batches a resumed run had finished."""
        mark = time.perf_counter()

        def unit_done() -> None:
            nonlocal done, mark
            done, mark = done + 1, self.stats.unit_done(mark)
            if progress is not None:
                progress(done, total)

        return unit_done

    def _starting_point(self, settings: SamplingSettings, checkpoints: Checkpoints | None, fingerprint, group,
                        say: MessageCallback):
        """``(scheduler, latents, resumed)``: the scheduler with its timesteps and the initial noise, or both
        as a saved state of this run left them (``resumed``: that :class:`~musepose.pipeline.resume.StepState`,
        else None). Every rank of a group must start from the same point."""
        scheduler = make_scheduler(settings.scheduler)
        scheduler.set_timesteps(settings.steps, device="cpu")
        resumed = checkpoints.restore(fingerprint, scheduler) if checkpoints is not None else None
        latents = resumed.latents if resumed else self.initial_noise(settings) * scheduler.init_noise_sigma
        if group is not None:
            group.check_same_start(resumed.step if resumed else 0, latents)
        if resumed:
            say(f"resumed at step {resumed.step} of {settings.steps}")
        return scheduler, latents, resumed

    def _noise_prediction(self, dealer: WindowDealer, latents: torch.Tensor, t, scheduler, context: torch.Tensor,
                          settings: SamplingSettings, plan, group: "DistributedGroup | None", what: str,
                          unit_done: Callable[[], None]) -> torch.Tensor:
        """One step's noise prediction ``(1, 4, F, h, w)`` float32 on the CPU: this process's window batches
        blended (``plan``: :func:`_window_plan`), summed over the ranks, guidance applied. ``unit_done()``
        after each batch."""
        windows, batches, weights, weight_sum = plan
        guided = settings.cfg > 1.0
        branches = 2 if guided else 1
        accumulated = torch.zeros((branches, *latents.shape[1:]), device=self.device, dtype=torch.float32)
        for batch_index, pred in dealer.predictions(latents, batches, t, scheduler, context, guided):
            batch_windows = batches[batch_index]
            for j, window in enumerate(batch_windows):
                index = torch.tensor(window, device=self.device)
                w = weights[windows.index(window)].to(self.device).view(1, 1, -1, 1, 1)
                for branch in range(branches):
                    contribution = pred[branch * len(batch_windows) + j].float()[None] * w
                    accumulated[branch:branch + 1].index_add_(2, index, contribution)
            del pred
            unit_done()
        if group is not None:  # every rank gets the sum of all ranks' predictions
            accumulated = group.all_reduce(accumulated, what)
        noise_pred = (accumulated / weight_sum.to(self.device).view(1, 1, -1, 1, 1)).cpu()
        del accumulated
        if guided:
            uncond, text = noise_pred.chunk(2)
            noise_pred = uncond + settings.cfg * (text - uncond)
        return noise_pred

    def _unet(self, x, t, encoder_states, pose_features, num_uncond: int,
              check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
        """One denoising-UNet call; the first ``num_uncond`` (batch*frame) entries skip the reference."""
        self._bind_processors()
        self.state.reading = True
        self.state.num_uncond = num_uncond
        try:
            return self.models.denoising_unet(x, t, encoder_hidden_states=encoder_states, pose_features=pose_features,
                                              between_layers=check_interrupt)
        finally:
            self.state.reading = False

    def decode(self, latents: torch.Tensor, memory: MemorySettings | MemoryConfig | None = None,
               progress: ProgressCallback | None = None, check_interrupt: Callable[[], None] | None = None,
               on_message: MessageCallback | None = None) -> torch.Tensor:
        """Latents ``(1, 4, F, h, w)`` -> the whole video ``[F, H, W, 3]`` float32 in [0, 1] on the CPU: the
        chunks of :meth:`decode_chunks`, joined (what an IMAGE batch needs; a writer takes the chunks)."""
        return torch.cat(list(self.decode_chunks(latents, memory, progress, check_interrupt, on_message)))

    def _decode_config(self, memory: MemorySettings | MemoryConfig | None, count: int, height: int,
                       width: int) -> MemoryConfig:
        """The sampling run's configuration, or one for this decode (:func:`~.memory.decode_config`: the
        settings' chunk, 0: as many frames per VAE call as the free memory allows, tiled when even one frame
        does not fit)."""
        if isinstance(memory, MemoryConfig):
            return memory
        m = self.models
        memory = (memory or MemorySettings()).validated()
        job = Job(width=width, height=height, window_frames=count, video_frames=count,
                  dtype_bytes=torch.finfo(self.dtype).bits // 8, vae=_vae_config(m))

        def free_bytes() -> float:
            return memory.budget_bytes or (self.placement.free_memory() + bytes_on(self.device, m.vae))

        return decode_config(memory, job, lambda: WeightBytes.from_models(m), free_bytes)

    def decode_chunks(self, latents: torch.Tensor, memory: MemorySettings | MemoryConfig | None = None,
                      progress: ProgressCallback | None = None, check_interrupt: Callable[[], None] | None = None,
                      on_message: MessageCallback | None = None) -> Iterator[torch.Tensor]:
        """Latents ``(1, 4, F, h, w)`` -> the video in frame order, one float32 ``[n, H, W, 3]`` chunk in [0, 1]
        on the CPU per VAE call, so a consumer (a video writer) holds one chunk, never the whole video.

        Frames are decoded ``decode_chunk`` at a time (:meth:`_decode_config`). On out-of-memory the chunk is
        halved and retried, then tiling is tried. ``stats.decode_seconds`` counts the time spent here, not
        the consumer's time between chunks.
        """
        m = self.models
        frames = latents[0].permute(1, 0, 2, 3) / VAE_SCALING_FACTOR  # (F, 4, h, w)
        count = frames.shape[0]
        config = self._decode_config(memory, count, frames.shape[2] * VAE_DOWNSCALE, frames.shape[3] * VAE_DOWNSCALE)
        chunk, tiled = config.decode_chunk, config.decode_tiling
        (on_message or logger.info)(f"decode: {chunk} frame(s) per VAE call" + (", tiled" if tiled else ""))
        self.stats.decode_seconds = 0.0
        started = time.perf_counter()
        index = 0
        was_tiling = bool(getattr(m.vae, "use_tiling", False))
        _set_tiling(m.vae, tiled)
        try:
            with self._using(config, m.vae):
                while index < count:
                    if check_interrupt is not None:
                        check_interrupt()
                    try:
                        with torch.no_grad():
                            image = m.vae.decode(frames[index:index + chunk].to(self.device, self.dtype)).sample
                    except torch.OutOfMemoryError:
                        if chunk == 1 and tiled:
                            raise
                        if chunk == 1:
                            tiled = True
                            _set_tiling(m.vae, True)
                            logger.warning("out of memory while decoding one frame: decoding in tiles")
                        else:
                            chunk = max(1, chunk // 2)
                            logger.warning("out of memory while decoding: retrying with %d frames per chunk", chunk)
                        if self.device.type == "cuda":
                            torch.cuda.empty_cache()
                        continue
                    # In place, on the VAE's output (or its float32 copy): the same values as ``(x / 2 + 0.5).clamp``
                    # without three more chunk-sized tensors.
                    out = image.float().div_(2).add_(0.5).clamp_(0, 1).permute(0, 2, 3, 1).cpu()
                    del image
                    index = min(index + chunk, count)
                    if progress is not None:
                        progress(index, count)
                    self.stats.decode_seconds += time.perf_counter() - started
                    yield out
                    started = time.perf_counter()
        finally:
            _set_tiling(m.vae, was_tiling)

    def __call__(self, reference, pose_frames, settings: SamplingSettings,
                 memory: MemorySettings | MemoryConfig | None = None,
                 progress: ProgressCallback | None = None, check_interrupt: Callable[[], None] | None = None,
                 trace: dict | None = None) -> torch.Tensor:
        latents = self.sample(reference, pose_frames, settings, memory, progress, check_interrupt, trace)
        if trace is not None:
            trace["final_latents"] = latents.clone()
        return self.decode(latents, self.stats.memory[-1], check_interrupt=check_interrupt)


def _prepared(settings: SamplingSettings, pose_frames) -> tuple[SamplingSettings, PoseFrames]:
    """Validated settings and the pose frames at the output size (a PoseFrames is used as it is)."""
    if isinstance(pose_frames, PoseFrames):
        return settings.validated(len(pose_frames)), pose_frames
    n = len(pose_frames) if not isinstance(pose_frames, (np.ndarray, torch.Tensor)) else pose_frames.shape[0]
    settings = settings.validated(n)
    return settings, PoseFrames(pose_frames, settings.width, settings.height, settings.aspect)


def _window_plan(settings: SamplingSettings):
    """``(windows, batches, weights, weight_sum)``: the context windows, their batches of
    ``windows_per_batch``, each window's blending weights ``(C,)`` and their sum per frame ``(F,)``."""
    windows = settings.windows()
    batches = settings.window_batches()
    weights = [window_weights(len(w), settings.blending) for w in windows]
    weight_sum = torch.zeros(settings.frames)
    for window, w in zip(windows, weights):
        weight_sum.index_add_(0, torch.tensor(window), w)
    return windows, batches, weights, weight_sum


def _report_step(step: int, steps: int, step_output, noise_pred: torch.Tensor, on_step: StepCallback | None,
                 trace: dict | None) -> None:
    """After scheduler step ``step`` of ``steps``: the caller's preview (the scheduler's estimate of the clean
    latents where it makes one, else the latents) and the trace's copies of this step's tensors."""
    latents = step_output.prev_sample
    if on_step is not None:
        denoised = getattr(step_output, "pred_original_sample", None)
        on_step(step, steps, latents if denoised is None else denoised)
    if trace is not None:
        trace["noise_pred_steps"].append(noise_pred.clone())
        trace["latents_steps"].append(latents.clone())


def _say_time_ahead(say: MessageCallback, resumed, stats: SamplingStats, config: MemoryConfig,
                    device: torch.device) -> None:
    """Before the first step: the time the sampling should take. A resumed run goes by the interrupted
    run's pace; a new run on a GPU by the planner's figure (a model of an H100-class GPU, so only a first
    idea); on the CPU the planner has no time model and the estimate waits for the first window batch."""
    if resumed is not None and resumed.unit_seconds:
        left = seconds_left(resumed.unit_seconds, stats.units_left, stats.units_per_step)
        say(f"time left: about {clock(left)} (at the interrupted run's pace)")
    elif resumed is None and device.type == "cuda" and config.estimate is not None:
        say(f"time: about {clock(config.estimate.sampling_seconds)} of sampling by the planner's model of an "
            "H100-class GPU; the estimate from this run's own steps follows the first window")


def _vae_config(models: MusePoseModels) -> dict:
    """The VAE's config (what the planner sizes decoding with); the full-size one when no VAE is loaded."""
    from ..config import SD_VAE_FT_MSE

    return dict(models.vae.config) if models.vae is not None else dict(SD_VAE_FT_MSE)


def _clip_shape(models: MusePoseModels) -> dict:
    """The image encoder's token count and width (what its activations scale with)."""
    if models.image_encoder is None:
        return {}
    config = models.image_encoder.config
    return dict(clip_tokens=(config.image_size // config.patch_size) ** 2 + 1, clip_width=config.hidden_size)


def _set_tiling(vae, on: bool) -> None:
    if on and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    elif not on and hasattr(vae, "disable_tiling"):
        vae.disable_tiling()
