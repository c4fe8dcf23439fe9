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
    configs = ["original", "fastest", "auto:6@768", "auto:4@768"]
    proc = subprocess.run([sys.executable, "benchmarks/bench.py", "--smoke", "--configs", ",".join(configs),
                           "--json", str(out), "--markdown", str(md), "--threads", "2"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["config"] for r in results] == configs
    for r in results:
        assert "error" not in r, r
        assert r["finite"] and r["smoke"]
        assert r["seconds_per_step"] > 0 and r["peak_rss_gb"] > 0.05
        assert r["planner_peak_gb"] > 0 and r["planner_tflop_per_window_step"] > 0
    by_name = {r["config"]: r for r in results}
    assert by_name["original"]["decode_chunk"] == 1
    assert "offload none, CFG batched, no chunking" in by_name["fastest"]["memory"]
    assert "offload model" in by_name["auto:6@768"]["memory"] and "chunks" in by_name["auto:6@768"]["memory"]
    assert "streamed" in by_name["auto:4@768"]["memory"]
    table = md.read_text()
    assert table.count("\n") >= 5 and "| original |" in table and "1.00x" in table


def test_run_gpu_script_is_valid_bash():
    script = ROOT / "benchmarks" / "run_gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for needle in ("--width 768", "--width 512", "vram_meter.py", "results.jsonl", "summary.md"):
        assert needle in text
