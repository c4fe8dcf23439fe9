"""Checks at queue time in the real ComfyUI 0.8.0 (skipped unless COMFYUI_PATH is set).

POST /prompt runs every node's VALIDATE_INPUTS before queueing: what the Sampler's widgets alone rule out
is refused with HTTP 400 and our message, and nothing is queued or loaded.
"""
from __future__ import annotations

import pytest

from comfy_support import tiny_workflow


def _refused(server, graph) -> str:
    status, body = server.post("/prompt", {"prompt": graph, "client_id": "validation-test"})
    assert status == 400, (status, body)
    errors = body["node_errors"]["5"]["errors"]
    assert all(e["type"] == "custom_validation_failed" for e in errors), errors
    return " | ".join(e["details"] for e in errors)


@pytest.mark.parametrize("sampler, expected", [
    (dict(context_frames=8, context_overlap=8), "context_overlap (8) must be smaller than context_frames (8)"),
    (dict(context_frames=8, context_overlap=12), "context_overlap (12) must be smaller than context_frames (8)"),
    (dict(width=4096), "width 4096 is more than MusePose Express supports: at most 2048 pixels a side"),
    (dict(height=8192), "height 8192 is more than MusePose Express supports"),
    (dict(context_frames=200, context_overlap=4), "at most 128 frames per window"),
    (dict(width=32), "width 32 is less than the smallest size, 64 pixels"),
])
def test_refused_at_queue_time_before_anything_loads(server, sampler, expected):
    details = _refused(server, tiny_workflow("musepose_video", **sampler))
    assert expected in details, details
    assert server.get("/queue") == {"queue_running": [], "queue_pending": []}
    assert "loading weights from disk" not in server.log_text()


def test_linked_size_is_not_judged_at_queue_time(server):
    """A width linked from another node arrives as None at validation: VALIDATE_INPUTS must let it through
    (the check runs again in the node). Here the graph is refused only for its overlap."""
    graph = tiny_workflow("musepose_dance", context_frames=8, context_overlap=9)
    graph["5"]["inputs"]["width"] = ["10", 4]
    details = _refused(server, graph)
    assert "context_overlap (9)" in details and "pixels" not in details, details
