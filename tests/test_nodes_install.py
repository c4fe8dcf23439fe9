"""Registry/Manager install metadata: pyproject valid for the Comfy Registry, requirements unpinned."""
from __future__ import annotations

import re
import tomllib

from test_nodes_support import REPO

FORBIDDEN = {"torch", "torchvision", "torchaudio", "mmcv", "mmdet", "mmpose", "mmengine"}


def requirement_names(lines):
    return [re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower() for line in lines
            if line.strip() and not line.strip().startswith("#")]


def test_pyproject_has_the_registry_fields():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project, comfy = data["project"], data["tool"]["comfy"]
    assert project["name"] == "comfyui-musepose-express"
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]) and project["description"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert {"Repository"} <= set(project["urls"])
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["Icon"]
    assert "example_workflows" in comfy["includes"]


def test_dependencies_mirror_requirements_with_minimums_only():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    lines = (REPO / "requirements.txt").read_text().splitlines()
    reqs = [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]
    assert sorted(reqs) == sorted(data["project"]["dependencies"])
    for line in reqs:
        assert ">=" in line and "==" not in line and "<" not in line, line
    assert not FORBIDDEN & set(requirement_names(reqs))
    assert "diffusers>=0.32.0" in reqs  # first release with diffusers.models.controlnets
