"""Each node function of the pack runs as a pack node: its messages shown on the node, ComfyUI's Free watched."""
from __future__ import annotations

import functools
import logging

from . import free_watch, messages

logger = logging.getLogger("musepose_express")


def pack_node(cls: type) -> type:
    """Make ``cls``'s node function run as a pack node: messages on the node, ComfyUI's Free watched."""
    name = cls.FUNCTION
    method = cls.__dict__.get(name)
    if getattr(method, "_musepose_pack_node", False):
        return cls
    if not callable(method):
        raise TypeError(f"{cls.__name__}.{name} must be a plain method to be wrapped")

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with messages.node_run() as said:
            try:
                free_watch.watch_free()
            except Exception as exc:  # a nicety: never fail the node over it
                logger.debug("MusePose: could not register with ComfyUI's Free: %s", exc)
            return messages.with_messages(method(self, *args, **kwargs), said)

    run._musepose_pack_node = True
    setattr(cls, name, run)
    return cls
