"""POSE_KEYPOINT interop, frame selection / fps, the per-frame pose cache and One-Euro smoothing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from musepose.pose.cache import LRUCache, PoseCache
from musepose.pose.extract import get_extractor
from musepose.pose.frames import FrameSelection
from musepose.pose.keypoint_io import (frame_is_normalised, frames_to_pose_keypoint, pose_keypoint_to_frames)
from musepose.pose.layout import FramePose, PersonPose
from musepose.pose.models import find_dwpose_models
from musepose.pose.smoothing import one_euro

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "dwpose-tiny"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def controlnet_aux_frame(normalised: bool, w: int = 640, h: int = 480) -> dict:
    """A frame shaped like controlnet_aux's DWPose POSE_KEYPOINT output (missing points = 0,0,0)."""
    body = []
    for j in range(18):
        x, y = 200 + 5 * j, 100 + 10 * j
        body += [x / w, y / h, 1.0] if normalised else [float(x), float(y), 1.0]
    body[3 * 10:3 * 10 + 3] = [0.0, 0.0, 0.0]  # right ankle missing
    hand = [v for k in range(21) for v in ((300 + k) / w, 250 / h, 1.0)] if normalised else \
        [v for k in range(21) for v in (300.0 + k, 250.0, 1.0)]
    return {"people": [{"pose_keypoints_2d": body, "face_keypoints_2d": None,
                        "hand_left_keypoints_2d": hand, "hand_right_keypoints_2d": None}],
            "canvas_width": w, "canvas_height": h}


@pytest.mark.parametrize("normalised", [False, True])
def test_absolute_and_normalised_pose_keypoint_read_the_same(normalised):
    data = controlnet_aux_frame(normalised)
    assert frame_is_normalised(data) is normalised
    frame = pose_keypoint_to_frames([data])[0]
    body = frame.people[0].body
    assert (frame.width, frame.height) == (640, 480)
    assert body[3, :2] == pytest.approx([215.0, 130.0], abs=1e-3)
    assert body[10, 2] == 0.0                    # missing stays missing
    assert frame.people[0].left_hand[5, :2] == pytest.approx([305.0, 250.0], abs=1e-3)
    assert frame.people[0].right_hand[:, 2].max() == 0.0   # None -> all missing
    assert frame.people[0].face.shape == (68, 3)


def test_normalised_detection_edge_cases():
    assert not frame_is_normalised({"people": [], "canvas_width": 10, "canvas_height": 10})
    near_edge = controlnet_aux_frame(True)
    near_edge["people"][0]["pose_keypoints_2d"][0] = 1.04    # a confident point just off the right edge
    assert frame_is_normalised(near_edge)
    forced = pose_keypoint_to_frames([controlnet_aux_frame(False)], coordinates="absolute")[0]
    assert forced.people[0].body[3, 0] == pytest.approx(215.0)
    with pytest.raises(ValueError, match="canvas"):
        pose_keypoint_to_frames([{"people": controlnet_aux_frame(True)["people"]}])


def test_round_trip_and_format():
    p = PersonPose()
    p.body[:, :2] = np.arange(36).reshape(18, 2) + 10
    p.body[:, 2] = 0.9
    p.body[5, 2] = 0.1   # invisible -> written as 0, 0, 0
    p.face[:, 2] = 0.7
    data = frames_to_pose_keypoint([FramePose(100, 200, [p])])
    person = data[0]["people"][0]
    assert len(person["pose_keypoints_2d"]) == 54 and len(person["face_keypoints_2d"]) == 70 * 3
    assert len(person["hand_left_keypoints_2d"]) == 63 and len(person["hand_right_keypoints_2d"]) == 63
    assert person["pose_keypoints_2d"][15:18] == [0.0, 0.0, 0.0]
    assert person["face_keypoints_2d"][68 * 3:] == [38.0, 39.0, 0.9, 40.0, 41.0, 0.9]  # eyes appended
    assert data[0]["canvas_width"] == 100 and data[0]["canvas_height"] == 200
    json.dumps(data)  # plain JSON types only
    back = pose_keypoint_to_frames(data)[0].people[0]
    np.testing.assert_allclose(back.body[p.body[:, 2] > 0.3], p.body[p.body[:, 2] > 0.3], atol=1e-4)


