"""The MUSEPOSE value passed from the loader to the sampler and decoder.

``LoadedSet`` is what the model cache holds (weights, pipeline, placement: expensive, shared; its key is
the files, the precision and the device); ``MusePoseModel`` is the loader's output: a loaded set plus
the per-run choices that need no reload (the offload mode and the attention backend).

A set can be *released* while a loader output still points at it (ComfyUI keeps node outputs in its
own cache): ComfyUI's Free, ComfyUI unloading one of its models, or the cache making room for another
set. Releasing drops every reference to the networks, so their RAM goes back at once; the output then
reads the weights again the next time a node uses it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import torch


logger = logging.getLogger("musepose_express")

#: Released sets, kept as empty shells until a safe moment: a set's placement objects must not be
#: garbage-collected while ComfyUI is still walking its loaded-model list (which is when a release by
#: ComfyUI happens: its bookkeeping would change under it). :func:`drop_released` empties it.
_RELEASED: list["LoadedSet"] = []


def drop_released() -> None:
    """Forget the released shells (call from node code, never from inside a ComfyUI unload)."""
    _RELEASED.clear()


@dataclass(eq=False)
class LoadedSet:
    models: object  # musepose.weights.MusePoseModels
    pipeline: object  # musepose.pipeline.MusePosePipeline
    placement: object  # ComfyPlacement or EnginePlacement
    device: torch.device
    dtype: torch.dtype
    files: dict = field(default_factory=dict)
    #: loads the same files again (set by the loader): what an output of a released set uses
    reopen: Callable[[], "LoadedSet"] | None = None
    released: bool = False
    #: (position, device) -> a pipeline with a replica of the denoiser on an extra device (made on first use)
    replicas: dict = field(default_factory=dict)

    def replica(self, position: int, device: torch.device):
        """The replica for the ``position``-th extra device, made on first use (its weights are read from the
        files by its first run, onto that device; ComfyUI's model management does not see them)."""
        key = (position, str(device))
        if key not in self.replicas:
            from ..musepose.pipeline.parallel import replicate

            self.replicas[key] = replicate(self.pipeline, device)
        return self.replicas[key]

    def close(self) -> None:
        """Let the weights go: unload them from ComfyUI, free the extra devices' replicas and drop every
        reference to the networks."""
        if self.released:
            return
        self.released = True
        from ..musepose.pipeline.parallel import release_replica

        for replica in self.replicas.values():
            release_replica(replica)
        self.replicas.clear()
        for name in ("unload_all", "drop_modules"):
            method = getattr(self.placement, name, None)
            if callable(method):
                method()
        self.models = None
        self.pipeline = None
        _RELEASED.append(self)


@dataclass(eq=False)
class MusePoseModel:
    loaded: LoadedSet
    attention: str = "sdpa"
    offload: str = "auto"  # the memory level of the runs that use this output (musepose.options.OFFLOAD_LEVELS)
    extra_devices: tuple = ()  # more devices sharing the Sampler's windows (torch.device each), besides ComfyUI's

    def replicas(self) -> list:
        """Pipelines on this output's extra devices (for ``MusePosePipeline.sample(replicas=...)``), their
        attention routed like the main set's."""
        from ..musepose.attention import set_attention_backend

        loaded = self.current()
        replicas = [loaded.replica(i, device) for i, device in enumerate(self.extra_devices)]
        for replica in replicas:
            set_attention_backend(replica.models, self.attention)
        return replicas

    def route_attention(self) -> None:
        """Route the set's attention through this output's backend for the coming run (outputs sharing one
        cached set may choose differently; the choice is the engine's, per model: ``musepose.attention``)."""
        from ..musepose.attention import set_attention_backend

        set_attention_backend(self.models, self.attention)

    def current(self) -> LoadedSet:
        """The loaded set, read again from disk if it was released since this output was made."""
        if self.loaded.released:
            if self.loaded.reopen is None:
                raise RuntimeError("MusePose: this model set was released; queue the MusePose Model Loader again")
            logger.info("MusePose: the model set was released (ComfyUI freed memory); reading the weights again")
            self.loaded = self.loaded.reopen()
        return self.loaded

    @property
    def models(self):
        return self.current().models

    @property
    def pipeline(self):
        return self.current().pipeline

    @property
    def placement(self):
        return self.current().placement

    def memory(self, **overrides):
        """The engine's memory settings for a run of this output (its offload level, plus ``overrides``)."""
        from ..musepose.pipeline import MemorySettings

        return MemorySettings(offload=self.offload, **overrides)

    @property
    def dtype(self) -> torch.dtype:
        return self.loaded.dtype

    @property
    def device(self) -> torch.device:
        return self.loaded.device
