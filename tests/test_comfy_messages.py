"""Messages the user must know, shown on the node in the real ComfyUI (0.8.0 and 0.19.3 in CI).

The server and its helpers: tests/comfy_support.py (one server per session). What
the frontend receives is watched on the websocket: ComfyUI's ``progress_text`` binary event (type 3:
node id + text); the frontend shows the latest text under that node, so every send must carry all of
the run's lines.
"""
from __future__ import annotations

import json
import re

from comfy_support import run_watching, tiny_workflow


def _node_texts(result: dict, node_id: str) -> list[str]:
    return [text for node, text in result["texts"] if node == node_id]


#: the Sampler's replaceable last line while it samples (elapsed time, time left)
STATUS = re.compile(r"^elapsed \d+:\d\d(, about \d+:\d\d left)?$")


def _assert_shown_once(texts: list[str], expected: list[str]) -> list[str]:
    """Each expected line is in the node's last text exactly once; earlier texts are prefixes of it."""
    assert texts, "nothing was shown on the node"
    last = texts[-1]
    lines = last.split("\n")
    for fragment in expected:
        hits = [line for line in lines if fragment in line]
        assert len(hits) == 1, (fragment, lines)
    assert len(lines) == len(set(lines)), lines  # no line twice
    assert not STATUS.match(lines[-1]), lines  # the running status line is gone once the run ended
    for earlier in texts[:-1]:
        said = "\n".join(line for line in earlier.split("\n") if not STATUS.match(line))
        assert last.startswith(said), (earlier, last)  # accumulated, never replaced by less
    for word in ("WARNING", "musepose_express", "musepose.pipeline", "MusePose Sampler:"):
        assert word not in last, (word, last)  # plain words: no level, logger name or node prefix
    return lines


def test_sampler_warnings_are_shown_on_the_node_once(server):
    """A size that is not a multiple of 8 and changes the aspect ratio (the 96x96 reference and pose frames
    go to 96x128): each fact is shown once on the Sampler (node 5), and still logged to the console."""
    graph = tiny_workflow("musepose_video", width=100, height=132, seed=3)
    result = run_watching(server, graph)
    assert result["outcome"] == "execution_success", json.dumps(result["events"][-3:])[-3000:]
    texts = _node_texts(result, "5")
    lines = _assert_shown_once(texts, [
        "100x132 are not multiples of 8: using 96x128",
        "The reference image is 96x96 but the output is 96x128, so it is stretched",
        "Pose frames are 96x96; resizing them to 96x128",
        "memory: offload ",  # what the memory policy picked
        "frames at 96x128, ",  # the run's summary
    ])
    assert len(lines) == 5, lines  # nothing else said
    said = {t for t in texts if not STATUS.match(t.split("\n")[-1])}
    assert len(said) == 5, texts  # one new text per line; the other sends only update or clear the status line
    assert any(STATUS.match(t.split("\n")[-1]) for t in texts), texts  # elapsed / time left while it ran
    assert "the pose frames is" not in "\n".join(lines)
    # the same lines come back as the node's UI output, which the frontend keeps after the run (1.58 clears
    # progress text when the job ends)
    executed = [e["data"]["output"] for e in result["events"] if e["type"] == "executed" and e["data"]["node"] == "5"]
    assert executed and executed[-1]["musepose_messages"] == ["\n".join(lines)], executed
    log = server.log_text()
    assert "not multiples of 8" in log and "reference image is 96x96" in log  # the console still has them
    assert log.count("the reference image is 96x96 but the output is 96x128") == 1
    print("shown on node 5:", *lines, sep="\n  ")


def test_pose_node_warnings_are_shown_on_the_node(server):
    """The pose nodes get the same: Pose Align (node 10) drawing at a size that is not a multiple of 8."""
    graph = tiny_workflow("musepose_dance", width=96, height=128)
    graph["10"]["inputs"].update(width=100, height=132)
    result = run_watching(server, graph)
    assert result["outcome"] == "execution_success", json.dumps(result["events"][-3:])[-3000:]
    lines = _assert_shown_once(_node_texts(result, "10"), ["The size 100x132 is not a multiple of 8"])
    print("shown on node 10:", *lines, sep="\n  ")
