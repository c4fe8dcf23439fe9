"""Finding the two DWPose ONNX files and opening them with onnxruntime.

Users often already have the files from comfyui_controlnet_aux, which downloads them to
``custom_nodes/comfyui_controlnet_aux/ckpts/<hf repo id>/<file>`` (``yzd-v/DWPose`` for both files,
``hr16/yolox-onnx`` for other YOLOX exports; the ckpts root can be moved with the
``AUX_ANNOTATOR_CKPTS_PATH`` environment variable or ``annotator_ckpts_path`` in its config.yaml).
We look there after our own ``models/dwpose`` folders so nobody has to download 300 MB twice.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

DETECTOR_FILENAMES = ("yolox_l.onnx",)
POSE_FILENAMES = ("dw-ll_ucoco_384.onnx",)

#: Sub-folders (relative to a search root) where the HF repo layout puts the files.
_REPO_SUBDIRS = ("", "yzd-v/DWPose", "DWPose", "hr16/yolox-onnx", "hr16/UnJIT-DWPose")

_AUX_DIR_NAMES = {"comfyui_controlnet_aux"}


@dataclass(frozen=True)
class DWPoseModelPaths:
    detector: str
    pose: str


def _pack_root() -> Path:
    """This node pack's folder (musepose/pose/models.py -> pack root)."""
    return Path(__file__).resolve().parents[2]


def _aux_ckpts_from_config(aux_dir: Path) -> list[Path]:
    """``annotator_ckpts_path`` from controlnet_aux's config.yaml, read with a regex (no yaml dep)."""
    cfg = aux_dir / "config.yaml"
    if not cfg.is_file():
        return []
    try:
        text = cfg.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    m = re.search(r"^\s*annotator_ckpts_path\s*:\s*['\"]?([^'\"#\n]+?)['\"]?\s*(#.*)?$", text, re.M)
    if not m:
        return []
    p = Path(m.group(1).strip())
    return [p if p.is_absolute() else aux_dir / p]


def controlnet_aux_ckpt_roots(custom_nodes_dir: str | os.PathLike | None = None) -> list[Path]:
    """ckpts roots of an installed comfyui_controlnet_aux (sibling of this pack under custom_nodes)."""
    roots: list[Path] = []
    env = os.environ.get("AUX_ANNOTATOR_CKPTS_PATH")
    if env:
        roots.append(Path(env))
    base = Path(custom_nodes_dir) if custom_nodes_dir else _pack_root().parent
    if base.is_dir():
        try:
            children = sorted(base.iterdir())
        except OSError:
            children = []
        for child in children:
            if child.is_dir() and child.name.lower().replace("-", "_") in _AUX_DIR_NAMES:
                roots.extend(_aux_ckpts_from_config(child))
                roots.append(child / "ckpts")
    return roots


def candidate_dirs(search_paths: Iterable[str | os.PathLike], include_controlnet_aux: bool = True,
                   custom_nodes_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every folder that may hold the files, in priority order, without duplicates."""
    roots = [Path(p) for p in search_paths]
    if include_controlnet_aux:
        roots += controlnet_aux_ckpt_roots(custom_nodes_dir)
    out: list[Path] = []
    for root in roots:
        for sub in _REPO_SUBDIRS:
            d = root / sub if sub else root
            if d not in out:
                out.append(d)
    return out


def _first_file(dirs: Sequence[Path], names: Sequence[str]) -> str | None:
    for d in dirs:
        for name in names:
            f = d / name
            if f.is_file():
                return str(f)
    return None


def find_dwpose_models(search_paths: Iterable[str | os.PathLike], include_controlnet_aux: bool = True,
                       custom_nodes_dir: str | os.PathLike | None = None) -> DWPoseModelPaths:
    """Locate ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx`` or raise FileNotFoundError listing the places tried."""
    dirs = candidate_dirs(search_paths, include_controlnet_aux, custom_nodes_dir)
    det = _first_file(dirs, DETECTOR_FILENAMES)
    pose = _first_file(dirs, POSE_FILENAMES)
    if det is None or pose is None:
        missing = [n for n, f in ((DETECTOR_FILENAMES[0], det), (POSE_FILENAMES[0], pose)) if f is None]
        tried = "\n  ".join(str(d) for d in dirs) or "(no folders)"
        raise FileNotFoundError(
            f"DWPose model file(s) not found: {', '.join(missing)}. Download them from "
            f"https://huggingface.co/yzd-v/DWPose into models/dwpose/. Searched:\n  {tried}")
    return DWPoseModelPaths(det, pose)


def onnx_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, CPU always as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider",) if p in available]
    return providers + ["CPUExecutionProvider"]


def open_session(path: str, providers: Sequence[str] | None = None):
    """An onnxruntime InferenceSession on the best provider available."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # keep ComfyUI's console free of graph-optimiser chatter
    return ort.InferenceSession(path, sess_options=opts, providers=list(providers or onnx_providers()))
