#!/usr/bin/env python
"""Host memory vs video length: peak RSS of a whole ``python -m musepose generate`` process at two lengths.

Each run is a fresh process (the CLI as a user runs it: load, encode, sample, decode, write the mp4); its
peak resident set size comes from the kernel when it ends (``os.wait4``: the child's own ``ru_maxrss``, so
nothing in this process counts). The growth per output frame between the two lengths is what a longer
video costs; the weights and everything else that does not depend on the length cancel out.

What a frame must cost at least, with the pose frames kept once as uint8 at the output size: its pose
frame (``H*W*3`` bytes) plus its share of the float32 latent state (``4*(H/8)*(W/8)*4`` bytes per copy;
the sampler holds about five: the latents, the two guidance halves of the accumulator, the guided
prediction and the scheduler's output). That sum is the target, printed next to the measurement
(~2.5 MB at 768x768).

    python benchmarks/rss_length.py                       # tiny weights, 256 and 512, 48 and 480 frames
    python benchmarks/rss_length.py --sizes 64 --lengths 16,160 --weights /tmp/musepose-random-weights
    python benchmarks/rss_length.py --repo /path/to/another/checkout   # the same job on other code

Give lengths of at least 48 frames: then both runs have windows of the same length (up to the context)
and decode the same number of frames per VAE call (auto: up to 16), so their activations cancel out, and
both are past libx264's lookahead, whose buffers grow with the first ~45 frames of any video.
``--weights`` takes any weights folder (the tiny fixture by default; benchmarks/oneshot.py writes
full-size random ones with ``prepare``).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

MB = 1e6
TINY_WEIGHTS = REPO / "tests" / "fixtures" / "musepose-tiny" / "pretrained_weights"
#: float32 latent-sized copies per frame the sampler holds (module docstring).
LATENT_COPIES = 5


def target_bytes_per_frame(width: int, height: int) -> int:
    """The uint8 pose frame plus the latent state of one output frame (module docstring)."""
    return width * height * 3 + LATENT_COPIES * 4 * (width // 8) * (height // 8) * 4


def child_peak_rss(command: list[str], cwd: Path, log: Path) -> tuple[int, float]:
    """Run ``command`` to its end; (its peak RSS in bytes, wall seconds). Output goes to ``log``; a failure
    raises with the log's tail."""
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {proc.returncode}:\n{log.read_text()[-3000:]}")
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return rss, time.perf_counter() - started


def generate_command(weights: Path, ref: Path, poses: Path, size: int, frames: int, out: Path, *options: str,
                     device: str = "cpu", precision: str = "fp32") -> list[str]:
    """``python -m musepose generate`` at ``size`` x ``size`` x ``frames`` (fp32 on the CPU unless told), plus
    ``options``."""
    return [sys.executable, "-m", "musepose", "generate", "--weights-dir", str(weights), "--ref", str(ref),
            "--poses", str(poses), "--width", str(size), "--height", str(size), "--frames", str(frames),
            "--precision", precision, "--device", device, "--out", str(out), *options]


def measure(size: int, lengths: list[int], args) -> list[tuple[int, int, float]]:
    """(frames, peak RSS bytes, wall s) per length, at ``size`` x ``size``."""
    from oneshot import inputs

    ref, poses = inputs(args.work, size, size, max(lengths))
    rows = []
    for frames in lengths:
        command = generate_command(args.weights, ref, poses, size, frames, args.work / "out.mp4", "--steps",
                                   str(args.steps), "--context-frames", str(args.context_frames),
                                   "--context-overlap", str(args.context_overlap), device=args.device,
                                   precision=args.precision)
        rss, wall = child_peak_rss(command, args.repo, args.work / f"log-{size}-{frames}.txt")
        rows.append((frames, rss, wall))
        print(f"  {size}x{size}x{frames}: peak RSS {rss / 2**30:.3f} GiB ({wall:.0f} s)", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=TINY_WEIGHTS)
    p.add_argument("--sizes", default="256,512", help="square output sizes, comma-separated")
    p.add_argument("--lengths", default="48,480", help="two (or more) frame counts, comma-separated")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--context-frames", type=int, default=16)
    p.add_argument("--context-overlap", type=int, default=4)
    p.add_argument("--device", default="cpu", help="where the networks run (host memory is measured either way)")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--repo", type=Path, default=REPO, help="the checkout whose `python -m musepose` runs")
    p.add_argument("--work", type=Path, default=None, help="folder for inputs and outputs (default: a temporary one)")
    args = p.parse_args(argv)
    lengths = sorted(int(n) for n in args.lengths.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        args.work = args.work or Path(tmp)
        args.work.mkdir(parents=True, exist_ok=True)
        print(f"peak RSS of `musepose generate` ({args.repo}), weights {args.weights}, {args.precision} on {args.device}, context "
              f"{args.context_frames}/{args.context_overlap}, {args.steps} step(s)", flush=True)
        table = ["| size | " + " | ".join(f"{n} frames GiB" for n in lengths) +
                 " | growth MB/frame | target MB/frame |", "|---|" + "---|" * (len(lengths) + 2)]
        for size in (int(s) for s in args.sizes.split(",")):
            rows = measure(size, lengths, args)
            (n0, rss0, _), (n1, rss1, _) = rows[0], rows[-1]
            growth = (rss1 - rss0) / (n1 - n0)
            table.append(f"| {size}x{size} | " + " | ".join(f"{rss / 2**30:.3f}" for _, rss, _ in rows) +
                         f" | {growth / MB:.3f} | {target_bytes_per_frame(size, size) / MB:.3f} |")
        print("\n" + "\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
