"""Frame selection (start, every n-th, at most N) and the frame rate that results from it."""
from __future__ import annotations

from dataclasses import dataclass

from .log import logger


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(frozen=True)
class FrameSelection:
    """Which frames of a clip to use.

    ``start_frame``: first frame index; ``every_nth``: keep one frame out of n (a stride, like
    VideoHelperSuite's select_every_nth); ``max_frames``: cap on the number kept, 0 = no cap.
    """

    start_frame: int = 0
    every_nth: int = 1
    max_frames: int = 0

    def __post_init__(self) -> None:
        if self.start_frame < 0:
            raise ValueError(f"start_frame must be >= 0, got {self.start_frame}")
        if self.every_nth < 1:
            raise ValueError(f"every_nth must be >= 1, got {self.every_nth}")
        if self.max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {self.max_frames}")

    def indices(self, total: int) -> list[int]:
        """Selected indices of a clip with ``total`` frames."""
        idx = list(range(self.start_frame, max(int(total), 0), self.every_nth))
        return idx[: self.max_frames] if self.max_frames else idx

    def frames_needed(self) -> int | None:
        """How many leading frames must be decoded to serve this selection (None = all)."""
        if not self.max_frames:
            return None
        return self.start_frame + (self.max_frames - 1) * self.every_nth + 1

    def fps(self, input_fps: float) -> float:
        """Frame rate of the selected frames, so playback keeps real time."""
        return float(input_fps) / self.every_nth

    def notes(self, total: int, input_fps: float | None = None) -> list[str]:
        """What the user should know about applying this selection to ``total`` frames (may be empty)."""
        idx = self.indices(total)
        notes: list[str] = []
        if not idx:
            return notes
        if self.max_frames and self.max_frames > len(idx):
            notes.append(f"max_frames is {self.max_frames} but only {len(idx)} frames remain after start_frame and "
                         f"every_nth: all {len(idx)} are used.")
        if len(idx) < total:
            how = [f"from frame {self.start_frame}"] if self.start_frame else []
            if self.every_nth > 1:
                how.append(f"every {_ordinal(self.every_nth)} frame")
            if self.max_frames and self.max_frames == len(idx):
                how.append(f"at most {self.max_frames}")
            note = f"Using {len(idx)} of the {total} frames ({', '.join(how)})"
            if self.every_nth > 1 and input_fps:
                note += f"; the frame rate becomes {self.fps(input_fps):.4g} fps (the fps output)"
            notes.append(note + ".")
        return notes

    def report(self, total: int, input_fps: float | None = None) -> list[int]:
        """:meth:`indices`, saying :meth:`notes` once each as WARNINGs on the ``musepose.pose`` logger."""
        for note in self.notes(total, input_fps):
            logger.warning("%s", note)
        return self.indices(total)
