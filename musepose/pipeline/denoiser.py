"""The denoiser of one run, set up for one memory configuration: the denoising UNet and pose guider on the
device as the configuration says, and the UNet calls of one window batch (both guidance halves).

Each device's :class:`~musepose.pipeline.parallel.Runner` holds one session and starts it again with the
next configuration when a window batch runs out of memory.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable

import torch

from ..models.pose_guider import PoseFeatureRows
from .memory import MemoryConfig
from .preprocess import PoseFrames

if TYPE_CHECKING:
    from .sampler import MusePosePipeline, SamplingSettings


class DenoiserSession:
    """The denoising UNet and pose guider set up for one configuration; :meth:`start` again to switch."""

    def __init__(self, pipe: "MusePosePipeline", settings: "SamplingSettings", pose_frames: PoseFrames,
                 check_interrupt: Callable[[], None] | None):
        self.pipe, self.settings, self.pose_frames = pipe, settings, pose_frames
        self.check_interrupt = check_interrupt
        self.config: MemoryConfig | None = None
        self._stack: contextlib.ExitStack | None = None
        self._pose_cache: dict[int, torch.Tensor] = {}

    def start(self, config: MemoryConfig) -> None:
        self.stop()
        pipe, m = self.pipe, self.pipe.models
        self.config = config
        self._pose_cache.clear()
        if pipe.device.type == "cuda":
            torch.cuda.empty_cache()
        m.denoising_unet.enable_frame_chunking(config.chunk_bytes)
        self._stack = contextlib.ExitStack()
        estimate = config.estimate
        required = int(estimate.stages["sampling"] - estimate.weights["sampling"]) if estimate else 0
        self._stack.enter_context(pipe._using(config, m.denoising_unet, m.pose_guider, memory_required=required,
                                              weight_budget=config.weight_budget))

    def stop(self) -> None:
        if self._stack is not None:
            self._pose_cache.clear()
            self._stack.close()
            self._stack = None
            self.pipe.models.denoising_unet.enable_frame_chunking(None)

    def _pose(self, batch_index: int, batch_windows: list[list[int]]):
        """Pose features of a window batch: cached for the run, or computed in chunks where they are added."""
        pipe, m = self.pipe, self.pipe.models
        frame_ids = [i for w in batch_windows for i in w]
        rows = PoseFeatureRows(m.pose_guider,
                               lambda a, b: self.pose_frames.tensor(frame_ids[a:b]).to(pipe.device, pipe.dtype),
                               len(frame_ids), self.settings.width * self.settings.height,
                               torch.finfo(pipe.dtype).bits // 8)
        if not self.config.pose_cache:
            return rows
        if batch_index not in self._pose_cache:
            self._pose_cache[batch_index] = rows.all(m.denoising_unet.chunking)
        return self._pose_cache[batch_index]

    def run(self, latents, batch_index, batch_windows, t, scheduler, context, guided):
        """UNet output for ``len(batch_windows)`` windows, ``[uncond..., cond...]`` under CFG.

        ``batched`` runs both guidance halves in one call (the original); ``sequential`` runs them one after
        the other, halving the activation memory for the same result.
        """
        pipe = self.pipe
        x = torch.cat([latents[:, :, w] for w in batch_windows])  # (k, 4, C, h, w) float32 CPU
        x = scheduler.scale_model_input(x, t).to(pipe.device, pipe.dtype)
        k, _, window_len = x.shape[:3]
        pose = self._pose(batch_index, batch_windows)
        t = t.to(pipe.device)
        interrupt = self.check_interrupt
        if not guided:
            return pipe._unet(x, t, context.repeat_interleave(k, dim=0), pose, 0, interrupt)
        if self.config.cfg_mode == "sequential":
            uncond = pipe._unet(x, t, context[:1].repeat_interleave(k, dim=0), pose, k * window_len, interrupt)
            cond = pipe._unet(x, t, context[1:].repeat_interleave(k, dim=0), pose, 0, interrupt)
            return torch.cat([uncond, cond])
        return pipe._unet(torch.cat([x, x]), t, context.repeat_interleave(k, dim=0), pose, k * window_len, interrupt)

