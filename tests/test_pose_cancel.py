"""Cancel latency of pose extraction, drawing and alignment.

Each test starts work that takes several seconds on the CPU, asks for an interrupt from another
thread after about a second (the standalone ``host.request_interrupt``, or a plain callback for the
engine), and measures the time from the request to the moment the call raised. Required: < 1 s.
The measured latencies are printed (``pytest -s``) and kept in ``LATENCIES``.
"""
from __future__ import annotations

import importlib
import json
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from musepose.pose import extract as extract_mod
from musepose.pose.extract import DWPoseExtractor
from musepose.pose.models import find_dwpose_models

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "dwpose-tiny"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
PACK = "mpe_pose_test_pack"
REQUEST_AFTER_S = 1.0
MAX_LATENCY_S = 1.0
LATENCIES: dict[str, float] = {}


class Cancelled(Exception):
    pass


class Canceller:
    """A check_interrupt callback that raises once ``request()`` was called (from any thread)."""

    def __init__(self):
        self.event = threading.Event()
        self.requested_at: float | None = None

    def request(self) -> None:
        self.requested_at = time.perf_counter()
        self.event.set()

    def __call__(self) -> None:
        if self.event.is_set():
            raise Cancelled()


def request_later(fn, delay: float = REQUEST_AFTER_S) -> threading.Timer:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()
    return timer


def record(name: str, requested_at: float, stopped_at: float) -> float:
    latency = stopped_at - requested_at
    LATENCIES[name] = latency
    print(f"\ncancel latency [{name}]: {latency * 1000:.0f} ms")
    return latency


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    if PACK not in sys.modules:
        pkg = types.ModuleType(PACK)
        pkg.__path__ = [str(REPO)]
        sys.modules[PACK] = pkg
    nodes = importlib.import_module(f"{PACK}.nodes.pose_nodes")
    host = importlib.import_module(f"{PACK}.nodes.host")
    root = tmp_path_factory.mktemp("models")
    (root / "dwpose").mkdir()
    for name in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"):
        (root / "dwpose" / name).write_bytes((FIXTURE / name).read_bytes())
    host.add_standalone_model_root(str(root))
    yield nodes, host
    host.request_interrupt(False)
    host.remove_standalone_model_root(str(root))


def run_node_with_cancel(host, name: str, call, arm=None) -> float:
    """Run ``call`` with ``host.request_interrupt()`` fired ~1 s later; the latency in seconds.

    ``arm(start)``: instead of starting the 1 s clock now, hand ``start`` to a hook that calls it
    when the phase under test begins.
    """
    host.request_interrupt(False)
    stamp: dict[str, float] = {}
    timers: list[threading.Timer] = []

    def fire():
        stamp["requested"] = time.perf_counter()
        host.request_interrupt(True)

    def start():
        if not timers:
            timers.append(request_later(fire))

    if arm is None:
        start()
    else:
        arm(start)
    began = time.perf_counter()
    try:
        with pytest.raises(host.Interrupted):
            call()
        stopped = time.perf_counter()
    finally:
        for timer in timers:
            timer.cancel()
        host.request_interrupt(False)
    assert "requested" in stamp, f"{name} finished in {time.perf_counter() - began:.2f} s, before the request"
    return record(name, stamp["requested"], stopped)


def test_engine_extraction_stops_between_frames():
    """60 frames of DWPose stand-ins (~0.1 s each here): cancel after 1 s stops at the next frame."""
    ex = DWPoseExtractor(find_dwpose_models([FIXTURE], include_controlnet_aux=False), cache=None)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (128, 96, 3), dtype=np.uint8) for _ in range(60)]
    done: list[float] = []
    cancel = Canceller()
    request_later(cancel.request)
    started = time.perf_counter()
    with pytest.raises(Cancelled):
        ex.extract(frames, progress=lambda d, t: done.append(time.perf_counter()), check_interrupt=cancel)
    stopped = time.perf_counter()
    assert cancel.requested_at is not None and 0 < len(done) < len(frames)
    full_run_estimate = (done[-1] - started) / len(done) * len(frames)
    assert full_run_estimate > 3.0, f"the run would take only {full_run_estimate:.1f} s: not a real test"
    assert record("engine extraction, 60 frames", cancel.requested_at, stopped) < MAX_LATENCY_S


