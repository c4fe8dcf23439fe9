"""The command line, run as a user runs it (a subprocess)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from conftest import REPO, VECTOR_A, WEIGHTS, load, max_abs


def run_cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "musepose", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_generate_vector_a_with_save_array(tmp_path):
    out = tmp_path / "a.mp4"
    array_path = tmp_path / "a.npy"
    result = run_cli("generate", "--weights-dir", str(WEIGHTS), "--ref", str(VECTOR_A / "inputs" / "ref.png"),
                     "--poses", str(VECTOR_A / "inputs" / "pose"), "--width", "96", "--height", "96", "--frames", "12",
                     "--steps", "3", "--cfg", "3.5", "--seed", "42", "--context-frames", "8", "--context-overlap", "4",
                     "--context-schedule", "uniform", "--dtype", "fp32", "--device", "cpu", "--out", str(out),
                     "--save-array", str(array_path))
    video = np.load(array_path)
    assert video.dtype == np.float32 and video.shape == (12, 96, 96, 3)
    assert max_abs(video, load("video.npy")[0].transpose(1, 2, 3, 0)) <= 2.5e-4
    assert out.stat().st_size > 1000
    assert "time per step" in result.stdout and "peak" in result.stdout

    from musepose.video import read_frames

    decoded, fps = read_frames(out)
    assert decoded.shape == (12, 96, 96, 3) and fps == 12.0
    # h264 is lossy: the decoded mp4 stays close to the float frames (mean error in 8-bit levels).
    assert np.abs(decoded.astype(np.float32) / 255.0 - video).mean() < 0.03


def test_demo_writes_a_video(tmp_path):
    out = tmp_path / "demo.mp4"
    result = run_cli("demo", "--out", str(out))
    assert out.stat().st_size > 1000
    assert "random" in result.stderr.lower()


def test_odd_size_video_is_written(tmp_path):
    from musepose.video import read_frames, write_mp4

    frames = np.random.default_rng(0).random((3, 33, 47, 3)).astype(np.float32)
    path = write_mp4(frames, tmp_path / "odd.mp4", fps=10)
    decoded, fps = read_frames(path)
    assert decoded.shape == (3, 34, 48, 3) and fps == 10.0


def test_missing_weights_message(tmp_path):
    result = run_cli("generate", "--weights-dir", str(tmp_path), "--ref", str(VECTOR_A / "inputs" / "ref.png"),
                     "--poses", str(VECTOR_A / "inputs" / "pose"), "--device", "cpu", "--out", str(tmp_path / "x.mp4"),
                     check=False)
    assert result.returncode == 2
    assert "MusePose/denoising_unet.pth" in result.stderr and "Traceback" not in result.stderr


def test_generate_from_a_driving_video(tmp_path):
    """extract (DWPose stand-ins) -> align -> draw -> generate, in one command."""
    from musepose.video import write_mp4

    video = write_mp4(np.random.default_rng(1).random((6, 128, 96, 3)).astype(np.float32), tmp_path / "dance.mp4", fps=10)
    out = tmp_path / "out.mp4"
    array_path = tmp_path / "out.npy"
    run_cli("generate", "--weights-dir", str(WEIGHTS), "--ref", str(VECTOR_A / "inputs" / "ref.png"),
            "--driving-video", str(video), "--dwpose-dir", str(REPO / "tests" / "fixtures" / "dwpose-tiny"),
            "--width", "96", "--height", "96", "--frames", "5", "--steps", "1", "--context-frames", "4",
            "--context-overlap", "1", "--device", "cpu", "--out", str(out), "--save-array", str(array_path))
    frames = np.load(array_path)
    assert frames.shape == (5, 96, 96, 3) and np.isfinite(frames).all()
    assert out.stat().st_size > 500


def test_driving_video_needs_the_dwpose_folder(tmp_path):
    result = run_cli("generate", "--weights-dir", str(WEIGHTS), "--ref", str(VECTOR_A / "inputs" / "ref.png"),
                     "--driving-video", str(tmp_path / "x.mp4"), "--device", "cpu", check=False)
    assert result.returncode != 0 and "--dwpose-dir" in result.stderr


def test_generate_says_what_memory_configuration_it_picked(tmp_path):
    """auto is the default: the run says on stderr which configuration it picked; a pinned level is kept;
    --decode-chunk 0 sizes decoding to the free memory."""
    common = ["generate", "--weights-dir", str(WEIGHTS), "--ref", str(VECTOR_A / "inputs" / "ref.png"),
              "--poses", str(VECTOR_A / "inputs" / "pose"), "--width", "96", "--height", "96", "--frames", "4",
              "--steps", "1", "--context-frames", "4", "--context-overlap", "1", "--device", "cpu", "--precision", "fp32"]
    auto = run_cli(*common, "--out", str(tmp_path / "a.mp4"))
    assert "memory: offload none, CFG batched" in auto.stderr  # plenty of RAM: the fastest configuration
    assert "decode: 4 frame(s) per VAE call" in auto.stderr
    pinned = run_cli(*common, "--offload", "lowvram", "--cfg-mode", "sequential", "--vram-gb", "0.5",
                     "--out", str(tmp_path / "b.mp4"))
    assert "memory: offload lowvram, CFG sequential" in pinned.stderr and "streamed within" in pinned.stderr


def test_bad_frame_and_decode_counts_are_refused_by_name(tmp_path):
    """--frames 0 used to end in "no image files in folder"; --decode-chunk 0 was silently 1 (now: auto)."""
    common = ["generate", "--weights-dir", str(WEIGHTS), "--ref", str(VECTOR_A / "inputs" / "ref.png"),
              "--poses", str(VECTOR_A / "inputs" / "pose"), "--device", "cpu", "--out", str(tmp_path / "x.mp4")]
    result = run_cli(*common, "--frames", "0", check=False)
    assert result.returncode == 2 and "--frames must be at least 1 (got 0)" in result.stderr
    assert "no image files" not in result.stderr
    result = run_cli(*common, "--decode-chunk", "-2", check=False)
    assert result.returncode == 2 and "--decode-chunk must be at least 0 (got -2)" in result.stderr


def test_plan_prints_auto_and_every_level():
    result = run_cli("plan", "--width", "768", "--height", "768", "--vram-gb", "6")
    lines = result.stdout.splitlines()
    assert any(line.startswith("auto     fits: offload model") for line in lines), result.stdout
    for level in ("none     DOES NOT FIT", "model    fits", "lowvram  fits"):
        assert any(line.startswith(level) for line in lines), level


def test_convert_takes_the_same_precision_word_as_generate():
    """--precision is the word generate and the nodes use; --dtype stays as its alias. fp8 is refused by
    name: it is a load-time storage format, not something convert writes."""
    from musepose.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["convert", "--weights-dir", "w", "--out", "o", "--precision", "bf16"]).dtype == "bf16"
    assert parser.parse_args(["convert", "--weights-dir", "w", "--out", "o", "--dtype", "fp32"]).dtype == "fp32"
    result = run_cli("convert", "--weights-dir", str(WEIGHTS), "--out", "unused", "--precision", "fp8", check=False)
    assert result.returncode == 2 and "invalid choice: 'fp8'" in result.stderr


def test_a_message_during_sampling_gets_a_line_of_its_own(capsys):
    """A step-down said while the progress bar is shown starts its own line (on the GPU it was glued to the
    end of the bar's line, where a reader, and `grep ^memory`, missed it)."""
    from musepose.cli import _ProgressBar

    bar = _ProgressBar("sampling", lambda: "elapsed 0:01")
    bar(1, 4)
    bar.write("memory: out of memory; stepping down to offload model")
    bar(4, 4)
    lines = [part for line in capsys.readouterr().err.splitlines() for part in line.split("\r")]
    assert "memory: out of memory; stepping down to offload model" in lines
