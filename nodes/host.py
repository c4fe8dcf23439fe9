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
* latent previews through ComfyUI's own previewer;
* messages on the node: while a node of this pack runs, the warnings of the engine and of the nodes are
  shown on that node in ComfyUI's frontend (:func:`pack_node`, :func:`say`);
* noticing ComfyUI's Free / unload (:func:`on_free`), so the pack's caches follow ComfyUI's memory
  management.

Model management goes through public ComfyUI calls only: ``load_models_gpu``, ``loaded_models``, the
patcher's own ``detach`` and its ``ON_DETACH`` callbacks; never the private loaded-model list.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
import threading
import weakref
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


def temp_directory() -> str:
    """ComfyUI's temp folder (ComfyUI empties it when it starts and when it exits), or, without ComfyUI, a
    ``musepose-express`` folder in the system's temp folder."""
    if HAS_COMFY:
        return _folder_paths.get_temp_directory()
    import tempfile

    return os.path.join(tempfile.gettempdir(), "musepose-express")


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


def extra_devices(text: str) -> tuple[torch.device, ...]:
    """The Model Loader's ``extra_devices``: more devices (``cuda:1, cuda:2``) sharing the Sampler's windows
    with ComfyUI's own device. ComfyUI manages its device only: the replicas on these are the pack's
    (made on a device's first run, freed with the model set: ComfyUI's Free, or another set loaded)."""
    main = torch_device()
    if main.type == "cuda" and main.index is None:
        main = torch.device("cuda", torch.cuda.current_device())
    devices: list[torch.device] = []
    for name in re.split(r"[,\s]+", str(text or "").strip()):
        if not name:
            continue
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"extra_devices: {name!r} is not a device name; write e.g. cuda:1,cuda:2") from None
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if device.index is None:
                raise ValueError(f"extra_devices: give numbered GPUs (cuda:1), not {name!r}")
            if device.index >= count:
                raise ValueError(f"extra_devices: {name} does not exist: this machine has {count} CUDA GPU(s)")
            if device == main or device in devices:
                raise ValueError(f"extra_devices: {name} is listed twice (ComfyUI's own device is {main}, which "
                                 "always takes part)")
        elif device.type != "cpu":  # cpu: a second worker thread on the CPU (what the tests use)
            raise ValueError(f"extra_devices: {name}: only CUDA GPUs can share the Sampler's windows")
        devices.append(device)
    return tuple(devices)


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

def patcher_class():
    """The ModelPatcher class the pack's networks (and its Free watch) are held by: always the plain,
    non-dynamic ``ModelPatcher``.

    Newer ComfyUI (0.19+, dynamic VRAM on NVIDIA) swaps ``comfy.model_patcher.CoreModelPatcher`` for
    ``ModelPatcherDynamic`` at start, which pages every converted layer on demand: whole-model offload,
    the lowvram weight budget and ``force_full_load`` would then stop meaning what the engine's planner
    assumes, a weightless model would get a zero-size dynamic buffer, and torch.compile would graph-break
    on the weight casts. With the plain class the pack keeps its own measured levers (the planner stays
    within a few % of the meter) and ComfyUI still evicts its dynamic models when ours need the room
    (``free_memory`` unloads dynamic models for non-dynamic loads). docs/PERFORMANCE.md says what was
    measured under dynamic VRAM.
    """
    import comfy.model_patcher as model_patcher  # type: ignore[import-not-found]

    return model_patcher.ModelPatcher


def dynamic_vram() -> bool:
    """Whether the host pages models through dynamic VRAM (comfy-aimdo started: ComfyUI 0.19+ on NVIDIA)."""
    if not HAS_COMFY:
        return False
    try:
        import comfy.memory_management as memory_management  # type: ignore[import-not-found]
    except ImportError:  # 0.8.0: no dynamic VRAM
        return False
    return bool(getattr(memory_management, "aimdo_enabled", False))


def memory_host_note() -> str | None:
    """What the Sampler says about the host's memory manager when it matters (dynamic VRAM on), else None."""
    if not dynamic_vram():
        return None
    return ("memory: ComfyUI's dynamic VRAM is on; MusePose loads its networks with a non-dynamic patcher and "
            "keeps its own memory policy (the memory line below), counting what ComfyUI can page out "
            "as free")


def _on_detach_key() -> str:
    import comfy.patcher_extension as patcher_extension  # type: ignore[import-not-found]

    return patcher_extension.CallbacksMP.ON_DETACH


