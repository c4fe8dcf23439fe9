"""The pack's frontend extension (web/musepose_messages.js) and the example workflows in a real browser.

The first tests read the files only and always run. The browser check runs workflows/tools/screenshots.js with
CHECK_ONLY=1 against a real ComfyUI server on the CPU (tests/comfy_support.py lays out its base directory with
the tiny weights): each example workflow is opened from the template browser with no warning (console warnings
and errors, toasts, missing-nodes dialog), run at 96x96 with 3 steps (Pose Align at 100x132, so that it and
the Sampler it sizes warn), and afterwards the Sampler, Decode and pose nodes show their messages in the
read-only box ("memory: ..." on the Sampler, "not a multiple of 8" on Pose Align), and saving the workflow
leaves the box out. It needs COMFYUI_PATH, Chromium ($CHROMIUM or chromium on PATH), node and playwright-core
(NODE_PATH naming the node_modules folder that holds it), and is skipped, saying which is missing, otherwise.

Which frontends: MUSEPOSE_FRONTEND_ROOTS, a list of ComfyUI frontend ``static`` folders separated by the path
separator (one server per frontend, started with ``--front-end-root``); unset: the frontend that the server's
Python has installed. docs/DEVELOPING.md says how to install the three we check (1.35.9, 1.42.15, 1.58.1).
Each frontend takes a few minutes on 2 CPU cores.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from test_nodes_support import REPO, load_pack

WEB = REPO / "web"
EXTENSION = WEB / "musepose_messages.js"
SCRIPT = REPO / "workflows" / "tools" / "screenshots.js"


def test_pack_exports_its_web_directory():
    init = (REPO / "__init__.py").read_text()
    assert re.search(r'^WEB_DIRECTORY = "\./web"$', init, re.M)
    assert '"WEB_DIRECTORY"' in init.split("__all__", 1)[1]
    assert sorted(p.name for p in WEB.iterdir()) == ["musepose_messages.js"]


def test_extension_uses_only_the_stable_api_and_never_saves_the_box():
    """Imports app.js and api.js only (scripts/widgets.js logs a console warning as internal in every frontend); the box
    is a DOM widget that neither the workflow (widget.serialize) nor the prompt (options.serialize) saves; it
    reads the UI output key the nodes send."""
    import sys

    host = sys.modules[load_pack().__name__ + ".nodes.host"]
    assert WEB.name == load_pack().WEB_DIRECTORY.strip("./")
    source = EXTENSION.read_text()
    assert re.findall(r'^import .* from "([^"]+)";$', source, re.M) == ["../../scripts/app.js", "../../scripts/api.js"]
    for needed in ("app.registerExtension(", "beforeRegisterNodeDef", "onExecuted", ".addDOMWidget(",
                   "widget.serialize = false", "widget.options.serialize = false", "readOnly = true",
                   'startsWith("MusePose")', f'const UI_KEY = "{host.MESSAGES_UI_KEY}";'):
        assert needed in source, needed
    assert "onNodeCreated" not in source  # added on the first message: saved workflows load as before


def _missing_tools() -> list[str]:
    missing = []
    if not os.environ.get("COMFYUI_PATH"):
        missing.append("COMFYUI_PATH (a ComfyUI source tree)")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium or not Path(chromium).exists():
        missing.append("Chromium ($CHROMIUM or chromium on PATH)")
    node = shutil.which("node")
    if not node:
        missing.append("node")
    else:
        found = subprocess.run([node, "-e", "require.resolve('playwright-core')"], capture_output=True,
                               env={**os.environ}, cwd=REPO)
        if found.returncode:
            missing.append("playwright-core (npm i playwright-core; NODE_PATH=<that folder>/node_modules)")
    return missing


def _frontend_roots() -> list[str | None]:
    roots = os.environ.get("MUSEPOSE_FRONTEND_ROOTS")
    return [r for r in roots.split(os.pathsep) if r] if roots else [None]


@pytest.mark.parametrize("root", _frontend_roots(), ids=lambda r: Path(r).parent.parent.name if r else "installed")
def test_workflows_load_run_and_keep_their_messages_in_the_browser(root, tmp_path):
    missing = _missing_tools()
    if missing:
        pytest.skip("browser check needs " + ", ".join(missing) + " (docs/DEVELOPING.md)")
    from comfy_support import start_server

    server = start_server(tmp_path, ("--front-end-root", root) if root else ())
    try:
        chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
        done = subprocess.run(["node", str(SCRIPT), server.url], cwd=REPO, capture_output=True, text=True,
                              timeout=1800, env={**os.environ, "CHECK_ONLY": "1", "CHROMIUM": chromium})
    finally:
        server.stop()
    output = done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result (exit {done.returncode}):\n{output[-4000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    names = sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
    assert sorted(result["workflows"]) == names, output[-4000:]
    for name, checked in result["workflows"].items():
        assert checked["warnings"] == [], (result["frontend"], name, checked["warnings"])
        assert checked["problems"] == [], (result["frontend"], name, checked["problems"])
        sampler = [b for b in checked["boxes"] if b["type"] == "MusePoseSampler"]
        assert sampler and all("memory:" in (b["text"] or "") for b in sampler), (result["frontend"], name, sampler)
        align = [b for b in checked["boxes"] if b["type"] == "MusePosePoseAlign"]
        assert all("not a multiple of 8" in (b["text"] or "") for b in align), (result["frontend"], name, align)
    assert done.returncode == 0, output[-4000:]
