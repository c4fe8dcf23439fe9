"""What a sampling run measured about itself: timings, the memory configurations it went through, and the
time left it reads from them while it goes (:mod:`musepose.pipeline.timeleft`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .memory import MemoryConfig
from .timeleft import progress_text, seconds_left


@dataclass
class SamplingStats:
    """Timings of the last run (seconds) and the memory configurations it used.

    ``unit_seconds``: how long each window batch this process finished took (from the previous one's end:
    scheduler steps, collectives and state saving included), in order; ``units_per_step`` of them make a
    step and ``units_left`` remain. :meth:`time_left` and :meth:`progress_text` read them while the run goes.
    """

    seconds_per_step: list[float] = field(default_factory=list)
    reference_seconds: float = 0.0
    decode_seconds: float = 0.0
    memory: list[MemoryConfig] = field(default_factory=list)
    unit_seconds: list[float] = field(default_factory=list)
    units_per_step: int = 1
    units_left: int = 0
    started: float = field(default_factory=time.perf_counter)

    def unit_done(self, since: float) -> float:
        """Record a window batch that started at ``since``; returns now (the next one's start)."""
        now = time.perf_counter()
        self.unit_seconds.append(now - since)
        self.units_left -= 1
        return now

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def time_left(self) -> float | None:
        """Estimated seconds of sampling left (:func:`~musepose.pipeline.timeleft.seconds_left`)."""
        return seconds_left(self.unit_seconds, self.units_left, self.units_per_step)

    def progress_text(self) -> str:
        """``elapsed 1:02, about 3:10 left``."""
        return progress_text(self.elapsed(), self.time_left())
