"""The two ComfyUI nodes, called the way ComfyUI calls them (FUNCTION on an instance, torch IMAGE).

The pack is loaded as a package under an arbitrary name (as ComfyUI does), which also proves the
nodes only use relative imports.
"""
from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from test_nodes_support import remove_standalone_model_root

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "dwpose-tiny"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
TOL_PX = 0.05
PACK = "mpe_pose_test_pack"


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


def image_batch(w: int, h: int, n: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, h, w, 3), generator=g)


def triples(values):
    return np.asarray(values, dtype=np.float64).reshape(-1, 3)


def test_node_metadata(nodes):
    assert set(nodes.POSE_NODE_CLASS_MAPPINGS) == {"MusePosePoseExtract", "MusePosePoseAlign"}
    assert set(nodes.POSE_NODE_DISPLAY_NAME_MAPPINGS) == set(nodes.POSE_NODE_CLASS_MAPPINGS)
    for cls in nodes.POSE_NODE_CLASS_MAPPINGS.values():
        assert cls.CATEGORY == "MusePose" and cls.DESCRIPTION and hasattr(cls, cls.FUNCTION)
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        spec = cls.INPUT_TYPES()
        for section in spec.values():
            for name, (kind, *opts) in section.items():
                assert opts and opts[0].get("tooltip"), f"{cls.__name__}.{name} has no tooltip"


@pytest.mark.parametrize("example", EXPECTED["worked_examples"], ids=lambda e: "x".join(map(str, e["image_wh"])))
def test_extract_node_matches_expected(nodes, example):
    w, h = example["image_wh"]
    node = nodes.MusePosePoseExtract()
    pose_kp, preview, fps = getattr(node, node.FUNCTION)(image_batch(w, h, 2), fps=24.0, preview_resolution=0)
    assert isinstance(pose_kp, list) and len(pose_kp) == 2 and fps == pytest.approx(24.0)
    assert preview.shape == (2, h, w, 3) and preview.dtype == torch.float32 and preview.max() <= 1.0
    assert preview.sum() > 0
    small = node.extract(image_batch(w, h, 1), preview_resolution=256)[1]
    assert small.shape == (1, round(h * 256 / min(w, h)), round(w * 256 / min(w, h)), 3)
    for frame in pose_kp:
        assert frame["canvas_width"] == w and frame["canvas_height"] == h
        (person,) = frame["people"]
        body = triples(person["pose_keypoints_2d"])
        assert np.abs(body[:, :2] - np.array(example["openpose18_xy"])).max() < TOL_PX
        np.testing.assert_allclose(body[:, 2], example["openpose18_score"], atol=1e-4)
        wb = triples(person["wholebody_keypoints_2d"])
        assert np.abs(wb[:, :2] - np.array(example["keypoints133_xy"])).max() < TOL_PX
        np.testing.assert_allclose(wb[:, 2], example["scores133"], atol=1e-4)
        assert np.abs(triples(person["hand_right_keypoints_2d"])[:, :2]
                      - np.array(example["keypoints133_xy"])[112:133]).max() < TOL_PX


def test_extract_node_frame_selection_and_fps(nodes):
    node = nodes.MusePosePoseExtract()
    pose_kp, preview, fps = node.extract(image_batch(64, 48, 10), fps=30.0, start_frame=1, every_nth=3, max_frames=2)
    assert len(pose_kp) == 2 and preview.shape[0] == 2 and fps == pytest.approx(10.0)
    with pytest.raises(ValueError, match="selection"):
        node.extract(image_batch(64, 48, 2), start_frame=5)


def test_extract_node_cached_second_run(nodes, monkeypatch):
    calls = {"n": 0}
    real_run = ort.InferenceSession.run
    monkeypatch.setattr(ort.InferenceSession, "run",
                        lambda self, *a, **k: (calls.__setitem__("n", calls["n"] + 1), real_run(self, *a, **k))[1])
    images = image_batch(80, 60, 4, seed=7)
    node = nodes.MusePosePoseExtract()
    first = node.extract(images)
    assert calls["n"] == 8
    second = node.extract(images.clone())
    assert calls["n"] == 8 and second[0] == first[0]


