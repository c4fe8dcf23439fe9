"""MusePose Express for ComfyUI: pose-driven image-to-video, fast and light on VRAM.

ComfyUI imports this file as a package; everything below is relative so the pack can sit beside the
official Comfyui-MusePose (its own top-level ``musepose``) and ComfyUI's top-level ``nodes``.
"""
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a plain module, not as a package: pytest does this to a checkout whose folder name is
    # not an identifier (e.g. comfyui-musepose-express). There is no node to offer then.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

#: the frontend extension (web/musepose_messages.js): keeps each pack node's messages under it after a run
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
