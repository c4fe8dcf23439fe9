"""The pack inside a real ComfyUI 0.8.0 server on the CPU (skipped unless COMFYUI_PATH is set).

The server is started on 127.0.0.1 with --cpu and a temporary --base-directory whose custom_nodes/
holds a symlink to this checkout and whose models/ holds the tiny weights in the documented folders.
Python: $COMFYUI_PYTHON, else the interpreter running pytest (which then needs ComfyUI's requirements).
See docs/DEVELOPING.md for the setup.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from test_nodes_support import REPO, VECTOR_A, place_tiny_weights

COMFYUI = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI, reason="COMFYUI_PATH not set (real-ComfyUI tests)")

#: tiny-model settings for the shipped workflows (everything else is as shipped)
TINY_SAMPLER = dict(width=96, height=96, steps=3, context_frames=8, context_overlap=4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_pose_video(path: Path, fps: int = 8) -> None:
    import av
    from PIL import Image

    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((VECTOR_A / "inputs" / "pose").glob("*.png"))]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 96, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


class Server:
    def __init__(self, base: Path, port: int):
        self.base, self.port, self.url = base, port, f"http://127.0.0.1:{port}"
        python = os.environ.get("COMFYUI_PYTHON", sys.executable)
        self.log = open(base / "server.log", "w")
        self.proc = subprocess.Popen(
            [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
             "--base-directory", str(base), "--database-url", f"sqlite:///{base}/comfyui.db"],
            cwd=COMFYUI, stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def post(self, path: str, body: dict):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                data = r.read()
                return r.status, json.loads(data) if data else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ComfyUI exited:\n" + self.log_text()[-3000:])
            try:
                self.get("/object_info/MusePoseSampler")
                return
            except Exception:
                time.sleep(1)
        raise TimeoutError("ComfyUI did not answer:\n" + self.log_text()[-3000:])

    def log_text(self) -> str:
        self.log.flush()
        return (self.base / "server.log").read_text(errors="replace")

    def queue(self, prompt: dict, client_id: str | None = None) -> str:
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})
        assert status == 200, body
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if history and prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_run")
    (base / "custom_nodes").mkdir()
    os.symlink(REPO, base / "custom_nodes" / "comfyui-musepose-express")
    place_tiny_weights(base / "models")
    (base / "input").mkdir()
    (base / "input" / "musepose_reference.png").write_bytes((VECTOR_A / "inputs" / "ref.png").read_bytes())
    _write_pose_video(base / "input" / "musepose_poses.mp4")
    _write_pose_video(base / "input" / "musepose_dance.mp4")  # the DWPose stand-ins ignore pixel content
    (base / "models" / "dwpose").mkdir(parents=True, exist_ok=True)
    for name in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"):
        os.symlink(REPO / "tests" / "fixtures" / "dwpose-tiny" / name, base / "models" / "dwpose" / name)
    srv = Server(base, _free_port())
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def tiny_workflow(name: str, previews: bool = False, **sampler) -> dict:
    """A shipped API workflow with the tiny-model Sampler settings. A Sampler input the workflow links from
    another node's input of the same name (the dance workflow's width/height come from Pose Align) is set
    there, so the link stays and carries the value.

    Its PreviewImage nodes are left out unless ``previews``: each is an output of its own, and ComfyUI queues
    a prompt (HTTP 200, the Sampler's errors in node_errors) when some output is valid, so with them a
    Sampler refused at queue time would still run the pose nodes."""
    graph = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
    if not previews:
        graph = {node_id: node for node_id, node in graph.items() if node["class_type"] != "PreviewImage"}
    for node in graph.values():
        if node["class_type"] == "MusePoseSampler":
            for key, value in {**TINY_SAMPLER, **sampler}.items():
                linked = node["inputs"].get(key)
                if isinstance(linked, list) and key in graph[linked[0]]["inputs"]:
                    graph[linked[0]]["inputs"][key] = value
                else:
                    node["inputs"][key] = value
    return graph


def run_watching(server: Server, graph: dict, timeout: float = 600) -> dict:
    """Queue ``graph`` with a websocket open; returns its JSON events and the texts shown on nodes.

    ``texts`` are the ``progress_text`` binary messages (event type 3: node id length, node id, text) in
    order, as (node_id, text); the frontend shows the latest one under the node.
    """
    import aiohttp

    client_id = uuid.uuid4().hex
    result = {"events": [], "texts": []}

    async def drive():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
                prompt_id = server.queue(graph, client_id)
                result["prompt_id"] = prompt_id
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.BINARY:
                        data = message.data
                        if int.from_bytes(data[:4], "big") == 3:
                            size = int.from_bytes(data[4:8], "big")
                            result["texts"].append((data[8:8 + size].decode(), data[8 + size:].decode()))
                        continue
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(message.data)
                    result["events"].append(event)
                    data = event.get("data") or {}
                    if event["type"] in ("execution_success", "execution_error", "execution_interrupted") \
                            and data.get("prompt_id") == prompt_id:
                        result["outcome"] = event["type"]
                        return

    asyncio.run(asyncio.wait_for(drive(), timeout=timeout))
    return result


def saved_video(server: Server, entry: dict) -> Path:
    for output in entry["outputs"].values():
        for item in output.get("images", []):
            if item["filename"].endswith(".mp4"):
                return server.base / "output" / item.get("subfolder", "") / item["filename"]
    raise AssertionError(f"no video in {entry['outputs']}")


def test_pack_imports_cleanly(server):
    log = server.log_text()
    assert "IMPORT FAILED" not in log, log[-3000:]
    info = server.get("/object_info")
    for node_id in ("MusePoseModelLoader", "MusePoseSampler", "MusePoseDecode"):
        assert info[node_id]["category"] == "MusePose"
        assert info[node_id]["python_module"].startswith("custom_nodes.")
    assert info["MusePoseModelLoader"]["input"]["required"]["vae"][0][:2] == ["auto", "sd-vae-ft-mse/diffusion_pytorch_model.bin"]


def test_core_node_fixture_matches_this_server(server):
    fixture = json.loads((REPO / "tests" / "fixtures" / "comfy_core_nodes.json").read_text())["nodes"]
    for name, expected in fixture.items():
        live = server.get(f"/object_info/{name}")[name]
        for key in ("input_order", "output", "output_name", "output_node"):
            assert live[key] == expected[key], (name, key)


@pytest.mark.parametrize("name", ["musepose_video", "musepose_video_lowvram"])
def test_workflow_runs_to_a_video(server, name):
    entry = server.wait(server.queue(tiny_workflow(name)))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    import av

    with av.open(str(saved_video(server, entry))) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (96, 96, 3)


def test_dance_workflow_extract_align_sample_decode(server):
    """Dance video -> DWPose (onnxruntime stand-ins) -> alignment -> MusePose -> decode -> mp4; the size is
    set once, on Pose Align (96x128 here), and reaches the Sampler through Align's width/height outputs; the
    two pose previews are saved."""
    graph = tiny_workflow("musepose_dance", previews=True, height=128)
    assert graph["5"]["inputs"]["width"] == ["10", 4] and graph["5"]["inputs"]["height"] == ["10", 5]
    assert (graph["10"]["inputs"]["width"], graph["10"]["inputs"]["height"]) == (96, 128)
    entry = server.wait(server.queue(graph))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    import av

    with av.open(str(saved_video(server, entry))) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        rate = float(stream.average_rate)
    assert len(frames) == 12 and frames[0].shape == (128, 96, 3)
    assert rate == 8.0  # the dance video's fps, carried through extract and align
    previews = {node_id for node_id, node in graph.items() if node["class_type"] == "PreviewImage"}
    assert previews and all(len(entry["outputs"][node_id]["images"]) == 12 for node_id in previews), entry["outputs"]


def test_second_queue_reuses_loaded_weights(server):
    """The loader node must execute again (an input outside our cache key changes: download_missing,
    with nothing missing), and our model cache must answer it without reading the weights (counted
    from the loader's log lines)."""
    graph = tiny_workflow("musepose_video", seed=7)
    assert server.wait(server.queue(graph))["status"]["status_str"] == "success"
    loads_before = server.log_text().count("MusePose: loading weights from disk")
    reuses_before = server.log_text().count("MusePose: reusing the cached model set")
    again = json.loads(json.dumps(graph))
    again["4"]["inputs"]["download_missing"] = True
    entry = server.wait(server.queue(again))
    assert entry["status"]["status_str"] == "success"
    cached = [m for m in entry["status"]["messages"] if m[0] == "execution_cached"]
    assert cached and "4" not in cached[0][1]["nodes"], "the loader node should have run again"
    log = server.log_text()
    assert log.count("MusePose: loading weights from disk") == loads_before
    assert log.count("MusePose: reusing the cached model set") == reuses_before + 1


def test_interrupt_stops_within_one_window_and_next_run_works(server):
    """A long run (200 steps x 3 windows); interrupt after a few windows; the sampler must stop before
    the next window completes, and a following run must succeed."""
    import aiohttp

    graph = tiny_workflow("musepose_video", steps=200, context_frames=4, context_overlap=0, seed=11)
    client_id = uuid.uuid4().hex
    result = {}

    async def drive():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
                prompt_id = server.queue(graph, client_id)
                interrupted_at = None
                last_value = 0
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(message.data)
                    kind, data = event["type"], event.get("data", {})
                    if kind == "progress" and data.get("node") == "5":
                        last_value = data["value"]
                        if interrupted_at is None and last_value >= 3:
                            interrupted_at = (time.perf_counter(), last_value, data["max"])
                            await session.post(f"{server.url}/interrupt", json={})
                    if kind in ("execution_interrupted", "execution_success", "execution_error") \
                            and data.get("prompt_id") == prompt_id:
                        result.update(kind=kind, stopped=time.perf_counter(), last=last_value,
                                      interrupted_at=interrupted_at)
                        return

    asyncio.run(asyncio.wait_for(drive(), timeout=300))
    assert result["kind"] == "execution_interrupted", result
    started, value, total = result["interrupted_at"]
    assert total == 600
    assert result["last"] <= value + 1, result  # at most the window already running finished
    latency = result["stopped"] - started
    print(f"interrupt latency {latency * 1000:.0f} ms; progress {value} -> {result['last']} of {total}")
    assert latency < 5.0
    entry = server.wait(server.queue(tiny_workflow("musepose_video", seed=12)))
    assert entry["status"]["status_str"] == "success"
