"""The MUSEPOSE value passed from the loader to the sampler and decoder.

``LoadedSet`` is what the model cache holds (weights, pipeline, placement: expensive, shared);
``MusePoseModel`` is the loader's output: a loaded set plus per-node choices that need no reload
(the attention backend).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LoadedSet:
    models: object  # musepose.weights.MusePoseModels
    pipeline: object  # musepose.pipeline.MusePosePipeline
    placement: object  # ComfyPlacement or EnginePlacement
    device: torch.device
    dtype: torch.dtype
    offload: str
    files: dict = field(default_factory=dict)

    def close(self) -> None:
        """Called when the cache evicts this set: take it off ComfyUI's loaded list."""
        unload_all = getattr(self.placement, "unload_all", None)
        if callable(unload_all):
            unload_all()


@dataclass
class MusePoseModel:
    loaded: LoadedSet
    attention: str = "sdpa"

    @property
    def models(self):
        return self.loaded.models

    @property
    def pipeline(self):
        return self.loaded.pipeline

    @property
    def placement(self):
        return self.loaded.placement

    @property
    def dtype(self) -> torch.dtype:
        return self.loaded.dtype

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    def set_estimate(self, module, required: int, minimum: int | None = None) -> None:
        """Forward a stage's memory estimate to placements that use one (ComfyUI's)."""
        setter = getattr(self.placement, "set_estimate", None)
        if callable(setter):
            setter(module, required, minimum)
