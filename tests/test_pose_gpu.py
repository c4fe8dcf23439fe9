"""DWPose on the GPU: onnxruntime provider choice, the one-line CPU fallback, and the dependency rule.

onnxruntime is replaced by a stand-in module (``sys.modules``) whose ``get_available_providers`` and
``InferenceSession`` are scripted, so CUDA can be "installed" on a machine without a GPU. What is
checked: the CUDA provider (on the device's index) is chosen when a CUDA device is asked for and the
build has it; otherwise the CPU provider, with exactly one WARNING per process that says so and how
to get GPU extraction; the session options and providers reach ``InferenceSession``; a missing
onnxruntime is a clear error naming both packages; and the pack never lists onnxruntime as a hard
requirement (it would be installed next to onnxruntime-gpu).
"""
from __future__ import annotations

import importlib
import logging
import re
import sys
import tomllib
import types
from pathlib import Path

import pytest
import torch

from musepose.pose import models
from musepose.pose.extract import DWPoseExtractor, get_extractor
from musepose.pose import log
from musepose.pose.models import CPU_PROVIDER, CUDA_PROVIDER, OnnxRuntimeMissing, find_dwpose_models
from musepose.pose.onnx_torch import TorchOnnxSession

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "dwpose-tiny"
PACK = "mpe_pose_test_pack"


class FakeOrt(types.ModuleType):
    """Scripted onnxruntime: which providers exist, and which ones a session really starts with."""

    def __init__(self, available, session_starts_cuda=True):
        super().__init__("onnxruntime")
        self.available = list(available)
        self.session_starts_cuda = session_starts_cuda
        self.sessions = []
        fake = self

        class SessionOptions:
            log_severity_level = 2

        class RunOptions:
            terminate = False

        class InferenceSession:
            def __init__(self, path, sess_options=None, providers=None):
                self.path, self.sess_options, self.providers = path, sess_options, providers
                fake.sessions.append(self)

            def get_inputs(self):  # the file's real signature (the extractor checks it)
                return TorchOnnxSession(self.path).get_inputs()

            def get_outputs(self):
                return TorchOnnxSession(self.path).get_outputs()

            def get_providers(self):
                names = [p if isinstance(p, str) else p[0] for p in self.providers]
                if not fake.session_starts_cuda:
                    names = [n for n in names if n != CUDA_PROVIDER]
                return names

        self.SessionOptions, self.RunOptions, self.InferenceSession = SessionOptions, RunOptions, InferenceSession

    def get_available_providers(self):
        return list(self.available)


@pytest.fixture(autouse=True)
def _fresh_process_messages(monkeypatch):
    """Once-per-process messages are said again in each test."""
    monkeypatch.setattr(log, "_said", set())


def install(monkeypatch, available, **kw) -> FakeOrt:
    fake = FakeOrt(available, **kw)
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    return fake


def pose_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name.startswith(("musepose", "musepose_express"))]


def paths():
    return find_dwpose_models([FIXTURE], include_controlnet_aux=False)


def test_cuda_provider_chosen_for_a_cuda_device(monkeypatch, caplog):
    fake = install(monkeypatch, ["TensorrtExecutionProvider", CUDA_PROVIDER, CPU_PROVIDER])
    with caplog.at_level(logging.WARNING):
        assert models.onnx_providers(torch.device("cuda", 1)) == [(CUDA_PROVIDER, {"device_id": 1}), CPU_PROVIDER]
        assert models.onnx_providers("cuda") == [(CUDA_PROVIDER, {}), CPU_PROVIDER]
        assert models.onnx_providers("cuda:0") == [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER]
        # a CPU device stays on the CPU, silently, even when the CUDA build is installed
        assert models.onnx_providers("cpu") == [CPU_PROVIDER]
        assert models.onnx_providers(torch.device("cpu")) == [CPU_PROVIDER]
        ex = DWPoseExtractor(paths(), cache=None, device=torch.device("cuda", 0))
    assert pose_warnings(caplog) == []
    # both sessions opened with the CUDA provider first and the CPU provider as the fallback
    assert [s.path for s in fake.sessions] == [paths().detector, paths().pose]
    for s in fake.sessions:
        assert s.providers == [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER]
        assert s.sess_options.log_severity_level == 3
    assert ex.providers == [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER]


def test_auto_device_follows_torch(monkeypatch):
    install(monkeypatch, [CUDA_PROVIDER, CPU_PROVIDER])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.onnx_providers(None)[0] == (CUDA_PROVIDER, {})
    assert models.onnx_providers("auto")[0] == (CUDA_PROVIDER, {})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.onnx_providers(None) == [CPU_PROVIDER]


