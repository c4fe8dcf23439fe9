"""The one piece of module-level state of the pose engine: an explicit, bounded LRU cache.

Re-running a ComfyUI graph re-executes the pose node whenever any upstream value changes, and
DWPose on CPU costs seconds per frame, so per-frame results are kept keyed by a hash of the frame
bytes plus every setting that changes the result. Loaded ONNX sessions are kept too (loading the
real files takes seconds). Nothing else in ``musepose.pose`` holds state between calls.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

import numpy as np


class LRUCache:
    """A small thread-safe least-recently-used mapping with a fixed number of entries."""

    def __init__(self, max_entries: int):
        self.max_entries = max(int(max_entries), 0)
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return default

    def put(self, key: Hashable, value: Any) -> None:
        if self.max_entries == 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def get_or_create(self, key: Hashable, factory: Callable[[], Any]) -> Any:
        value = self.get(key)
        if value is None:
            value = factory()
            self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data


class PoseCache:
    """Per-frame pose results plus the loaded model sessions.

    ~8k frames of one person cost ~30 MB; two detector pairs cover switching between two model
    folders without reloading.
    """

    def __init__(self, max_frames: int = 8192, max_models: int = 2):
        self.frames = LRUCache(max_frames)
        self.models = LRUCache(max_models)

    def clear(self) -> None:
        self.frames.clear()
        self.models.clear()


def frame_digest(frame: np.ndarray) -> str:
    """Content hash of one uint8 frame (shape included, so a reshaped buffer never collides)."""
    arr = np.ascontiguousarray(frame)
    h = hashlib.blake2b(digest_size=20)
    h.update(repr((arr.shape, str(arr.dtype))).encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


#: The shared cache used by the nodes and the CLI unless a caller passes its own.
DEFAULT_POSE_CACHE = PoseCache()
