#!/usr/bin/env python
"""A whole one-shot job, ours vs the original algorithm: wall time and peak RSS of a process that loads the
weights, encodes the reference, samples and decodes, then writes the video.

* ``ours``: ``python -m musepose generate`` as a user runs it (auto memory policy; each network is read when
  it is first needed and dropped after its last use);
* ``original``: the original's job shape: every network loaded up front and kept, the original algorithm's
  costs (benchmarks/original_costs.py: doubled reference pass, whole-video pose guider, per-frame reference
  bank, diffusers' block forwards), one frame per VAE decode.

The weights are random fp16 tensors with the exact keys and shapes of the official files
(tests/fixtures/musepose-full-keys.json), written once in the compact layout (about 5 GB) and, for
``--layout official``, once more in the official download's layout and formats (about 16 GB, see
:func:`prepare_official`). ``--layout`` picks what both jobs read:

* ``official`` (default): the files a user downloads, each job loading them its own way: ours through
  the engine's loader (memory-mapped, only the tensors it needs), the original as its ``test_stage_2.py``
  does (:func:`load_like_original`: the SD base UNet read twice, the denoising UNet initialised before
  loading, each stage-1 ``.pth`` read whole);
* ``compact``: both read the compact safetensors through the engine's loader, so only the algorithm
  and the job shape differ.

Before each job the weight files are dropped from the page cache (``posix_fadvise``), so each job reads
its weights from disk, as a one-shot run does; ``--keep-cache`` skips that.

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
#: The SD base UNet's weights in the official layout: the engine reads only the config beside them; the
#: original reads them twice.
BASE_UNET_FILE = "sd-image-variations-diffusers/unet/diffusion_pytorch_model.bin"


def official_file(root: Path, name: str) -> Path:
    """Where the official download keeps a component's file (``FILES``: the key file's group and path)."""
    group, file = FILES[name]
    return root / ("MusePose" if group == "official_files" else "") / file


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


def prepare_official(compact: Path) -> Path:
    """The compact random weights again, in the official download's layout and formats (skipped when done).

    As the key file records for the released files: ``denoising_unet.pth``, ``reference_unet.pth`` and
    ``pose_guider.pth`` each serialise ONE shared ~3.4 GB fp16 buffer (denoising UNet + reference UNet
    without ``up_blocks.3`` + pose guider), every tensor a view into it, and ``reference_unet.pth`` holds
    its ``up_blocks.3`` tensors separately; ``motion_module.pth`` is plain fp16; the SD base UNet, CLIP and
    the VAE are fp32 ``.bin`` files (the base UNet's values are the denoising UNet's: only its cost matters).
    """
    import shutil

    import torch
    from safetensors import safe_open

    root = compact / "official"
    done = root / "complete"
    if done.exists():
        return root

    def tensors(name: str) -> dict[str, torch.Tensor]:
        with safe_open(str(compact / f"{name}.safetensors"), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}

    def save(state: dict[str, torch.Tensor], target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, target)

    denoising, reference, pose = tensors("denoising_unet"), tensors("reference_unet"), tensors("pose_guider")
    separate = {k: v.clone() for k, v in reference.items() if k.startswith("up_blocks.3.")}
    parts = [("denoising_unet", denoising), ("reference_unet", {k: v for k, v in reference.items() if k not in separate}),
             ("pose_guider", pose)]
    flat = torch.empty(sum(t.numel() for _, part in parts for t in part.values()), dtype=torch.float16)
    views: dict[str, dict[str, torch.Tensor]] = {name: {} for name, _ in parts}
    offset = 0
    for name, part in parts:
        for key, tensor in part.items():
            view = flat[offset:offset + tensor.numel()].view(tensor.shape)
            view.copy_(tensor)
            views[name][key] = view
            offset += tensor.numel()
    views["reference_unet"].update(separate)
    for name, state in views.items():
        save(state, official_file(root, name))  # each file serialises the whole shared buffer
    del flat, views, separate, reference, pose
    save(tensors("motion_module"), official_file(root, "motion_module"))
    save({k: v.float() for k, v in denoising.items()}, root / BASE_UNET_FILE)
    del denoising
    for name in ("image_encoder", "vae"):
        save({k: v.float() for k, v in tensors(name).items()}, official_file(root, name))
    for source, weights in (("unet_config.json", root / BASE_UNET_FILE),
                            ("image_encoder_config.json", official_file(root, "image_encoder")),
                            ("vae_config.json", official_file(root, "vae"))):
        shutil.copyfile(compact / source, weights.parent / "config.json")
    done.write_text("")
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"wrote {root} ({size / 1e9:.1f} GB)", flush=True)
    return root


def weight_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.suffix in (".safetensors", ".pth", ".bin")]


def drop_from_page_cache(files: list[Path]) -> None:
    """Make the next job read these files from disk (Linux; a no-op elsewhere)."""
    import os

    if not hasattr(os, "posix_fadvise"):
        return
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def load_like_original(root: Path):
    """The five networks loaded as the original's ``test_stage_2.py`` loads them (its ``torch.load`` calls
    pass no ``mmap``, so each file is read whole into memory):

    1. the VAE and CLIP from their fp32 files (``from_pretrained``: read whole, as the engine's loader does);
    2. the reference UNet: diffusers' ``from_pretrained`` of the SD base UNet (no initialisation; the base
       file read whole, its tensors kept as the weights);
    3. the denoising UNet: ``from_pretrained_2d``: built with initialisation (``from_config``), the base file
       read again, the motion module merged without its PE keys, ``load_state_dict``;
    4. ``denoising_unet.pth``, ``reference_unet.pth`` and ``pose_guider.pth`` loaded on top: each
       ``torch.load`` materialises the whole shared ~3.4 GB buffer.
    """
    import torch

    from musepose.weights import load_models
    from musepose.weights.keymaps import is_motion_pe_key, motion_key
    from musepose.weights.layout import WeightPaths
    from musepose.weights.loader import build_models

    paths = WeightPaths.from_root(root)
    base_file = root / BASE_UNET_FILE

    def read(path: Path) -> dict[str, torch.Tensor]:
        return torch.load(path, map_location="cpu", weights_only=True)

    models = load_models(root, dtype=torch.float32, components=("vae", "image_encoder"))
    reference = build_models(models.unet_config, components=["reference_unet"]).reference_unet  # meta: no init
    base = read(base_file)
    wanted = set(reference.state_dict())  # the base file also holds conv_norm_out/conv_out, which it lacks
    reference.load_state_dict({k: v for k, v in base.items() if k in wanted}, assign=True)
    del base
    built = build_models(models.unet_config, device="cpu", components=["denoising_unet", "pose_guider"])
    denoising, pose_guider = built.denoising_unet, built.pose_guider
    state = read(base_file)
    state.update({motion_key(k): v for k, v in read(paths.motion_module).items() if not is_motion_pe_key(k)})
    loaded = set(state)
    denoising.load_state_dict(state, strict=False)
    del state
    stage1 = read(paths.denoising_unet)
    loaded |= set(stage1)
    denoising.load_state_dict(stage1, strict=False)
    del stage1
    unloaded = [k for k in denoising.state_dict() if k not in loaded and not k.endswith(".pe")]
    if unloaded:
        raise SystemExit(f"load_like_original: {len(unloaded)} denoising UNet weights not loaded: {unloaded[:5]}")
    reference.load_state_dict(read(paths.reference_unet))
    pose_guider.load_state_dict(read(paths.pose_guider))
    models.reference_unet, models.denoising_unet, models.pose_guider = reference, denoising, pose_guider
    return models


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
    if args.layout == "official":
        models = load_like_original(args.weights)
    else:
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
    p.add_argument("--layout", choices=["official", "compact"], default="official",
                   help="the weight files both jobs read (see the module docstring)")
    p.add_argument("--keep-cache", action="store_true", help="do not drop the weight files from the page cache")
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
    root = prepare_official(args.weights) if args.layout == "official" else args.weights
    size = ["--width", str(args.width), "--height", str(args.height), "--frames", str(args.frames),
            "--steps", str(args.steps)]
    ours = [sys.executable, "-m", "musepose", "generate", "--weights-dir", str(root), "--ref", str(ref),
            "--poses", str(poses), *size, "--context-frames", str(args.frames), "--precision", "fp32", "--device",
            "cpu", "--out", str(args.weights / "ours.mp4")]
    original = [sys.executable, str(Path(__file__).resolve()), "--child", "original", "--weights", str(root),
                "--layout", args.layout, "--ref", str(ref), "--poses", str(poses), *size, "--threads", str(args.threads),
                "--out", str(args.weights / "original.mp4")]
    env_threads = f"OMP_NUM_THREADS={args.threads}"
    print(f"job: full-size architecture, fp32 on the CPU ({env_threads}), {args.width}x{args.height}x{args.frames}, "
          f"one window, {args.steps} steps, decode of every frame, mp4 written; {args.layout} layout, "
          f"{'page cache kept' if args.keep_cache else 'weights read from disk'}", flush=True)
    results = {}
    for name, command in (("original", original), ("ours", ours)):
        if not args.keep_cache:
            drop_from_page_cache(weight_files(root))
        wall, rss, text = timed(command)
        results[name] = (wall, rss)
        memory = next((line for line in text.splitlines() if line.startswith("memory: ")), "")
        print(f"{name:8s}: wall {wall:7.1f} s, peak RSS {rss:6.2f} GiB {memory}", flush=True)
    (ow, orss), (w, rss) = results["original"], results["ours"]
    print(f"ours / original: wall {w / ow:.2f}x, peak RSS {rss / orss:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
