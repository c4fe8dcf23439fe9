"""The benchmark runs end to end at a tiny size (structure and sanity, not timings)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path):
    out = tmp_path / "r.jsonl"
    md = tmp_path / "t.md"
    proc = subprocess.run([sys.executable, "benchmarks/bench.py", "--smoke", "--modes", "original,fast,default,lowvram",
                           "--json", str(out), "--markdown", str(md), "--threads", "2"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["mode"] for r in results] == ["original", "fast", "default", "lowvram"]
    for r in results:
        assert "error" not in r, r
        assert r["finite"] and r["smoke"]
        assert r["seconds_per_step"] > 0 and r["peak_rss_gb"] > 0.05
        assert r["planner_peak_gb"] > 0 and r["planner_tflop_per_window_step"] > 0
    by_mode = {r["mode"]: r for r in results}
    assert by_mode["default"]["cfg_mode"] == "sequential" and by_mode["original"]["decode_chunk"] == 1
    assert by_mode["lowvram"]["stream_stats"]["loads"] > 0
    # the planner's ordering holds in its own predictions
    assert by_mode["original"]["planner_peak_gb"] >= by_mode["fast"]["planner_peak_gb"] > by_mode["default"]["planner_peak_gb"]
    table = md.read_text()
    assert table.count("\n") >= 5 and "| original |" in table and "x faster" in table


def test_run_gpu_script_is_valid_bash():
    script = ROOT / "benchmarks" / "run_gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for needle in ("--width 768", "--width 512", "flop_floor.py", "results.jsonl", "summary.md"):
        assert needle in text
