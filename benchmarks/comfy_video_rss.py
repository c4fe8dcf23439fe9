#!/usr/bin/env python
"""Host memory vs video length in the real ComfyUI: the server's peak RSS for the pose-video workflow in
three forms, each at two lengths: ``image`` as shipped (Get Video Components' IMAGE batch into the Sampler,
MusePose Decode -> CreateVideo -> SaveVideo), ``video`` ending in MusePose Decode to Video (core VIDEO,
written as it is decoded), ``pose-video`` also giving Load Video's VIDEO to the Sampler's pose_video (read
as uint8: no IMAGE batch anywhere).

Each run is a fresh server (tests/comfy_support.py: ComfyUI at $COMFYUI_PATH on the CPU, the tiny weights)
that runs one prompt; its peak resident set size is the kernel's ``VmHWM`` of the server process when the
prompt has finished. The growth per frame between the two lengths is what a longer video costs the server;
everything that does not depend on the length cancels out.

What a frame costs at least (the floor printed beside each path): the Sampler keeps the pose frame once as
uint8 (``3*H*W`` bytes) and holds the latent state (five float32 latent copies, as ``rss_length.py``); with
Get Video Components the pose video also arrives as a float32 IMAGE batch (``12*H*W``, ComfyUI's type). The
IMAGE path adds at least its float32 IMAGE output (``12*H*W``).

    eval "$(bash .ci/comfyui-hosts /work/hosts)"; export COMFYUI_PYTHON COMFYUI_PATH=$COMFYUI_PATH_0_8
    python benchmarks/comfy_video_rss.py --size 160 --lengths 24,96
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

MB = 1e6
LATENT_COPIES = 5  # as benchmarks/rss_length.py


def floor_bytes_per_frame(size: int, path: str) -> int:
    """The pose frame as uint8, the float32 IMAGE input where there is one, the latent state (docstring)."""
    image_input = 0 if path == "pose-video" else 12
    return size * size * (image_input + 3) + LATENT_COPIES * 4 * (size // 8) ** 2 * 4


def write_pose_video(path: Path, size: int, frames: int, fps: int = 8) -> None:
    """``frames`` pose frames at ``size`` x ``size``: the fixture's 12 renders, upscaled, repeated."""
    import av
    from PIL import Image
    from test_nodes_support import VECTOR_A

    renders = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.NEAREST))
               for p in sorted((VECTOR_A / "inputs" / "pose").glob("*.png"))]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for i in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(renders[i % len(renders)], format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def graph(path: str, size: int, args) -> dict:
    """The shipped pose-video workflow at ``size``: ``image`` as shipped (IMAGE in, MusePose Decode ->
    CreateVideo out), ``video`` ending in Decode to Video, ``pose-video`` also reading the pose video straight
    into the Sampler's pose_video (no IMAGE batch anywhere)."""
    from comfy_support import tiny_workflow, with_decode_to_video, with_pose_video_input

    g = tiny_workflow("musepose_video", width=size, height=size, steps=args.steps,
                      context_frames=args.context_frames, context_overlap=args.context_overlap)
    g = {"image": lambda g: g, "video": with_decode_to_video, "pose-video": with_pose_video_input}[path](g)
    for node in g.values():  # a fixed chunk: auto sizes it to the free memory, so it would grow with the length
        if node["class_type"] in ("MusePoseDecode", "MusePoseDecodeToVideo"):
            node["inputs"]["chunk_size"] = args.chunk_size
    return g


def peak_rss(pid: int) -> int:
    """The process's peak resident set size in bytes (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def measure(path: str, frames: int, args) -> tuple[int, float]:
    """(the server's peak RSS after one prompt, the prompt's wall seconds)."""
    from comfy_support import start_server

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp))
        try:
            write_pose_video(server.base / "input" / "musepose_poses.mp4", args.size, frames)
            started = time.perf_counter()
            entry = server.wait(server.queue(graph(path, args.size, args)), timeout=args.timeout)
            wall = time.perf_counter() - started
            if entry["status"]["status_str"] != "success":
                raise RuntimeError(f"{path} {frames} frames failed:\n{server.log_text()[-3000:]}")
            return peak_rss(server.proc.pid), wall
        finally:
            server.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--lengths", default="24,120")
    p.add_argument("--paths", default="pose-video,video,image")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--context-frames", type=int, default=12)
    p.add_argument("--context-overlap", type=int, default=4)
    p.add_argument("--chunk-size", type=int, default=12, help="frames per VAE decode call (0 = auto: as many "
                   "as the free memory allows, which grows with the length on a roomy host)")
    p.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args(argv)
    lengths = sorted(int(n) for n in args.lengths.split(","))
    print(f"server peak RSS, ComfyUI at {__import__('comfy_support').COMFYUI}, {args.size}x{args.size}, "
          f"{args.steps} step(s), context {args.context_frames}/{args.context_overlap}, decode chunk "
          f"{args.chunk_size or 'auto'}", flush=True)
    table = ["| path | " + " | ".join(f"{n} frames GiB" for n in lengths) + " | growth MB/frame | floor MB/frame |",
             "|---|" + "---|" * (len(lengths) + 2)]
    for path in args.paths.split(","):
        rows = []
        for frames in lengths:
            rss, wall = measure(path, frames, args)
            rows.append(rss)
            print(f"  {path} {frames} frames: peak RSS {rss / 2**30:.3f} GiB ({wall:.0f} s)", flush=True)
        growth = (rows[-1] - rows[0]) / (lengths[-1] - lengths[0])
        table.append(f"| {path} | " + " | ".join(f"{r / 2**30:.3f}" for r in rows) +
                     f" | {growth / MB:.3f} | {floor_bytes_per_frame(args.size, path) / MB:.3f} |")
    print("\n" + "\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