def test_frame_selection_and_fps():
    sel = FrameSelection(start_frame=2, every_nth=3, max_frames=4)
    assert sel.indices(30) == [2, 5, 8, 11]
    assert sel.frames_needed() == 12
    assert sel.fps(30.0) == pytest.approx(10.0)
    assert FrameSelection().indices(3) == [0, 1, 2] and FrameSelection().frames_needed() is None
    assert FrameSelection(start_frame=5).indices(3) == []
    with pytest.raises(ValueError):
        FrameSelection(every_nth=0)


def test_lru_cache_evicts_oldest():
    c = LRUCache(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1
    c.put("c", 3)   # b is the least recently used
    assert "b" not in c and c.get("a") == 1 and c.get("c") == 3


def test_cache_second_pass_does_not_run_models(monkeypatch):
    calls = {"n": 0}
    real_run = ort.InferenceSession.run

    def counting_run(self, *a, **k):
        calls["n"] += 1
        return real_run(self, *a, **k)

    monkeypatch.setattr(ort.InferenceSession, "run", counting_run)
    cache = PoseCache()
    extractor = get_extractor(find_dwpose_models([FIXTURE], include_controlnet_aux=False), cache)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(3)]
    progress = []
    first = extractor.extract(frames, progress=lambda d, t: progress.append((d, t)))
    assert calls["n"] == 6 and extractor.model_calls == 6   # detector + pose per frame
    assert progress == [(1, 3), (2, 3), (3, 3)]
    again = get_extractor(find_dwpose_models([FIXTURE], include_controlnet_aux=False), cache)
    assert again is extractor                                  # sessions reused, not reloaded
    second = again.extract(frames)
    assert calls["n"] == 6                                     # no model call at all
    np.testing.assert_array_equal(second[2].people[0].body, first[2].people[0].body)
    frames[1] = frames[1].copy()
    frames[1][0, 0, 0] ^= 1                                    # one changed pixel -> one re-detection
    extractor.extract(frames)
    assert calls["n"] == 8
    second[0].people[0].body[:] = -1                           # callers cannot corrupt the cache
    assert extractor.extract(frames[:1])[0].people[0].body[0, 2] > 0


def test_cancel_is_checked_per_frame():
    extractor = get_extractor(find_dwpose_models([FIXTURE], include_controlnet_aux=False), PoseCache())
    seen = []

    def cancel():
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extractor.extract([np.zeros((32, 32, 3), np.uint8)] * 5, check_interrupt=cancel)
    assert len(seen) == 2


def test_one_euro_smooths_still_and_follows_motion():
    rng = np.random.default_rng(0)
    t = np.arange(120)
    still = 0.5 + rng.normal(0, 0.005, size=(120, 1, 2))
    vis = np.ones((120, 1), dtype=bool)
    out = one_euro(still, vis, fps=30)
    assert np.std(np.diff(out[20:, 0, 0])) < 0.3 * np.std(np.diff(still[20:, 0, 0]))
    ramp = np.stack([t / 30.0, np.zeros(120)], axis=-1)[:, None, :]   # 1 height/s
    lag = np.abs(one_euro(ramp, vis, fps=30)[60:, 0, 0] - ramp[60:, 0, 0]).max()
    assert lag < 0.03   # ~half a frame of motion at 30 fps
    vis[50:55] = False                                                 # gap: restart, no glide
    jump = still.copy()
    jump[55:] += 0.3
    res = one_euro(jump, vis, fps=30)
    assert res[55, 0, 0] == pytest.approx(jump[55, 0, 0])