def test_align_node_with_reference_image_and_pose(nodes):
    ref_ex, drv_ex = EXPECTED["worked_examples"]
    extract = nodes.MusePosePoseExtract()
    driving, _, _ = extract.extract(image_batch(*drv_ex["image_wh"], 3), fps=30.0)
    ref_img = image_batch(*ref_ex["image_wh"], 1, seed=3)
    align = nodes.MusePosePoseAlign()
    out = getattr(align, align.FUNCTION)(driving, 256, 384, reference_image=ref_img, fps=30.0, every_nth=1)
    renders, aligned, debug, fps, width, height = out
    assert renders.shape == (3, 384, 256, 3) and debug.shape == (3, 384, 256, 3) and fps == 30.0
    assert (width, height) == (256, 384)
    assert renders.sum() > 0
    assert all(f["canvas_width"] == 256 and f["canvas_height"] == 384 for f in aligned)
    # same template in both -> all scales 1: the aligned pose is the reference pose mapped to 256x384
    ref_pose, _, _ = extract.extract(ref_img)
    ref_body = triples(ref_pose[0]["people"][0]["pose_keypoints_2d"])
    body = triples(aligned[0]["people"][0]["pose_keypoints_2d"])
    np.testing.assert_allclose(body[:, 0], ref_body[:, 0] * 256 / 512, atol=0.05)
    np.testing.assert_allclose(body[:, 1], ref_body[:, 1] * 384 / 512, atol=0.05)
    # a reference POSE_KEYPOINT gives the same result as the reference image
    renders2, aligned2, _, _, _, _ = align.align(driving, 256, 384, reference_pose=ref_pose)
    np.testing.assert_allclose(triples(aligned2[0]["people"][0]["pose_keypoints_2d"]), body, atol=1e-3)
    # coordinates travel through JSON rounded to 1e-4 px, which can move an int()-truncated edge pixel
    differing = (renders != renders2).any(dim=-1).float().mean().item()
    assert differing < 1e-3


def test_align_node_accepts_normalised_controlnet_aux_input(nodes):
    ref_ex, drv_ex = EXPECTED["worked_examples"]
    extract = nodes.MusePosePoseExtract()
    driving, _, _ = extract.extract(image_batch(*drv_ex["image_wh"], 2))
    ref_pose, _, _ = extract.extract(image_batch(*ref_ex["image_wh"], 1))
    normalised = []
    for frame in driving:     # what some controlnet_aux versions emit: 0..1, c = 1.0, no extra keys
        w, h = frame["canvas_width"], frame["canvas_height"]
        people = []
        for p in frame["people"]:
            q = {}
            for key in ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d"):
                t = triples(p[key])
                vis = t[:, 2] > 0
                t[vis, 0] /= w
                t[vis, 1] /= h
                t[vis, 2] = 1.0
                q[key] = t.ravel().tolist()
            people.append(q)
        normalised.append({"people": people, "canvas_width": w, "canvas_height": h})
    align = nodes.MusePosePoseAlign()
    a = align.align(driving, 320, 480, reference_pose=ref_pose)[1]
    b = align.align(normalised, 320, 480, reference_pose=ref_pose)[1]
    np.testing.assert_allclose(triples(a[1]["people"][0]["pose_keypoints_2d"])[:, :2],
                               triples(b[1]["people"][0]["pose_keypoints_2d"])[:, :2], atol=1e-3)


def test_align_node_frame_selection_and_errors(nodes):
    extract = nodes.MusePosePoseExtract()
    driving, _, _ = extract.extract(image_batch(64, 64, 6))
    align = nodes.MusePosePoseAlign()
    renders, aligned, debug, fps, _, _ = align.align(driving, 64, 64, reference_pose=driving[0], fps=25.0,
                                                     every_nth=2, align_frame=0)
    assert renders.shape[0] == 3 and len(aligned) == 3 and fps == pytest.approx(12.5)
    with pytest.raises(ValueError, match="reference"):
        align.align(driving, 64, 64)


def test_align_node_outputs_width_and_height_appended(nodes):
    """Pose Align's width/height outputs come after the four old ones (saved workflows link by index)."""
    cls = nodes.MusePosePoseAlign
    assert cls.RETURN_NAMES == ("pose_images", "aligned_pose_keypoint", "debug_overlay", "fps", "width", "height")
    assert cls.RETURN_TYPES == ("IMAGE", "POSE_KEYPOINT", "IMAGE", "FLOAT", "INT", "INT")
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and all(cls.OUTPUT_TOOLTIPS)
    assert "Sampler" in cls.OUTPUT_TOOLTIPS[4] and "Sampler" in cls.OUTPUT_TOOLTIPS[5]
    extract = nodes.MusePosePoseExtract()
    driving, _, _ = extract.extract(image_batch(64, 64, 2))
    out = cls().align(driving, 320, 448, reference_pose=driving[0])
    assert len(out) == 6 and out[4:] == (320, 448) and all(type(v) is int for v in out[4:])
    assert out[0].shape == (2, 448, 320, 3)


def test_align_node_rounds_its_size_to_the_sampler_multiple(nodes, caplog):
    extract = nodes.MusePosePoseExtract()
    driving, _, _ = extract.extract(image_batch(64, 64, 2))
    with caplog.at_level("WARNING"):
        renders, _, debug, _, width, height = nodes.MusePosePoseAlign().align(driving, 250, 390,
                                                                              reference_pose=driving[0])
    assert (width, height) == (248, 384) and renders.shape == debug.shape == (2, 384, 248, 3)
    said = [r.getMessage() for r in caplog.records if "multiple of 8" in r.getMessage()]
    assert len(said) == 1 and "248x384" in said[0]
