"""A denoising step's window batches dealt out over several devices of one process (and, with a
torch.distributed group, over the processes: see :mod:`musepose.pipeline.distributed`).

The windows of one step are independent given the latents and the reference features, so:

* each extra device holds a *replica*: its own denoising UNet and pose guider (read again from the
  weight files on first use, else copied), its own placement and reference-attention state, and plans
  its memory with its own free memory (the memory policy per device);
* the reference UNet runs once, on the first device; every replica gets a copy of its features;
* the batches of a step (``batches[i]``) this process runs are dealt round-robin: the ``j``-th of them
  goes to device ``j % devices`` (4 batches on 3 devices: two rounds), the same device every step, so a
  device's pose-feature cache holds only its own windows;
* the first device runs its batches on the calling thread (under ComfyUI it stays under ComfyUI's
  model management); each extra device has one worker thread (CUDA kernels release the GIL);
* predictions come back to the first device and are yielded **in batch order**, whatever order the
  devices finish in: the caller adds them up in the same order as a one-device run, so the sum does
  not depend on timing (fp32 on the CPU: bit-identical to one device);
* an error on any device (out of memory in the leanest configuration, a cancel) stops the others at
  their next layer and is raised on the calling thread.
"""
from __future__ import annotations

import copy
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, Iterator, Sequence

import torch

from ..device import is_out_of_memory
from ..weights.loader import MusePoseModels, load_models
from .denoiser import DenoiserSession
from .placement import EnginePlacement
from .stats import SamplingStats

#: The networks a replica holds (the others run once per video, on the first device).
REPLICATED = ("denoising_unet", "pose_guider")
#: ``(pipe, settings, pose_frames, check_interrupt) -> session``: one device's denoiser for a run.
SessionFactory = Callable[..., DenoiserSession]


def replicate(pipe, device: torch.device | str, offload_device: torch.device | str = "cpu"):
    """A pipeline of ``pipe``'s class on ``device`` with a replica of ``pipe``'s denoising UNet and pose guider.

    Weights loaded from files are read again, lazily (the first run on the device reads them, straight
    from the files: no second copy of the main device's weights is made); networks built in memory
    are deep-copied (do it while they sit on the CPU). Release with :func:`release_replica`.
    """
    models = pipe.models
    source = models.source
    if source is not None:
        replica = load_models(source.paths, dtype=models.dtype, components=REPLICATED, lazy=True, fp8=source.fp8)
    else:
        replica = MusePoseModels(dtype=models.dtype, unet_config=models.unet_config,
                                 **{name: copy.deepcopy(getattr(models, name)) for name in REPLICATED})
    return type(pipe)(replica, placement=EnginePlacement(device, offload_device))


def release_replica(pipe) -> None:
    """Let a replica's weights go (device and host memory)."""
    for module in pipe.models.components().values():
        pipe.placement.release(module)
        module.to_empty(device="meta")
    pipe.state.clear()
    if pipe.device.type == "cuda":
        torch.cuda.empty_cache()


class _Stopped(Exception):
    """Raised in a device's worker when another device failed (its own error is the one reported)."""


class Runner:
    """One device's denoiser for a run: its pipeline, its memory configurations (best first, the rest
    out-of-memory fallbacks) and its :class:`~musepose.pipeline.denoiser.DenoiserSession`, made by
    ``session_factory(pipe, settings, pose_frames, check_interrupt)``."""

    def __init__(self, pipe, configs, settings, pose_frames, check_interrupt, say: Callable[[str], None],
                 label: str = "", threaded: bool = False, session_factory: SessionFactory = DenoiserSession):
        self.pipe, self.configs, self.say, self.label = pipe, list(configs), say, label
        self._stop = threading.Event()
        self._check_interrupt = check_interrupt
        # A worker's layers also stop when another device fails; the calling thread's need not.
        self.session = session_factory(pipe, settings, pose_frames, self.check if threaded else check_interrupt)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"musepose-{pipe.device}") if threaded else None

    @property
    def config(self):
        return self.configs[0]

    def check(self) -> None:
        """The session's between-layers check: a cancel, or another device's failure."""
        if self._stop.is_set():
            raise _Stopped()
        if self._check_interrupt is not None:
            self._check_interrupt()

    def submit(self, fn, *args) -> Future:
        if self.executor is None:  # the calling thread's device: run now
            future = Future()
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller like a worker's error
                future.set_exception(exc)
            return future
        return self.executor.submit(fn, *args)

    @torch.no_grad()
    def start(self) -> None:
        self.session.start(self.config)

    @torch.no_grad()
    def run(self, latents, batch_index, batch_windows, t, scheduler, context, guided, to_device) -> torch.Tensor:
        """One window batch's UNet output on ``to_device``; steps down to the next configuration on out of
        memory, like a one-device run."""
        self.check()
        context = context.to(self.pipe.device)
        while True:
            try:
                pred = self.session.run(latents, batch_index, batch_windows, t, scheduler, context, guided)
                return pred.to(to_device)
            except Exception as exc:
                if not is_out_of_memory(exc) or len(self.configs) < 2:
                    raise
                self.configs.pop(0)
                self.say(f"memory{self.label}: out of memory; stepping down to " + self.config.describe())
                self.pipe.stats.memory.append(self.config)
                self.session.start(self.config)

    def stop(self) -> None:
        self.session.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=True)