# Detaches (unloads) that this pack asks for itself: offload after use, single-use models, cache
# eviction, and whatever ComfyUI evicts while one of our own load_models_gpu calls makes room. Only
# unloads outside these count as "ComfyUI unloaded our models". Prompts run one at a time in ComfyUI's
# worker thread, and /free is handled by that same thread between prompts.
_own_calls = 0
_own_lock = threading.RLock()


@contextlib.contextmanager
def _our_call() -> Iterator[None]:
    global _own_calls
    with _own_lock:
        _own_calls += 1
    try:
        yield
    finally:
        with _own_lock:
            _own_calls -= 1


def _unloaded_by_comfy(unpatch_all: bool) -> bool:
    """An ``ON_DETACH`` that is a real unload (weights back to the offload device) ComfyUI decided on.

    ``detach(unpatch_all=False)`` is not an unload: ComfyUI calls it when it re-lists a model that is
    already loaded, and when a patcher is garbage-collected.
    """
    return bool(unpatch_all) and _own_calls == 0


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

    * ``free_memory`` is ComfyUI's view: free device memory plus what the other models ComfyUI has
      loaded occupy (``load_models_gpu`` evicts them when ours need the room), less ComfyUI's reserve;
    * ``use`` calls ``load_models_gpu`` with the stage's activation estimate (the engine's planner), so
      ComfyUI frees room by evicting other models first and may later unload ours; with a weight budget
      (the ``lowvram`` level), ComfyUI's partial loading keeps what fits and streams the rest (the loader
      converts the streamable networks to comfy.ops layers whenever ComfyUI hosts); buffers a partial load
      leaves behind are moved by us;
    * ``release`` unloads; whether a network is released after its use is the engine's memory policy;
    * ``on_comfy_unload`` (set by the loader) is called when ComfyUI itself fully unloads one of these
      models (Free, out-of-memory handling, room for another model), not when we do.
    """

    def __init__(self, modules: dict[str, nn.Module], dtype: torch.dtype,
                 streamable: Iterable[str] = ("denoising_unet", "reference_unet", "pose_guider")):
        if not HAS_COMFY:
            raise RuntimeError("ComfyPlacement needs ComfyUI")
        cls = patcher_class()
        self.device = _mm.get_torch_device()
        self.offload_device = _mm.unet_offload_device()
        self.dtype = dtype
        self.on_comfy_unload: Callable[[], None] | None = None
        self._patchers: dict[int, object] = {}
        self._names: dict[int, str] = {}
        self._streamable = set()
        on_detach = _on_detach_key()
        this = weakref.ref(self)  # no cycle patcher -> callback -> placement -> patcher
        for name, module in modules.items():
            holder = HeldModel(module, dtype, name)
            patcher = cls(holder, load_device=self.device, offload_device=self.offload_device)
            patcher.add_callback(on_detach, functools.partial(_placement_detached, this))
            self._patchers[id(module)] = patcher
            self._names[id(module)] = name
            if name in streamable:
                self._streamable.add(id(module))

    def patcher(self, module: nn.Module):
        return self._patchers[id(module)]

    def free_memory(self) -> int:
        """What the engine may plan with: free device memory, plus what ComfyUI would unload for our loads
        (its other models on the device; under dynamic VRAM, what its pager can hand back, counted by the
        patcher's own ``get_free_memory``, 0.19+), less ComfyUI's reserve."""
        ours = set(self._patchers.values())
        first = next(iter(self._patchers.values()), None)
        host_free = getattr(first, "get_free_memory", None)  # 0.19+: counts the dynamic pager's memory
        free = int(host_free(self.device) if host_free is not None else _mm.get_free_memory(self.device))
        # Dynamic models' weights are in the pager's figure already: count the other models only once.
        others = sum(int(m.loaded_size()) for m in _mm.loaded_models() if m not in ours
                     and getattr(m, "load_device", None) == self.device
                     and not (host_free is not None and _is_dynamic(m)))
        return max(0, free + others - int(_mm.extra_reserved_memory()))

    @contextlib.contextmanager
    def use(self, *modules: nn.Module, memory_required: int = 0, weight_budget: int | None = None) -> Iterator[None]:
        modules = tuple(m for m in modules if m is not None)
        patchers = [self._patchers[id(m)] for m in modules]
        # Only comfy.ops-converted models may be partially loaded: any other layer left on the offload
        # device would meet its input on another device.
        partial = weight_budget is not None and all(id(m) in self._streamable for m in modules)
        with _our_call():
            # The Free watch rides along (it weighs nothing), so it stays listed whatever this load evicts.
            _mm.load_models_gpu(patchers + _free_watch_patchers(), memory_required=int(memory_required),
                                minimum_memory_required=int(memory_required), force_full_load=not partial)
        for module in modules:
            _move_stray_buffers(module, self.device)
        yield

    def release(self, *modules: nn.Module) -> None:
        for module in modules:
            if module is not None:
                unload_patcher(self._patchers[id(module)])

    def unload_all(self) -> None:
        """Unload every model of this set (cache eviction)."""
        for patcher in self._patchers.values():
            unload_patcher(patcher)

    def drop_modules(self) -> None:
        """Let go of the networks (after :meth:`unload_all`): the patchers stay, holding nothing."""
        for patcher in self._patchers.values():
            holder = getattr(patcher, "model", None)
            if isinstance(holder, HeldModel):
                holder.inner = None


def _is_dynamic(patcher) -> bool:
    is_dynamic = getattr(patcher, "is_dynamic", None)
    return bool(is_dynamic()) if callable(is_dynamic) else False


def _placement_detached(placement_ref, patcher, unpatch_all: bool) -> None:
    if not unpatch_all or not _unloaded_by_comfy(unpatch_all):  # (unpatch_all first: also runs at exit)
        return
    placement = placement_ref()
    callback = getattr(placement, "on_comfy_unload", None)
    if callable(callback):
        callback()


def _move_stray_buffers(module: nn.Module, device: torch.device) -> None:
    """A partial load moves parameters only; small buffers (positional encodings) must follow the input."""
    for sub in module.modules():
        for name, buf in list(sub._buffers.items()):
            if buf is not None and buf.device != device:
                sub._buffers[name] = buf.to(device)


def unload_patcher(patcher) -> None:
    """Unload one of our models: the patcher's own public ``detach`` (weights back to the offload device).

    ComfyUI 0.8.0 has no public call that unloads one given model. ``detach`` restores the weights and
    puts them on the offload device; ComfyUI's list entry for it then counts the model as wholly
    offloaded: the next ``load_models_gpu`` of it loads it again, and its own ``free_memory`` passes over
    it at no cost.
    """
    with _our_call():
        patcher.detach(unpatch_all=True)
    _mm.soft_empty_cache()


def loaded_model_names() -> list[str]:
    """Labels of our models whose weights ComfyUI currently has loaded (for tests and logs)."""
    if not HAS_COMFY:
        return []
    names = []
    for patcher in _mm.loaded_models():
        holder = getattr(patcher, "model", None)
        if isinstance(holder, HeldModel) and patcher.loaded_size() > 0:
            names.append(holder.label)
    return names


def make_placement(modules: dict[str, nn.Module], dtype: torch.dtype, device: torch.device):
    """ComfyPlacement under ComfyUI; the engine's EnginePlacement (with its own block streaming) otherwise."""
    if HAS_COMFY:
        return ComfyPlacement(modules, dtype)
    from ..musepose.pipeline.placement import EnginePlacement

    return EnginePlacement(device, offload_device())


# ---------------------------------------------------------------------------------------------
# following ComfyUI's Free / unload
#
# Why an ON_DETACH callback on a weightless "watch" model: ComfyUI 0.8.0 has no hook for its Free
# ("Unload models" / POST /free). What /free does is comfy.model_management.unload_all_models(),
# which fully unloads every model on its loaded list, and a full unload ends in the patcher's own
# ``detach``, which runs the ``CallbacksMP.ON_DETACH`` callbacks (a public patcher extension point,
# also run by out-of-memory handling and --disable-smart-memory). Our networks are often not on that
# list when Free comes (offload 'model'/'lowvram' unload them after use; pose nodes load nothing into
# ComfyUI), so a model of no weight stays listed while the pack holds anything, and its detach tells
# us that ComfyUI let go of everything. An unload of one of our networks by ComfyUI counts too
# (ComfyPlacement.on_comfy_unload). ON_CLEANUP is not used: ComfyUI calls it after sampling with its
# own samplers, never on Free.

class MusePoseFreeWatch(nn.Module):
    """A model without weights kept on ComfyUI's loaded list: its unload means ComfyUI freed memory."""

    def get_dtype(self) -> torch.dtype:
        return torch.float32


_free_listeners: list[Callable[[], None]] = []
_free_watch = None  # the watch's patcher, made on first use
_free_watch_lock = threading.Lock()


def on_free(listener: Callable[[], None]) -> None:
    """Call ``listener`` when ComfyUI frees memory (Free / "Unload models", out-of-memory handling)."""
    if listener not in _free_listeners:
        _free_listeners.append(listener)


def _free_watch_patchers() -> list:
    """The watch's patcher, to be loaded with ours (empty outside ComfyUI)."""
    global _free_watch
    if not HAS_COMFY:
        return []
    with _free_watch_lock:
        if _free_watch is None:
            device = _mm.get_torch_device()
            patcher = patcher_class()(MusePoseFreeWatch(), load_device=device, offload_device=_mm.unet_offload_device())
            patcher.add_callback(_on_detach_key(), _free_watch_detached)
            _free_watch = patcher
    return [_free_watch]


def watch_free() -> None:
    """Make sure the Free watch is on ComfyUI's loaded list (a no-op when it is, or outside ComfyUI)."""
    patchers = _free_watch_patchers()
    if not patchers or any(p is patchers[0] for p in _mm.loaded_models()):
        return
    with _our_call():
        _mm.load_models_gpu(patchers)


def _free_watch_detached(patcher, unpatch_all: bool) -> None:
    if unpatch_all and _unloaded_by_comfy(unpatch_all):  # (unpatch_all first: also runs at exit)
        notify_free()


def notify_free() -> None:
    """Run the Free listeners (ComfyUI unloaded the watch; tests call it directly)."""
    for listener in list(_free_listeners):
        try:
            with _our_call():  # what the listeners unload is not a second notice
                listener()
        except Exception as exc:  # one failing listener must not break ComfyUI's Free
            logger.warning("MusePose: could not release memory after ComfyUI's Free: %s", exc)


def streaming_report(module: nn.Module) -> list[str]:
    """Names of submodules holding weights that ComfyUI's partial loader could not stream."""
    castable = tuple(set(comfy_layer_classes().values()))
    return unstreamable_modules(module, castable) if castable else []


# ---------------------------------------------------------------------------------------------
# videos

def temp_video_path(prefix: str = "musepose") -> str:
    """A new, unique ``.mp4`` path in ComfyUI's temp folder (which ComfyUI empties when it starts), or in
    the system's temp folder outside ComfyUI. The empty file is created, so the name stays ours."""
    import tempfile

    folder = _folder_paths.get_temp_directory() if HAS_COMFY else os.path.join(tempfile.gettempdir(), "musepose-express")
    os.makedirs(folder, exist_ok=True)
    handle, path = tempfile.mkstemp(prefix=f"{prefix}-", suffix=".mp4", dir=folder)
    os.close(handle)
    return path


def video_output(video):
    """ComfyUI's core ``VIDEO`` for a finished file (``VideoFromFile``: Save Video copies its packets, Get
    Video Components decodes it), or the engine's :class:`~musepose.video.VideoFile` outside ComfyUI."""
    if not HAS_COMFY:
        return video
    from comfy_api.input_impl import VideoFromFile  # type: ignore[import-not-found]

    return VideoFromFile(str(video.path))


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


# ---------------------------------------------------------------------------------------------
# messages on the node
#
# While a node of this pack runs (:func:`pack_node` wraps each node's function), every WARNING (and
# above) logged by the engine or the nodes is also shown on that node in ComfyUI's frontend: the
# ``progress_text`` websocket event (``PromptServer.send_progress_text``; the frontend shows the latest
# text under the node, so each send carries all of the run's lines). Lines are plain text (no logger
# name or level, no "MusePose ...:" prefix), each shown once per run. The console log is unchanged.

#: Package the pack was imported as ("" when ``nodes`` is imported on its own).
_PACK = __name__[: -len(".nodes.host")] if __name__.endswith(".nodes.host") else ""

#: Loggers whose warnings reach the node: the engine (its modules log under their module name:
#: ``musepose.*`` standalone, ``<pack>.musepose.*`` under ComfyUI; ``musepose.pose`` is fixed) and the nodes.
MESSAGE_LOGGERS = tuple(dict.fromkeys(["musepose"] + ([f"{_PACK}.musepose"] if _PACK else []) + ["musepose_express"]))

_PREFIX = re.compile(r"^MusePose(?: [A-Z][A-Za-z]*)*:\s*")


def plain_text(message: str) -> str:
    """A log message as the user reads it on the node: no "MusePose ...:" prefix, a capital first letter."""
    text = _PREFIX.sub("", str(message).strip())
    return text[:1].upper() + text[1:]


class NodeMessages:
    """What one run of one node said: plain lines, each once, in order; re-sent whole on every new line."""

    def __init__(self, node_id: str | None):
        self.node_id = node_id
        self.lines: list[str] = []
        self.status: str | None = None  # a last line that each set_status replaces
        self._lock = threading.Lock()

    def add(self, message: str, verbatim: bool = False) -> bool:
        line = str(message).strip() if verbatim else plain_text(message)
        with self._lock:
            if not line or line in self.lines:
                return False
            self.lines.append(line)
            text = self._text()
        if self.node_id is not None:
            send_node_text(self.node_id, text)
        return True

    def set_status(self, text: str | None) -> None:
        """Show ``text`` below the lines in place of the previous status (None: no status line)."""
        with self._lock:
            self.status = text
            shown = self._text()
        if self.node_id is not None:
            send_node_text(self.node_id, shown)

    def _text(self) -> str:
        return "\n".join(self.lines + ([self.status] if self.status else []))


_runs: list[NodeMessages] = []
_runs_lock = threading.Lock()


def current_messages() -> NodeMessages | None:
    """The messages of the pack node running now (engine threads included), or None."""
    with _runs_lock:
        return _runs[-1] if _runs else None


class _ToNode(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        run = current_messages()
        if run is None:
            return
        try:
            run.add(record.getMessage())
        except Exception:  # never fail the code that logged
            self.handleError(record)


def _install_handlers() -> None:
    for name in MESSAGE_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(h, _ToNode) for h in target.handlers):
            target.addHandler(_ToNode())


_install_handlers()


def _prompt_server():
    """ComfyUI's running PromptServer, or None (no server: tests, CLI, in-process use)."""
    module = sys.modules.get("server") if HAS_COMFY else None
    return getattr(getattr(module, "PromptServer", None), "instance", None)


def executing_node_id() -> str | None:
    """Id of the node ComfyUI is executing (its executing context), or None outside a ComfyUI run."""
    if not HAS_COMFY:
        return None
    try:
        from comfy_execution.utils import get_executing_context  # type: ignore[import-not-found]

        context = get_executing_context()
        if context is not None:
            return str(context.node_id)
    except Exception:
        pass
    node_id = getattr(_prompt_server(), "last_node_id", None)
    return None if node_id is None else str(node_id)


def send_node_text(node_id: str, text: str) -> None:
    """Show ``text`` on node ``node_id`` in the frontend (replaces what the node showed)."""
    server = _prompt_server()
    if server is None:
        return
    try:
        server.send_progress_text(text, node_id, getattr(server, "client_id", None))
    except Exception as exc:  # a message that cannot be shown must not fail the run
        logger.debug("MusePose: could not show a message on node %s: %s", node_id, exc)


def say(text: str) -> None:
    """An info line the user should see on the running node (also logged to the console)."""
    logger.info("MusePose: %s", text)
    run = current_messages()
    if run is not None:
        run.add(text, verbatim=True)


def show_status(text: str | None) -> None:
    """A status line on the running node (the Sampler's elapsed time and time left), replaced by the next
    one; None removes it. Not logged: it changes after every window."""
    run = current_messages()
    if run is not None:
        run.set_status(text)


@contextlib.contextmanager
def node_run(node_id: str | None = None) -> Iterator[NodeMessages]:
    """One run of a pack node: collects its messages (shown on ``node_id``, default: the executing node)."""
    run = NodeMessages(node_id if node_id is not None else executing_node_id())
    with _runs_lock:
        _runs.append(run)
    try:
        yield run
    finally:
        with _runs_lock:
            _runs.remove(run)


#: Key of the node UI output that carries a run's messages; web/musepose_messages.js shows it in a read-only
#: text box under the node. Progress text alone is not enough: frontend 1.58 clears it when the job ends.
MESSAGES_UI_KEY = "musepose_messages"


def with_messages(result, messages: NodeMessages):
    """A node's return value with the run's message lines added as a UI output. Unchanged when it said
    nothing, or when no ComfyUI prompt runs it (no node to show them on: tests, in-process use)."""
    if not messages.lines or messages.node_id is None:
        return result
    ui = {MESSAGES_UI_KEY: ["\n".join(messages.lines)]}
    if isinstance(result, dict):
        return {**result, "ui": {**result.get("ui", {}), **ui}}
    return {"ui": ui, "result": tuple(result)}


def pack_node(cls: type) -> type:
    """Make ``cls``'s node function run as a pack node: messages on the node, ComfyUI's Free watched."""
    name = cls.FUNCTION
    method = cls.__dict__.get(name)
    if getattr(method, "_musepose_pack_node", False):
        return cls
    if not callable(method):
        raise TypeError(f"{cls.__name__}.{name} must be a plain method to be wrapped")

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with node_run() as messages:
            try:
                watch_free()
            except Exception as exc:  # a nicety: never fail the node over it
                logger.debug("MusePose: could not register with ComfyUI's Free: %s", exc)
            return with_messages(method(self, *args, **kwargs), messages)

    run._musepose_pack_node = True
    setattr(cls, name, run)
    return cls