def test_cpu_fallback_said_once_per_process(monkeypatch, caplog):
    fake = install(monkeypatch, ["AzureExecutionProvider", CPU_PROVIDER])
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert models.onnx_providers(torch.device("cuda", 0)) == [CPU_PROVIDER]
        ex = get_extractor(paths(), cache=None, device="cuda", backend="onnxruntime")
        get_extractor(paths(), cache=None, device="cuda:0", backend="onnxruntime")
    said = pose_warnings(caplog)
    assert len(said) == 1, said
    line = said[0]
    assert "\n" not in line and "CPU" in line
    assert "replace it with onnxruntime-gpu" in line
    assert re.search(r"pip uninstall -y onnxruntime\b", line) and "pip install onnxruntime-gpu" in line
    assert "CUDA version" in line
    assert ex.providers == [CPU_PROVIDER]
    assert all(s.providers == [CPU_PROVIDER] for s in fake.sessions)


def test_cuda_build_that_cannot_start_cuda_is_said_once(monkeypatch, caplog):
    install(monkeypatch, [CUDA_PROVIDER, CPU_PROVIDER], session_starts_cuda=False)
    with caplog.at_level(logging.WARNING):   # two sessions, one message
        DWPoseExtractor(paths(), cache=None, device="cuda", backend="onnxruntime")
        DWPoseExtractor(paths(), cache=None, device="cuda", backend="onnxruntime")
    said = pose_warnings(caplog)
    assert len(said) == 1 and "runs on the CPU" in said[0] and "CUDA version" in said[0]


def test_auto_moves_to_torch_when_onnxruntime_gpu_cannot_start_cuda(monkeypatch, caplog):
    """auto means onnxruntime with a *working* GPU provider: one that does not start gives torch on that GPU
    (here the torch runtime is redirected to the CPU, which is all this machine has)."""
    install(monkeypatch, [CUDA_PROVIDER, CPU_PROVIDER], session_starts_cuda=False)
    monkeypatch.setattr(models, "_torch_runtime", lambda device: models.PoseRuntime("torch", "cpu"))
    with caplog.at_level(logging.WARNING):
        ex = DWPoseExtractor(paths(), cache=None, device="cuda:0")
        DWPoseExtractor(paths(), cache=None, device="cuda:0")
    assert ex.runtime.describe() == "torch on cpu" and isinstance(ex.pose._session, TorchOnnxSession)
    said = pose_warnings(caplog)
    assert said == ["DWPose runs through torch on cuda:0: the installed onnxruntime-gpu could not start CUDA "
                    "(usually its CUDA or cuDNN version does not match the installed one)."]
    install(monkeypatch, [CUDA_PROVIDER, CPU_PROVIDER], session_starts_cuda=True)  # a working one is kept
    assert DWPoseExtractor(paths(), cache=None, device="cuda:0").runtime.describe() == "onnxruntime on cuda:0"


def test_extractor_cache_keeps_cpu_and_cuda_sessions_apart(monkeypatch):
    from musepose.pose.cache import PoseCache

    install(monkeypatch, [CUDA_PROVIDER, CPU_PROVIDER])
    cache = PoseCache()
    cuda0 = get_extractor(paths(), cache, device="cuda:0")
    assert get_extractor(paths(), cache, device="cuda:0") is cuda0
    assert get_extractor(paths(), cache, device="cpu") is not cuda0
    assert get_extractor(paths(), cache, device="cuda:1") is not cuda0


def test_missing_onnxruntime_names_both_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(OnnxRuntimeMissing) as err:
        DWPoseExtractor(paths(), cache=None, device="cpu", backend="onnxruntime")
    msg = str(err.value)
    assert "pip install onnxruntime-gpu" in msg and "pip install onnxruntime'" in msg
    assert "never both" in msg and "CUDA" in msg
    assert isinstance(err.value, ImportError)
    # auto needs no onnxruntime: torch runs the same files
    assert DWPoseExtractor(paths(), cache=None, device="cpu").runtime.describe() == "torch on cpu"


