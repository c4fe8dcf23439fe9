"""The ``poses`` CLI: in-process through ``main(argv)``, and as ``python -m musepose poses ...`` and
``python -m musepose.pose.cli`` (the same parser) subprocesses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from musepose.pose.cli import main
from musepose.pose.driving import driving_video_to_pose_frames
from musepose.pose.models import CPU_PREFERENCE
from musepose.video import read_frames, write_mp4

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "dwpose-tiny"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
TOL_PX = 0.05


def write_image(path: Path, w: int, h: int, seed: int = 0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def driving_video(tmp_path_factory) -> Path:
    w, h = EXPECTED["worked_examples"][1]["image_wh"]
    frames = np.random.default_rng(1).integers(0, 256, (6, h, w, 3), dtype=np.uint8)
    return write_mp4(frames, tmp_path_factory.mktemp("vid") / "drive.mp4", fps=24.0)


def check_expected(data: list, example: dict, n_frames: int) -> float:
    assert isinstance(data, list) and len(data) == n_frames
    worst = 0.0
    for frame in data:
        assert [frame["canvas_width"], frame["canvas_height"]] == example["image_wh"]
        body = np.asarray(frame["people"][0]["pose_keypoints_2d"]).reshape(-1, 3)
        wb = np.asarray(frame["people"][0]["wholebody_keypoints_2d"]).reshape(-1, 3)
        worst = max(worst, np.abs(body[:, :2] - example["openpose18_xy"]).max(),
                    np.abs(wb[:, :2] - example["keypoints133_xy"]).max())
    assert worst < TOL_PX
    return worst


@pytest.mark.parametrize("backend", ["auto", "torch", "onnxruntime"])
@pytest.mark.parametrize("example", EXPECTED["worked_examples"], ids=lambda e: "x".join(map(str, e["image_wh"])))
def test_extract_image_main(tmp_path, example, backend, capsys):
    img = write_image(tmp_path / "in.png", *example["image_wh"])
    out = tmp_path / "poses.json"
    assert main(["poses", "extract", "--dwpose-dir", str(FIXTURE), "--input", str(img), "--out-json", str(out),
                 "--quiet", "--device", "cpu", "--pose-backend", backend]) == 0
    check_expected(json.loads(out.read_text()), example, 1)
    ran = CPU_PREFERENCE if backend == "auto" else backend  # the tests install onnxruntime: auto picks as documented
    assert f"pose: {ran} on cpu" in capsys.readouterr().err


def test_extract_folder_and_video_main(tmp_path, driving_video):
    example = EXPECTED["worked_examples"][0]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        write_image(folder / f"{i}.png", *example["image_wh"], seed=i)
    out = tmp_path / "folder.json"
    main(["poses", "extract", "--dwpose-dir", str(FIXTURE), "--input", str(folder), "--out-json", str(out), "--quiet"])
    check_expected(json.loads(out.read_text()), example, 3)
    out2 = tmp_path / "video.json"
    main(["poses", "extract", "--dwpose-dir", str(FIXTURE), "--input", str(driving_video), "--out-json", str(out2),
          "--every-nth", "2", "--quiet"])
    check_expected(json.loads(out2.read_text()), EXPECTED["worked_examples"][1], 3)


def test_align_video_to_mp4_and_json_to_folder(tmp_path, driving_video):
    ref = write_image(tmp_path / "ref.png", *EXPECTED["worked_examples"][0]["image_wh"])
    out_mp4 = tmp_path / "aligned.mp4"
    main(["poses", "align", "--dwpose-dir", str(FIXTURE), "--ref", str(ref), "--driving-video", str(driving_video),
          "--width", "256", "--height", "384", "--out", str(out_mp4), "--max-frames", "4", "--quiet"])
    frames, fps = read_frames(out_mp4)
    assert frames.shape == (4, 384, 256, 3) and fps == pytest.approx(24.0)
    js = tmp_path / "drive.json"
    main(["poses", "extract", "--dwpose-dir", str(FIXTURE), "--input", str(driving_video), "--out-json", str(js),
          "--quiet"])
    out_dir = tmp_path / "aligned_png"
    main(["poses", "align", "--dwpose-dir", str(FIXTURE), "--ref", str(ref), "--driving-json", str(js),
          "--width", "256", "--height", "384", "--out", str(out_dir), "--align-frame", "0", "--smooth", "--quiet"])
    pngs = sorted(out_dir.glob("*.png"))
    assert len(pngs) == 6
    png0 = np.asarray(Image.open(pngs[0]))
    assert png0.shape == (384, 256, 3) and png0.sum() > 0


def test_driving_video_to_pose_frames_library_call(driving_video):
    ref = np.random.default_rng(5).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    renders, fps = driving_video_to_pose_frames(FIXTURE, ref, driving_video, 320, 448, every_nth=2,
                                                align_frame="auto", person="largest", smooth=False)
    assert renders.dtype == np.uint8 and renders.shape == (3, 448, 320, 3)
    assert fps == pytest.approx(12.0)
    # the same template in reference and video: neck->right shoulder limb (blue after the swap) is drawn
    assert ((renders[0] == (0, 0, 153)).all(axis=-1)).sum() > 20
    with pytest.raises(TypeError, match="unknown"):
        driving_video_to_pose_frames(FIXTURE, ref, driving_video, 64, 64, not_an_option=1)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_subprocess_pose_cli_module(tmp_path):
    example = EXPECTED["worked_examples"][1]
    img = write_image(tmp_path / "in.png", *example["image_wh"])
    out = tmp_path / "poses.json"
    proc = _run(["musepose.pose.cli", "poses", "extract", "--dwpose-dir", str(FIXTURE), "--input", str(img),
                 "--out-json", str(out)])
    assert proc.returncode == 0, proc.stderr
    check_expected(json.loads(out.read_text()), example, 1)


def test_subprocess_python_m_musepose_poses_extract(tmp_path):
    example = EXPECTED["worked_examples"][0]
    img = write_image(tmp_path / "in.png", *example["image_wh"])
    out = tmp_path / "poses.json"
    proc = _run(["musepose", "poses", "extract", "--dwpose-dir", str(FIXTURE), "--input", str(img),
                 "--out-json", str(out)])
    assert proc.returncode == 0, proc.stderr
    check_expected(json.loads(out.read_text()), example, 1)


def test_generate_driving_video_without_frames(tmp_path):
    """``generate --driving-video ... --dwpose-dir ...`` with no ``--frames`` uses every frame (was int(None))."""
    weights = REPO / "tests" / "fixtures" / "musepose-tiny" / "pretrained_weights"
    ref = REPO / "tests" / "fixtures" / "musepose-tiny" / "vector_a" / "inputs" / "ref.png"
    frames = np.random.default_rng(2).integers(0, 256, (5, 128, 96, 3), dtype=np.uint8)
    video = write_mp4(frames, tmp_path / "dance.mp4", fps=10.0)
    array_path = tmp_path / "out.npy"
    proc = _run(["musepose", "generate", "--weights-dir", str(weights), "--ref", str(ref),
                 "--driving-video", str(video), "--dwpose-dir", str(FIXTURE), "--width", "96", "--height", "96",
                 "--steps", "1", "--context-frames", "4", "--context-overlap", "1", "--device", "cpu",
                 "--out", str(tmp_path / "out.mp4"), "--save-array", str(array_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.load(array_path)
    assert out.shape == (5, 96, 96, 3) and np.isfinite(out).all()


def test_split_options_none_means_default():
    from musepose.pose.driving import split_options

    sel, align, draw = split_options({"max_frames": None, "start_frame": None, "every_nth": None, "person": "largest"})
    assert (sel.start_frame, sel.every_nth, sel.max_frames) == (0, 1, 0)
    assert align == {"person": "largest"} and draw == {}
