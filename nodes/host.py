"""The one module of this pack that imports ComfyUI.

Every other module (nodes included) reaches ComfyUI only through the functions here. When ComfyUI
is absent (tests, CLI) each function falls back to the engine's own behaviour, so the nodes run
anywhere. Keep ComfyUI imports inside this file.

What lives here, and why it has to:

* interrupts and the progress bar (ComfyUI's global flag / ``ProgressBar`` hook);
* model folders (``folder_paths``: ``models/musepose`` registered so extra_model_paths.yaml works);
* devices and dtypes (``comfy.model_management`` decides where and in which precision models run);
* :class:`ComfyPlacement`, the engine's ``ModelPlacement`` backed by ``ModelPatcher`` +
  ``load_models_gpu``, so ComfyUI evicts other models before ours load and can unload ours later;
* the ``comfy.ops`` class swap that lets ComfyUI's partial loading stream our weights (lowvram);
* latent previews through ComfyUI's own previewer.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from .layer_swap import swap_layer_classes, unstreamable_modules

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


def remove_standalone_model_root(path: str) -> None:
    """Undo :func:`add_standalone_model_root` (tests use temporary roots)."""
    if path in _STANDALONE_ROOTS:
        _STANDALONE_ROOTS.remove(path)


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
    names = list(relative_names)
    for folder in model_search_paths(kind):
        for name in names:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                return candidate
    return None


def list_model_files(kind: str, suffixes: tuple[str, ...] = (".safetensors", ".pth", ".bin", ".pt", ".ckpt", ".sft")) -> list[str]:
    """Relative names of the weight files of ``kind`` (what a combo widget offers), sorted."""
    if HAS_COMFY:
        register_model_folders()
        try:
            names = _folder_paths.get_filename_list(kind)
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
    if HAS_COMFY:
        register_model_folders()
        return _folder_paths.get_full_path(kind, relative_name)
    return find_model_file(kind, [relative_name])


def default_model_dir(kind: str) -> str:
    """Where a downloaded file of ``kind`` goes: the first search path (ComfyUI's ``models/<kind>``)."""
    paths = model_search_paths(kind)
    if not paths:
        raise FileNotFoundError(f"no folder is configured for {kind!r} models")
    return paths[0]


# ---------------------------------------------------------------------------------------------
# devices, dtypes, memory

def torch_device() -> torch.device:
    """The compute device: ComfyUI's choice, or CUDA when available outside ComfyUI."""
    if HAS_COMFY:
        return _mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where idle model weights live (CPU, or the GPU under ComfyUI's --highvram)."""
    if HAS_COMFY:
        return _mm.unet_offload_device()
    return torch.device("cpu")


def auto_dtype(device: torch.device, parameters: int = 0) -> torch.dtype:
    """The precision ComfyUI recommends for a UNet of ``parameters`` weights on ``device``.

    Outside ComfyUI: fp16 on CUDA (bf16 where fp16 is not supported), fp32 elsewhere.
    """
    if HAS_COMFY:
        return _mm.unet_dtype(device=device, model_params=parameters,
                              supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    if device.type == "cuda":
        return torch.float16
    return torch.float32


def free_memory_bytes(device: torch.device) -> int:
    """Memory the next allocation on ``device`` can use (ComfyUI's view when present)."""
    if HAS_COMFY:
        return int(_mm.get_free_memory(device))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover
        return 8 * 2**30


def empty_cache() -> None:
    if HAS_COMFY:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# comfy.ops conversion (lowvram weight streaming)

def comfy_layer_classes() -> dict[type, type]:
    """torch layer class -> the ``comfy.ops.disable_weight_init`` twin that can stream its weights.

    ``disable_weight_init`` runs the plain torch forward while the layer is resident and casts its
    weights to the input's device on every call once ComfyUI's partial loader sets
    ``comfy_cast_weights`` (a layer left on the offload device). Empty without ComfyUI.
    """
    if not HAS_COMFY:
        return {}
    import comfy.ops as ops  # type: ignore[import-not-found]

    base = ops.disable_weight_init
    return {nn.Linear: base.Linear, nn.Conv1d: base.Conv1d, nn.Conv2d: base.Conv2d, nn.GroupNorm: base.GroupNorm,
            nn.LayerNorm: base.LayerNorm, nn.Embedding: base.Embedding}


def convert_for_streaming(module: nn.Module) -> int:
    """Swap the layer classes of ``module`` (in place, parameters kept) for comfy.ops ones; returns the count."""
    mapping = comfy_layer_classes()
    if not mapping:
        return 0
    return swap_layer_classes(module, mapping)


# ---------------------------------------------------------------------------------------------
# placement on ComfyUI's model management

class HeldModel(nn.Module):
    """What a ``ModelPatcher`` wraps: a thin holder around one of our networks.

    ModelPatcher writes bookkeeping attributes (``device``, ...) onto the module it holds; diffusers and
    transformers models expose ``device`` as a read-only property, so they cannot be held directly.
    """

    def __init__(self, inner: nn.Module, dtype: torch.dtype, name: str):
        super().__init__()
        self.inner = inner
        self._dtype = dtype
        self.label = name

    def get_dtype(self) -> torch.dtype:
        return self._dtype


class ComfyPlacement:
    """The engine's ``ModelPlacement`` on ComfyUI's model management.

    * ``use`` calls ``load_models_gpu`` with the stage's activation estimate (see ``memory.py``), so
      ComfyUI frees room by evicting other models first and may later unload ours;
    * ``offload='none'`` leaves models loaded (ComfyUI can still evict them), ``'model'`` unloads each after
      its use, ``'lowvram'`` lets ComfyUI load only what fits and stream the rest (layers converted to
      comfy.ops by the loader); buffers a partial load leaves behind are moved by us;
    * models marked single-use (reference UNet, CLIP) are unloaded as soon as the engine releases them.
    """

    def __init__(self, modules: dict[str, nn.Module], dtype: torch.dtype, offload: str = "none",
                 single_use: Iterable[str] = ("reference_unet", "image_encoder"),
                 streamable: Iterable[str] = ("denoising_unet", "reference_unet", "pose_guider")):
        if not HAS_COMFY:
            raise RuntimeError("ComfyPlacement needs ComfyUI")
        import comfy.model_patcher as model_patcher  # type: ignore[import-not-found]

        self.device = _mm.get_torch_device()
        self.offload = offload
        self.dtype = dtype
        self._patchers: dict[int, object] = {}
        self._names: dict[int, str] = {}
        self._single_use = set()
        self._streamable = set()
        self.estimates: dict[int, tuple[int, int]] = {}
        for name, module in modules.items():
            holder = HeldModel(module, dtype, name)
            patcher = model_patcher.ModelPatcher(holder, load_device=self.device, offload_device=_mm.unet_offload_device())
            self._patchers[id(module)] = patcher
            self._names[id(module)] = name
            if name in single_use:
                self._single_use.add(id(module))
            if name in streamable:
                self._streamable.add(id(module))

    def patcher(self, module: nn.Module):
        return self._patchers[id(module)]

    def set_estimate(self, module: nn.Module | None, required: int, minimum: int | None = None) -> None:
        """Activation memory of ``module``'s next use: the normal need and the least acceptable."""
        if module is not None:
            self.estimates[id(module)] = (int(required), int(minimum if minimum is not None else required))

    @contextlib.contextmanager
    def use(self, *modules: nn.Module, memory_required: int = 0) -> Iterator[None]:
        modules = tuple(m for m in modules if m is not None)
        patchers = [self._patchers[id(m)] for m in modules]
        required = max(int(memory_required), sum(self.estimates.get(id(m), (0, 0))[0] for m in modules))
        minimum = max(int(memory_required), sum(self.estimates.get(id(m), (0, 0))[1] for m in modules))
        # Only comfy.ops-converted models may be partially loaded: any other layer left on the offload
        # device would meet its input on another device.
        partial = self.offload == "lowvram" and all(id(m) in self._streamable for m in modules)
        _mm.load_models_gpu(patchers, memory_required=required, minimum_memory_required=minimum,
                            force_full_load=not partial)
        for module in modules:
            _move_stray_buffers(module, self.device)
        try:
            yield
        finally:
            if self.offload != "none":
                self.release(*modules)

    def release(self, *modules: nn.Module) -> None:
        for module in modules:
            if module is None:
                continue
            if self.offload == "none" and id(module) not in self._single_use:
                continue
            unload_patcher(self._patchers[id(module)])

    def unload_all(self) -> None:
        """Take every model of this set off ComfyUI's loaded list (cache eviction)."""
        for patcher in self._patchers.values():
            unload_patcher(patcher)


def _move_stray_buffers(module: nn.Module, device: torch.device) -> None:
    """A partial load moves parameters only; small buffers (positional encodings) must follow the input."""
    for sub in module.modules():
        for name, buf in list(sub._buffers.items()):
            if buf is not None and buf.device != device:
                sub._buffers[name] = buf.to(device)


def unload_patcher(patcher) -> bool:
    """Unload one model from ComfyUI's loaded list (weights back to the offload device)."""
    for loaded in list(_mm.current_loaded_models):
        if loaded.model is patcher:
            loaded.model_unload()
            _mm.current_loaded_models.remove(loaded)
            _mm.soft_empty_cache()
            return True
    return False


def loaded_model_names() -> list[str]:
    """Labels of our models ComfyUI currently has loaded (for tests and logs)."""
    if not HAS_COMFY:
        return []
    names = []
    for loaded in _mm.current_loaded_models:
        model = loaded.model
        holder = getattr(model, "model", None) if model is not None else None
        if isinstance(holder, HeldModel):
            names.append(holder.label)
    return names


def make_placement(modules: dict[str, nn.Module], dtype: torch.dtype, offload: str, device: torch.device):
    """ComfyPlacement under ComfyUI; the engine's EnginePlacement otherwise (lowvram acts as ``model``)."""
    if HAS_COMFY:
        return ComfyPlacement(modules, dtype, offload)
    from ..musepose.pipeline.placement import EnginePlacement

    if offload == "lowvram":
        logger.warning("MusePose: lowvram streaming needs ComfyUI's model management; using offload 'model'")
    return EnginePlacement(device, offload="none" if offload == "none" else "model")


def streaming_report(module: nn.Module) -> list[str]:
    """Names of submodules holding weights that ComfyUI's partial loader could not stream."""
    castable = tuple(set(comfy_layer_classes().values()))
    return unstreamable_modules(module, castable) if castable else []


# ---------------------------------------------------------------------------------------------
# latent previews

def make_previewer() -> Callable[[torch.Tensor], object] | None:
    """``latents (1, 4, h, w) -> preview`` for ProgressBar updates, using ComfyUI's SD1.5 previewer."""
    if not HAS_COMFY:
        return None
    try:
        import comfy.latent_formats as latent_formats  # type: ignore[import-not-found]
        import latent_preview  # type: ignore[import-not-found]

        previewer = latent_preview.get_previewer(torch.device("cpu"), latent_formats.SD15())
    except Exception as exc:  # previews are a nicety; never fail a run over them
        logger.debug("MusePose: no latent previewer (%s)", exc)
        return None
    if previewer is None:
        return None
    return lambda latents: previewer.decode_latent_to_preview_image("JPEG", latents)
