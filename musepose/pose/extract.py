"""Whole-body pose extraction for frames: detector + keypoint model + OpenPose conversion, cached.

This is the engine entry point used by the nodes and the CLI. It reports progress and honours
cancellation through plain callbacks, so it knows nothing about ComfyUI. Cancellation is checked
before each frame and inside each model run (a DWPose-L or YOLOX-L run takes about a second on a CPU,
so checking between runs alone would not answer within a second): the torch backend checks every few
graph nodes; for onnxruntime a helper thread polls every :data:`INTERRUPT_POLL_S` seconds and stops the
run through ``RunOptions.terminate``.
"""
from __future__ import annotations

import os
import threading
from typing import Callable, Iterable, Sequence

import numpy as np

from . import rtmpose, yolox
from .cache import DEFAULT_POSE_CACHE, PoseCache, frame_digest
from .layout import VISIBLE_THRESHOLD, FramePose, wholebody_to_openpose
from .log import logger
from .models import DWPoseModelPaths, PoseRuntime, check_signature, import_onnxruntime, resolve_runtime

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], None]

#: Bump when pre/post-processing changes so stale cached poses are not reused.
PIPELINE_VERSION = "dwpose-onnx-2"

#: How often the cancel callback is polled while a model runs (seconds).
INTERRUPT_POLL_S = 0.05


