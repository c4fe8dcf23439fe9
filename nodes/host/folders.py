"""Model folders and temp files: ComfyUI's ``folder_paths`` (with ``models/musepose`` and ``models/dwpose``
registered, so extra_model_paths.yaml works), or, outside ComfyUI, ``models/``-like roots given with
:func:`add_standalone_model_root` and the system's temp folder."""
from __future__ import annotations

import os
import tempfile
from typing import Iterable

from . import comfyui

#: Our own model folder types, registered under ``models/<name>`` so extra_model_paths.yaml works.
PACK_MODEL_FOLDERS = ("musepose", "dwpose")

#: Outside ComfyUI: ``models/``-like roots whose ``<kind>/`` subfolders are searched (tests remove theirs).
STANDALONE_ROOTS: list[str] = []

#: Suffixes of the weight files a combo widget offers.
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt", ".ckpt", ".sft")


def add_standalone_model_root(path: str) -> None:
    """Outside ComfyUI: a ``models/``-like root whose ``<kind>/`` subfolders are searched."""
    if path not in STANDALONE_ROOTS:
        STANDALONE_ROOTS.append(path)


def register_model_folders() -> None:
    """Register ``models/musepose`` and ``models/dwpose`` with ComfyUI's folder_paths (idempotent)."""
    if not comfyui.HAS_COMFY:
        return
    paths = comfyui.folder_paths
    for name in PACK_MODEL_FOLDERS:
        default = os.path.join(paths.models_dir, name)
        if name not in paths.folder_names_and_paths:
            paths.folder_names_and_paths[name] = ([default], set(paths.supported_pt_extensions) | {".onnx", ".json"})
        elif default not in paths.folder_names_and_paths[name][0]:
            paths.add_model_folder_path(name, default)


def model_search_paths(kind: str) -> list[str]:
    """Folders where models of ``kind`` (musepose, dwpose, vae, clip_vision, ...) may live."""
    if comfyui.HAS_COMFY:
        register_model_folders()
        try:
            return list(comfyui.folder_paths.get_folder_paths(kind))
        except Exception:
            return []
    return [os.path.join(root, kind) for root in STANDALONE_ROOTS]


def find_model_file(kind: str, relative_names: Iterable[str]) -> str | None:
    """First existing file among ``relative_names`` in the search paths of ``kind``."""
    names = list(relative_names)
    for folder in model_search_paths(kind):
        for name in names:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                return candidate
    return None


def list_model_files(kind: str, suffixes: tuple[str, ...] = WEIGHT_SUFFIXES) -> list[str]:
    """Relative names of the weight files of ``kind`` (what a combo widget offers), sorted."""
    if comfyui.HAS_COMFY:
        register_model_folders()
        try:
            names = comfyui.folder_paths.get_filename_list(kind)
        except Exception:
            names = []
        return sorted(n for n in names if n.lower().endswith(suffixes))
    found = set()
    for folder in model_search_paths(kind):
        for dirpath, _, files in os.walk(folder, followlinks=True):
            for f in files:
                if f.lower().endswith(suffixes):
                    found.add(os.path.relpath(os.path.join(dirpath, f), folder).replace(os.sep, "/"))
    return sorted(found)


def resolve_model_file(kind: str, relative_name: str) -> str | None:
    """Full path of a file picked in a combo widget (``None`` if it is gone)."""
    if comfyui.HAS_COMFY:
        register_model_folders()
        return comfyui.folder_paths.get_full_path(kind, relative_name)
    return find_model_file(kind, [relative_name])


def default_model_dir(kind: str) -> str:
    """Where a downloaded file of ``kind`` goes: the first search path (ComfyUI's ``models/<kind>``)."""
    paths = model_search_paths(kind)
    if not paths:
        raise FileNotFoundError(f"no folder is configured for {kind!r} models")
    return paths[0]


def temp_directory() -> str:
    """ComfyUI's temp folder (ComfyUI empties it when it starts and when it exits), or, without ComfyUI, a
    ``musepose-express`` folder in the system's temp folder."""
    if comfyui.HAS_COMFY:
        return comfyui.folder_paths.get_temp_directory()
    return os.path.join(tempfile.gettempdir(), "musepose-express")


def temp_video_path(prefix: str = "musepose") -> str:
    """A new, unique ``.mp4`` path in :func:`temp_directory`. The empty file is created, so the name stays ours."""
    folder = temp_directory()
    os.makedirs(folder, exist_ok=True)
    handle, path = tempfile.mkstemp(prefix=f"{prefix}-", suffix=".mp4", dir=folder)
    os.close(handle)
    return path
