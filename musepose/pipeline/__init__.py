"""Sampling pipeline: preprocessing, context windows, placement, memory policy, schedulers, the sampler."""
from .context import context_windows, window_weights
from .memory import MemoryConfig, MemorySettings
from .placement import EnginePlacement, ModelPlacement
from .preprocess import InputError, PoseFrames
from .sampler import MusePosePipeline, SamplingSettings
from .schedulers import make_scheduler

__all__ = [
    "EnginePlacement", "InputError", "MemoryConfig", "MemorySettings", "ModelPlacement", "MusePosePipeline", "PoseFrames", "SamplingSettings",
    "context_windows", "make_scheduler", "window_weights",
]
