"""DWPose-L 384x288 whole-body keypoint model (``dw-ll_ucoco_384.onnx``): top-down crop and SimCC decode.

Each person box becomes an affine crop (box padded by 1.25, widened to the 3:4 input aspect),
normalised with ImageNet mean/std on RGB, and the two SimCC logits are decoded with an argmax
divided by the split ratio 2. Mapping back to the image is the inverse of the crop transform.
"""
from __future__ import annotations

import numpy as np

from .imgops import warp_affine_bilinear

INPUT_WH = (288, 384)
BOX_PADDING = 1.25
SIMCC_SPLIT_RATIO = 2.0
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def box_to_center_scale(box: np.ndarray, input_wh: tuple[int, int] = INPUT_WH,
                        padding: float = BOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Centre and (w, h) scale of the crop: padded box, then grown on one axis to the model aspect."""
    x0, y0, x1, y1 = [float(v) for v in box]
    center = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
    w, h = (x1 - x0) * padding, (y1 - y0) * padding
    aspect = input_wh[0] / input_wh[1]
    if w > aspect * h:
        h = w / aspect
    else:
        w = aspect * h
    return center, np.array([w, h])


def crop_matrix(center: np.ndarray, scale: np.ndarray, input_wh: tuple[int, int] = INPUT_WH) -> np.ndarray:
    """2x3 matrix mapping image pixels to crop pixels: centre -> crop centre, uniform factor, no rotation."""
    f = input_wh[0] / scale[0]
    return np.array([[f, 0.0, input_wh[0] * 0.5 - f * center[0]],
                     [0.0, f, input_wh[1] * 0.5 - f * center[1]]])


def make_input(image_rgb: np.ndarray, center: np.ndarray, scale: np.ndarray,
               input_wh: tuple[int, int] = INPUT_WH) -> np.ndarray:
    """Normalised ``[3, H, W]`` float32 crop."""
    crop = warp_affine_bilinear(image_rgb, crop_matrix(center, scale, input_wh), input_wh[0], input_wh[1])
    return ((crop.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray,
                 split_ratio: float = SIMCC_SPLIT_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """``[N, K, Wx]``, ``[N, K, Wy]`` -> crop coordinates ``[N, K, 2]`` and scores ``[N, K]``.

    Score = min of the two maxima (raw, not a probability); a non-positive score puts the point at
    -1 before the division, as the mmpose codec does.
    """
    ix = simcc_x.argmax(axis=-1)
    iy = simcc_y.argmax(axis=-1)
    score = np.minimum(simcc_x.max(axis=-1), simcc_y.max(axis=-1))
    locs = np.stack([ix, iy], axis=-1).astype(np.float64)
    locs[score <= 0] = -1.0
    return locs / split_ratio, score.astype(np.float64)


def crop_to_image(locs: np.ndarray, center: np.ndarray, scale: np.ndarray,
                  input_wh: tuple[int, int] = INPUT_WH) -> np.ndarray:
    """Crop pixel coordinates back to image pixels (inverse of :func:`crop_matrix`)."""
    return locs / np.asarray(input_wh, dtype=np.float64) * scale + center - scale / 2.0


def estimate(session, image_rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """133 keypoints ``[N, 133, 2]`` (image pixels) and scores ``[N, 133]`` for each person box.

    Crops go through the model in one batch when its batch axis is symbolic, else one per run
    (the real file's batch axis was never checked, and a static 1 would reject a batch).
    """
    inp = session.get_inputs()[0]
    h, w = inp.shape[2], inp.shape[3]
    input_wh = (w, h) if isinstance(w, int) and isinstance(h, int) else INPUT_WH
    if len(boxes) == 0:
        return np.zeros((0, 133, 2)), np.zeros((0, 133))
    params = [box_to_center_scale(b, input_wh) for b in boxes]
    crops = np.stack([make_input(image_rgb, c, s, input_wh) for c, s in params])
    batched = not isinstance(inp.shape[0], int) or inp.shape[0] == len(crops)
    out_names = [o.name for o in session.get_outputs()]
    if {"simcc_x", "simcc_y"} <= set(out_names):
        out_names = ["simcc_x", "simcc_y"]
    if batched:
        runs = [session.run(out_names, {inp.name: crops})]
    else:
        runs = [session.run(out_names, {inp.name: crops[i:i + 1]}) for i in range(len(crops))]
    simcc_x = np.concatenate([r[0] for r in runs])
    simcc_y = np.concatenate([r[1] for r in runs])
    locs, scores = decode_simcc(simcc_x, simcc_y)
    kps = np.stack([crop_to_image(locs[i], c, s, input_wh) for i, (c, s) in enumerate(params)])
    return kps, scores
