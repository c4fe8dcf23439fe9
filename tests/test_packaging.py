"""Packaging: the engine as a pip package, the registry metadata, the README's two commands and CI.

The wheel is built offline from a copy of the checkout (so nothing is written into it) with the setuptools
of the running environment (requirements-dev.txt asks for one that builds wheels by itself).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DEV_ONLY = ("tests", "benchmarks", ".ci")
# What comfy-cli's registry parser accepts (anything else drops the whole field with a warning).
REGISTRY_OS_PREFIXES = ("Microsoft", "POSIX", "MacOS", "OS Independent")
REGISTRY_ACCELERATORS = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend",
                         "GPU :: Apple Metal"}
REGISTRY_VERSION = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")


# ---------------------------------------------------------------------------------------------
# registry metadata

def test_registry_urls_use_the_keys_the_registry_reads():
    urls = PYPROJECT["project"]["urls"]
    repo = "https://github.com/musepose-express/comfyui-musepose-express"
    assert urls["Homepage"] == repo and urls["Repository"] == repo
    assert urls["Issues"] == repo + "/issues"
    assert "Bug Tracker" not in urls


def test_requires_comfyui_is_the_oldest_version_ci_tests():
    """requires-comfyui names the oldest ComfyUI whose real-host tests CI runs (.ci/comfyui-hosts), and
    requires-python is what ComfyUI requires."""
    comfy = PYPROJECT["tool"]["comfy"]
    hosts = (REPO / ".ci" / "comfyui-hosts").read_text()
    tested = re.search(r"^versions=\((.*)\)$", hosts, re.M).group(1).split()
    oldest = min(tested, key=lambda v: tuple(int(n) for n in v.split(".")))
    assert comfy["requires-comfyui"] == f">={oldest}" == ">=0.8.0"
    assert PYPROJECT["project"]["requires-python"] == ">=3.10"
    assert all(REGISTRY_VERSION.match(part.strip()) for part in comfy["requires-comfyui"].split(","))


def test_classifiers_parse_as_registry_os_and_accelerators():
    classifiers = PYPROJECT["project"]["classifiers"]
    oses = [c.removeprefix("Operating System :: ") for c in classifiers if c.startswith("Operating System :: ")]
    accelerators = [c.removeprefix("Environment :: ") for c in classifiers if c.startswith("Environment ::")]
    assert oses and all(o.startswith(REGISTRY_OS_PREFIXES) for o in oses)
    assert accelerators and set(accelerators) <= REGISTRY_ACCELERATORS


def test_icon_is_square_small_and_in_the_repository():
    icon = PYPROJECT["tool"]["comfy"]["Icon"]
    prefix = "https://raw.githubusercontent.com/musepose-express/comfyui-musepose-express/main/"
    assert icon.startswith(prefix)
    path = REPO / icon.removeprefix(prefix)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width == image.height <= 400


def comfyignore_patterns() -> list[str]:
    lines = (REPO / ".comfyignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_comfyignore_leaves_tests_benchmarks_and_ci_out_of_the_zip():
    # Anchored or not, with or without the trailing slash: each names the whole top-level folder.
    folders = {p.strip("/") for p in comfyignore_patterns() if "*" not in p and p.strip("/").count("/") == 0}
    assert set(DEV_ONLY) <= folders
    # [tool.comfy] includes win over .comfyignore, so none of them may bring those folders back.
    for include in PYPROJECT["tool"]["comfy"]["includes"]:
        assert include.strip("/").split("/")[0] not in DEV_ONLY, include
    # ... and nothing the pack needs at run time is ignored.
    for needed in ("musepose", "nodes", "__init__.py", "requirements.txt", "pyproject.toml", "LICENSE",
                   "README.md", "example_workflows"):
        assert needed not in folders, needed


# ---------------------------------------------------------------------------------------------
# the engine as a package

def _copy_ignore(directory: str, names: list[str]) -> set[str]:
    here = Path(directory)
    skipped = {n for n in names if n in {".git", "__pycache__", "build", "dist", "outputs", "out"}
               or n.endswith(".egg-info") or (here / n / "pyvenv.cfg").exists()}
    if here.resolve() == (REPO / "tests").resolve():
        skipped.add("fixtures")  # megabytes of weights; the folder's presence is what matters here
    return skipped


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline (no index, no build isolation) from a copy of the whole checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=_copy_ignore)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "--quiet", "--wheel-dir", str(root / "dist"), str(source)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (built,) = (root / "dist").glob("*.whl")
    return built


def test_wheel_holds_the_engine_only(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/")[0] for name in names}
    dist_info = next(t for t in top if t.endswith(".dist-info"))
    assert top == {"musepose", dist_info}  # no nodes/, tests/, benchmarks/, root __init__.py
    engine = {p.relative_to(REPO).as_posix() for p in (REPO / "musepose").rglob("*.py") if "__pycache__" not in p.parts}
    assert engine <= set(names)  # every subpackage was found


def test_wheel_declares_the_console_command_and_no_torch(wheel):
    with zipfile.ZipFile(wheel) as archive:
        dist_info = next(n.split("/")[0] for n in archive.namelist() if n.split("/")[0].endswith(".dist-info"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert re.search(r"^\[console_scripts\]\s*^musepose\s*=\s*musepose\.cli:main\s*$", entry_points, re.M)
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requires}
    assert "diffusers" in names and not names & {"torch", "torchvision", "torchaudio"}
    assert all("==" not in r.split(";")[0] for r in requires)  # minimum versions only (markers aside)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed (not editable) into a folder of its own, with its console script in bin/."""
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                             "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    script = target / "bin" / "musepose"
    assert script.is_file()
    return target


def run_installed(installed: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run([str(installed / "bin" / "musepose"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_installed_command_runs_the_demo_from_the_clone(installed, tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import musepose; print(musepose.__file__)"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True, text=True)
    assert Path(probe.stdout.strip()).is_relative_to(installed)  # the installed copy, not the checkout
    out = tmp_path / "demo.mp4"
    result = run_installed(installed, "demo", "--out", str(out), "--steps", "1", cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.stat().st_size > 1000


def test_installed_command_outside_a_clone_says_what_to_do(installed, tmp_path):
    result = run_installed(installed, "demo", "--out", str(tmp_path / "demo.mp4"), cwd=tmp_path)
    assert result.returncode != 0
    assert "tests/fixtures/musepose-tiny" in result.stderr and "clone" in result.stderr
    assert not (tmp_path / "demo.mp4").exists()


# ---------------------------------------------------------------------------------------------
# README, CI and developer notes

def readme_commands() -> list[str]:
    """The lines of the README's first code block (its opening commands)."""
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_two_commands_and_ci_runs_the_second_verbatim():
    setup_and_demo, tests = readme_commands()
    assert "torch==2.13.0" in setup_and_demo and setup_and_demo.endswith("musepose demo")
    assert "pytest" in tests
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert tests in ci


def test_developer_notes_name_no_machine_specific_paths():
    text = (REPO / "docs" / "DEVELOPING.md").read_text()
    assert not re.findall(r"(?<![\w$}.])/(?:work|tmp|home|root)/", text)
