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


def test_root_init_imports_as_a_plain_module():
    """pytest imports the checkout's __init__.py as a plain module when the folder name is not an
    identifier (comfyui-musepose-express); that must not fail (it broke every test once)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("__init__", REPO / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS == {} and module.NODE_DISPLAY_NAME_MAPPINGS == {}
