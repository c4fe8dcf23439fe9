"""The shipped workflows only use nodes that exist, with valid widget values, and the UI twins match.

Core node definitions come from tests/fixtures/comfy_core_nodes.json, trimmed from the real ComfyUI
0.8.0 ``/object_info``; ours from INPUT_TYPES. The real server validates the API files again in
tests/test_comfy_server.py when COMFYUI_PATH is set.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_nodes_support import REPO, load_pack

CORE = json.loads((REPO / "tests" / "fixtures" / "comfy_core_nodes.json").read_text())
API_FILES = sorted((REPO / "workflows" / "api").glob("*.json"))
UI_FILES = sorted((REPO / "example_workflows").glob("*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def definitions() -> dict:
    defs = {}
    for name, d in CORE["nodes"].items():
        defs[name] = {"required": d["input"].get("required", {}), "optional": d["input"].get("optional", {}),
                      "order": d["input_order"].get("required", []) + d["input_order"].get("optional", []),
                      "outputs": d["output"], "dynamic": set(CORE["_dynamic_combos"].get(name, []))}
    for name, cls in load_pack().NODE_CLASS_MAPPINGS.items():
        types = cls.INPUT_TYPES()
        required, optional = types.get("required", {}), types.get("optional", {})
        defs[name] = {"required": required, "optional": optional, "order": list(required) + list(optional),
                      "outputs": list(cls.RETURN_TYPES), "dynamic": set()}
    return defs


DEFS = definitions()


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def widget_error(node_type: str, name: str, value) -> str | None:
    d = DEFS[node_type]
    spec = {**d["required"], **d["optional"]}[name]
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list) or kind == "COMBO":
        choices = kind if isinstance(kind, list) else options.get("options", [])
        if name in d["dynamic"]:
            return None if isinstance(value, str) and value else f"{name}: empty file name"
        return None if value in choices else f"{name}: {value!r} not in {choices}"
    if kind == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name}: {value!r} is not an INT"
    elif kind == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{name}: {value!r} is not a FLOAT"
    elif kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{name}: {value!r} is not a BOOLEAN"
    elif kind == "STRING":
        return None if isinstance(value, str) else f"{name}: {value!r} is not a STRING"
    if "min" in options and value < options["min"]:
        return f"{name}: {value} < min {options['min']}"
    if "max" in options and value > options["max"]:
        return f"{name}: {value} > max {options['max']}"
    return None


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_nodes_inputs_and_links_are_valid(path: Path):
    graph = json.loads(path.read_text())
    errors = []
    for node_id, node in graph.items():
        kind = node["class_type"]
        if kind not in DEFS:
            errors.append(f"{node_id}: unknown node type {kind}")
            continue
        d = DEFS[kind]
        for name in d["required"]:
            if name not in node["inputs"]:
                errors.append(f"{node_id} {kind}: required input {name} missing")
        for name, value in node["inputs"].items():
            spec = {**d["required"], **d["optional"]}.get(name)
            if spec is None:
                errors.append(f"{node_id} {kind}: no input named {name}")
            elif isinstance(value, list):
                source, slot = value
                produced = DEFS[graph[source]["class_type"]]["outputs"][slot]
                wanted = "COMBO" if isinstance(spec[0], list) else spec[0]
                if produced != wanted:
                    errors.append(f"{node_id}.{name}: link gives {produced}, input wants {wanted}")
            elif (problem := widget_error(kind, name, value)) is not None:
                errors.append(f"{node_id} {kind}: {problem}")
    assert not errors, errors
    assert any(n["class_type"] == "SaveVideo" for n in graph.values())


def test_every_api_workflow_has_a_ui_twin():
    assert [p.name for p in API_FILES] == [p.name for p in UI_FILES]
    assert {"musepose_video.json", "musepose_video_lowvram.json"} <= {p.name for p in UI_FILES}


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_matches_its_api_twin(path: Path):
    """widgets_values map positionally onto the node's widget inputs (skipping the frontend-only
    control_after_generate and upload entries), links match, and values are valid."""
    ui = json.loads(path.read_text())
    api = json.loads((REPO / "workflows" / "api" / path.name).read_text())
    links = {link[0]: link for link in ui["links"]}
    seen = set()
    for node in ui["nodes"]:
        if node["type"] in CORE["_frontend_only"]:
            continue
        assert node["type"] in DEFS, node["type"]
        twin = api[str(node["id"])]
        assert twin["class_type"] == node["type"]
        d = DEFS[node["type"]]
        specs = {**d["required"], **d["optional"]}
        values = list(node["widgets_values"])
        linked = {i["name"]: links[i["link"]] for i in node["inputs"] if i.get("link") is not None}
        for name in d["order"]:
            spec = specs[name]
            if name in linked:
                link = linked[name]
                assert twin["inputs"][name] == [str(link[1]), link[2]], (node["id"], name)
            if not is_widget(spec):
                continue
            value = values.pop(0)
            assert widget_error(node["type"], name, value) is None, (node["id"], name, value)
            if name not in linked:
                assert twin["inputs"].get(name) == value, (node["id"], name, value, twin["inputs"].get(name))
            options = spec[1] if len(spec) > 1 else {}
            if options.get("control_after_generate"):
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
            if options.get("image_upload") or options.get("video_upload"):
                assert values.pop(0) == "image"
        assert values == [], (node["id"], values)
        seen.add(str(node["id"]))
    assert seen == set(api)
    for link in ui["links"]:
        source = next(n for n in ui["nodes"] if n["id"] == link[1])
        assert link[0] in source["outputs"][link[2]]["links"]


def test_low_vram_preset_really_is_one():
    graph = json.loads((REPO / "workflows" / "api" / "musepose_video_lowvram.json").read_text())
    by_type = {n["class_type"]: n["inputs"] for n in graph.values()}
    assert by_type["MusePoseModelLoader"]["offload"] == "lowvram"
    assert by_type["MusePoseSampler"]["cfg_mode"] == "sequential"
    assert by_type["MusePoseSampler"]["context_frames"] <= 16
    assert by_type["MusePoseDecode"]["tiling"] is True


def test_validator_catches_bad_values():
    assert widget_error("MusePoseSampler", "scheduler", "lms") is not None
    assert widget_error("MusePoseSampler", "steps", 0) is not None
    assert widget_error("CreateVideo", "fps", 500.0) is not None
    assert widget_error("SaveVideo", "codec", "vp9") is not None
    assert widget_error("MusePoseDecode", "tiling", "yes") is not None
