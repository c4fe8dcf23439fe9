"""Elapsed time and time left of a sampling run, as the command line's progress line and the Sampler node
show them.

The unit is one window batch of one step (what the progress bars count). The estimate is the mean time
of the finished units times the units left. The first step's units are left out once a later unit has
finished: they also compute each window's pose features (cached for the rest of the run) and meet the
device cold (allocator growth, kernel autotuning), so they run slower than the rest. Within the first
step, the very first unit (the coldest: on an H200 at 768x768 it took 3x the others) is left out once a
second one has finished.
"""
from __future__ import annotations

from typing import Sequence


def seconds_left(unit_seconds: Sequence[float], units_left: int, units_per_step: int) -> float | None:
    """Seconds the ``units_left`` remaining units should take, from ``unit_seconds`` (the finished units'
    durations, in order; ``units_per_step`` of them make a step). None before any unit has finished."""
    if not unit_seconds:
        return None
    if len(unit_seconds) > units_per_step:
        settled = list(unit_seconds[units_per_step:])
    else:
        settled = list(unit_seconds[1:]) or list(unit_seconds)
    return max(0, units_left) * sum(settled) / len(settled)


def clock(seconds: float) -> str:
    """``42`` -> ``0:42``; ``3723`` -> ``1:02:03``."""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_text(elapsed_s: float, left_s: float | None) -> str:
    """``elapsed 1:02, about 3:10 left`` (only the elapsed time while nothing is measured yet)."""
    text = f"elapsed {clock(elapsed_s)}"
    return text if left_s is None else f"{text}, about {clock(left_s)} left"