def test_pose_nodes_run_dwpose_on_comfyuis_device(monkeypatch, tmp_path):
    if PACK not in sys.modules:
        pkg = types.ModuleType(PACK)
        pkg.__path__ = [str(REPO)]
        sys.modules[PACK] = pkg
    nodes = importlib.import_module(f"{PACK}.nodes.pose_nodes")
    host = importlib.import_module(f"{PACK}.nodes.host")
    (tmp_path / "dwpose").mkdir()
    for name in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"):
        (tmp_path / "dwpose" / name).write_bytes((FIXTURE / name).read_bytes())
    fake = install(monkeypatch, [CUDA_PROVIDER, CPU_PROVIDER])
    monkeypatch.setattr(host, "torch_device", lambda: torch.device("cuda", 0))
    monkeypatch.setattr(host, "model_search_paths", lambda kind: [str(tmp_path / kind)])
    extractor = nodes._extractor()
    assert extractor.providers == [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER]
    assert [s.providers[0] for s in fake.sessions[-2:]] == [(CUDA_PROVIDER, {"device_id": 0})] * 2
    nodes.DEFAULT_POSE_CACHE.models.clear()  # drop the fake sessions


def _requirement_names(lines) -> list[str]:
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower())
    return names


def test_onnxruntime_is_never_a_hard_requirement():
    """pip installs a listed ``onnxruntime`` even next to ``onnxruntime-gpu`` (two distributions, one
    import name), and ComfyUI-Manager pip-installs requirements.txt line by line: neither build may
    be listed there. The tests' own requirements bring the CPU build."""
    runtime = _requirement_names((REPO / "requirements.txt").read_text().splitlines())
    deps = _requirement_names(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    assert not [n for n in runtime + deps if n.startswith("onnxruntime")]
    dev = _requirement_names((REPO / "requirements-dev.txt").read_text().splitlines())
    assert "onnxruntime" in dev


def test_pack_loads_and_aligns_without_onnxruntime(tmp_path):
    """Neither onnxruntime build installed (a ComfyUI Manager install): the pose nodes load, Pose Align
    works from a reference POSE_KEYPOINT, Pose Extract runs DWPose through torch and says so on the node,
    and only a pinned onnxruntime backend stops with the message naming both packages."""
    import json
    import subprocess

    script = f"""
import sys, types, json
sys.modules["onnxruntime"] = None  # as if neither onnxruntime nor onnxruntime-gpu were installed
pkg = types.ModuleType("mpe_no_ort"); pkg.__path__ = [{str(REPO)!r}]; sys.modules["mpe_no_ort"] = pkg
import torch
from mpe_no_ort.nodes import pose_nodes, host
host.add_standalone_model_root({str(tmp_path)!r})
poses = json.loads(sys.stdin.read())
out = pose_nodes.MusePosePoseAlign().align(poses, 64, 96, reference_pose=poses[0])
assert out[0].shape == (len(poses), 96, 64, 3) and out[4:] == (64, 96)
import logging
said = []
handler = logging.Handler(logging.INFO)
handler.emit = lambda record: said.append(record.getMessage())
logging.getLogger("musepose_express").addHandler(handler)
logging.getLogger("musepose_express").setLevel(logging.INFO)
kp, _, _ = pose_nodes.MusePosePoseExtract().extract(torch.rand(1, 64, 48, 3))
print("PEOPLE:", len(kp[0]["people"]))
print("SAID:", said)
try:
    pose_nodes.MusePosePoseExtract().extract(torch.rand(1, 64, 48, 3), backend="onnxruntime")
except ImportError as exc:
    print("EXTRACT:", exc)
"""
    (tmp_path / "dwpose").mkdir()
    for name in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"):
        (tmp_path / "dwpose" / name).write_bytes((FIXTURE / name).read_bytes())
    person = {"pose_keypoints_2d": [0.0] * 54}
    body = [(32, 20), (32, 30), (24, 30), (22, 42), (20, 54), (40, 30), (42, 42), (44, 54),
            (27, 55), (27, 70), (27, 85), (37, 55), (37, 70), (37, 85), (30, 18), (34, 18), (28, 19), (36, 19)]
    person["pose_keypoints_2d"] = [v for x, y in body for v in (x, y, 0.9)]
    poses = [{"people": [person], "canvas_width": 64, "canvas_height": 96}] * 3
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(poses), capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PEOPLE: 1" in proc.stdout  # the stand-in detector always finds its one person
    assert "SAID: ['MusePose: pose: torch on cpu']" in proc.stdout  # host.say: the node shows "pose: torch on cpu"
    assert "EXTRACT: DWPose pose extraction needs onnxruntime" in proc.stdout
    assert "pip install onnxruntime-gpu" in proc.stdout and "pip install onnxruntime'" in proc.stdout
