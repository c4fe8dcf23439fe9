"""Frames per second of DWPose extraction: the torch backend against onnxruntime (not a timed test).

Full-size architecture-shaped random-weight graphs (benchmarks/dwpose_graphs.py: YOLOX-L-like detector
on a 640x640 letterbox, RTMPose-l-like pose model on 288x384 crops) stand in for the real files, which
are not available here; their operators, shapes and FLOP counts are the real ones'. Each frame is a full
extraction (letterbox, detector, decode, crops, pose model, SimCC decode); the pose model gets the crops
of ``--people`` boxes in one batch, as the real pipeline does. The detector's output is replaced by
``--people`` fixed boxes so that the work per frame does not depend on what random weights "detect".

    python benchmarks/pose_backends.py                       # CPU, 512x512 and 1280x720
    python benchmarks/pose_backends.py --device cuda --quick --json out.json   # < 90 s on a GPU

Imports only numpy, torch, onnx, the pose engine (no diffusers, no av) and, if installed, onnxruntime.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.dwpose_graphs import build  # noqa: E402
from musepose.pose import rtmpose, yolox  # noqa: E402
from musepose.pose.models import pose_dtype  # noqa: E402
from musepose.pose.onnx_torch import TorchOnnxSession  # noqa: E402

SIZES = {"512x512": (512, 512), "1280x720": (1280, 720)}


def fixed_boxes(w: int, h: int, people: int) -> np.ndarray:
    """``people`` person-sized boxes side by side across a W x H frame."""
    step = w / people
    return np.array([[i * step + 0.1 * step, 0.1 * h, (i + 0.9) * step, 0.95 * h] for i in range(people)])


def extract_frame(det, pose, frame: np.ndarray, people: int) -> None:
    """One frame's extraction through ``det`` and ``pose`` sessions (either backend)."""
    tensor, ratio = yolox.preprocess(frame)
    raw = det.run(None, {"images": tensor})[0]
    yolox.person_boxes(raw[0], ratio)  # the real decode + NMS cost, on random scores
    rtmpose.estimate(pose, frame, fixed_boxes(frame.shape[1], frame.shape[0], people))


def time_backend(det, pose, size: tuple[int, int], people: int, frames: int, sync) -> float:
    """Frames per second over ``frames`` frames after two warm-up frames."""
    w, h = size
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    for _ in range(2):
        extract_frame(det, pose, frame, people)
    sync()
    start = time.perf_counter()
    for _ in range(frames):
        extract_frame(det, pose, frame, people)
    sync()
    return frames / (time.perf_counter() - start)


def sessions(backend: str, files: dict, device: torch.device):
    """(detector, pose) sessions of ``backend`` ("torch" or "onnxruntime") on ``device``, or None."""
    if backend == "torch":
        dtype = pose_dtype(device)
        return TorchOnnxSession(files["detector"], device, dtype), TorchOnnxSession(files["pose"], device, dtype)
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return None  # a CPU-only onnxruntime on a GPU machine: nothing to compare on the GPU
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return tuple(ort.InferenceSession(str(files[k]), opts, providers=providers) for k in ("detector", "pose"))


def run(args) -> dict:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    width, depth = (0.5, 0.34) if args.quick else (1.0, 1.0)
    frames = args.frames or (5 if args.quick else 10)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for kind in ("detector", "pose"):
            files[kind] = Path(tmp) / f"{kind}.onnx"
            files[kind].write_bytes(build(kind, width, depth))
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        results = []
        for backend in ("torch", "onnxruntime"):
            pair = sessions(backend, files, device)
            if pair is None:
                print(f"{backend}: not available on {device}, skipped", flush=True)
                continue
            for name, size in SIZES.items():
                fps = time_backend(*pair, size, args.people, frames, sync)
                row = {"backend": backend, "size": name, "fps": round(fps, 3), "ms_per_frame": round(1000 / fps, 1)}
                results.append(row)
                print(json.dumps(row), flush=True)
    return {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "graphs": {"width": width, "depth": depth}, "people": args.people,
            "frames": frames, "torch_dtype": str(pose_dtype(device)), "results": results}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 ...")
    p.add_argument("--quick", action="store_true",
                   help="half-width, third-depth graphs and 5 frames: under 90 s on a GPU (the figures are not "
                        "the full-size ones)")
    p.add_argument("--frames", type=int, default=0, help="timed frames per backend and size (default 10, quick 5)")
    p.add_argument("--people", type=int, default=1, help="person boxes per frame (one pose batch)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", default=None, help="write the results here as JSON")
    args = p.parse_args(argv)
    started = time.perf_counter()
    report = run(args)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "results"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
