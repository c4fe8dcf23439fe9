"""Draw a UI-format workflow (boxes, titles, widget values, links) to a PNG with Pillow.

Used for docs/workflow.png: ``python workflows/tools/render_workflow_png.py example_workflows/musepose_video.json docs/workflow.png``
"""
from __future__ import annotations

import json
import sys

from PIL import Image, ImageDraw, ImageFont

TYPE_COLOURS = {"IMAGE": (100, 181, 246), "LATENT": (255, 128, 171), "MUSEPOSE": (186, 104, 200),
                "VIDEO": (129, 199, 132), "FLOAT": (170, 170, 170)}
ROW = 20
HEADER = 26


def render(workflow: dict, scale: float = 1.0) -> Image.Image:
    nodes = {n["id"]: n for n in workflow["nodes"]}
    boxes = {}
    for n in nodes.values():
        x, y = n["pos"]
        rows = max(len(n["inputs"]), len(n["outputs"])) + len(n.get("widgets_values", []))
        w = n["size"][0]
        h = HEADER + ROW * max(rows, 1) + 10
        if n["type"] == "Note":
            h = 90
        boxes[n["id"]] = (x, y, w, h)
    min_x = min(b[0] for b in boxes.values()) - 30
    min_y = min(b[1] for b in boxes.values()) - 30
    max_x = max(b[0] + b[2] for b in boxes.values()) + 30
    max_y = max(b[1] + b[3] for b in boxes.values()) + 30
    image = Image.new("RGB", (int(max_x - min_x), int(max_y - min_y)), (32, 32, 36))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()

    def socket(node_id, slot, output):
        x, y, w, _ = boxes[node_id]
        return (x - min_x + (w if output else 0), y - min_y + HEADER + ROW * slot + ROW // 2)

    for link in workflow["links"]:
        _, src, src_slot, dst, dst_slot, kind = link
        a, b = socket(src, src_slot, True), socket(dst, dst_slot, False)
        colour = TYPE_COLOURS.get(kind, (200, 200, 200))
        mid = (a[0] + b[0]) / 2
        points = [a, (mid, a[1]), (mid, b[1]), b]
        draw.line(points, fill=colour, width=3)
    for node_id, n in nodes.items():
        x, y, w, h = boxes[node_id]
        x, y = x - min_x, y - min_y
        note = n["type"] == "Note"
        draw.rounded_rectangle([x, y, x + w, y + h], 8, fill=(70, 66, 40) if note else (53, 53, 60),
                               outline=(90, 90, 100))
        draw.rounded_rectangle([x, y, x + w, y + HEADER], 8, fill=(95, 90, 50) if note else (40, 40, 48))
        draw.text((x + 10, y + 7), n.get("title", n["type"]), fill=(235, 235, 235), font=font)
        if note:
            text = n["widgets_values"][0]
            words, line, lines = text.split(), "", []
            for word in words:
                if len(line) + len(word) > w // 6:
                    lines.append(line)
                    line = ""
                line += word + " "
            lines.append(line)
            for i, l in enumerate(lines[:4]):
                draw.text((x + 10, y + HEADER + 4 + 14 * i), l, fill=(230, 230, 200), font=font)
            continue
        for i, inp in enumerate(n["inputs"]):
            cy = y + HEADER + ROW * i + ROW // 2
            draw.ellipse([x - 5, cy - 5, x + 5, cy + 5], fill=TYPE_COLOURS.get(inp["type"], (200, 200, 200)))
            draw.text((x + 10, cy - 6), inp["name"], fill=(200, 200, 200), font=font)
        for i, out in enumerate(n["outputs"]):
            cy = y + HEADER + ROW * i + ROW // 2
            draw.ellipse([x + w - 5, cy - 5, x + w + 5, cy + 5], fill=TYPE_COLOURS.get(out["type"], (200, 200, 200)))
            label = out["name"]
            draw.text((x + w - 10 - 6 * len(label), cy - 6), label, fill=(200, 200, 200), font=font)
        start = y + HEADER + ROW * max(len(n["inputs"]), len(n["outputs"]))
        names = _widget_names(n)
        for i, value in enumerate(n.get("widgets_values", [])):
            cy = start + ROW * i
            draw.rounded_rectangle([x + 8, cy + 2, x + w - 8, cy + ROW - 2], 5, fill=(34, 34, 40))
            label = f"{names[i]}: {value}" if i < len(names) and names[i] else str(value)
            draw.text((x + 14, cy + 5), label[: w // 6], fill=(220, 220, 220), font=font)
    return image


def _widget_names(node: dict) -> list[str]:
    known = {
        "MusePoseModelLoader": ["weights_path", "vae", "image_encoder", "precision", "offload", "attention", "download_missing"],
        "MusePoseSampler": ["width", "height", "seed", "", "steps", "cfg", "scheduler", "context_frames", "context_overlap",
                            "context_schedule", "blending", "windows_per_batch", "aspect", "cfg_mode"],
        "MusePoseDecode": ["chunk_size", "tiling"], "CreateVideo": ["fps"], "LoadImage": ["image", ""],
        "LoadVideo": ["file", ""], "SaveVideo": ["filename_prefix", "format", "codec"],
    }
    return known.get(node["type"], [])


if __name__ == "__main__":
    source, target = sys.argv[1], sys.argv[2]
    render(json.loads(open(source).read())).save(target)
    print("wrote", target)
