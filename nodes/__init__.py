"""The pack's ComfyUI nodes. Only ``host`` touches ComfyUI; the engine is imported when a node runs."""
from __future__ import annotations

from .decode_node import MusePoseDecode
from .loader_node import MusePoseModelLoader
from .pose_nodes import POSE_NODE_CLASS_MAPPINGS, POSE_NODE_DISPLAY_NAME_MAPPINGS
from .sampler_node import MusePoseSampler

NODE_CLASS_MAPPINGS = {
    "MusePoseModelLoader": MusePoseModelLoader,
    "MusePoseSampler": MusePoseSampler,
    "MusePoseDecode": MusePoseDecode,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "MusePoseModelLoader": "MusePose Model Loader",
    "MusePoseSampler": "MusePose Sampler",
    "MusePoseDecode": "MusePose Decode",
}


NODE_CLASS_MAPPINGS.update(POSE_NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(POSE_NODE_DISPLAY_NAME_MAPPINGS)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
