"""A real ComfyUI server on the CPU for the real-host tests (tests/test_comfy_*.py) and their helpers.

One server per pytest session (the ``server`` fixture in conftest.py), on 127.0.0.1 with --cpu and a
temporary --base-directory whose custom_nodes/ holds a symlink to this checkout and whose models/ holds the
tiny weights in the documented folders. ComfyUI: $COMFYUI_PATH (0.8.0 and 0.19.3 in CI, built by
.ci/comfyui-hosts); Python: $COMFYUI_PYTHON, else the interpreter running pytest (which then needs
ComfyUI's requirements). See docs/DEVELOPING.md.
"""
from __future__ import annotations

import asyncio
import copy
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

from test_nodes_support import REPO, VECTOR_A, place_tiny_weights

COMFYUI = os.environ.get("COMFYUI_PATH")

def comfyui_version() -> tuple[int, ...]:
    """The version of the ComfyUI at $COMFYUI_PATH, e.g. (0, 19, 3)."""
    text = (Path(COMFYUI) / "comfyui_version.py").read_text()
    return tuple(int(n) for n in text.split('__version__ = "')[1].split('"')[0].split("."))


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
    def __init__(self, base: Path, port: int, extra_args: tuple[str, ...] = ()):
        self.base, self.port, self.url = base, port, f"http://127.0.0.1:{port}"
        python = os.environ.get("COMFYUI_PYTHON", sys.executable)
        self.log = open(base / "server.log", "w")
        self.proc = subprocess.Popen(
            [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
             "--base-directory", str(base), "--database-url", f"sqlite:///{base}/comfyui.db", *extra_args],
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


def with_decode_to_video(graph: dict) -> dict:
    """The pose-video workflow ``graph`` ending in MusePose Decode to Video -> SaveVideo (no IMAGE output)
    instead of MusePose Decode -> CreateVideo -> SaveVideo."""
    graph = copy.deepcopy(graph)
    graph["9"] = {"class_type": "MusePoseDecodeToVideo",
                  "inputs": {"musepose": ["4", 0], "latent": ["5", 0], "fps": ["3", 2], "chunk_size": 0,
                             "tiling": False}}
    graph["8"]["inputs"]["video"] = ["9", 0]
    del graph["6"], graph["7"]
    return graph


def with_pose_video_input(graph: dict) -> dict:
    """The pose-video workflow ``graph`` with no IMAGE batch at all: Load Video straight into the Sampler's
    pose_video, and Decode to Video taking its frame rate from the same VIDEO (Get Video Components gone)."""
    graph = with_decode_to_video(graph)
    del graph["5"]["inputs"]["pose_images"], graph["3"]
    graph["5"]["inputs"]["pose_video"] = ["2", 0]
    graph["9"]["inputs"].update(fps=30.0, pose_video=["2", 0])
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


def interrupted_run(server: Server, graph: dict, at_value: int, timeout: float = 300) -> dict:
    """Queue ``graph`` and POST /interrupt once the Sampler's (node 5) progress reaches ``at_value``.

    Returns ``kind`` (how the prompt ended), ``interrupted_at`` (perf_counter, progress value, progress max
    when the interrupt was sent), ``stopped`` (perf_counter at the end event) and ``last`` (the last
    progress value seen)."""
    import aiohttp

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
                        if interrupted_at is None and last_value >= at_value:
                            interrupted_at = (time.perf_counter(), last_value, data["max"])
                            await session.post(f"{server.url}/interrupt", json={})
                    if kind in ("execution_interrupted", "execution_success", "execution_error") \
                            and data.get("prompt_id") == prompt_id:
                        result.update(kind=kind, stopped=time.perf_counter(), last=last_value,
                                      interrupted_at=interrupted_at)
                        return

    asyncio.run(asyncio.wait_for(drive(), timeout=timeout))
    return result


def saved_video(server: Server, entry: dict) -> Path:
    for output in entry["outputs"].values():
        for item in output.get("images", []):
            if item["filename"].endswith(".mp4"):
                return server.base / "output" / item.get("subfolder", "") / item["filename"]
    raise AssertionError(f"no video in {entry['outputs']}")


def start_server(base: Path, extra_args: tuple[str, ...] = ()) -> Server:
    """A ready server on a fresh base directory laid out as the docstring above says; ``extra_args`` go to
    main.py (e.g. ``--front-end-root``)."""
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
    srv = Server(base, _free_port(), extra_args)
    try:
        srv.wait_ready()
    except BaseException:
        srv.stop()
        raise
    return srv