class WindowDealer:
    """Deals a step's window batches to the devices of this process (module docstring).

    ``batch_ids`` are the batches this process runs (all of them, or its rank's share);
    ``session_factory`` makes each device's denoiser session (:class:`Runner`).
    """

    def __init__(self, pipe, configs, replicas: Sequence, settings, pose_frames, memory, check_interrupt,
                 say: Callable[[str], None], batch_ids: Sequence[int],
                 session_factory: SessionFactory = DenoiserSession):
        several = bool(replicas)
        self.main = Runner(pipe, configs, settings, pose_frames, check_interrupt, say,
                           label=f" on {pipe.device}" if several else "", session_factory=session_factory)
        self.runners = [self.main]
        for replica in replicas:
            replica_configs = replica.plan_memory(settings, memory)
            say(f"memory on {replica.device} (replica): " + replica_configs[0].describe())
            replica.stats = SamplingStats(memory=[replica_configs[0]])
            self.runners.append(Runner(replica, replica_configs, settings, pose_frames, check_interrupt, say,
                                       label=f" on {replica.device}", threaded=True,
                                       session_factory=session_factory))
        self.batch_ids = list(batch_ids)
        self.owner = {b: self.runners[j % len(self.runners)] for j, b in enumerate(self.batch_ids)}

    def start(self) -> None:
        """Ready every device's denoiser (in parallel) and copy the reference features to the replicas."""
        features = self.main.pipe.state.features
        for runner in self.runners[1:]:
            runner.pipe.state.clear()
            runner.pipe.state.features.update({name: f.to(runner.pipe.device) for name, f in features.items()})
        started = [runner.submit(runner.start) for runner in self.runners[1:]]  # the workers first, then ours
        self._gather([self.main.submit(self.main.start)] + started)

    def predictions(self, latents, batches, t, scheduler, context, guided) -> Iterator[tuple[int, torch.Tensor]]:
        """``(batch index, UNet output on the first device)`` for each of this process's batches, in order."""
        device = self.main.pipe.device
        if len(self.runners) == 1:
            for b in self.batch_ids:
                yield b, self.main.run(latents, b, batches[b], t, scheduler, context, guided, device)
            return
        # Euler's scale_model_input sets its step index on the step's first call: make that call here, in
        # one thread (the workers' calls then only read it).
        scheduler.scale_model_input(latents[:, :, :1], t)
        args = (latents, t, scheduler, context, guided, device)
        jobs = {b: self.owner[b].submit(self._run, b, batches[b], *args)
                for b in self.batch_ids if self.owner[b] is not self.main}
        try:
            for b in self.batch_ids:
                if self.owner[b] is self.main:
                    yield b, self.main.run(latents, b, batches[b], t, scheduler, context, guided, device)
                else:
                    yield b, jobs[b].result()
        except BaseException as exc:
            self._stop_all(jobs.values())
            raise self._root_cause(jobs.values(), exc) from None

    def _run(self, b, batch_windows, latents, t, scheduler, context, guided, device):
        return self.owner[b].run(latents, b, batch_windows, t, scheduler, context, guided, device)

    def _gather(self, futures: list[Future]) -> None:
        try:
            for future in futures:
                future.result()
        except BaseException as exc:
            self._stop_all(futures)
            raise self._root_cause(futures, exc) from None

    def _stop_all(self, futures) -> None:
        for runner in self.runners:
            runner._stop.set()
        for future in futures:
            future.cancel()
        wait(list(futures))
        for runner in self.runners:
            runner._stop.clear()

    @staticmethod
    def _root_cause(futures, exc: BaseException) -> BaseException:
        """The error to report: ``exc``, unless it only says another device failed first."""
        if not isinstance(exc, _Stopped):
            return exc
        for future in futures:
            if future.done() and not future.cancelled():
                error = future.exception()
                if error is not None and not isinstance(error, _Stopped):
                    return error
        return exc

    @property
    def config(self):
        """The first device's configuration (the last one it stepped down to)."""
        return self.main.config

    def stop(self, keep_weights: bool = True) -> None:
        """End the run on every device: sessions closed, replicas' reference features dropped, their
        weights offloaded or dropped as their memory policy says."""
        for runner in self.runners:
            runner.stop()
        for runner in self.runners[1:]:
            runner.pipe.state.clear()
            runner.pipe._done_with(runner.config, keep_weights, *(runner.pipe.models.components().values()))
