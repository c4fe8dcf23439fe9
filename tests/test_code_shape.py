"""The shape of the code, checked on its syntax trees (nothing is imported):

* no function or method of the pack is longer than :data:`MAX_LINES` lines;
* the engine's modules (``musepose/``) import one another without a cycle, function-level imports included;
* one module of the pack imports ComfyUI: ``nodes/host/comfyui.py`` (top-level or function-level imports).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "musepose"
MAX_LINES = 80
#: The top-level packages that only ComfyUI provides.
COMFY_PACKAGES = {"comfy", "comfy_api", "folder_paths", "server", "comfy_execution", "latent_preview", "node_helpers"}


def _pack_files() -> list[Path]:
    return sorted([*ENGINE.rglob("*.py"), *(ROOT / "nodes").rglob("*.py"), ROOT / "__init__.py"])


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _functions(tree: ast.AST, prefix: str = ""):
    """``(qualified name, node)`` of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, prefix + node.name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, prefix + node.name + ".")
        else:
            yield from _functions(node, prefix)


def _length(node: ast.AST) -> int:
    """Lines from the first decorator (or ``def``) to the last line of the body."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return node.end_lineno - first + 1


def test_no_function_is_longer_than_80_lines():
    long = {}
    for path in _pack_files():
        for name, node in _functions(_tree(path)):
            key = f"{path.relative_to(ROOT).as_posix()}::{name}"
            if _length(node) > MAX_LINES:
                long[key] = _length(node)
    assert not long, f"functions over {MAX_LINES} lines (split them into named helpers): {long}"


def test_the_length_count_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (name, node), = _functions(ast.parse(f"@decorator\ndef f():\n{body}\n"))
    assert name == "f" and _length(node) == MAX_LINES + 2


# -- imports ----------------------------------------------------------------------------------------

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST):
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if _is_type_checking_block(node):
            yield from (i for child in node.orelse for i in _imports_of(child))
            continue
        yield from _imports_of(node)


def _imports_of(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _imports(node)


def _imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The engine modules ``path`` imports (``from .x import y`` counts ``x``, or ``x.y`` when y is a module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _imports(_tree(path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            while target and target not in modules:  # ``import a.b.c`` imports a, a.b and a.b.c
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def _import_graph() -> dict[str, set[str]]:
    """Engine module -> the engine modules it imports. A module's imports of its own packages are left out:
    Python has started those packages before the module (their ``__init__`` importing it is no cycle)."""
    paths = {_module_name(p): p for p in ENGINE.rglob("*.py")}
    return {name: _imported_modules(path, set(paths)) for name, path in paths.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_engine_has_no_import_cycle():
    graph = _import_graph()
    assert "musepose.pipeline.sampler" in graph and graph["musepose.pipeline.sampler"]
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


#: the one module that imports ComfyUI (the rest of nodes/host/ reaches ComfyUI through it)
HOST_MODULE = "nodes/host/comfyui.py"


def test_only_the_host_module_imports_comfyui():
    importers = set()
    for path in _pack_files():
        for node in _imports(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
            if any(name.split(".")[0] in COMFY_PACKAGES for name in names):
                importers.add(path.relative_to(ROOT).as_posix())
    assert HOST_MODULE in importers, "the host module imports ComfyUI: this test would see it"
    assert importers == {HOST_MODULE}, f"only {HOST_MODULE} may import ComfyUI; also: {sorted(importers - {HOST_MODULE})}"
