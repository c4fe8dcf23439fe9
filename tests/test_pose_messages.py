"""What the user must know is said once per run, in plain words, never per frame.

ComfyUI shows the WARNINGs a node logs during its run on the node, so the pose nodes and the pose
engine must log each such message exactly once per run: frame selection and clamping, frames with
nobody in them (and that they were filled), several people / the followed person switching, a
stretched reference, a size rounded to multiples of 8, both reference inputs connected.
"""
from __future__ import annotations

import copy
import importlib
import json
import logging
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from test_nodes_support import remove_standalone_model_root

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "dwpose-tiny"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
PACK = "mpe_pose_test_pack"
REF_WH, DRV_WH = (tuple(e["image_wh"]) for e in EXPECTED["worked_examples"])


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    if PACK not in sys.modules:
        pkg = types.ModuleType(PACK)
        pkg.__path__ = [str(REPO)]
        sys.modules[PACK] = pkg
    mod = importlib.import_module(f"{PACK}.nodes.pose_nodes")
    host = importlib.import_module(f"{PACK}.nodes.host")
    root = tmp_path_factory.mktemp("models")
    (root / "dwpose").mkdir()
    for name in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"):
        (root / "dwpose" / name).write_bytes((FIXTURE / name).read_bytes())
    host.add_standalone_model_root(str(root))
    yield mod
    remove_standalone_model_root(host, str(root))


def images(wh, n: int, seed: int) -> torch.Tensor:
    w, h = wh
    return torch.rand((n, h, w, 3), generator=torch.Generator().manual_seed(seed))


def said(caplog) -> list[str]:
    """WARNINGs of the loggers whose messages reach the node (``musepose_express``, ``musepose.*``)."""
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and (r.name == "musepose_express" or r.name.startswith("musepose."))]


def assert_once_each(messages: list[str], *fragments: str) -> None:
    dupes = [m for m, k in Counter(messages).items() if k > 1]
    assert not dupes, f"said more than once: {dupes}"
    for fragment in fragments:
        hits = [m for m in messages if fragment in m]
        assert len(hits) == 1, (fragment, messages)


def test_extract_node_says_selection_once(nodes, caplog):
    with caplog.at_level(logging.WARNING):
        kp, _, fps = nodes.MusePosePoseExtract().extract(images(DRV_WH, 6, 1), fps=24.0, every_nth=2, max_frames=10)
    assert len(kp) == 3 and fps == pytest.approx(12.0)
    messages = said(caplog)
    assert_once_each(messages, "max_frames is 10 but only 3 frames remain", "Using 3 of the 6 frames (every 2nd frame)")
    assert "12 fps" in next(m for m in messages if m.startswith("Using"))
    assert len(messages) == 2, messages


def test_extract_node_is_silent_when_nothing_needs_saying(nodes, caplog):
    with caplog.at_level(logging.WARNING):
        nodes.MusePosePoseExtract().extract(images(DRV_WH, 4, 2))
    assert said(caplog) == []


