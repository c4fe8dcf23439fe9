"""Finding the two DWPose ONNX files and opening them with a backend: torch or onnxruntime.

Users often already have the files from comfyui_controlnet_aux, which downloads them to
``custom_nodes/comfyui_controlnet_aux/ckpts/<hf repo id>/<file>`` (``yzd-v/DWPose`` for both files,
``hr16/yolox-onnx`` for other YOLOX exports; the ckpts root can be moved with the
``AUX_ANNOTATOR_CKPTS_PATH`` environment variable or ``annotator_ckpts_path`` in its config.yaml).
We look there after our own ``models/dwpose`` folders so nobody has to download 300 MB twice.
"""
from __future__ import annotations


import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..options import POSE_BACKENDS
from .log import warn_once_per_process


#: What ``auto`` uses on the CPU when both backends are there: the faster one in
#: benchmarks/pose_backends.py on this project's CPU machine (benchmarks/RESULTS.md, "DWPose backends").
CPU_PREFERENCE = "onnxruntime"

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


CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"

#: What to install, said whenever onnxruntime is missing or cannot use the GPU.
INSTALL_HINT = ("install ONE of the two onnxruntime builds into ComfyUI's Python (never both: they share the "
                "import name and conflict): 'pip install onnxruntime-gpu' for NVIDIA GPUs (the build must match "
                "your CUDA version: onnxruntime-gpu 1.19 and later are built for CUDA 12; see "
                "https://onnxruntime.ai/docs/install/), or 'pip install onnxruntime' for the CPU only")
GPU_HINT = ("for GPU pose extraction (much faster) replace it with onnxruntime-gpu matching your "
            "CUDA version: 'pip uninstall -y onnxruntime' then 'pip install onnxruntime-gpu' "
            "(see https://onnxruntime.ai/docs/install/)")


class OnnxRuntimeMissing(ImportError):
    """onnxruntime is not importable: the message names both packages a user can install."""


