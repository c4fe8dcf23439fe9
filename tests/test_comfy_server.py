"""The pack inside a real ComfyUI server on the CPU: imports, the shipped workflows, the model cache, Cancel.

The server (one per session, shared with the other tests/test_comfy_*.py) and the helpers are in
tests/comfy_support.py; without COMFYUI_PATH these tests are skipped, and fail on CI (conftest.py).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from musepose.video import read_frames

from comfy_support import (REPO, interrupted_run, run_watching, saved_video, tiny_workflow, with_decode_to_video,
                           with_pose_video_input)


def test_pack_imports_cleanly(server):
    log = server.log_text()
    assert "IMPORT FAILED" not in log, log[-3000:]
    info = server.get("/object_info")
    for node_id in ("MusePoseModelLoader", "MusePoseSampler", "MusePoseDecode"):
        assert info[node_id]["category"] == "MusePose"
        assert info[node_id]["python_module"].startswith("custom_nodes.")
    assert info["MusePoseModelLoader"]["input"]["required"]["vae"][0][:2] == ["auto", "sd-vae-ft-mse/diffusion_pytorch_model.bin"]


def test_core_node_fixture_matches_this_server(server):
    fixture = json.loads((REPO / "tests" / "fixtures" / "comfy_core_nodes.json").read_text())["nodes"]
    for name, expected in fixture.items():
        live = server.get(f"/object_info/{name}")[name]
        for key in ("input_order", "output", "output_name", "output_node"):
            assert live[key] == expected[key], (name, key)


@pytest.mark.parametrize("name", ["musepose_video", "musepose_video_lowvram"])
def test_workflow_runs_to_a_video(server, name):
    entry = server.wait(server.queue(tiny_workflow(name)))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    frames, _ = read_frames(saved_video(server, entry))
    assert frames.shape == (12, 96, 96, 3)


def test_dance_workflow_extract_align_sample_decode(server):
    """Dance video -> DWPose (stand-ins, run by torch) -> alignment -> MusePose -> decode -> mp4; the size is
    set once, on Pose Align (96x128 here), and reaches the Sampler through Align's width/height outputs; the
    two pose previews are saved."""
    graph = tiny_workflow("musepose_dance", previews=True, height=128)
    assert graph["5"]["inputs"]["width"] == ["10", 4] and graph["5"]["inputs"]["height"] == ["10", 5]
    assert (graph["10"]["inputs"]["width"], graph["10"]["inputs"]["height"]) == (96, 128)
    entry = server.wait(server.queue(graph))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    frames, rate = read_frames(saved_video(server, entry))
    assert frames.shape == (12, 128, 96, 3)
    assert rate == 8.0  # the dance video's fps, carried through extract and align
    previews = {node_id for node_id, node in graph.items() if node["class_type"] == "PreviewImage"}
    assert previews and all(len(entry["outputs"][node_id]["images"]) == 12 for node_id in previews), entry["outputs"]
    # DWPose ran without onnxruntime (the host has the pack's requirements.txt only, as after a Manager
    # install), on torch, and Pose Extract (node 9) said so on the node
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    probe = subprocess.run([python, "-c", "import importlib.util; print(importlib.util.find_spec('onnxruntime'))"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "None", "the host venv should have no onnxruntime for this test"
    assert "pose: torch on cpu" in entry["outputs"]["9"]["musepose_messages"][0], entry["outputs"]["9"]


def test_second_queue_reuses_loaded_weights(server):
    """The loader node must execute again (an input outside our cache key changes: download_missing,
    with nothing missing), and our model cache must answer it without reading the weights (counted
    from the loader's log lines)."""
    graph = tiny_workflow("musepose_video", seed=7)
    assert server.wait(server.queue(graph))["status"]["status_str"] == "success"
    loads_before = server.log_text().count("MusePose: loading weights from disk")
    reuses_before = server.log_text().count("MusePose: reusing the cached model set")
    again = json.loads(json.dumps(graph))
    again["4"]["inputs"]["download_missing"] = True
    entry = server.wait(server.queue(again))
    assert entry["status"]["status_str"] == "success"
    cached = [m for m in entry["status"]["messages"] if m[0] == "execution_cached"]
    assert cached and "4" not in cached[0][1]["nodes"], "the loader node should have run again"
    log = server.log_text()
    assert log.count("MusePose: loading weights from disk") == loads_before
    assert log.count("MusePose: reusing the cached model set") == reuses_before + 1


def test_interrupt_stops_within_one_window_and_next_run_works(server):
    """A long run (200 steps x 3 windows); interrupt after a few windows; the sampler must stop before
    the next window completes, and a following run must succeed."""
    graph = tiny_workflow("musepose_video", steps=200, context_frames=4, context_overlap=0, seed=11)
    result = interrupted_run(server, graph, at_value=3)
    assert result["kind"] == "execution_interrupted", result
    started, value, total = result["interrupted_at"]
    assert total == 600
    assert result["last"] <= value + 1, result  # at most the window already running finished
    latency = result["stopped"] - started
    print(f"interrupt latency {latency * 1000:.0f} ms; progress {value} -> {result['last']} of {total}")
    assert latency < 5.0
    entry = server.wait(server.queue(tiny_workflow("musepose_video", seed=12)))
    assert entry["status"]["status_str"] == "success"


def test_cancel_then_queue_again_resumes(server):
    """Cancel once step 1 of 4 is done (3 window batches a step); the same prompt queued again resumes from
    the last finished step and says so on the Sampler, and finishes; then the state is gone (a new cancel
    and a changed seed start afresh, saying what changed)."""
    graph = tiny_workflow("musepose_video", steps=4, context_frames=4, context_overlap=0, seed=21)
    first = interrupted_run(server, graph, at_value=4)
    assert first["kind"] == "execution_interrupted", first
    again = run_watching(server, graph)
    assert again["outcome"] == "execution_success", json.dumps(again["events"][-3:])[-3000:]
    said = [text for node, text in again["texts"] if node == "5"][-1]
    resumed = re.search(r"resumed at step (\d+) of 4", said)
    assert resumed and 1 <= int(resumed.group(1)) < 4, said
    progress = [e["data"]["value"] for e in again["events"] if e["type"] == "progress" and e["data"].get("node") == "5"]
    assert progress and progress[0] > 3 * int(resumed.group(1)), progress  # the finished steps are not run again

    other = interrupted_run(server, tiny_workflow("musepose_video", steps=4, context_frames=4, context_overlap=0,
                                                  seed=22), at_value=4)
    assert other["kind"] == "execution_interrupted", other
    fresh = run_watching(server, tiny_workflow("musepose_video", steps=4, context_frames=4, context_overlap=0, seed=23))
    said = [text for node, text in fresh["texts"] if node == "5"][-1]
    assert fresh["outcome"] == "execution_success" and "resumed at" not in said and "seed 22 -> 23" in said, said


def test_pose_video_in_and_video_out(server):
    """Load Video straight into the Sampler (read as uint8, never an IMAGE batch) and Decode to Video taking
    the pose video's 8 fps: 12 frames that match, within h264 loss, the same run with Get Video Components'
    IMAGE batch as pose_images (ComfyUI decodes the pose video to float, PyAV to rgb24: a pose pixel may
    differ by a level, so not exactly)."""
    entry = server.wait(server.queue(with_pose_video_input(tiny_workflow("musepose_video", seed=32))))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    frames, rate = read_frames(saved_video(server, entry))
    assert frames.shape == (12, 96, 96, 3) and rate == 8.0
    reference = server.wait(server.queue(with_decode_to_video(tiny_workflow("musepose_video", seed=32))))
    expected, _ = read_frames(saved_video(server, reference))
    difference = np.abs(frames.astype(float) - expected.astype(float)).mean() / 255
    assert difference < 0.03, difference


def test_decode_to_video_feeds_save_video(server):
    """MusePose Decode to Video (no IMAGE batch) -> the core SaveVideo: a 12-frame mp4 at the pose video's
    8 fps whose frames match MusePose Decode's within h264 loss."""
    graph = with_decode_to_video(tiny_workflow("musepose_video", seed=31))
    entry = server.wait(server.queue(graph))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    frames, rate = read_frames(saved_video(server, entry))
    assert frames.shape == (12, 96, 96, 3) and rate == 8.0
    reference = server.wait(server.queue(tiny_workflow("musepose_video", seed=31)))
    expected, _ = read_frames(saved_video(server, reference))
    difference = np.abs(frames.astype(float) - expected.astype(float)).mean() / 255
    assert difference < 0.03, difference
