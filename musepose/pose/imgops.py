"""Image resampling for DWPose pre-processing, in plain numpy.

The pack must not depend on OpenCV (its wheels clash with other ComfyUI packs and drag in GUI
libraries), so the two OpenCV calls the DWPose pipeline relies on are re-implemented here:
``cv2.resize(..., INTER_LINEAR)`` for the detector letterbox and ``cv2.warpAffine(..., INTER_LINEAR,
BORDER_CONSTANT 0)`` for the pose crop. Both are vectorised (one gather per neighbour, no Python
loops over pixels). OpenCV's uint8 paths use fixed-point weights; these float versions differ from
them by at most one grey level, which is far below what moves a detection.
"""
from __future__ import annotations

import numpy as np


def _linear_axis(dst_size: int, src_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights for one axis with OpenCV's half-pixel-centre convention.

    src = (dst + 0.5) * src/dst - 0.5, clamped to the valid range (replicated edges), so a downscale
    samples between pixels exactly as INTER_LINEAR does (no antialiasing, like OpenCV).
    """
    scale = src_size / float(dst_size)
    pos = (np.arange(dst_size, dtype=np.float64) + 0.5) * scale - 0.5
    pos = np.clip(pos, 0.0, src_size - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, src_size - 1)
    w1 = (pos - i0).astype(np.float32)
    return i0, i1, w1


def resize_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize ``[H, W, C]`` to ``[height, width, C]`` like ``cv2.resize`` with INTER_LINEAR.

    Separable: rows first, then columns. uint8 in gives uint8 out (rounded), float stays float.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"resize target must be positive, got {width}x{height}")
    src = np.asarray(image)
    if src.shape[0] == height and src.shape[1] == width:
        return src.copy()
    y0, y1, wy = _linear_axis(height, src.shape[0])
    x0, x1, wx = _linear_axis(width, src.shape[1])
    work = src.astype(np.float32)
    wy = wy.reshape(-1, 1, *([1] * (work.ndim - 2)))
    rows = work[y0] * (1.0 - wy) + work[y1] * wy
    wx = wx.reshape(1, -1, *([1] * (work.ndim - 2)))
    out = rows[:, x0] * (1.0 - wx) + rows[:, x1] * wx
    if src.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(src.dtype, copy=False)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (as a 2x3 matrix)."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def warp_affine_bilinear(image: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.warpAffine(image, matrix, (width, height), INTER_LINEAR, BORDER_CONSTANT, 0)``.

    ``matrix`` maps source to destination pixel coordinates (OpenCV's convention, integer pixel
    centres, no half-pixel shift). Each destination pixel is mapped back through the inverse and
    sampled bilinearly; neighbours outside the source contribute the border value 0, so edges fade
    to black exactly like OpenCV's constant border.
    """
    src = np.asarray(image)
    inv = invert_affine(matrix)
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    u = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    v = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    u0 = np.floor(u).astype(np.int64)
    v0 = np.floor(v).astype(np.int64)
    au = (u - u0).astype(np.float32)[..., None]
    av = (v - v0).astype(np.float32)[..., None]
    h, w = src.shape[:2]
    work = src.reshape(h, w, -1).astype(np.float32)
    out = np.zeros((height, width, work.shape[2]), dtype=np.float32)
    for dv, wv in ((0, 1.0 - av), (1, av)):
        for du, wu in ((0, 1.0 - au), (1, au)):
            uu, vv = u0 + du, v0 + dv
            inside = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
            vals = work[np.clip(vv, 0, h - 1), np.clip(uu, 0, w - 1)]
            out += np.where(inside[..., None], vals, 0.0) * (wu * wv)
    out = out.reshape((height, width) + src.shape[2:])
    if src.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out


def fit_image(image: np.ndarray, width: int, height: int, mode: str = "stretch") -> np.ndarray:
    """Image resized onto a W x H canvas: "stretch", "crop" (cover, centred) or "pad" (contain, black).

    Uses the same geometry as the pose alignment's ``ref_fit`` so overlays line up with the poses.
    """
    h, w = image.shape[:2]
    if mode == "stretch":
        return resize_bilinear(image, width, height)
    if mode not in ("crop", "pad"):
        raise ValueError(f"unknown fit mode {mode!r}")
    s = (max if mode == "crop" else min)(width / w, height / h)
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    resized = resize_bilinear(image, nw, nh)
    canvas = np.zeros((height, width) + image.shape[2:], dtype=image.dtype)
    ox, oy = (width - nw) // 2, (height - nh) // 2
    sx0, sy0 = max(0, -ox), max(0, -oy)
    dx0, dy0 = max(0, ox), max(0, oy)
    cw, ch = min(nw - sx0, width - dx0), min(nh - sy0, height - dy0)
    canvas[dy0:dy0 + ch, dx0:dx0 + cw] = resized[sy0:sy0 + ch, sx0:sx0 + cw]
    return canvas
