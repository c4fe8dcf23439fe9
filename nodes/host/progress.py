"""Progress bar and cancel points: ComfyUI's global interrupt flag and ``ProgressBar``, or, outside ComfyUI,
a flag of our own (:func:`request_interrupt`) and no bar."""
from __future__ import annotations

from . import comfyui


class Interrupted(Exception):
    """Raised by :func:`check_interrupt` outside ComfyUI when :func:`request_interrupt` was called."""


_standalone_interrupt = False


def request_interrupt(value: bool = True) -> None:
    """Ask running work to stop at its next check (standalone mode; ComfyUI has its own flag)."""
    global _standalone_interrupt
    if comfyui.HAS_COMFY:
        comfyui.mm.interrupt_current_processing(value)
    else:
        _standalone_interrupt = value


def check_interrupt() -> None:
    """Raise if the user cancelled: ComfyUI's InterruptProcessingException, or :class:`Interrupted`."""
    global _standalone_interrupt
    if comfyui.HAS_COMFY:
        comfyui.mm.throw_exception_if_processing_interrupted()
    elif _standalone_interrupt:
        _standalone_interrupt = False
        raise Interrupted("processing interrupted")


class Progress:
    """Progress for long work: ComfyUI's ProgressBar (whose updates are also cancel points) or a no-op."""

    def __init__(self, total: int):
        self.total = max(int(total), 1)
        self.value = 0
        self._bar = comfyui.utils.ProgressBar(self.total) if comfyui.HAS_COMFY else None

    def update(self, n: int = 1, preview=None) -> None:
        self.value = min(self.value + n, self.total)
        if self._bar is not None:
            self._bar.update_absolute(self.value, self.total, preview)
        check_interrupt()
