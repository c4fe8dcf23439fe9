"""The pack's ComfyUI nodes. Only ``host`` touches ComfyUI; the engine is imported when a node runs."""
from __future__ import annotations

from . import host
from .decode_node import MusePoseDecode, MusePoseDecodeToVideo
from .loader_node import MusePoseModelLoader
from .model_cache import MODEL_CACHE
from .pose_nodes import POSE_NODE_CLASS_MAPPINGS, POSE_NODE_DISPLAY_NAME_MAPPINGS
from .sampler_node import MusePoseSampler, drop_sampler_state
from ..musepose.pose.cache import DEFAULT_POSE_CACHE

NODE_CLASS_MAPPINGS = {
    "MusePoseModelLoader": MusePoseModelLoader,
    "MusePoseSampler": MusePoseSampler,
    "MusePoseDecode": MusePoseDecode,
    "MusePoseDecodeToVideo": MusePoseDecodeToVideo,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "MusePoseModelLoader": "MusePose Model Loader",
    "MusePoseSampler": "MusePose Sampler",
    "MusePoseDecode": "MusePose Decode",
    "MusePoseDecodeToVideo": "MusePose Decode to Video",
}


NODE_CLASS_MAPPINGS.update(POSE_NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(POSE_NODE_DISPLAY_NAME_MAPPINGS)

# Every node of the pack: its warnings are shown on it in the frontend, and ComfyUI's Free is watched.
for _cls in NODE_CLASS_MAPPINGS.values():
    host.pack_node(_cls)


def _release_pose_sessions() -> None:
    """DWPose's loaded onnxruntime sessions are models too; per-frame results (small, slow to redo) stay."""
    DEFAULT_POSE_CACHE.models.clear()


# ComfyUI's Free ("Unload models", POST /free) lets go of what the pack holds in memory.
host.on_free(MODEL_CACHE.release)
host.on_free(_release_pose_sessions)
host.on_free(drop_sampler_state)  # an interrupted Sampler run's finished steps

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
