"""Following ComfyUI's Free / unload, so the pack's caches follow ComfyUI's memory management.

Why an ON_DETACH callback on a weightless "watch" model: ComfyUI 0.8.0 has no hook for its Free
("Unload models" / POST /free). What /free does is comfy.model_management.unload_all_models(),
which fully unloads every model on its loaded list, and a full unload ends in the patcher's own
``detach``, which runs the ``CallbacksMP.ON_DETACH`` callbacks (a public patcher extension point,
also run by out-of-memory handling and --disable-smart-memory). Our networks are often not on that
list when Free comes (offload 'model'/'lowvram' unload them after use; pose nodes load nothing into
ComfyUI), so a model of no weight stays listed while the pack holds anything, and its detach tells
us that ComfyUI let go of everything. An unload of one of our networks by ComfyUI counts too
(``ComfyPlacement.on_comfy_unload``). ON_CLEANUP is not used: ComfyUI calls it after sampling with its
own samplers, never on Free.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import torch
from torch import nn

from . import comfyui, patchers

logger = logging.getLogger("musepose_express")


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


def free_watch_patchers() -> list:
    """The watch's patcher, to be loaded with ours (empty outside ComfyUI)."""
    global _free_watch
    if not comfyui.HAS_COMFY:
        return []
    with _free_watch_lock:
        if _free_watch is None:
            mm = comfyui.mm
            patcher = patchers.patcher_class()(MusePoseFreeWatch(), load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
            patcher.add_callback(comfyui.on_detach_key(), _free_watch_detached)
            _free_watch = patcher
    return [_free_watch]


def watch_free() -> None:
    """Make sure the Free watch is on ComfyUI's loaded list (a no-op when it is, or outside ComfyUI)."""
    watch = free_watch_patchers()
    if not watch or any(p is watch[0] for p in comfyui.mm.loaded_models()):
        return
    with patchers.our_call():
        comfyui.mm.load_models_gpu(watch)


def _free_watch_detached(patcher, unpatch_all: bool) -> None:
    if unpatch_all and patchers.unloaded_by_comfy(unpatch_all):  # (unpatch_all first: also runs at exit)
        notify_free()


def notify_free() -> None:
    """Run the Free listeners (ComfyUI unloaded the watch; tests call it directly)."""
    for listener in list(_free_listeners):
        try:
            with patchers.our_call():  # what the listeners unload is not a second notice
                listener()
        except Exception as exc:  # one failing listener must not break ComfyUI's Free
            logger.warning("MusePose: could not release memory after ComfyUI's Free: %s", exc)
