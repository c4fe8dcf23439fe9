"""The one module of the pack that imports ComfyUI.

Every other module reaches ComfyUI through the ``host`` package, whose modules read ``HAS_COMFY`` and the
handles below at call time (so a test can stand ComfyUI's pieces in by setting them here). When ComfyUI is
absent (tests, the CLI, in-process use) ``HAS_COMFY`` is False, the handles are None and each ``host``
function falls back to the engine's own device handling.

Modules ComfyUI loads on start (``comfy.model_management``, ``comfy.utils``, ``folder_paths``) are imported
here once; the rest only when a function needs them (they may be absent in older ComfyUI versions, or
must not be imported before ComfyUI has parsed its arguments).
"""
from __future__ import annotations

import sys

try:  # ComfyUI present: the real modules
    import comfy.model_management as mm  # type: ignore[import-not-found]
    import comfy.utils as utils  # type: ignore[import-not-found]
    import folder_paths  # type: ignore[import-not-found]

    HAS_COMFY = True
except Exception:  # pragma: no cover - depends on the host
    mm = utils = folder_paths = None
    HAS_COMFY = False


def model_patcher_module():
    """``comfy.model_patcher`` (ModelPatcher and, 0.19+, the dynamic CoreModelPatcher swap)."""
    import comfy.model_patcher as model_patcher  # type: ignore[import-not-found]

    return model_patcher


def on_detach_key() -> str:
    """The ``CallbacksMP.ON_DETACH`` key of ComfyUI's patcher extensions (run by every detach)."""
    import comfy.patcher_extension as patcher_extension  # type: ignore[import-not-found]

    return patcher_extension.CallbacksMP.ON_DETACH


def ops_module():
    """``comfy.ops``: the layer classes ComfyUI's partial loader can stream."""
    import comfy.ops as ops  # type: ignore[import-not-found]

    return ops


def memory_management_module():
    """``comfy.memory_management`` (0.19+: dynamic VRAM), or None where ComfyUI has none (0.8.0)."""
    try:
        import comfy.memory_management as memory_management  # type: ignore[import-not-found]
    except ImportError:
        return None
    return memory_management


def sd15_previewer(device):
    """ComfyUI's latent previewer for SD1.5 latents (None when previews are off)."""
    import comfy.latent_formats as latent_formats  # type: ignore[import-not-found]
    import latent_preview  # type: ignore[import-not-found]

    return latent_preview.get_previewer(device, latent_formats.SD15())


def video_from_file(path: str):
    """ComfyUI's core ``VIDEO`` for a finished file (``comfy_api``'s ``VideoFromFile``)."""
    from comfy_api.input_impl import VideoFromFile  # type: ignore[import-not-found]

    return VideoFromFile(path)


def executing_context_node_id() -> str | None:
    """The node id of ComfyUI's executing context (``comfy_execution.utils``), or None."""
    from comfy_execution.utils import get_executing_context  # type: ignore[import-not-found]

    context = get_executing_context()
    return None if context is None else str(context.node_id)


def prompt_server():
    """ComfyUI's running PromptServer, or None (no server: tests, CLI, in-process use)."""
    module = sys.modules.get("server") if HAS_COMFY else None
    return getattr(getattr(module, "PromptServer", None), "instance", None)