class SlowSession:
    """A detector whose every run takes 5 s unless onnxruntime's ``RunOptions.terminate`` is set."""

    RUN_S = 5.0

    def __init__(self, real):
        self.real = real

    def get_inputs(self):
        return self.real.get_inputs()

    def run(self, names, feeds, run_options=None):
        end = time.perf_counter() + self.RUN_S
        while time.perf_counter() < end:
            if run_options is not None and run_options.terminate:
                raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Exiting due to terminate flag being set to true.")
            time.sleep(0.005)
        return self.real.run(names, feeds)


def test_engine_extraction_stops_inside_a_long_model_run():
    """One model run of 5 s (a big model on a slow CPU): the cancel still lands within a second,
    and the caller gets the cancel exception, not onnxruntime's error."""
    ex = DWPoseExtractor(find_dwpose_models([FIXTURE], include_controlnet_aux=False), cache=None)
    ex.detector = extract_mod._CountingSession(SlowSession(ex.detector._session), ex)
    frame = np.zeros((64, 48, 3), dtype=np.uint8)
    cancel = Canceller()
    request_later(cancel.request)
    with pytest.raises(Cancelled):
        ex.extract([frame, frame], check_interrupt=cancel)
    stopped = time.perf_counter()
    assert record("engine extraction, inside a 5 s model run", cancel.requested_at, stopped) < MAX_LATENCY_S
    assert ex._watch is None  # the next extraction runs without the helper thread of this one


def test_interrupt_taken_by_the_watch_thread_after_a_run_is_not_lost():
    watch = extract_mod._InterruptWatch(Canceller())
    watch.error = Cancelled()  # what the helper thread keeps when it sees the interrupt
    with pytest.raises(Cancelled):
        watch.check()
    watch.check()  # raised once only


def test_extract_node_stops_while_drawing_previews(pack, monkeypatch):
    """60 identical frames: one detection, then ~4 s of preview drawing (~75 ms a frame here); the
    request comes 1 s into the drawing."""
    nodes, host = pack
    frame = torch.rand(1, 128, 96, 3, generator=torch.Generator().manual_seed(11))
    images = frame.expand(60, -1, -1, -1).contiguous()
    real_render = nodes.render_pose
    hook: dict = {}

    def render_and_arm(*args, **kwargs):
        hook["start"]()
        return real_render(*args, **kwargs)

    monkeypatch.setattr(nodes, "render_pose", render_and_arm)
    latency = run_node_with_cancel(host, "Pose Extract node, 60 previews",
                                   lambda: nodes.MusePosePoseExtract().extract(images, preview_resolution=512),
                                   arm=lambda start: hook.__setitem__("start", start))
    assert latency < MAX_LATENCY_S


def test_extract_node_stops_while_detecting(pack):
    nodes, host = pack
    images = torch.rand(60, 128, 96, 3, generator=torch.Generator().manual_seed(12))
    latency = run_node_with_cancel(host, "Pose Extract node, 60 detections",
                                   lambda: nodes.MusePosePoseExtract().extract(images))
    assert latency < MAX_LATENCY_S


def test_align_node_stops_while_aligning_and_drawing(pack):
    """60 aligned frames drawn at 1024 short side plus their overlays (~6 s here)."""
    nodes, host = pack
    extract = nodes.MusePosePoseExtract()
    driving, _, _ = extract.extract(image_batch_of(EXPECTED["worked_examples"][1]["image_wh"], 1))
    driving = driving * 60
    ref_pose, _, _ = extract.extract(image_batch_of(EXPECTED["worked_examples"][0]["image_wh"], 1, seed=3))
    latency = run_node_with_cancel(host, "Pose Align node, 60 frames",
                                   lambda: nodes.MusePosePoseAlign().align(driving, 512, 768, reference_pose=ref_pose))
    assert latency < MAX_LATENCY_S


def image_batch_of(wh, n: int, seed: int = 0) -> torch.Tensor:
    w, h = wh
    return torch.rand((n, h, w, 3), generator=torch.Generator().manual_seed(seed))
