"""The pack as ComfyUI loads it: any package name, beside foreign top-level ``musepose`` / ``nodes``."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from test_nodes_support import REPO


def test_imports_under_an_arbitrary_name_beside_foreign_musepose_and_nodes():
    """Run in a fresh interpreter so no earlier import of the real modules can mask a bad absolute import."""
    script = textwrap.dedent(f"""
        import importlib.util, inspect, os, sys, types
        sys.modules["musepose"] = types.ModuleType("musepose")   # the official Comfyui-MusePose's package
        sys.modules["nodes"] = types.ModuleType("nodes")         # ComfyUI's own nodes.py
        root = {str(REPO)!r}
        name = root.replace(".", "_x_") + "_renamed_x_pack"
        spec = importlib.util.spec_from_file_location(name, os.path.join(root, "__init__.py"),
                                                      submodule_search_locations=[root])
        pack = importlib.util.module_from_spec(spec)
        sys.modules[name] = pack
        spec.loader.exec_module(pack)
        ids = ["MusePoseModelLoader", "MusePoseSampler", "MusePoseDecode"]
        assert all(i in pack.NODE_CLASS_MAPPINGS for i in ids), pack.NODE_CLASS_MAPPINGS
        for i in ids:
            cls = pack.NODE_CLASS_MAPPINGS[i]
            assert cls.__module__.startswith(name + ".nodes."), cls.__module__
            assert inspect.getfile(cls).startswith(os.path.join(root, "nodes")), inspect.getfile(cls)
        assert not hasattr(sys.modules["musepose"], "pipeline") and not hasattr(sys.modules["nodes"], "host")
        assert "diffusers" not in sys.modules, "importing the pack must not import the engine's heavy deps"
        print("OK", sorted(pack.NODE_CLASS_MAPPINGS))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd="/")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout


def test_only_host_imports_comfyui():
    """``nodes/host/comfyui.py`` is the one module that imports ComfyUI (at its top or inside a function)."""
    offenders = []
    for path in sorted((REPO / "nodes").rglob("*.py")) + [REPO / "__init__.py"]:
        if path == REPO / "nodes" / "host" / "comfyui.py":
            continue
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and any(
                    word in stripped.split()[1].split(".")[0] for word in ("comfy", "folder_paths", "latent_preview")):
                offenders.append(f"{path.relative_to(REPO)}: {stripped}")
    assert not offenders, offenders


def test_root_init_imports_as_a_plain_module():
    """pytest imports the checkout's __init__.py as a plain module when the folder name is not an
    identifier (comfyui-musepose-express); that must not fail (it broke every test once)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("__init__", REPO / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS == {} and module.NODE_DISPLAY_NAME_MAPPINGS == {}


def test_node_functions_are_short():
    """Every function in nodes/ fits on a screen (at most 80 lines): the nodes stay thin over the engine."""
    import ast

    long = []
    for path in sorted((REPO / "nodes").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(REPO)}: {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
