"""What a run above MusePose's usual sizes will cost, said before it starts (the Sampler node's warning).

One planner pass: every configuration the memory levels allow, each with its estimate
(:func:`~musepose.pipeline.memory.candidates`); the leanest one's peak is what the run needs at least, the
fastest one's peak and time what the fastest setting takes. The run plans its own configuration when it
starts (``MusePosePipeline.sample``).
"""
from __future__ import annotations

from ..options import NORMAL_RESOLUTION


def large_run_note(settings, models) -> str | None:
    """For validated ``settings`` above ``NORMAL_RESOLUTION``: a warning with the planner's device memory
    (leanest and fastest configuration) and time for ``models`` (a ``MusePoseModels``); None otherwise."""
    if max(settings.width, settings.height) <= NORMAL_RESOLUTION:
        return None
    from .memory import MemorySettings, candidates
    from .planner import WeightBytes

    options = candidates(MemorySettings(offload="auto"), settings.job(models), WeightBytes.from_models(models))
    leanest = min(options, key=lambda c: c.estimate.peak_bytes).estimate
    fastest = min(options, key=lambda c: (c.estimate.seconds, c.estimate.peak_bytes)).estimate
    return (f"{settings.width}x{settings.height} is above MusePose's usual range (512-768, trained at 768): it "
            f"needs at least about {leanest.peak_bytes / 1e9:.1f} GB of GPU memory ({fastest.peak_bytes / 1e9:.0f} GB "
            f"for the fastest setting) and about {fastest.seconds / 60:.0f} min on an H100-class GPU "
            f"({fastest.flops_per_window_step / 1e12:.0f} TFLOP per window and step); consider a smaller size and "
            f"upscaling the video.")