def import_onnxruntime():
    """``onnxruntime`` or :class:`OnnxRuntimeMissing`.

    The pack lists neither onnxruntime nor onnxruntime-gpu as a requirement: pip cannot express
    "one of", and listing ``onnxruntime`` installs it next to an existing ``onnxruntime-gpu``.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise OnnxRuntimeMissing(
            f"DWPose pose extraction needs onnxruntime, which is not installed: {INSTALL_HINT}. "
            "Then restart ComfyUI. Or set the pose backend to auto or torch, which need no onnxruntime.") from exc
    return ort


def _wants_gpu(device) -> tuple[bool, int | None]:
    """(is ``device`` a CUDA GPU, its index). ``None``/"auto": CUDA when torch sees a GPU."""
    if device is None or (isinstance(device, str) and device == "auto"):
        try:
            import torch
        except ImportError:
            return False, None
        return bool(torch.cuda.is_available()), None
    kind = getattr(device, "type", None)
    index = getattr(device, "index", None)
    if kind is None:
        text = str(device)
        kind, _, idx = text.partition(":")
        index = int(idx) if idx.isdigit() else None
    return kind == "cuda", index


def onnx_providers(device=None):
    """onnxruntime providers for DWPose on ``device`` (torch.device, "cpu", "cuda", "cuda:1", None = auto).

    CUDA (on the device's index) first when ``device`` is a CUDA GPU and this onnxruntime build has
    the CUDA provider, the CPU provider always last as the fallback. A GPU device with a CPU-only
    onnxruntime runs on the CPU and says so once per process, with how to get GPU extraction.
    """
    ort = import_onnxruntime()
    gpu, index = _wants_gpu(device)
    if not gpu:
        return [CPU_PROVIDER]
    if CUDA_PROVIDER not in ort.get_available_providers():
        warn_once_per_process(
            "dwpose-cpu", "DWPose pose extraction runs on the CPU (seconds per frame): the installed onnxruntime "
            "has no CUDA support; %s.", GPU_HINT)
        return [CPU_PROVIDER]
    options = {} if index is None else {"device_id": int(index)}
    return [(CUDA_PROVIDER, options), CPU_PROVIDER]


def provider_names(providers) -> list[str]:
    """Provider names of a provider list whose entries are names or (name, options) pairs."""
    return [p if isinstance(p, str) else p[0] for p in providers]


def cuda_started(session) -> bool:
    """Whether an onnxruntime session really runs on its CUDA provider."""
    return CUDA_PROVIDER in (session.get_providers() if hasattr(session, "get_providers") else [])


def open_session(path: str, providers: Sequence | None = None, device=None, say_cpu_fallback: bool = True):
    """An onnxruntime InferenceSession for ``path`` on ``providers`` (default: :func:`onnx_providers`).

    When CUDA was asked for but the session came up without it (onnxruntime-gpu installed, but its
    CUDA/cuDNN libraries missing or of another version), that is said once per process, unless
    ``say_cpu_fallback`` is False (the caller then moves to another backend and says that instead).
    """
    ort = import_onnxruntime()
    providers = list(providers) if providers else onnx_providers(device)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # keep ComfyUI's console free of graph-optimiser chatter
    session = ort.InferenceSession(path, sess_options=opts, providers=providers)
    if CUDA_PROVIDER in provider_names(providers) and say_cpu_fallback:
        if not cuda_started(session):
            warn_once_per_process(
                "dwpose-cuda-failed", "DWPose pose extraction runs on the CPU: onnxruntime-gpu is installed but "
                "could not start CUDA (usually its CUDA or cuDNN version does not match the installed one); "
                "install the onnxruntime-gpu build for your CUDA version (see https://onnxruntime.ai/docs/install/).")
    return session


def _onnxruntime_or_none():
    try:
        return import_onnxruntime()
    except OnnxRuntimeMissing:
        return None


def torch_pose_device(device=None):
    """The torch device for the torch backend: ``device`` as given, or CUDA when torch sees a GPU."""
    import torch

    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pose_dtype(device):
    """fp16 on a GPU (CUDA/ROCm, MPS, XPU: all run fp16 convolutions natively), fp32 on the CPU."""
    import torch

    return torch.float32 if torch.device(device).type == "cpu" else torch.float16


@dataclass(frozen=True)
class PoseRuntime:
    """Where and how DWPose runs: ``backend`` ("torch" or "onnxruntime") on ``device``.

    ``providers``: the onnxruntime providers, hashable (a name, or (name, sorted option pairs)), so that a
    runtime can key the session cache; ``dtype``: the torch backend's compute precision.
    """

    backend: str
    device: str
    providers: tuple = ()
    dtype: str = "float32"
    #: ``auto`` chose onnxruntime for a CUDA GPU: torch takes over if its CUDA provider does not start.
    torch_if_cuda_fails: bool = False

    def describe(self) -> str:
        """What the node says, e.g. "torch on cpu", "torch on cuda:0, float16", "onnxruntime on cuda:0"."""
        text = f"{self.backend} on {self.device}"
        return text if self.backend == "onnxruntime" or self.dtype == "float32" else f"{text}, {self.dtype}"

    def provider_list(self) -> list:
        """The providers as onnxruntime takes them: names and (name, options dict) pairs."""
        return [p if isinstance(p, str) else (p[0], dict(p[1])) for p in self.providers]

    def open(self, path: str):
        """A session for ``path``: an onnxruntime InferenceSession, or a TorchOnnxSession."""
        if self.backend == "onnxruntime":
            return open_session(path, self.provider_list())
        import torch

        from .onnx_torch import TorchOnnxSession

        return TorchOnnxSession(path, self.device, getattr(torch, self.dtype))

    def open_pair(self, detector: str, pose: str) -> tuple["PoseRuntime", Any, Any]:
        """(the runtime that really runs, detector session, pose session).

        The runtime differs from ``self`` in one case: ``auto`` picked onnxruntime-gpu, but it could not
        start CUDA (a CUDA/cuDNN version mismatch, the most reported DWPose problem); then torch runs on
        that GPU instead of onnxruntime on the CPU, and that is said once per process.
        """
        if not self.torch_if_cuda_fails:
            return self, self.open(detector), self.open(pose)
        det = open_session(detector, self.provider_list(), say_cpu_fallback=False)
        if cuda_started(det):
            return self, det, self.open(pose)
        warn_once_per_process(
            "dwpose-cuda-to-torch", "DWPose runs through torch on %s: the installed onnxruntime-gpu could not "
            "start CUDA (usually its CUDA or cuDNN version does not match the installed one).", self.device)
        fallback = _torch_runtime(self.device)
        return fallback, fallback.open(detector), fallback.open(pose)


def _ort_runtime(providers: Sequence) -> PoseRuntime:
    first = providers[0]
    if not isinstance(first, str) and first[0] == CUDA_PROVIDER:
        device = f"cuda:{first[1].get('device_id', 0)}"
    else:
        device = "cuda:0" if first == CUDA_PROVIDER else "cpu"
    hashable = tuple(p if isinstance(p, str) else (p[0], tuple(sorted(dict(p[1]).items()))) for p in providers)
    return PoseRuntime("onnxruntime", device, hashable)


def _torch_runtime(device) -> PoseRuntime:
    dev = torch_pose_device(device)
    return PoseRuntime("torch", str(dev), (), str(pose_dtype(dev)).replace("torch.", ""))


def resolve_runtime(backend: str = "auto", device=None, providers: Sequence | None = None) -> PoseRuntime:
    """The backend and device DWPose runs on.

    ``auto``: onnxruntime when it can use ``device``'s CUDA GPU; else torch on any GPU (CUDA, ROCm, MPS,
    XPU); on the CPU, :data:`CPU_PREFERENCE` when onnxruntime is installed, else torch. ``providers``
    (onnxruntime provider list) pins onnxruntime with exactly those providers.
    """
    if backend not in POSE_BACKENDS:
        raise ValueError(f"unknown pose backend {backend!r}; use one of {', '.join(POSE_BACKENDS)}")
    if providers:
        return _ort_runtime(list(providers))
    if backend == "onnxruntime":
        return _ort_runtime(onnx_providers(device))
    if backend == "torch":
        return _torch_runtime(device)
    dev = torch_pose_device(device)
    ort = _onnxruntime_or_none()
    if dev.type == "cuda" and ort is not None and CUDA_PROVIDER in ort.get_available_providers():
        return replace(_ort_runtime(onnx_providers(dev)), torch_if_cuda_fails=True)
    if dev.type != "cpu" or ort is None or CPU_PREFERENCE == "torch":
        return _torch_runtime(dev)
    return _ort_runtime([CPU_PROVIDER])


class DWPoseModelError(ValueError):
    """A model file whose inputs or outputs are not those of the DWPose file it stands for."""


def _signature_problem(session, role: str) -> str | None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] not in (3, "3"):
        return "one input of shape [N, 3, H, W]"
    ranks = [len(o.shape) for o in outputs]
    if role == "detector" and (not outputs or ranks[0] != 3 or outputs[0].shape[-1] not in (85, "85")):
        return "an output of shape [1, anchors, 85]"
    names = {o.name for o in outputs}
    if role == "pose" and not ({"simcc_x", "simcc_y"} <= names or ranks == [3, 3]):
        return "two outputs simcc_x [N, K, 2W] and simcc_y [N, K, 2H]"
    return None


def check_signature(session, path: str, role: str) -> None:
    """:class:`DWPoseModelError` naming ``path`` unless its graph has the inputs/outputs of the ``role``
    file (``detector``: yolox_l.onnx, ``pose``: dw-ll_ucoco_384.onnx): a wrong file fails here, not deep
    inside the pre- or post-processing."""
    problem = _signature_problem(session, role)
    if problem:
        have = ", ".join(f"{i.name} {list(i.shape)}" for i in session.get_inputs())
        out = ", ".join(f"{o.name} {list(o.shape)}" for o in session.get_outputs())
        expected = DETECTOR_FILENAMES[0] if role == "detector" else POSE_FILENAMES[0]
        raise DWPoseModelError(f"{path}: not a DWPose {role} model like {expected}: it should have {problem}, "
                               f"but its inputs are [{have}] and its outputs [{out}]")
