"""Build the UI-format workflows in example_workflows/ from the API-format ones in workflows/api/.

The API files are the source of truth (tests run them); this keeps the drag-in versions in step.
Node definitions come from our INPUT_TYPES and, for core nodes, tests/fixtures/comfy_core_nodes.json
(a trimmed /object_info of ComfyUI 0.8.0). Run: ``python workflows/tools/ui_from_api.py``.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

#: per workflow: node id -> (x, y, width) and the note shown in the graph
LAYOUT = {"1": (40, 40, 300), "2": (40, 420, 300), "3": (380, 420, 240), "4": (380, 40, 340),
          "5": (760, 40, 340), "6": (1140, 40, 300), "7": (1140, 260, 260), "8": (1480, 260, 320)}
#: workflows whose nodes sit elsewhere than LAYOUT says
LAYOUTS = {
    "musepose_dance": {**LAYOUT, "3": (40, 760, 240), "9": (380, 700, 320), "10": (760, 620, 340),
                       "4": (380, 40, 340), "5": (1140, 40, 340), "6": (1520, 40, 300), "7": (1520, 260, 260),
                       "8": (1860, 260, 320)},
}
NOTES = {
    "musepose_video": ("Put the MusePose files in ComfyUI/models/musepose, the VAE in models/vae and the image "
                       "encoder in models/clip_vision (see the README, section ComfyUI nodes). Load a reference photo and a video of "
                       "MusePose-style pose renders (e.g. saved from MusePose Pose Align) of the same size as "
                       "width x height."),
    "musepose_video_lowvram": ("Low-VRAM preset: lowvram offload (ComfyUI streams UNet weights), sequential CFG, "
                               "16-frame windows, tiled decode. Same model files as the standard workflow."),
    "musepose_dance": ("From a dance video: DWPose (yolox_l.onnx + dw-ll_ucoco_384.onnx in ComfyUI/models/dwpose, "
                       "no mmcv) finds the dancer, Pose Align re-targets the skeleton to the reference person and "
                       "draws it at the sampler's width x height (keep the two equal), then MusePose animates the "
                       "reference. The fps follows the frames kept by Pose Align."),
}


def load_pack():
    spec = importlib.util.spec_from_file_location("musepose_express_tools", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def definitions() -> dict:
    core = json.loads((REPO / "tests" / "fixtures" / "comfy_core_nodes.json").read_text())["nodes"]
    defs = {}
    for name, d in core.items():
        defs[name] = {"inputs": {**d["input"].get("required", {}), **d["input"].get("optional", {})},
                      "order": d["input_order"].get("required", []) + d["input_order"].get("optional", []),
                      "outputs": list(zip(d["output_name"], d["output"]))}
    for name, cls in load_pack().NODE_CLASS_MAPPINGS.items():
        types = cls.INPUT_TYPES()
        inputs = {**types.get("required", {}), **types.get("optional", {})}
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        defs[name] = {"inputs": inputs, "order": list(inputs), "outputs": list(zip(names, cls.RETURN_TYPES))}
    return defs


def is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def convert(api: dict, note: str, defs: dict, layout: dict | None = None) -> dict:
    nodes, links = [], []
    link_id = 0
    out_links: dict[tuple[str, int], list[int]] = {}
    for node_id, node in api.items():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                link_id += 1
                src, slot = value
                spec = defs[node["class_type"]]["inputs"][name]
                kind = spec[0] if not isinstance(spec[0], list) else "COMBO"
                links.append([link_id, int(src), slot, int(node_id), None, kind])
                out_links.setdefault((src, slot), []).append(link_id)
    link_by_target = {(l[3], None): l for l in links}
    order = 0
    for node_id, node in api.items():
        d = defs[node["class_type"]]
        inputs, widgets = [], []
        for name in d["order"]:
            spec = d["inputs"][name]
            value = node["inputs"].get(name)
            linked = isinstance(value, list)
            if linked:
                link = next(l for l in links if l[3] == int(node_id) and l[4] is None
                            and api[node_id]["inputs"][name] == [str(l[1]), l[2]])
                link[4] = len(inputs)
                entry = {"name": name, "type": link[5], "link": link[0]}
                if is_widget(spec):
                    entry["widget"] = {"name": name}
                inputs.append(entry)
            elif not is_widget(spec):
                inputs.append({"name": name, "type": spec[0], "link": None})
            if is_widget(spec):
                options = spec[1] if len(spec) > 1 else {}
                widgets.append(options.get("default") if linked or value is None else value)
                if options.get("control_after_generate"):
                    widgets.append("fixed")
                if options.get("image_upload") or options.get("video_upload"):
                    widgets.append("image")
        outputs = [{"name": n, "type": t, "links": out_links.get((node_id, i), [])} for i, (n, t) in enumerate(d["outputs"])]
        x, y, w = (layout or LAYOUT)[node_id]
        nodes.append({"id": int(node_id), "type": node["class_type"], "pos": [x, y], "size": [w, 60 + 26 * (len(inputs) + len(widgets))],
                      "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
                      "title": node.get("_meta", {}).get("title", node["class_type"]),
                      "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets})
        order += 1
    nodes.append({"id": 99, "type": "Note", "pos": [40, 560], "size": [700, 120], "flags": {}, "order": order, "mode": 0,
                  "inputs": [], "outputs": [], "title": "Read me", "properties": {}, "widgets_values": [note]})
    return {"id": "00000000-0000-4000-8000-00000000a001", "revision": 0, "last_node_id": 99, "last_link_id": link_id,
            "nodes": nodes, "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
            "version": 0.4}


def main() -> None:
    defs = definitions()
    for name, note in NOTES.items():
        api = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
        ui = convert(api, note, defs, LAYOUTS.get(name))
        (REPO / "example_workflows" / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        print("wrote", f"example_workflows/{name}.json")


if __name__ == "__main__":
    main()
