"""Turn a mode name (see ``planner.MODES``) or a :class:`~musepose.perf.planner.ModeChoice` into a ready
pipeline: placement, activation levers, fp8 storage, and the SamplingSettings overrides to use.

    setup = setup_mode(models, "cuda", "default")
    settings = SamplingSettings(..., **setup.settings_overrides)
    latents = setup.pipeline.sample(reference, poses, settings)
    video = setup.pipeline.decode(latents, setup.decode_chunk)
    setup.remove()   # undo hooks/processors (the models can then serve another mode)

Models should be loaded on the CPU for the offloading modes ('model-offload', 'default', 'lowvram*');
the placement moves them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..pipeline.placement import EnginePlacement
from ..pipeline.sampler import MusePosePipeline
from ..weights.loader import MusePoseModels
from .levers import enable_activation_chunking
from .planner import MODES, ModeChoice

DEFAULT_CHUNK_BYTES = 256 << 20
DEFAULT_STREAM_BUDGET = 1 << 30


@dataclass
class ModeSetup:
    mode: str
    pipeline: MusePosePipeline
    settings_overrides: dict
    decode_chunk: int
    handles: list = field(default_factory=list)

    def remove(self) -> None:
        """Undo activation chunking and fp8 storage hooks (fp8 weights are dequantised back)."""
        for handle in reversed(self.handles):
            handle.remove()
        self.handles.clear()


def setup_mode(models: MusePoseModels, device: torch.device | str, mode: str, *, chunk_bytes: int | None = None,
               stream_budget_bytes: int | None = None, windows_per_batch: int = 1, decode_chunk: int = 8,
               prefetch: bool = True) -> ModeSetup:
    """Build the pipeline for ``mode`` (a key of ``planner.MODES``) on ``device``."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    spec = MODES[mode]
    device = torch.device(device)
    handles = []
    if spec.fp8:
        from .fp8 import apply_fp8_storage

        for unet in (models.denoising_unet, models.reference_unet):
            if unet is not None:
                handles.append(apply_fp8_storage(unet))
    if spec.placement == "stream":
        from .streaming import StreamingPlacement

        placement = StreamingPlacement(device, budget_bytes=stream_budget_bytes if stream_budget_bytes is not None
                                       else DEFAULT_STREAM_BUDGET, prefetch=prefetch)
    else:
        placement = EnginePlacement(device, offload=spec.placement)
    if spec.original:
        from .original_costs import OriginalCostPipeline

        pipe = OriginalCostPipeline(models, placement=placement)
        decode_chunk = 1
        overrides = {"cfg_mode": "batched", "context_batch_size": 1}
    else:
        pipe = MusePosePipeline(models, placement=placement)
        overrides = {"cfg_mode": spec.cfg_mode, "context_batch_size": int(windows_per_batch)}
    if spec.chunk and models.denoising_unet is not None:
        handles.append(enable_activation_chunking(models.denoising_unet, chunk_bytes or DEFAULT_CHUNK_BYTES))
    return ModeSetup(mode, pipe, overrides, decode_chunk, handles)


def setup_choice(models: MusePoseModels, device: torch.device | str, choice: ModeChoice) -> ModeSetup:
    """:func:`setup_mode` for what :func:`~musepose.perf.planner.choose_mode` returned."""
    return setup_mode(models, device, choice.mode, chunk_bytes=choice.ff_chunk,
                      stream_budget_bytes=choice.stream_budget_bytes, windows_per_batch=choice.windows_per_batch,
                      decode_chunk=choice.decode_chunk)
