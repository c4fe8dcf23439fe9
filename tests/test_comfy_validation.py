"""Checks at queue time in the real ComfyUI (0.8.0 and 0.19.3 in CI).

POST /prompt runs ComfyUI's min/max checks and the Sampler's VALIDATE_INPUTS before queueing: what the
widgets alone rule out is refused with HTTP 400, each error pinned on the inputs at fault, and nothing is
queued or loaded.
"""
from __future__ import annotations

import pytest

from comfy_support import tiny_workflow

LOADS = "loading weights from disk"


def _refused(server, graph) -> dict[str, str]:
    """The Sampler's errors as {input name: message and details} (ComfyUI's min/max errors put the value in
    the message, VALIDATE_INPUTS' text is in the details)."""
    status, body = server.post("/prompt", {"prompt": graph, "client_id": "validation-test"})
    assert status == 400, (status, body)
    errors = body["node_errors"]["5"]["errors"]
    return {e["extra_info"]["input_name"]: f"{e['message']} | {e['details']}" for e in errors}


WINDOWS = {"context_frames", "context_overlap"}


@pytest.mark.parametrize("sampler, blamed, expected", [
    (dict(context_frames=8, context_overlap=8), WINDOWS, "context_overlap (8) must be smaller than context_frames (8)"),
    (dict(context_frames=8, context_overlap=12), WINDOWS, "context_overlap (12) must be smaller than context_frames (8)"),
    (dict(context_frames=200, context_overlap=4), WINDOWS, "at most 128 frames per window"),
    # sizes: ComfyUI's own check of the widget's limits, on that input alone
    (dict(width=4096), {"width"}, "4096"),
    (dict(height=8192), {"height"}, "8192"),
    (dict(width=32), {"width"}, "32"),
])
def test_refused_at_queue_time_naming_only_the_inputs_at_fault(server, sampler, blamed, expected):
    loads = server.log_text().count(LOADS)
    errors = _refused(server, tiny_workflow("musepose_video", **sampler))
    assert set(errors) == blamed, errors
    assert all(expected in details for details in errors.values()), errors
    assert server.get("/queue") == {"queue_running": [], "queue_pending": []}
    assert server.log_text().count(LOADS) == loads


def test_linked_size_is_not_judged_at_queue_time(server):
    """A width linked from another node arrives as None at validation: VALIDATE_INPUTS must let it through
    (the check runs again in the node). Here the graph is refused only for its overlap."""
    graph = tiny_workflow("musepose_dance", context_frames=8, context_overlap=9)
    graph["5"]["inputs"]["width"] = ["10", 4]
    errors = _refused(server, graph)
    assert set(errors) == WINDOWS and "context_overlap (9)" in errors["context_overlap"], errors
