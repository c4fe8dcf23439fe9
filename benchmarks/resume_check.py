#!/usr/bin/env python
"""Kill-and-resume check under a device-memory cap (issue 15): an uninterrupted run, then the same run
SIGKILLed right after step K's state was written and run again (it resumes); compares the two videos and
the resumed run's time-left estimates with the time that was actually left.

Each run is ``python -m musepose generate`` in its own process, with ``torch.cuda.set_per_process_memory_fraction``
set to the cap (and ``--vram-gb`` to the same figure, so the memory policy plans for it); the kill is
tests/resume_kill.py's. Every finished window batch of a run is logged (time, batches left, the estimate).

    python benchmarks/resume_check.py --weights /tmp/musepose-random --width 768 --height 768 --frames 300 \\
        --steps 20 --kill-after 10 --memory-gb 6

``--weights`` is filled with random full-size weights by benchmarks/oneshot.py's ``prepare`` when it is not
complete (about 5 GB; ``--weights-dir`` uses a ready folder instead, e.g. the tiny test weights on the CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "benchmarks", REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

LOG_ENV = "MUSEPOSE_RESUME_CHECK_LOG"
CAP_ENV = "MUSEPOSE_RESUME_CHECK_CAP_GB"


def child(argv: list[str]) -> int:
    """One run: the memory cap, the kill (``MUSEPOSE_TEST_KILL_AFTER_STEP``) and a log line per window batch."""
    import torch

    from musepose.cli import main
    from musepose.pipeline import stats
    from resume_kill import KILL_ENV, install_kill

    if os.environ.get(CAP_ENV) and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(float(os.environ[CAP_ENV]) * 1e9 / total)
    if os.environ.get(KILL_ENV):
        install_kill(int(os.environ[KILL_ENV]))
    unit_done = stats.SamplingStats.unit_done

    def logged(self, since):
        now = unit_done(self, since)
        with open(os.environ[LOG_ENV], "a") as log:
            log.write(json.dumps({"t": time.time(), "unit_s": self.unit_seconds[-1], "left_units": self.units_left,
                                 "estimate": self.time_left()}) + "\n")
        return now

    stats.SamplingStats.unit_done = logged
    return main(argv)


def run(args, name: str, extra: list[str], kill: int | None = None) -> tuple[subprocess.CompletedProcess, list, float]:
    log = Path(args.work) / f"{name}.jsonl"
    log.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               **{LOG_ENV: str(log)})
    env.pop("MUSEPOSE_TEST_KILL_AFTER_STEP", None)
    if args.memory_gb:
        env[CAP_ENV] = str(args.memory_gb)
    if kill:
        env["MUSEPOSE_TEST_KILL_AFTER_STEP"] = str(kill)
    command = [sys.executable, __file__, "--child", "generate", "--weights-dir", args.weights_dir, "--ref", args.ref,
               "--poses", args.poses, "--width", str(args.width), "--height", str(args.height), "--frames",
               str(args.frames), "--steps", str(args.steps), "--scheduler", args.scheduler, "--device", args.device,
               "--context-frames", str(args.context_frames), "--context-overlap", str(args.context_overlap), "--out", str(Path(args.work) / f"{name}.mp4"), *extra]
    if args.memory_gb:
        command += ["--vram-gb", str(args.memory_gb)]
    started = time.time()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.time() - started
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    print(f"{name}: exit {result.returncode} in {seconds:.1f} s, {len(lines)} window batches", flush=True)
    return result, lines, seconds


def estimate_errors(lines: list[dict], per_step: int) -> list[dict]:
    """At the end of each step of a run: the estimate of the time left vs the time that was left (to the last
    window batch's end)."""
    end = lines[-1]["t"]
    out = []
    for i, line in enumerate(lines[:-1]):
        if (i + 1) % per_step == 0 and line["estimate"] is not None:
            actual = end - line["t"]
            out.append({"after_batches": i + 1, "estimate_s": round(line["estimate"], 2), "actual_s": round(actual, 2),
                        "error": round(line["estimate"] / actual - 1, 3) if actual > 0 else None})
    return out


def sampling_seconds(lines: list[dict]) -> float:
    """From the start of a run's first window batch to the end of its last."""
    return lines[-1]["t"] - (lines[0]["t"] - lines[0]["unit_s"])


def clock_seconds(line: str) -> float | None:
    """``time left: about 1:02 ...`` -> 62.0 (``h:mm:ss`` too)."""
    import re

    found = re.search(r"about (\d+(?::\d\d)+)", line)
    if not found:
        return None
    seconds = 0.0
    for part in found.group(1).split(":"):
        seconds = seconds * 60 + int(part)
    return seconds


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="/tmp/musepose-random", help="random full-size weights (made when missing)")
    p.add_argument("--weights-dir", default=None, help="a ready weights folder instead")
    p.add_argument("--work", default="/tmp/musepose-resume-check")
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--context-frames", type=int, default=48)
    p.add_argument("--context-overlap", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--kill-after", type=int, default=10)
    p.add_argument("--scheduler", default="dpmpp_2m")
    p.add_argument("--memory-gb", type=float, default=6.0, help="device memory cap (0: none)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    import numpy as np
    import oneshot

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.weights_dir is None:
        args.weights_dir = str(oneshot.prepare(Path(args.weights)))
    ref, poses = oneshot.inputs(work, args.width, args.height, args.frames)
    args.ref, args.poses = str(ref), str(poses)
    state = ["--checkpoint-dir", str(work / "state")]
    whole, whole_lines, whole_s = run(args, "uninterrupted", ["--save-array", str(work / "uninterrupted.npy")])
    killed, killed_lines, killed_s = run(args, "killed", state + ["--fresh"], kill=args.kill_after)
    resumed, resumed_lines, resumed_s = run(args, "resumed", state + ["--save-array", str(work / "resumed.npy")])
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert resumed.returncode == 0 and f"resumed at step {args.kill_after} of {args.steps}" in resumed.stderr, \
        resumed.stderr[-3000:]
    a, b = np.load(work / "uninterrupted.npy"), np.load(work / "resumed.npy")
    per_step = len(whole_lines) // args.steps
    ahead = [line for line in (whole.stderr + resumed.stderr).splitlines() if line.startswith(("time left:", "time:"))]
    resumed_ahead = [clock_seconds(line) for line in resumed.stderr.splitlines() if line.startswith("time left:")]
    resumed_actual = sampling_seconds(resumed_lines)
    planner = [clock_seconds(line) for line in whole.stderr.splitlines() if line.startswith("time:")]
    report = {"uninterrupted_planner": {"estimate_s": planner[0] if planner else None,
                                        "actual_s": round(sampling_seconds(whole_lines), 2)},
              "resumed_before_first_step": {"estimate_s": resumed_ahead[0] if resumed_ahead else None,
                                            "actual_s": round(resumed_actual, 2)},
              "max_abs_video": float(np.abs(a.astype(np.float64) - b).max()), "mean_abs_video": float(np.abs(a - b).mean()),
              "seconds": {"uninterrupted": whole_s, "killed": killed_s, "resumed": resumed_s},
              "before_first_step": ahead, "resumed_estimates": estimate_errors(resumed_lines, per_step),
              "uninterrupted_estimates": estimate_errors(whole_lines, per_step),
              "memory_lines": [line for line in whole.stderr.splitlines() if line.startswith("memory")],
              "peaks": [line for line in (whole.stdout + resumed.stdout).splitlines() if "peak" in line]}
    print(json.dumps(report, indent=1))
    (work / "report.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
