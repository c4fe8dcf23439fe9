"""YOLOX-L person detector (``yolox_l.onnx``, Megvii export) pre- and post-processing.

Input: letterbox to 640x640 at the top-left on a 114-grey canvas, BGR channel order (YOLOX was
trained on cv2.imread frames), raw 0-255 floats. Output rows are ``tx, ty, tw, th, obj, p_0..p_79``
with sigmoids already applied in the graph; the grid decode and NMS happen here.
"""
from __future__ import annotations

import numpy as np

from .imgops import resize_bilinear

INPUT_SIZE = 640
STRIDES = (8, 16, 32)
LETTERBOX_FILL = 114
RAW_SCORE_THR = 0.1   # per-class pre-NMS threshold of the ONNX ports
NMS_IOU_THR = 0.45
PERSON_SCORE_THR = 0.3
PERSON_CLASS = 0


def letterbox(image_rgb: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, float]:
    """Resize keeping aspect so the long side fits ``size``; paste at the top-left of a 114 canvas.

    Padding is only at the bottom/right, so mapping boxes back is a pure division by the ratio.
    """
    h, w = image_rgb.shape[:2]
    ratio = min(size / h, size / w)
    new_w, new_h = int(w * ratio), int(h * ratio)
    canvas = np.full((size, size, 3), LETTERBOX_FILL, dtype=np.uint8)
    canvas[:new_h, :new_w] = resize_bilinear(image_rgb, new_w, new_h)
    return canvas, ratio


def preprocess(image_rgb: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, float]:
    """``[1, 3, size, size]`` float32 BGR tensor (no normalisation) and the letterbox ratio."""
    canvas, ratio = letterbox(image_rgb, size)
    bgr = canvas[:, :, ::-1]
    tensor = np.ascontiguousarray(bgr.transpose(2, 0, 1)[None].astype(np.float32))
    return tensor, ratio


def _grids(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anchor grid x, y and stride for every output row: stride 8, 16, 32 levels, each row-major.

    Rebuilt per call (8400 entries, microseconds) rather than memoised: the pose cache is the only
    state this package keeps between calls.
    """
    gx, gy, st = [], [], []
    for s in STRIDES:
        n = size // s
        yy, xx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        gx.append(xx.ravel())
        gy.append(yy.ravel())
        st.append(np.full(n * n, s))
    return (np.concatenate(gx).astype(np.float64), np.concatenate(gy).astype(np.float64),
            np.concatenate(st).astype(np.float64))


def decode(raw: np.ndarray, ratio: float, size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Raw ``[8400, 85]`` rows -> xyxy boxes in original-image pixels and the 80 class scores."""
    raw = np.asarray(raw, dtype=np.float64).reshape(-1, raw.shape[-1])
    gx, gy, st = _grids(size)
    if len(gx) != len(raw):
        raise ValueError(f"detector output has {len(raw)} rows, expected {len(gx)} for a {size}px input")
    cx = (raw[:, 0] + gx) * st
    cy = (raw[:, 1] + gy) * st
    bw = np.exp(raw[:, 2]) * st
    bh = np.exp(raw[:, 3]) * st
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1) / ratio
    scores = raw[:, 4:5] * raw[:, 5:]
    return boxes, scores


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Greedy NMS with the "+1 pixel" area convention of the YOLOX demo code; indices by score."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = iw * ih
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


def person_boxes(raw: np.ndarray, ratio: float, size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes (xyxy, image pixels) and scores, highest score first.

    The ports run class-aware NMS over all 80 classes and then keep class 0; with class-aware NMS
    the other classes never suppress a person, so running it on class 0 alone gives the same boxes.
    """
    boxes, scores = decode(raw, ratio, size)
    person = scores[:, PERSON_CLASS]
    cand = np.nonzero(person > RAW_SCORE_THR)[0]
    if cand.size == 0:
        return np.zeros((0, 4)), np.zeros((0,))
    keep = cand[nms(boxes[cand], person[cand], NMS_IOU_THR)]
    keep = keep[person[keep] > PERSON_SCORE_THR]
    return boxes[keep], person[keep]


def detect_people(session, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run the detector session on one RGB uint8 image; returns (boxes ``[N,4]``, scores ``[N]``)."""
    inp = session.get_inputs()[0]
    size = inp.shape[2] if isinstance(inp.shape[2], int) else INPUT_SIZE
    tensor, ratio = preprocess(image_rgb, size)
    raw = session.run(None, {inp.name: tensor})[0]
    return person_boxes(raw[0], ratio, size)
