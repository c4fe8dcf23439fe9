"""Build the UI-format workflows in example_workflows/ from the API-format ones in workflows/api/.

The API files are the source of truth (tests run them); this keeps the drag-in versions in step.
Node definitions come from our INPUT_TYPES and, for core nodes, tests/fixtures/comfy_core_nodes.json
(a trimmed /object_info of ComfyUI 0.8.0; 0.19.3 gives the same six definitions: SaveVideo's nested format
dropdown and GetVideoComponents' two extra outputs came after it upstream, so the workflows load alike on
both hosts). Run: ``python workflows/tools/ui_from_api.py``.

The template browser (frontends 1.35.9, 1.42.15 and 1.58.1 alike) shows a pack's template by its file name,
uses that name as the card's description too (ComfyUI's /workflow_templates lists file names only) and takes
its thumbnail from the same name + ``.jpg`` beside it; it reads nothing else from the file. So the UI
files carry readable names that say what they do (``TEMPLATES``) and ``workflows/tools/screenshots.js`` makes
the ``.jpg``. Every widget input is written, optional ones included (the API files set them all).

Layout: each node gets its whole rectangle here (``LAYOUTS``: x, y, width, height of the body, the
title bar of ``TITLE_HEIGHT`` sits above it), with room for what the frontend adds after a run
(``PREVIEW_ROOM``: the image/video previews of LoadImage, LoadVideo, PreviewImage and SaveVideo), so
that nothing overlaps once previews appear. tests/test_workflows.py checks it from these numbers.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
#: the frontend draws a node's title bar this high above its pos (LiteGraph's NODE_TITLE_HEIGHT)
TITLE_HEIGHT = 30
#: free space kept between node rectangles (title bars included)
GAP = 20

#: API workflow -> UI file name in example_workflows/ (the template browser's card title)
TEMPLATES = {
    "musepose_video": "MusePose from pose video",
    "musepose_video_lowvram": "MusePose pose video, low VRAM",
    "musepose_dance": "MusePose from dance video",
}

#: node id -> (x, y, width, height of the body), in columns. What grows after a run has nothing below it:
#: LoadVideo and SaveVideo grow to show the whole video at the node's width (``grown_height``), and the
#: Sampler, Decode and the pose nodes show their messages at the bottom, in room left for them. Image
#: previews (LoadImage, PreviewImage) are drawn inside the node as laid out.
_VIDEO = {
    "1": (40, 60, 320, 340), "2": (40, 460, 380, 420),
    "4": (460, 60, 340, 260), "3": (460, 460, 260, 100), "note": (460, 640, 340, 300),
    "5": (840, 60, 360, 620),
    "6": (1240, 60, 300, 180), "7": (1240, 330, 300, 90), "8": (1240, 500, 380, 460),
}
LAYOUTS = {
    "musepose_video": _VIDEO,
    "musepose_video_lowvram": {
        "1": (40, 60, 320, 340), "2": (40, 460, 380, 420),
        "4": (460, 60, 340, 260), "note": (460, 400, 340, 300),
        "5": (840, 60, 360, 620),
        "6": (1240, 60, 300, 240), "8": (1240, 360, 380, 460),
    },
    "musepose_dance": {
        "1": (40, 60, 320, 340), "2": (40, 460, 380, 420),
        "note": (460, 60, 340, 270), "3": (460, 400, 260, 100), "9": (460, 560, 340, 360),
        "11": (840, 60, 380, 440), "10": (840, 560, 380, 600),
        "12": (1260, 60, 380, 440), "5": (1260, 560, 360, 620),
        "4": (1680, 60, 340, 260), "6": (1680, 380, 300, 180), "7": (1680, 620, 300, 90), "8": (1680, 770, 380, 460),
    },
}
#: what the 0.8.0 frontend puts above and below the video in LoadVideo / SaveVideo (widgets, player bar),
#: measured: the body becomes this + width / (video width / height) tall once the video shows
VIDEO_CHROME = {"LoadVideo": 74, "SaveVideo": 98}
#: the window the workflow opens to fit: 1600x1000, less the frontend's side bar and top bars
VIEW = {"left": 80, "top": 110, "width": 1500, "height": 820}


def grown_height(node_type: str, width: float, height: float, aspect: float = 1.0) -> float:
    """The body height the frontend gives a node once it shows a video of ``aspect`` (width / height)."""
    if node_type in VIDEO_CHROME:
        return max(height, VIDEO_CHROME[node_type] + width / aspect)
    return height


NOTES = {
    "musepose_video": ("Put the MusePose files in ComfyUI/models/musepose, the VAE in models/vae and the image "
                       "encoder in models/clip_vision (see the README, section ComfyUI nodes). Load a reference photo "
                       "and a video of MusePose-style pose renders (e.g. saved from MusePose Pose Align) of the same "
                       "size as the Sampler's width x height. offload auto picks the memory level that fits your GPU."),
    "musepose_video_lowvram": ("Low-VRAM and long-clip preset: lowvram offload (ComfyUI streams UNet weights), "
                               "sequential CFG, 16-frame windows, tiled decode. The pose video goes straight into the "
                               "Sampler's pose_video and Decode to Video writes the mp4 as it decodes (frame rate from "
                               "the pose video): no IMAGE batch of the video is ever made, so host memory stays low on "
                               "long clips. Same model files as the standard workflow."),
    "musepose_dance": ("From a dance video: DWPose (yolox_l.onnx + dw-ll_ucoco_384.onnx in ComfyUI/models/dwpose, "
                       "no mmcv) finds the dancer, Pose Align re-targets the skeleton to the reference person and "
                       "draws it at its width x height, which its width/height outputs pass on to the Sampler (set "
                       "the size once, on Pose Align). The two previews show the poses found and the aligned poses "
                       "over the reference: check them before a long run. The fps follows the frames kept by Pose "
                       "Align."),
}


def load_pack():
    """The pack, imported the way ComfyUI does (a package named after its folder)."""
    spec = importlib.util.spec_from_file_location("musepose_express_tools", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def definitions(pack=None) -> dict:
    """Node definitions by class name: inputs, their order, which are optional, outputs (name, type)."""
    core = json.loads((REPO / "tests" / "fixtures" / "comfy_core_nodes.json").read_text())["nodes"]
    defs = {}
    for name, d in core.items():
        defs[name] = {"inputs": {**d["input"].get("required", {}), **d["input"].get("optional", {})},
                      "order": d["input_order"].get("required", []) + d["input_order"].get("optional", []),
                      "optional": set(d["input"].get("optional", {})),
                      "outputs": list(zip(d["output_name"], d["output"]))}
    for name, cls in (pack or load_pack()).NODE_CLASS_MAPPINGS.items():
        types = cls.INPUT_TYPES()
        inputs = {**types.get("required", {}), **types.get("optional", {})}
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        defs[name] = {"inputs": inputs, "order": list(inputs), "optional": set(types.get("optional", {})),
                      "outputs": list(zip(names, cls.RETURN_TYPES))}
    return defs


def is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def convert(api: dict, note: str, defs: dict, layout: dict) -> dict:
    """UI graph of ``api`` as the 0.8.0 frontend (1.35) saves it: sockets first, then one input per widget
    (``widget: {name}``; a linked one carries its link: the "converted widget"), the frontend's upload
    widget included; widgets_values keeps the default for a linked widget."""
    links = []
    for node_id, node in api.items():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                src, slot = value
                kind = defs[api[src]["class_type"]]["outputs"][slot][1]
                links.append([len(links) + 1, int(src), slot, int(node_id), None, kind, name])
    nodes = []
    for order, (node_id, node) in enumerate(api.items()):
        d = defs[node["class_type"]]
        sockets, widget_inputs, widgets = [], [], []
        for name in d["order"]:
            spec = d["inputs"][name]
            value = node["inputs"].get(name)
            link = next((l for l in links if l[3] == int(node_id) and l[6] == name), None)
            if not is_widget(spec):
                sockets.append({"name": name, "type": spec[0], "link": link and link[0]})
                continue
            if name in d["optional"] and name not in node["inputs"]:
                continue  # an optional widget the workflow leaves unset: the frontend shows its default
            options = spec[1] if len(spec) > 1 else {}
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            widget_inputs.append({"name": name, "type": kind, "widget": {"name": name}, "link": link and link[0]})
            widgets.append(options.get("default") if link or value is None else value)
            if options.get("control_after_generate"):
                widgets.append("fixed")
            if options.get("image_upload") or options.get("video_upload"):
                widget_inputs.append({"name": "upload", "type": "IMAGEUPLOAD", "widget": {"name": "upload"},
                                      "link": None})
                widgets.append("image")
        inputs = sockets + widget_inputs
        for slot, entry in enumerate(inputs):
            if entry["link"] is not None:
                next(l for l in links if l[0] == entry["link"])[4] = slot
        outputs = [{"name": n, "type": t, "links": [l[0] for l in links if (l[1], l[2]) == (int(node_id), i)]}
                   for i, (n, t) in enumerate(d["outputs"])]
        x, y, w, h = layout[node_id]
        nodes.append({"id": int(node_id), "type": node["class_type"], "pos": [x, y], "size": [w, h],
                      "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
                      "title": node.get("_meta", {}).get("title", node["class_type"]),
                      "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets})
    x, y, w, h = layout["note"]
    nodes.append({"id": 99, "type": "Note", "pos": [x, y], "size": [w, h], "flags": {}, "order": len(api),
                  "mode": 0, "inputs": [], "outputs": [], "title": "Read me", "properties": {},
                  "widgets_values": [note]})
    rects = rectangles({"nodes": nodes}, aspect=1.0).values()  # square videos shown
    left, top = min(r[0] for r in rects), min(r[1] for r in rects)
    right, bottom = max(r[2] for r in rects), max(r[3] for r in rects)
    # open showing the whole graph in a 1600x1000 window (what docs/screenshots show)
    scale = int(100 * min(0.85, VIEW["width"] / (right - left), VIEW["height"] / (bottom - top))) / 100
    offset = [round(VIEW["left"] / scale - left, 1), round(VIEW["top"] / scale - top, 1)]
    return {"id": "00000000-0000-4000-8000-00000000a001", "revision": 0, "last_node_id": 99,
            "last_link_id": len(links), "nodes": nodes, "links": [l[:6] for l in links], "groups": [],
            "config": {}, "extra": {"ds": {"scale": scale, "offset": offset}}, "version": 0.4}


def rectangles(ui: dict, aspect: float | None = None) -> dict[int, tuple[float, float, float, float]]:
    """node id -> (left, top, right, bottom) on the canvas, title bar included; with ``aspect``, video
    nodes as tall as they grow showing a video of that aspect ratio (width / height)."""
    rects = {}
    for n in ui["nodes"]:
        (x, y), (w, h) = n["pos"], n["size"]
        if aspect:
            h = grown_height(n["type"], w, h, aspect)
        rects[n["id"]] = (x, y - TITLE_HEIGHT, x + w, y + h)
    return rects


def overlaps(ui: dict, gap: float = 0, aspect: float | None = None) -> list[tuple[int, int]]:
    """Pairs of nodes closer than ``gap`` (negative: overlapping), videos of ``aspect`` shown."""
    rects = sorted(rectangles(ui, aspect).items())
    found = []
    for i, (a, ra) in enumerate(rects):
        for b, rb in rects[i + 1:]:
            if ra[0] < rb[2] + gap and rb[0] < ra[2] + gap and ra[1] < rb[3] + gap and rb[1] < ra[3] + gap:
                found.append((a, b))
    return found


def main() -> None:
    defs = definitions()
    for name, title in TEMPLATES.items():
        api = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
        ui = convert(api, NOTES[name], defs, LAYOUTS[name])
        for aspect in (None, 16 / 9, 9 / 16):  # as laid out; landscape and portrait videos shown
            assert not overlaps(ui, GAP, aspect), (name, aspect, overlaps(ui, GAP, aspect))
        (REPO / "example_workflows" / f"{title}.json").write_text(json.dumps(ui, indent=1) + "\n")
        print("wrote", f"example_workflows/{title}.json")


if __name__ == "__main__":
    main()
