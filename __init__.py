"""MusePose Express for ComfyUI: pose-driven image-to-video, fast and light on VRAM.

ComfyUI imports this file as a package; everything below is relative so the pack can sit beside the
official Comfyui-MusePose (its own top-level ``musepose``) and ComfyUI's top-level ``nodes``.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
