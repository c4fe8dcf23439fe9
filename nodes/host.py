"""The one module of this pack that imports ComfyUI.

Every other module (nodes included) reaches ComfyUI only through the functions here. When ComfyUI
is absent (tests, CLI) each function falls back to the engine's own behaviour, so the nodes run
anywhere. Keep ComfyUI imports lazy and inside this file.
"""
from __future__ import annotations

import logging
import os
from typing import Iterable

logger = logging.getLogger("musepose_express")

try:  # ComfyUI present: the real modules
    import comfy.model_management as _mm  # type: ignore[import-not-found]
    import comfy.utils as _comfy_utils  # type: ignore[import-not-found]
    import folder_paths as _folder_paths  # type: ignore[import-not-found]

    HAS_COMFY = True
except Exception:  # pragma: no cover - depends on the host
    _mm = _comfy_utils = _folder_paths = None
    HAS_COMFY = False


class Interrupted(Exception):
    """Raised by :func:`check_interrupt` outside ComfyUI when :func:`request_interrupt` was called."""


_standalone_interrupt = False


def request_interrupt(value: bool = True) -> None:
    """Ask running work to stop at its next check (standalone mode; ComfyUI has its own flag)."""
    global _standalone_interrupt
    if HAS_COMFY:
        _mm.interrupt_current_processing(value)
    else:
        _standalone_interrupt = value


def check_interrupt() -> None:
    """Raise if the user cancelled: ComfyUI's InterruptProcessingException, or :class:`Interrupted`."""
    global _standalone_interrupt
    if HAS_COMFY:
        _mm.throw_exception_if_processing_interrupted()
    elif _standalone_interrupt:
        _standalone_interrupt = False
        raise Interrupted("processing interrupted")


class Progress:
    """Progress for long work: ComfyUI's ProgressBar (whose updates are also cancel points) or a no-op."""

    def __init__(self, total: int):
        self.total = max(int(total), 1)
        self.value = 0
        self._bar = _comfy_utils.ProgressBar(self.total) if HAS_COMFY else None

    def update(self, n: int = 1, preview=None) -> None:
        self.value = min(self.value + n, self.total)
        if self._bar is not None:
            self._bar.update_absolute(self.value, self.total, preview)
        else:
            check_interrupt()


# ---------------------------------------------------------------------------------------------
# model folders

#: Our own model folder types, registered under ``models/<name>`` so extra_model_paths.yaml works.
PACK_MODEL_FOLDERS = ("musepose", "dwpose")

_STANDALONE_ROOTS: list[str] = []


def add_standalone_model_root(path: str) -> None:
    """Outside ComfyUI: a ``models/``-like root whose ``<kind>/`` subfolders are searched."""
    if path not in _STANDALONE_ROOTS:
        _STANDALONE_ROOTS.append(path)


def register_model_folders() -> None:
    """Register ``models/musepose`` and ``models/dwpose`` with ComfyUI's folder_paths (idempotent)."""
    if not HAS_COMFY:
        return
    for name in PACK_MODEL_FOLDERS:
        default = os.path.join(_folder_paths.models_dir, name)
        if name not in _folder_paths.folder_names_and_paths:
            _folder_paths.folder_names_and_paths[name] = ([default], set(_folder_paths.supported_pt_extensions) | {".onnx", ".json"})
        elif default not in _folder_paths.folder_names_and_paths[name][0]:
            _folder_paths.add_model_folder_path(name, default)


def model_search_paths(kind: str) -> list[str]:
    """Folders where models of ``kind`` (musepose, dwpose, vae, clip_vision, ...) may live."""
    if HAS_COMFY:
        register_model_folders()
        try:
            return list(_folder_paths.get_folder_paths(kind))
        except Exception:
            return []
    return [os.path.join(root, kind) for root in _STANDALONE_ROOTS]


def find_model_file(kind: str, relative_names: Iterable[str]) -> str | None:
    """First existing file among ``relative_names`` in the search paths of ``kind``."""
    for folder in model_search_paths(kind):
        for name in relative_names:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                return candidate
    return None