def _file_identity(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return os.path.abspath(path), st.st_size, int(st.st_mtime_ns)


class _InterruptWatch:
    """Runs onnxruntime calls while a helper thread polls ``check_interrupt``.

    When the callback raises, the thread keeps the exception and sets ``terminate`` on the run's
    RunOptions; onnxruntime then abandons the run between two kernels and the kept exception is
    raised in the caller's thread instead of onnxruntime's error. An interrupt the thread takes
    just after a run finished is raised too, so no cancel request is lost.
    """

    def __init__(self, check_interrupt: CancelFn, poll_s: float = INTERRUPT_POLL_S):
        self.check_interrupt = check_interrupt
        self.poll_s = poll_s
        self.error: BaseException | None = None

    def check(self) -> None:
        """The per-frame check in the caller's thread."""
        self.raise_pending()
        self.check_interrupt()

    def raise_pending(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def run(self, session, args: tuple, kwargs: dict):
        self.raise_pending()
        if getattr(session, "checks_interrupt", False):  # the torch backend checks between graph nodes
            return session.run(*args, check_interrupt=self.check_interrupt, **kwargs)
        options = import_onnxruntime().RunOptions()
        done = threading.Event()

        def watch() -> None:
            while not done.wait(self.poll_s):
                try:
                    self.check_interrupt()
                except BaseException as exc:  # noqa: BLE001 - any cancel exception type of the host
                    self.error = exc
                    options.terminate = True
                    return

        thread = threading.Thread(target=watch, name="dwpose-interrupt-watch", daemon=True)
        thread.start()
        try:
            result = session.run(*args, run_options=options, **kwargs)
        except Exception:
            done.set()
            thread.join()
            self.raise_pending()
            raise
        done.set()
        thread.join()
        self.raise_pending()
        return result


class _CountingSession:
    """Forwards to a model session (either backend) and counts ``run`` calls (cheap, and exact for tests).

    While the owner extracts with a cancel callback, runs go through its :class:`_InterruptWatch`.
    """

    def __init__(self, session, owner: "DWPoseExtractor"):
        self._session = session
        self._owner = owner

    def run(self, *args, **kwargs):
        self._owner.model_calls += 1
        watch = self._owner._watch
        if watch is not None and "run_options" not in kwargs and "check_interrupt" not in kwargs:
            return watch.run(self._session, args, kwargs)
        return self._session.run(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


class DWPoseExtractor:
    """Runs DWPose on RGB uint8 frames. Sessions are opened once; results are cached per frame.

    ``backend`` ("auto", "torch", "onnxruntime") and ``device`` pick the runtime
    (:func:`musepose.pose.models.resolve_runtime`); ``providers`` pins onnxruntime with those providers.
    ``model_calls`` counts model ``run`` calls made through this object, which is how tests check that
    a cached second pass does not touch the models.
    """

    def __init__(self, models: DWPoseModelPaths, providers: Sequence | None = None,
                 cache: PoseCache | None = DEFAULT_POSE_CACHE, device=None, backend: str = "auto",
                 runtime: PoseRuntime | None = None):
        self.models = models
        self.cache = cache
        self.model_calls = 0
        self._watch: _InterruptWatch | None = None
        runtime = runtime or resolve_runtime(backend, device, providers)
        self.runtime, detector, pose = runtime.open_pair(models.detector, models.pose)
        self.providers = self.runtime.provider_list()
        self.detector = _CountingSession(detector, self)
        self.pose = _CountingSession(pose, self)
        check_signature(self.detector, models.detector, "detector")
        check_signature(self.pose, models.pose, "pose")
        # fp16 (torch on a GPU) moves keypoints by a fraction of a pixel: poses are cached per precision
        self.settings_key = repr((PIPELINE_VERSION, _file_identity(models.detector),
                                  _file_identity(models.pose), VISIBLE_THRESHOLD, self.runtime.dtype))

    def detect_frame(self, image_rgb: np.ndarray) -> FramePose:
        """All people of one frame (no cache). Boxes come highest-score first; no box, no people."""
        image = np.ascontiguousarray(image_rgb[..., :3])
        boxes, _ = yolox.detect_people(self.detector, image)
        h, w = image.shape[:2]
        if len(boxes) == 0:
            return FramePose(w, h, [])
        if self._watch is not None:
            self._watch.check()  # between the two models of one frame
        kps, scores = rtmpose.estimate(self.pose, image, boxes)
        return FramePose(w, h, [wholebody_to_openpose(kps[i], scores[i]) for i in range(len(boxes))])

    def _key(self, frame: np.ndarray) -> str:
        return frame_digest(frame) + "|" + self.settings_key

    def extract(self, frames: Iterable[np.ndarray], progress: ProgressFn | None = None,
                check_interrupt: CancelFn | None = None, total: int | None = None,
                report_missing: bool = True) -> list[FramePose]:
        """Poses of every frame (RGB uint8 ``[H, W, 3]``), in order.

        ``check_interrupt`` may raise to cancel: it is called before each frame, between the two
        models, and every :data:`INTERRUPT_POLL_S` s while a model runs (from a helper thread; the
        exception it raised comes out of this call). ``progress(done, total)`` after each frame.
        ``report_missing``: say once, at the end, how many frames had nobody in them.
        """
        if total is None and hasattr(frames, "__len__"):
            total = len(frames)  # type: ignore[arg-type]
        total = int(total or 0)
        watch = _InterruptWatch(check_interrupt) if check_interrupt is not None else None
        self._watch = watch
        try:
            out = self._extract(frames, progress, watch, total)
        finally:
            self._watch = None
        if report_missing:
            report_empty_frames(out)
        return out

    def _extract(self, frames: Iterable[np.ndarray], progress: ProgressFn | None, watch: "_InterruptWatch | None",
                 total: int) -> list[FramePose]:
        out: list[FramePose] = []
        for i, frame in enumerate(frames):
            if watch is not None:
                watch.check()
            frame = np.asarray(frame)
            if frame.dtype != np.uint8:
                raise TypeError(f"frames must be uint8 RGB, got {frame.dtype}")
            key = self._key(frame) if self.cache is not None else None
            cached = self.cache.frames.get(key) if key is not None else None
            if cached is None:
                pose = self.detect_frame(frame)
                if key is not None:
                    self.cache.frames.put(key, pose.copy())
            else:
                pose = cached.copy()
            out.append(pose)
            if progress is not None:
                progress(i + 1, max(total, i + 1))
        return out


def report_empty_frames(poses: Sequence[FramePose]) -> int:
    """Say once how many frames have no person at all; returns that number."""
    empty = [i for i, p in enumerate(poses) if not p.people]
    if not empty:
        return 0
    if len(empty) == len(poses):
        logger.warning("No person was detected in any of the %d frame(s): check that the dancer is clearly "
                       "visible (whole body, not too small in the picture).", len(poses))
    else:
        logger.warning("%d of %d frames had no person detected (the first is frame %d); the alignment step "
                       "(MusePose Pose Align) fills them from the neighbouring frames.", len(empty), len(poses), empty[0])
    return len(empty)


def get_extractor(models: DWPoseModelPaths, cache: PoseCache | None = DEFAULT_POSE_CACHE,
                  providers: Sequence | None = None, device=None, backend: str = "auto") -> DWPoseExtractor:
    """An extractor for these files, reusing the sessions kept in ``cache`` when possible.

    ``backend`` and ``device`` (torch.device or "cpu"/"cuda[:N]"/"mps"...; None = auto) pick where DWPose
    runs (:func:`musepose.pose.models.resolve_runtime`); ``providers`` pins onnxruntime's providers.
    """
    runtime = resolve_runtime(backend, device, providers)
    if cache is None:
        return DWPoseExtractor(models, cache=None, runtime=runtime)
    key = ("dwpose", models.detector, models.pose, runtime, _file_identity(models.detector),
           _file_identity(models.pose))
    return cache.models.get_or_create(key, lambda: DWPoseExtractor(models, cache=cache, runtime=runtime))
