"""The model cache follows ComfyUI's memory management, in the real ComfyUI (0.8.0 and 0.19.3 in CI; the
session's server and helpers: tests/comfy_support.py).

Weight reads are counted from the loader's log line "loading weights from disk" (one per read of the
whole set); "reusing the cached model set" is the cache answering without reading.
"""
from __future__ import annotations

import json
import time

from comfy_support import tiny_workflow

LOADS = "MusePose: loading weights from disk"
REUSES = "MusePose: reusing the cached model set"
RELEASED = "the cached model set is released"


def _run(server, graph) -> dict:
    entry = server.wait(server.queue(graph))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    return entry


def _counts(server) -> tuple[int, int]:
    log = server.log_text()
    return log.count(LOADS), log.count(REUSES)


def _free(server, **flags) -> None:
    """POST /free and wait until ComfyUI's worker has handled it (it says so through our release line).

    The POST is repeated every 2 s: ComfyUI 0.8.0's worker can miss the wake-up of a /free that arrives
    just after a prompt ends (between its flag check and its wait on the queue) and then sleeps until the
    next prompt or for up to 1000 s; a second /free wakes it.
    """
    released = server.log_text().count(RELEASED)
    deadline = time.time() + 60
    while server.log_text().count(RELEASED) == released:
        assert time.time() < deadline, "ComfyUI's Free did not release the cached model set"
        status, _ = server.post("/free", flags)
        assert status == 200
        for _ in range(10):
            if server.log_text().count(RELEASED) != released:
                break
            time.sleep(0.2)


def test_free_releases_the_cached_set(server):
    """queue, "Unload models" (POST /free {"unload_models": true}), queue again: the weights are read again.

    Twice: once with a loader input changed (the loader node runs again and misses the cache), once with
    only the seed changed (ComfyUI reuses the loader's cached output, whose set was released: the Sampler
    reads the weights again)."""
    _run(server, tiny_workflow("musepose_video", seed=1))
    loads, reuses = _counts(server)
    assert loads == 1

    _free(server, unload_models=True)
    graph = tiny_workflow("musepose_video", seed=2)
    graph["4"]["inputs"]["download_missing"] = True  # outside the cache key: the loader runs again
    entry = _run(server, graph)
    cached = [m for m in entry["status"]["messages"] if m[0] == "execution_cached"]
    assert cached and "4" not in cached[0][1]["nodes"], "the loader node should have run again"
    assert _counts(server) == (loads + 1, reuses), "the loader reused a set ComfyUI's Free should have released"

    _free(server, unload_models=True)
    entry = _run(server, {**graph, "5": {**graph["5"], "inputs": {**graph["5"]["inputs"], "seed": 3}}})
    cached = [m for m in entry["status"]["messages"] if m[0] == "execution_cached"]
    assert "4" in cached[0][1]["nodes"]  # ComfyUI kept the loader's output ...
    assert _counts(server) == (loads + 2, reuses)  # ... and its released set was read again
    assert "reading the weights again" in server.log_text()


def test_switching_offload_reads_no_file(server):
    """none -> model -> lowvram -> none: one read of the weights; each switch reruns the loader, which
    answers from the cache (before, each mode was a separate cache entry: three more reads)."""
    _run(server, tiny_workflow("musepose_video", seed=10))
    loads, reuses = _counts(server)
    for seed, offload in enumerate(("model", "lowvram", "none"), start=11):
        graph = tiny_workflow("musepose_video", seed=seed)
        graph["4"]["inputs"]["offload"] = offload
        _run(server, graph)
    assert _counts(server) == (loads, reuses + 3)
