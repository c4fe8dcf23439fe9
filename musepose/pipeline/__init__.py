"""Sampling pipeline: preprocessing, context windows, placement, schedulers, the sampler itself."""
from .context import BLENDS, SCHEDULES, context_windows, window_weights
from .placement import EnginePlacement, ModelPlacement
from .preprocess import InputError, PoseFrames
from .sampler import MusePosePipeline, SamplingSettings
from .schedulers import SCHEDULERS, make_scheduler

__all__ = [
    "BLENDS", "SCHEDULES", "SCHEDULERS", "EnginePlacement", "InputError", "ModelPlacement", "MusePosePipeline",
    "PoseFrames", "SamplingSettings", "context_windows", "make_scheduler", "window_weights",
]
