"""The pack's one piece of global state: loaded model sets, reused across queue runs.

ComfyUI re-executes the loader whenever its output cache is cleared (another workflow in between,
``/free``, a changed input); without this cache each run would read ~5 GB of weights again. Entries are
keyed by every file's path, mtime and size plus the precision and the layer variant, so a replaced
file or another dtype loads afresh. Only ``capacity`` sets are kept (default 1: a second model set
would double RAM); an evicted set is first taken off ComfyUI's loaded list.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable, Hashable

logger = logging.getLogger("musepose_express")


class ModelCache:
    def __init__(self, capacity: int = 1):
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # disk loads performed (tests and logs read it)
        self.hits = 0

    def get_or_load(self, key: Hashable, load: Callable[[], object]) -> object:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            while len(self._entries) >= self.capacity:
                _, old = self._entries.popitem(last=False)
                _dispose(old)
            value = load()
            self.loads += 1
            self._entries[key] = value
            return value

    def clear(self) -> None:
        with self._lock:
            while self._entries:
                _, old = self._entries.popitem(last=False)
                _dispose(old)

    def __len__(self) -> int:
        return len(self._entries)


def _dispose(value: object) -> None:
    close = getattr(value, "close", None)
    if callable(close):
        try:
            close()
        except Exception as exc:  # eviction must not fail a new load
            logger.warning("MusePose: could not release an evicted model set cleanly: %s", exc)


#: The cache the loader node uses.
MODEL_CACHE = ModelCache()
