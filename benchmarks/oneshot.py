#!/usr/bin/env python
"""A whole one-shot job, ours vs the original algorithm: wall time and peak RSS of a process that loads the
weights, encodes the reference, samples and decodes, then writes the video.

* ``ours``: ``python -m musepose generate`` as a user runs it (auto memory policy; each network is read when
  it is first needed and dropped after its last use);
* ``original``: the original's job shape: every network loaded up front and kept, the original algorithm's
  costs (benchmarks/original_costs.py: doubled reference pass, whole-video pose guider, per-frame reference
  bank, diffusers' block forwards), one frame per VAE decode.

Both read the same full-size weights: random fp16 tensors with the exact keys and shapes of the official
files (tests/fixtures/musepose-full-keys.json), written once in the compact layout (about 5 GB).

    python benchmarks/oneshot.py --weights /tmp/musepose-random --width 256 --height 256 --frames 16 --steps 2
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

FILES = {"denoising_unet": ("official_files", "denoising_unet.pth"),
         "reference_unet": ("official_files", "reference_unet.pth"),
         "pose_guider": ("official_files", "pose_guider.pth"),
         "motion_module": ("official_files", "motion_module.pth"),
         "image_encoder": ("other_files", "image_encoder/pytorch_model.bin"),
         "vae": ("other_files", "sd-vae-ft-mse/diffusion_pytorch_model.bin")}
CONFIGS = {"unet_config.json": "sd_image_variations_unet_config", "image_encoder_config.json": "clip_image_encoder",
           "vae_config.json": "vae"}


def _keys_and_shapes(layout: dict, group: str, file: str) -> list[tuple[str, list[int]]]:
    """The file's keys and shapes: listed in the key file, or (the VAE, whose key list it does not hold)
    read off the loader's VAE built from the listed config on the meta device."""
    entry = layout[group][file]
    if "keys" in entry:
        return [(key, shape) for key, shape, _dtype in entry["keys"]]
    import torch

    from musepose.weights.loader import build_vae

    with torch.device("meta"):
        vae = build_vae(layout["configs"]["vae"])
    return [(key, list(t.shape)) for key, t in vae.state_dict().items()]


def prepare(folder: Path) -> Path:
    """Random full-size weights in the compact layout (skipped when the folder is complete)."""
    import torch

    from musepose.weights.io import save_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    layout = json.loads((REPO / "tests" / "fixtures" / "musepose-full-keys.json").read_text())
    generator = torch.Generator().manual_seed(0)
    for name, (group, file) in FILES.items():
        target = folder / f"{name}.safetensors"
        if target.exists():
            continue
        tensors = {}
        for key, shape in _keys_and_shapes(layout, group, file):
            if key.endswith("position_ids"):
                continue
            if len(shape) >= 2:  # fan-in scaled weights keep activations finite through ~100 layers
                fan_in = 1
                for n in shape[1:]:
                    fan_in *= n
                tensor = torch.randn(shape, generator=generator) * (0.7 / fan_in ** 0.5)
            elif re.search(r"(norm|ln)[^.]*\.weight$|layer_norm\d?\.weight$", key):
                tensor = torch.ones(shape)
            else:
                tensor = torch.zeros(shape)
            tensors[key] = tensor.to(torch.float16)
        save_safetensors(tensors, target)
        print(f"wrote {target} ({target.stat().st_size / 1e9:.2f} GB)", flush=True)
        del tensors
    for file, key in CONFIGS.items():
        config = dict(layout["configs"][key])
        (folder / file).write_text(json.dumps(config, indent=1))
    return folder


def inputs(folder: Path, width: int, height: int, frames: int) -> tuple[Path, Path]:
    """A reference image and pose frames (sparse bright strokes, like renders)."""
    import numpy as np
    from PIL import Image

    ref = folder / "inputs" / "ref.png"
    poses = folder / "inputs" / f"poses-{width}x{height}x{frames}"
    poses.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(ref)
    for i in range(frames):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[(i * 7) % height:(i * 7) % height + max(2, height // 32), width // 4:3 * width // 4] = 255
        Image.fromarray(frame).save(poses / f"{i:04d}.png")
    return ref, poses


def run_original(args) -> None:
    """The original's job shape in this process (see module docstring); prints its report line."""
    import torch

    from musepose.device import peak_rss_bytes
    from musepose.pipeline import EnginePlacement, SamplingSettings
    from musepose.video import read_frames, read_image_rgb, write_mp4
    from musepose.weights import load_models
    from original_costs import OriginalCostPipeline

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    models = load_models(args.weights, dtype=torch.float32)  # everything, up front, kept
    pipe = OriginalCostPipeline(models, placement=EnginePlacement("cpu"))
    poses, _ = read_frames(args.poses)
    settings = SamplingSettings(width=args.width, height=args.height, frames=args.frames, steps=args.steps,
                                context_frames=args.frames, context_overlap=4)
    latents = pipe.sample(read_image_rgb(args.ref), poses, settings)
    video = pipe.decode(latents)
    write_mp4(video.numpy(), args.out, fps=12)
    print(f"RESULT wall {time.perf_counter() - started:.1f} s, peak RSS {peak_rss_bytes() / 2**30:.2f} GiB", flush=True)


def timed(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS GiB of the child, its output)."""
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{command[:4]} failed:\n{proc.stderr[-3000:]}")
    text = proc.stdout + proc.stderr
    rss = float(re.findall(r"peak RSS ([0-9.]+) GiB", text)[-1])
    return wall, rss, text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=Path("/tmp/musepose-random-weights"))
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", choices=["original"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--ref", default=None, help=argparse.SUPPRESS)
    p.add_argument("--poses", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child == "original":
        run_original(args)
        return 0
    prepare(args.weights)
    ref, poses = inputs(args.weights, args.width, args.height, args.frames)
    size = ["--width", str(args.width), "--height", str(args.height), "--frames", str(args.frames),
            "--steps", str(args.steps)]
    ours = [sys.executable, "-m", "musepose", "generate", "--weights-dir", str(args.weights), "--ref", str(ref),
            "--poses", str(poses), *size, "--context-frames", str(args.frames), "--precision", "fp32", "--device",
            "cpu", "--out", str(args.weights / "ours.mp4")]
    original = [sys.executable, str(Path(__file__).resolve()), "--child", "original", "--weights", str(args.weights),
                "--ref", str(ref), "--poses", str(poses), *size, "--threads", str(args.threads),
                "--out", str(args.weights / "original.mp4")]
    env_threads = f"OMP_NUM_THREADS={args.threads}"
    print(f"job: full-size architecture, fp32 on the CPU ({env_threads}), {args.width}x{args.height}x{args.frames}, "
          f"one window, {args.steps} steps, decode of every frame, mp4 written", flush=True)
    results = {}
    for name, command in (("original", original), ("ours", ours)):
        wall, rss, text = timed(command)
        results[name] = (wall, rss)
        memory = next((line for line in text.splitlines() if line.startswith("memory: ")), "")
        print(f"{name:8s}: wall {wall:7.1f} s, peak RSS {rss:6.2f} GiB {memory}", flush=True)
    (ow, orss), (w, rss) = results["original"], results["ours"]
    print(f"ours / original: wall {w / ow:.2f}x, peak RSS {rss / orss:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
