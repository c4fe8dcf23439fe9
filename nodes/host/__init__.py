"""The pack's boundary with ComfyUI, by concern. Only :mod:`.comfyui` imports ComfyUI; every other module
here reads it through that one (and falls back to the engine's own behaviour when ComfyUI is absent), so
the nodes run anywhere. The node modules use ``from . import host`` and ``host.<name>``: the names below.

* :mod:`.progress`: interrupts and the progress bar;
* :mod:`.folders`: model folders (``models/musepose``, ``models/dwpose``), temp files;
* :mod:`.videos`: the core VIDEO type: pose frames read from it as uint8, finished mp4s handed back as one;
* :mod:`.devices`: devices and precision;
* :mod:`.streaming`: the ``comfy.ops`` layer swap for lowvram weight streaming;
* :mod:`.patchers`, :mod:`.models`: ModelPatcher glue and :class:`ComfyPlacement`;
* :mod:`.free_watch`: noticing ComfyUI's Free / unload;
* :mod:`.previews`: latent previews;
* :mod:`.messages`, :mod:`.wrapping`: messages shown on the running node.
"""
from . import (comfyui, devices, folders, free_watch, messages, models, patchers, previews, progress, streaming, videos,
               wrapping)
from .comfyui import HAS_COMFY
from .devices import auto_dtype, empty_cache, extra_devices, offload_device, torch_device
from .folders import (add_standalone_model_root, default_model_dir, find_model_file, list_model_files,
                      model_search_paths, register_model_folders, resolve_model_file, temp_directory,
                      temp_video_path)
from .free_watch import MusePoseFreeWatch, notify_free, on_free, watch_free
from .messages import MESSAGES_UI_KEY, NodeMessages, current_messages, node_run, say, show_status, with_messages
from .models import ComfyPlacement, make_placement
from .patchers import HeldModel, dynamic_vram, memory_host_note, patcher_class, unload_patcher
from .previews import make_previewer
from .progress import Interrupted, Progress, check_interrupt, request_interrupt
from .streaming import comfy_layer_classes, convert_for_streaming, streaming_report
from .videos import video_frame_rate, video_frames, video_output
from .wrapping import pack_node

__all__ = [
    "HAS_COMFY", "auto_dtype", "empty_cache", "extra_devices", "offload_device", "torch_device",
    "add_standalone_model_root", "default_model_dir", "find_model_file", "list_model_files", "model_search_paths",
    "register_model_folders", "resolve_model_file", "temp_directory", "temp_video_path",
    "MusePoseFreeWatch", "notify_free", "on_free", "watch_free", "MESSAGES_UI_KEY", "NodeMessages",
    "current_messages", "node_run", "say", "show_status", "with_messages", "ComfyPlacement", "make_placement",
    "HeldModel", "dynamic_vram", "memory_host_note", "patcher_class", "unload_patcher", "make_previewer",
    "Interrupted", "Progress", "check_interrupt", "request_interrupt", "comfy_layer_classes",
    "convert_for_streaming", "streaming_report", "video_frame_rate", "video_frames", "video_output", "pack_node",
    "comfyui", "devices", "folders", "free_watch", "messages", "models", "patchers", "previews", "progress",
    "streaming", "videos", "wrapping",
]
