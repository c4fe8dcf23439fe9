"""DWPose extraction on the offline stand-ins in tests/fixtures/dwpose-tiny, through both backends.

The stand-ins output one person box and SimCC peaks at known crop positions whatever the pixels,
so the full pipeline (letterbox, detector decode + NMS, affine crop, SimCC decode, mapping back,
OpenPose conversion) must reproduce expected.json. Tolerance: 0.05 px (expected.json is rounded
to 1e-3 px; float32 maths adds ~1e-4). Every test that runs the models runs on onnxruntime and on the
torch backend (musepose/pose/onnx_torch.py), so the two give the same keypoints within that tolerance.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from musepose.pose import rtmpose, yolox
from musepose.pose.extract import DWPoseExtractor
from musepose.pose.imgops import fit_image, resize_bilinear, warp_affine_bilinear
from musepose.pose.layout import wholebody_to_openpose
from musepose.pose.models import find_dwpose_models, onnx_providers

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "dwpose-tiny"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
TOL_PX = 0.05


@pytest.fixture(scope="module", params=["onnxruntime", "torch"])
def extractor(request) -> DWPoseExtractor:
    ex = DWPoseExtractor(find_dwpose_models([FIXTURE], include_controlnet_aux=False), cache=None,
                         backend=request.param, device="cpu")
    assert ex.runtime.describe() == f"{request.param} on cpu"
    return ex


def example_image(example: dict, seed: int = 0) -> np.ndarray:
    w, h = example["image_wh"]
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- image ops (numpy stand-ins for cv2.resize / cv2.warpAffine) ----------------------------------

def test_resize_bilinear_matches_opencv_half_pixel_convention():
    img = np.array([[0, 100], [200, 255]], dtype=np.uint8)[..., None]
    out = resize_bilinear(img, 4, 4)[..., 0]
    # cv2.resize(img, (4, 4), interpolation=INTER_LINEAR) gives exactly these values
    assert out[0].tolist() == [0, 25, 75, 100]
    assert out[:, 0].tolist() == [0, 50, 150, 200]
    down = resize_bilinear(np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10, 2, 2)[..., 0]
    assert down.tolist() == [[25, 45], [105, 125]]   # samples at 0.5 / 2.5 (no antialiasing)


def test_warp_affine_identity_shift_and_zero_border():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    assert np.array_equal(warp_affine_bilinear(img, ident, 30, 20), img)
    half = np.array([[1.0, 0, -0.5], [0, 1.0, 0]])  # dst(x) = src(x + 0.5)
    out = warp_affine_bilinear(img, half, 30, 20).astype(int)
    expect = np.rint((img[:, :-1].astype(float) + img[:, 1:]) / 2)
    assert np.abs(out[:, :-1] - expect).max() <= 1
    assert np.abs(out[:, -1] - np.rint(img[:, -1] / 2.0)).max() <= 1   # right neighbour is border 0
    shifted = np.array([[1.0, 0, 100], [0, 1.0, 0]])
    assert warp_affine_bilinear(img, shifted, 30, 20).sum() == 0


def test_fit_image_modes():
    img = np.full((100, 200, 3), 200, dtype=np.uint8)
    assert fit_image(img, 50, 50, "stretch").shape == (50, 50, 3)
    pad = fit_image(img, 100, 100, "pad")
    assert pad[0, 50].sum() == 0 and pad[50, 50, 0] == 200 and pad[99, 50].sum() == 0
    crop = fit_image(img, 100, 100, "crop")
    assert (crop == 200).all()


def test_letterbox_top_left_114():
    canvas, r = yolox.letterbox(np.zeros((1024, 576, 3), dtype=np.uint8))
    assert r == pytest.approx(0.625)
    assert (canvas[:, :360] == 0).all() and (canvas[:, 360:] == 114).all()
    tensor, _ = yolox.preprocess(np.dstack([np.full((10, 10), v, np.uint8) for v in (10, 20, 30)]))
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == np.float32
    assert tensor[0, :, 0, 0].tolist() == [30.0, 20.0, 10.0]  # BGR, no normalisation


# --- detector ----------------------------------------------------------------------------------

@pytest.mark.parametrize("example", EXPECTED["worked_examples"], ids=lambda e: "x".join(map(str, e["image_wh"])))
def test_detector_keeps_one_person_box(extractor, example):
    boxes, scores = yolox.detect_people(extractor.detector, example_image(example))
    assert boxes.shape == (1, 4)  # B removed by NMS, C is a car, D below 0.3
    np.testing.assert_allclose(boxes[0], example["person_box_xyxy"], atol=1e-3)
    assert scores[0] == pytest.approx(0.9025, abs=1e-5)


def test_nms_plus_one_convention():
    boxes = np.array([[0, 0, 9, 9], [5, 0, 14, 9], [100, 100, 110, 110]], dtype=float)
    # IoU with +1 areas: inter 5x10=50, union 100+100-50=150 -> 0.333 (kept at 0.45)
    assert yolox.nms(boxes, np.array([0.9, 0.8, 0.7]), 0.45).tolist() == [0, 1, 2]
    assert yolox.nms(boxes, np.array([0.9, 0.8, 0.7]), 0.3).tolist() == [0, 2]


# --- pose model --------------------------------------------------------------------------------

def test_crop_geometry_matches_expected():
    ex = EXPECTED["worked_examples"][0]
    center, scale = rtmpose.box_to_center_scale(np.array(ex["person_box_xyxy"]))
    np.testing.assert_allclose(center, ex["crop_center_xy"], atol=1e-6)
    np.testing.assert_allclose(scale, ex["crop_scale_wh"], atol=1e-6)


def test_simcc_decode_argmax_half_and_negative_scores():
    sx = np.zeros((1, 2, 576))
    sy = np.zeros((1, 2, 768))
    sx[0, 0, 101], sy[0, 0, 300] = 0.8, 0.6
    sx[0, 1] -= 1.0
    sy[0, 1] -= 1.0
    locs, scores = rtmpose.decode_simcc(sx, sy)
    assert locs[0, 0].tolist() == [50.5, 150.0] and scores[0, 0] == pytest.approx(0.6)
    assert locs[0, 1].tolist() == [-0.5, -0.5]


@pytest.mark.parametrize("example", EXPECTED["worked_examples"], ids=lambda e: "x".join(map(str, e["image_wh"])))
@pytest.mark.parametrize("seed", [0, 1])
def test_extraction_matches_expected(extractor, example, seed):
    frame = extractor.detect_frame(example_image(example, seed))
    assert (frame.width, frame.height) == tuple(example["image_wh"])
    assert len(frame.people) == 1
    person = frame.people[0]
    err133 = np.abs(person.wholebody[:, :2] - np.array(example["keypoints133_xy"])).max()
    err18 = np.abs(person.body[:, :2] - np.array(example["openpose18_xy"])).max()
    assert err133 < TOL_PX and err18 < TOL_PX
    np.testing.assert_allclose(person.wholebody[:, 2], example["scores133"], atol=1e-5)
    np.testing.assert_allclose(person.body[:, 2], example["openpose18_score"], atol=1e-5)
    # hands are the subject's: left hand = COCO 91..111, right = 112..132
    np.testing.assert_allclose(person.left_hand[:, :2], np.array(example["keypoints133_xy"])[91:112], atol=TOL_PX)
    np.testing.assert_allclose(person.right_hand[:, :2], np.array(example["keypoints133_xy"])[112:133], atol=TOL_PX)
    np.testing.assert_allclose(person.face[:, :2], np.array(example["keypoints133_xy"])[23:91], atol=TOL_PX)


def test_openpose_reorder_is_simultaneous_and_neck_rule():
    kps = np.stack([np.arange(133, dtype=float), np.zeros(133)], axis=1)
    scores = np.full(133, 0.9)
    p = wholebody_to_openpose(kps, scores)
    # OpenPose slot -> COCO index (neck = mean of 5 and 6 = 5.5)
    expected = [0, 5.5, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
    assert p.body[:, 0].tolist() == expected
    assert p.body[1, 2] == 1.0
    scores[6] = 0.2
    assert wholebody_to_openpose(kps, scores).body[1, 2] == 0.0


class _NoPersonDetector:
    """A detector session whose output holds no box (all-zero scores)."""

    def get_inputs(self):
        class I:  # noqa: E742
            name, shape = "images", [1, 3, 640, 640]
        return [I()]

    def run(self, names, feeds):
        return [np.zeros((1, 8400, 85), dtype=np.float32)]


def test_no_person_gives_empty_frame(extractor):
    ex = DWPoseExtractor.__new__(DWPoseExtractor)
    ex.__dict__.update(extractor.__dict__)
    ex.detector = _NoPersonDetector()
    frame = ex.detect_frame(np.zeros((64, 48, 3), dtype=np.uint8))
    assert frame.people == [] and (frame.width, frame.height) == (48, 64)


# --- models and dependencies ---------------------------------------------------------------------

def test_providers_cpu_fallback_last():
    providers = onnx_providers()
    assert providers[-1] == "CPUExecutionProvider"


def test_finds_models_in_controlnet_aux_layout(tmp_path):
    aux = tmp_path / "custom_nodes" / "comfyui_controlnet_aux" / "ckpts" / "yzd-v" / "DWPose"
    aux.mkdir(parents=True)
    for name in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"):
        (aux / name).write_bytes((FIXTURE / name).read_bytes())
    found = find_dwpose_models([tmp_path / "models" / "dwpose"], custom_nodes_dir=tmp_path / "custom_nodes")
    assert Path(found.detector).parent == aux and Path(found.pose).parent == aux
    with pytest.raises(FileNotFoundError, match="yolox_l.onnx"):
        find_dwpose_models([tmp_path / "nowhere"], include_controlnet_aux=False)


def test_no_opencv_mm_or_absolute_musepose_imports():
    files = sorted((REPO / "musepose" / "pose").rglob("*.py")) + [REPO / "nodes" / "pose_nodes.py"]
    bad = re.compile(r"^\s*(import|from)\s+(cv2|mmcv|mmpose|mmdet|torchvision|musepose)\b", re.M)
    offenders = [str(f.relative_to(REPO)) for f in files if bad.search(f.read_text())]
    assert offenders == []
    assert len(files) >= 10
