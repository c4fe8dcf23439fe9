"""Messages on the node.

While a node of this pack runs (:func:`~.wrapping.pack_node` wraps each node's function), every WARNING
(and above) logged by the engine or the nodes is also shown on that node in ComfyUI's frontend: the
``progress_text`` websocket event (``PromptServer.send_progress_text``; the frontend shows the latest
text under the node, so each send carries all of the run's lines). Lines are plain text (no logger
name or level, no "MusePose ...:" prefix), each shown once per run. The console log is unchanged.
"""
from __future__ import annotations

import contextlib
import logging
import re
import threading
from typing import Iterator

from . import comfyui

logger = logging.getLogger("musepose_express")

#: Package the pack was imported as ("" when ``nodes`` is imported on its own).
_PACK = __package__[: -len(".nodes.host")] if __package__.endswith(".nodes.host") else ""

#: Loggers whose warnings reach the node: the engine (its modules log under their module name:
#: ``musepose.*`` standalone, ``<pack>.musepose.*`` under ComfyUI; ``musepose.pose`` is fixed) and the nodes.
MESSAGE_LOGGERS = tuple(dict.fromkeys(["musepose"] + ([f"{_PACK}.musepose"] if _PACK else []) + ["musepose_express"]))

_PREFIX = re.compile(r"^MusePose(?: [A-Z][A-Za-z]*)*:\s*")


def plain_text(message: str) -> str:
    """A log message as the user reads it on the node: no "MusePose ...:" prefix, a capital first letter."""
    text = _PREFIX.sub("", str(message).strip())
    return text[:1].upper() + text[1:]


class NodeMessages:
    """What one run of one node said: plain lines, each once, in order; re-sent whole on every new line."""

    def __init__(self, node_id: str | None):
        self.node_id = node_id
        self.lines: list[str] = []
        self.status: str | None = None  # a last line that each set_status replaces
        self._lock = threading.Lock()

    def add(self, message: str, verbatim: bool = False) -> bool:
        line = str(message).strip() if verbatim else plain_text(message)
        with self._lock:
            if not line or line in self.lines:
                return False
            self.lines.append(line)
            text = self._text()
        if self.node_id is not None:
            send_node_text(self.node_id, text)
        return True

    def set_status(self, text: str | None) -> None:
        """Show ``text`` below the lines in place of the previous status (None: no status line)."""
        with self._lock:
            self.status = text
            shown = self._text()
        if self.node_id is not None:
            send_node_text(self.node_id, shown)

    def _text(self) -> str:
        return "\n".join(self.lines + ([self.status] if self.status else []))


_runs: list[NodeMessages] = []
_runs_lock = threading.Lock()


def current_messages() -> NodeMessages | None:
    """The messages of the pack node running now (engine threads included), or None."""
    with _runs_lock:
        return _runs[-1] if _runs else None


class _ToNode(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        run = current_messages()
        if run is None:
            return
        try:
            run.add(record.getMessage())
        except Exception:  # never fail the code that logged
            self.handleError(record)


def _install_handlers() -> None:
    for name in MESSAGE_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(h, _ToNode) for h in target.handlers):
            target.addHandler(_ToNode())


_install_handlers()


def executing_node_id() -> str | None:
    """Id of the node ComfyUI is executing (its executing context), or None outside a ComfyUI run."""
    if not comfyui.HAS_COMFY:
        return None
    try:
        node_id = comfyui.executing_context_node_id()
        if node_id is not None:
            return node_id
    except Exception:
        pass
    node_id = getattr(comfyui.prompt_server(), "last_node_id", None)
    return None if node_id is None else str(node_id)


def send_node_text(node_id: str, text: str) -> None:
    """Show ``text`` on node ``node_id`` in the frontend (replaces what the node showed)."""
    server = comfyui.prompt_server()
    if server is None:
        return
    try:
        server.send_progress_text(text, node_id, getattr(server, "client_id", None))
    except Exception as exc:  # a message that cannot be shown must not fail the run
        logger.debug("MusePose: could not show a message on node %s: %s", node_id, exc)


def say(text: str) -> None:
    """An info line the user should see on the running node (also logged to the console)."""
    logger.info("MusePose: %s", text)
    run = current_messages()
    if run is not None:
        run.add(text, verbatim=True)


def show_status(text: str | None) -> None:
    """A status line on the running node (the Sampler's elapsed time and time left), replaced by the next
    one; None removes it. Not logged: it changes after every window."""
    run = current_messages()
    if run is not None:
        run.set_status(text)


@contextlib.contextmanager
def node_run(node_id: str | None = None) -> Iterator[NodeMessages]:
    """One run of a pack node: collects its messages (shown on ``node_id``, default: the executing node)."""
    run = NodeMessages(node_id if node_id is not None else executing_node_id())
    with _runs_lock:
        _runs.append(run)
    try:
        yield run
    finally:
        with _runs_lock:
            _runs.remove(run)


#: Key of the node UI output that carries a run's messages; web/musepose_messages.js shows it in a read-only
#: text box under the node. Progress text alone is not enough: frontend 1.58 clears it when the job ends.
MESSAGES_UI_KEY = "musepose_messages"


def with_messages(result, messages: NodeMessages):
    """A node's return value with the run's message lines added as a UI output. Unchanged when it said
    nothing, or when no ComfyUI prompt runs it (no node to show them on: tests, in-process use)."""
    if not messages.lines or messages.node_id is None:
        return result
    ui = {MESSAGES_UI_KEY: ["\n".join(messages.lines)]}
    if isinstance(result, dict):
        return {**result, "ui": {**result.get("ui", {}), **ui}}
    return {"ui": ui, "result": tuple(result)}
