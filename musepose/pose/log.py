"""The pose engine's logger and its one piece of "said already" state.

Every user-facing pose message is a WARNING on the ``musepose.pose`` logger, written for the user
(what happened, what was done about it, what to change), and said once: per call by the code that
notices it (never per frame), or once per process for facts about the installation (which
onnxruntime build runs DWPose). ComfyUI shows the WARNINGs a node logs during its run on the node.
The name is fixed rather than ``__name__`` because ComfyUI imports this pack under its folder name.
"""
from __future__ import annotations

import logging
import threading

logger = logging.getLogger("musepose.pose")

_said: set[str] = set()
_said_lock = threading.Lock()


def warn_once_per_process(key: str, message: str, *args) -> bool:
    """Log ``message`` at WARNING the first time ``key`` is seen in this process; True if it was logged."""
    with _said_lock:
        if key in _said:
            return False
        _said.add(key)
    logger.warning(message, *args)
    return True

