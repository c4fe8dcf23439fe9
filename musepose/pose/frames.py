"""Frame selection (start, every n-th, at most N) and the frame rate that results from it."""
from __future__ import annotations

from dataclasses import dataclass


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