def test_frames_without_people_said_once_not_per_frame(nodes, caplog, monkeypatch):
    # the classes the nodes use: the pack's own copy of the engine (ComfyUI imports it under the pack's name)
    DWPoseExtractor = importlib.import_module(f"{PACK}.musepose.pose.extract").DWPoseExtractor
    FramePose = importlib.import_module(f"{PACK}.musepose.pose.layout").FramePose

    real_detect = DWPoseExtractor.detect_frame

    def detect(self, image):  # black frames hold nobody
        if image.max() == 0:
            return FramePose(image.shape[1], image.shape[0], [])
        return real_detect(self, image)

    monkeypatch.setattr(DWPoseExtractor, "detect_frame", detect)
    nodes.DEFAULT_POSE_CACHE.frames.clear()
    batch = images(DRV_WH, 12, 3)
    batch[[2, 3, 7]] = 0.0
    with caplog.at_level(logging.WARNING):
        kp, _, _ = nodes.MusePosePoseExtract().extract(batch)
    extract_msgs = said(caplog)
    assert_once_each(extract_msgs, "3 of 12 frames had no person detected")
    assert len(extract_msgs) == 1
    assert "frame 2" in extract_msgs[0]
    caplog.clear()
    ref_kp, _, _ = nodes.MusePosePoseExtract().extract(images(REF_WH, 1, 4))
    with caplog.at_level(logging.WARNING):
        nodes.MusePosePoseAlign().align(kp, 512, 512, reference_pose=ref_kp)
    align_msgs = said(caplog)
    assert_once_each(align_msgs, "3 of 12 frames had no person detected")
    assert "filled from the neighbouring frames" in align_msgs[0]
    assert len(align_msgs) == 1, align_msgs
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        nodes.MusePosePoseExtract().extract(torch.zeros(4, 64, 48, 3))
    assert said(caplog) == ["No person was detected in any of the 4 frame(s): check that the dancer is clearly "
                            "visible (whole body, not too small in the picture)."]
    nodes.DEFAULT_POSE_CACHE.frames.clear()  # the black frames' empty poses came from the patched detector


def _two_dancers(kp: list[dict]) -> list[dict]:
    """10 frames on a canvas three times as wide: dancer A alone (0-4), then only dancer B, far to
    the right (5-9), with both visible in frame 4."""
    base = kp[0]
    width = base["canvas_width"]
    a = base["people"][0]
    b = copy.deepcopy(a)
    for key in ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d"):
        t = np.asarray(b[key], dtype=np.float64).reshape(-1, 3)
        t[t[:, 2] > 0, 0] += 1.5 * width
        b[key] = t.ravel().tolist()
    b.pop("wholebody_keypoints_2d", None)
    frames = []
    for i in range(10):
        people = [a] if i < 4 else [a, b] if i == 4 else [b]
        frames.append({"people": people, "canvas_width": 3 * width, "canvas_height": base["canvas_height"]})
    return frames


def test_align_node_says_each_thing_once_per_run(nodes, caplog):
    extract = nodes.MusePosePoseExtract()
    kp, _, _ = extract.extract(images(DRV_WH, 1, 5))
    driving = _two_dancers(kp)
    ref_image = images(REF_WH, 1, 6)
    ref_pose, _, _ = extract.extract(ref_image)
    align = nodes.MusePosePoseAlign()
    runs = []
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            out = align.align(driving, 250, 390, reference_image=ref_image, reference_pose=ref_pose)
        runs.append(said(caplog))
    assert out[4:] == (248, 384)
    for messages in runs:
        assert_once_each(messages,
                         "250x390 is not a multiple of 8",                 # size rounded
                         "Both reference_image and reference_pose",        # which reference is used
                         "The reference is 512x512 but the output is 248x384",  # stretched reference
                         "Several people were detected in 1 of 10 frames",
                         "lost and chosen again in 1 frame(s), the first at frame 5")
        assert len(messages) == 5, messages
    assert runs[0] == runs[1]  # once per run, not once per process


def test_generate_pose_stage_says_things_once(tmp_path, caplog):
    """The CLI's driving-video path (extract -> align -> draw) says the stretched reference once."""
    from musepose.pose.driving import driving_video_to_pose_frames
    from musepose.video import write_mp4

    w, h = DRV_WH
    frames = np.random.default_rng(1).integers(0, 256, (5, h, w, 3), dtype=np.uint8)
    video = write_mp4(frames, tmp_path / "drive.mp4", fps=24.0)
    ref = np.random.default_rng(5).integers(0, 256, (REF_WH[1], REF_WH[0], 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING):
        renders, _ = driving_video_to_pose_frames(FIXTURE, ref, video, 320, 448)
    assert renders.shape[0] == 5
    messages = said(caplog)
    assert_once_each(messages, "The reference is 512x512 but the output is 320x448")
    assert len(messages) == 1, messages
