"""The shipped workflows only use nodes that exist, with valid widget values; the UI twins match, are laid
out so nothing overlaps once the frontend shows previews, and show up in the template browser with a
readable title and a thumbnail.

Core node definitions come from tests/fixtures/comfy_core_nodes.json, trimmed from the real ComfyUI
0.8.0 ``/object_info``; ours from INPUT_TYPES. The real server validates and runs the API files again in
tests/test_comfy_server.py when COMFYUI_PATH is set.
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from test_nodes_support import REPO, load_pack

CORE = json.loads((REPO / "tests" / "fixtures" / "comfy_core_nodes.json").read_text())
API_FILES = sorted((REPO / "workflows" / "api").glob("*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _tool():
    path = REPO / "workflows" / "tools" / "ui_from_api.py"
    spec = importlib.util.spec_from_file_location("musepose_ui_from_api", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _tool()
#: API workflow name -> its UI twin in example_workflows/ (named for the template browser)
UI_OF = {name: REPO / "example_workflows" / f"{title}.json" for name, title in TOOL.TEMPLATES.items()}
UI_FILES = sorted(UI_OF.values())
API_OF = {path: REPO / "workflows" / "api" / f"{name}.json" for name, path in UI_OF.items()}

#: the least body size (width, height) ComfyUI 0.8.0's frontend (1.35.9) gives each node when it loads a
#: workflow, measured in headless Chromium (workflows/tools/screenshots.js prints them): a node laid out
#: smaller is enlarged on load and may cover its neighbours. LoadVideo/SaveVideo grow further with their
#: video (ui_from_api.grown_height, VIDEO_CHROME measured the same way).
FRONTEND_SIZE = {
    "LoadImage": (237, 326), "GetVideoComponents": (171, 66), "CreateVideo": (279, 78), "SaveVideo": (210, 106),
    "PreviewImage": (306, 258), "Note": (210, 88),
    "MusePoseModelLoader": (210, 250), "MusePoseSampler": (217, 430), "MusePoseDecode": (210, 102),
    "MusePoseDecodeToVideo": (210, 170),
    "MusePosePoseExtract": (267, 242), "MusePosePoseAlign": (303, 422),
}
#: nodes that show their messages under their widgets after a run, and the room (about five lines of the
#: frontend's text) they need for them without growing
MESSAGE_NODES = {"MusePoseSampler", "MusePoseDecode", "MusePoseDecodeToVideo", "MusePosePoseExtract", "MusePosePoseAlign"}
MESSAGE_ROOM = 70
#: video shapes a user's videos come in (width / height): square, landscape 16:9, portrait 9:16
VIDEO_ASPECTS = (1.0, 16 / 9, 9 / 16)


def definitions() -> dict:
    defs = {}
    for name, d in CORE["nodes"].items():
        defs[name] = {"required": d["input"].get("required", {}), "optional": d["input"].get("optional", {}),
                      "order": d["input_order"].get("required", []) + d["input_order"].get("optional", []),
                      "outputs": d["output"], "output_names": d["output_name"],
                      "dynamic": set(CORE["_dynamic_combos"].get(name, []))}
    for name, cls in load_pack().NODE_CLASS_MAPPINGS.items():
        types = cls.INPUT_TYPES()
        required, optional = types.get("required", {}), types.get("optional", {})
        defs[name] = {"required": required, "optional": optional, "order": list(required) + list(optional),
                      "outputs": list(cls.RETURN_TYPES),
                      "output_names": list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES), "dynamic": set()}
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


def output_slot(node_type: str, output_name: str) -> int:
    return DEFS[node_type]["output_names"].index(output_name)


def api_graph(name: str) -> dict:
    return json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())


def ui_graph(name: str) -> dict:
    return json.loads(UI_OF[name].read_text())


def by_type(graph: dict, class_type: str) -> list[str]:
    return [node_id for node_id, node in graph.items() if node["class_type"] == class_type]


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
        if not node.get("_meta", {}).get("title"):
            errors.append(f"{node_id} {kind}: no title")
    assert not errors, errors
    assert any(n["class_type"] == "SaveVideo" for n in graph.values())


def test_every_api_workflow_has_a_ui_twin():
    assert sorted(UI_OF) == [p.stem for p in API_FILES]
    shipped = sorted((REPO / "example_workflows").glob("*.json"))
    assert shipped == UI_FILES, "example_workflows/ holds exactly the UI twins named in ui_from_api.TEMPLATES"
    assert {"musepose_video", "musepose_video_lowvram", "musepose_dance"} <= set(UI_OF)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_matches_its_api_twin(path: Path):
    """widgets_values map positionally onto the node's widget inputs (skipping the frontend-only
    control_after_generate and upload entries; optional widgets the API leaves unset may be missing at the
    end), links match by input name and slot, and values are valid."""
    ui = json.loads(path.read_text())
    api = json.loads(API_OF[path].read_text())
    links = {link[0]: link for link in ui["links"]}
    seen = set()
    for node in ui["nodes"]:
        if node["type"] in CORE["_frontend_only"]:
            continue
        assert node["type"] in DEFS, node["type"]
        twin = api[str(node["id"])]
        assert twin["class_type"] == node["type"]
        assert node["title"] == twin["_meta"]["title"]
        d = DEFS[node["type"]]
        specs = {**d["required"], **d["optional"]}
        values = list(node["widgets_values"])
        linked = {i["name"]: links[i["link"]] for i in node["inputs"] if i.get("link") is not None}
        for slot, entry in enumerate(node["inputs"]):
            if entry.get("link") is not None:
                assert links[entry["link"]][3:5] == [node["id"], slot], (node["id"], entry)
        for name in d["order"]:
            spec = specs[name]
            if name in linked:
                link = linked[name]
                assert twin["inputs"][name] == [str(link[1]), link[2]], (node["id"], name)
            if not is_widget(spec):
                continue
            if not values and name in d["optional"] and name not in twin["inputs"]:
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
        assert set(linked) == {k for k, v in twin["inputs"].items() if isinstance(v, list)}, node["id"]
        seen.add(str(node["id"]))
    assert seen == set(api)
    for link in ui["links"]:
        source = next(n for n in ui["nodes"] if n["id"] == link[1])
        assert link[0] in source["outputs"][link[2]]["links"]


@pytest.mark.parametrize("name", sorted(UI_OF))
def test_ui_file_is_what_the_tool_builds(name: str):
    """example_workflows/ is generated from workflows/api/ (python workflows/tools/ui_from_api.py): a node
    or workflow change that is not regenerated shows up here."""
    defs = TOOL.definitions(load_pack())
    built = TOOL.convert(api_graph(name), TOOL.NOTES[name], defs, TOOL.LAYOUTS[name])
    assert json.loads(json.dumps(built)) == ui_graph(name), "run python workflows/tools/ui_from_api.py"


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_workflows_store_every_widget_input(path: Path):
    """Every widget input of every node, optional ones included (the Model Loader's extra_devices and compile),
    has its value in the API file, and so in its UI twin's widgets_values: a frontend loading the workflow
    fills in nothing, and a user reading it sees every setting."""
    graph = json.loads(path.read_text())
    for node_id, node in graph.items():
        d = DEFS[node["class_type"]]
        specs = {**d["required"], **d["optional"]}
        missing = [name for name in d["order"] if is_widget(specs[name]) and name not in node["inputs"]]
        assert not missing, (node_id, node["class_type"], missing)
    ui = json.loads(UI_OF[path.stem].read_text())
    loader = next(n for n in ui["nodes"] if n["type"] == "MusePoseModelLoader")
    assert len(loader["widgets_values"]) == 9 == len(DEFS["MusePoseModelLoader"]["order"])


def test_defaults_a_user_should_get():
    """offload and cfg_mode on auto (the memory policy chooses) in the standard workflows; the low-VRAM preset
    keeps its explicit choices."""
    for name in ("musepose_video", "musepose_dance"):
        graph = api_graph(name)
        for node_id in by_type(graph, "MusePoseModelLoader"):
            assert graph[node_id]["inputs"]["offload"] == "auto", name
            assert DEFS["MusePoseModelLoader"]["required"]["offload"][1]["default"] == "auto"
        for node_id in by_type(graph, "MusePoseSampler"):
            assert graph[node_id]["inputs"]["cfg_mode"] == "auto", name
            assert DEFS["MusePoseSampler"]["required"]["cfg_mode"][1]["default"] == "auto"


def test_low_vram_preset_really_is_one():
    """Low VRAM, and low host memory on long clips: no node makes an IMAGE batch of the video (the pose video
    goes to the Sampler as a VIDEO, Decode to Video writes the mp4 and takes the pose video's frame rate)."""
    graph = api_graph("musepose_video_lowvram")
    by_class = {n["class_type"]: n["inputs"] for n in graph.values()}
    assert by_class["MusePoseModelLoader"]["offload"] == "lowvram"
    assert by_class["MusePoseSampler"]["cfg_mode"] == "sequential"
    assert by_class["MusePoseSampler"]["context_frames"] <= 16
    assert by_class["MusePoseDecodeToVideo"]["tiling"] is True
    load_video = by_type(graph, "LoadVideo")
    assert by_class["MusePoseSampler"]["pose_video"] == by_class["MusePoseDecodeToVideo"]["pose_video"] == [load_video[0], 0]
    assert "pose_images" not in by_class["MusePoseSampler"]
    assert not {"GetVideoComponents", "MusePoseDecode", "CreateVideo"} & set(by_class)


def test_dance_size_is_set_once_on_pose_align():
    """The Sampler's width/height are converted widget inputs linked to Pose Align's width/height outputs, in
    the API file and in the UI file (a widget input with its link, as the 0.8.0 frontend saves it)."""
    graph = api_graph("musepose_dance")
    (align,), (sampler,) = by_type(graph, "MusePosePoseAlign"), by_type(graph, "MusePoseSampler")
    for size in ("width", "height"):
        assert graph[sampler]["inputs"][size] == [align, output_slot("MusePosePoseAlign", size)]
        assert isinstance(graph[align]["inputs"][size], int)
    ui = ui_graph("musepose_dance")
    links = {link[0]: link for link in ui["links"]}
    node = next(n for n in ui["nodes"] if str(n["id"]) == sampler)
    for size in ("width", "height"):
        entry = next(i for i in node["inputs"] if i["name"] == size)
        assert entry["widget"] == {"name": size} and entry["type"] == "INT"
        link = links[entry["link"]]
        assert (str(link[1]), link[2], link[5]) == (align, output_slot("MusePosePoseAlign", size), "INT")


def test_dance_poses_go_to_preview_nodes():
    """Pose Extract's pose_preview and Pose Align's debug_overlay each feed a PreviewImage."""
    graph = api_graph("musepose_dance")
    shown = {tuple(graph[n]["inputs"]["images"]) for n in by_type(graph, "PreviewImage")}
    (extract,), (align,) = by_type(graph, "MusePosePoseExtract"), by_type(graph, "MusePosePoseAlign")
    assert (extract, output_slot("MusePosePoseExtract", "pose_preview")) in shown
    assert (align, output_slot("MusePosePoseAlign", "debug_overlay")) in shown


def frontend_rectangles(ui: dict, aspect: float) -> dict[int, tuple[float, float, float, float]]:
    """Node rectangles (left, top, right, bottom; title bar included) as the frontend shows them after a run
    with videos of ``aspect``: LoadVideo and SaveVideo as tall as their video makes them."""
    rects = {}
    for node in ui["nodes"]:
        (x, y), (width, height) = node["pos"], node["size"]
        if node["type"] in TOOL.VIDEO_CHROME:
            height = max(height, TOOL.VIDEO_CHROME[node["type"]] + width / aspect)
        rects[node["id"]] = (x, y - TOOL.TITLE_HEIGHT, x + width, y + height)
    return rects


def assert_apart(ui: dict) -> None:
    for aspect in VIDEO_ASPECTS:
        rects = sorted(frontend_rectangles(ui, aspect).items())
        for i, (a, ra) in enumerate(rects):
            for b, rb in rects[i + 1:]:
                apart = ra[2] <= rb[0] or rb[2] <= ra[0] or ra[3] <= rb[1] or rb[3] <= ra[1]
                assert apart, f"nodes {a} {ra} and {b} {rb} overlap (videos {aspect:.2f}:1)"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_no_node_overlaps_another_after_previews_grow(path: Path):
    ui = json.loads(path.read_text())
    assert_apart(ui)
    for node in ui["nodes"]:  # at least as large as the frontend makes them on load, with room for messages
        least_w, least_h = FRONTEND_SIZE.get(node["type"], (0, 0))
        if node["type"] in MESSAGE_NODES:
            least_h += MESSAGE_ROOM
        assert node["size"][0] >= least_w and node["size"][1] >= least_h, (node["id"], node["size"], least_w, least_h)


def test_overlap_check_sees_the_old_fault():
    """The old layout's fault: LoadVideo's preview grew the node over the Note below it."""
    ui = ui_graph("musepose_video")
    video = next(n for n in ui["nodes"] if n["type"] == "LoadVideo")
    note = next(n for n in ui["nodes"] if n["type"] == "Note")
    note["pos"] = [video["pos"][0], video["pos"][1] + video["size"][1] + 60]  # below it, clear as laid out
    with pytest.raises(AssertionError, match="overlap"):
        assert_apart(ui)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_template_has_a_readable_title_and_a_thumbnail(path: Path):
    """The template browser titles a pack's card with the file name and loads <name>.jpg from beside it as
    the thumbnail. Frontends 1.35.9, 1.42.15 and 1.58.1 also take the card's description from the file name
    (the server's /workflow_templates lists names only; nothing in the file or beside it is read), so the
    name is the card's one-line description too."""
    title = path.stem
    assert re.fullmatch(r"MusePose [A-Za-z ,]+", title) and len(title) <= 30, title  # one card line
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.exists(), f"no thumbnail {thumbnail.name}"
    data = thumbnail.read_bytes()
    assert data[:3] == b"\xff\xd8\xff" and len(data) <= 60_000, (thumbnail.name, len(data))
    with Image.open(thumbnail) as image:
        assert image.format == "JPEG" and 256 <= image.width <= 512 and image.width == image.height


def test_example_workflows_holds_only_templates_and_thumbnails():
    for path in (REPO / "example_workflows").iterdir():
        assert path.suffix in (".json", ".jpg") and path.with_suffix(".json") in UI_FILES, path.name


def test_screenshots_of_every_workflow_are_in_the_readme():
    """docs/screenshots holds one small screenshot per template (workflows/tools/screenshots.js), each shown in
    the README; every picture the README shows exists."""
    readme = (REPO / "README.md").read_text()
    for path in UI_FILES:
        slug = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")
        shot = REPO / "docs" / "screenshots" / f"{slug}.webp"
        data = shot.read_bytes()
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) <= 200_000, (shot.name, len(data))
        assert f"](docs/screenshots/{shot.name})" in readme, shot.name
    for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme):
        assert (REPO / target).exists(), target


def test_validator_catches_bad_values():
    assert widget_error("MusePoseSampler", "scheduler", "lms") is not None
    assert widget_error("MusePoseSampler", "steps", 0) is not None
    assert widget_error("CreateVideo", "fps", 500.0) is not None
    assert widget_error("SaveVideo", "codec", "vp9") is not None
    assert widget_error("MusePoseDecode", "tiling", "yes") is not None
