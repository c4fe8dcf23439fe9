"""The pack's one piece of global state: loaded model sets, reused across queue runs.

ComfyUI re-executes the loader whenever its output cache is cleared (another workflow in between,
``/free``, a changed input); without this cache each run would read ~5 GB of weights again. Entries are
keyed by every file's path, mtime and size plus the precision and the device, so a replaced file or
another dtype loads afresh; the offload mode is not part of the key (it is chosen per run). Only
``capacity`` sets are kept (default 1: a second model set would double RAM); a set that goes is
unloaded from ComfyUI and releases its networks (``LoadedSet.close``; a loader output still pointing at
it reads the weights again when next used).

The cache follows ComfyUI's memory management: ComfyUI's Free ("Unload models", ``POST /free``) empties
it, and so does ComfyUI unloading one of a set's models (see ``host.on_free`` and
``ComfyPlacement.on_comfy_unload``; wired in ``nodes/__init__.py`` and the loader).
"""
from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from typing import Callable, Hashable

logger = logging.getLogger("musepose_express")


class ModelCache:
    def __init__(self, capacity: int = 1):
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0  # disk loads performed (tests and logs read it)
        self.hits = 0
        self.releases = 0  # sets let go because ComfyUI freed memory or unloaded them

    def get_or_load(self, key: Hashable, load: Callable[[], object]) -> object:
        from .bundle import drop_released

        with self._lock:
            drop_released()  # a loader run is a safe moment to forget released shells
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            evicted = False
            while len(self._entries) >= self.capacity:
                _, old = self._entries.popitem(last=False)
                _dispose(old)
                evicted = True
            if evicted:
                drop_released()
                gc.collect()  # the old set's RAM back before the new one is read
            value = load()
            self.loads += 1
            self._entries[key] = value
            return value

    def discard(self, value: object) -> bool:
        """Let ``value`` go if it is cached (identity, not key: a reloaded set may share the key)."""
        with self._lock:
            keys = [k for k, v in self._entries.items() if v is value]
            for k in keys:
                del self._entries[k]
        for _ in keys:
            _dispose(value)
        return bool(keys)

    def clear(self) -> int:
        """Let every set go; returns how many there were."""
        with self._lock:
            old = list(self._entries.values())
            self._entries.clear()
        for value in old:
            _dispose(value)
        return len(old)

    def release(self, value: object | None = None, reason: str = "ComfyUI freed memory") -> None:
        """``clear`` (or ``discard(value)``) because ComfyUI let go of our models; logged once per set."""
        count = self.clear() if value is None else int(self.discard(value))
        if count:
            self.releases += count
            logger.info("MusePose: %s: the cached model set is released (the next run reads the weights again)",
                        reason)

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
