"""One-Euro temporal filter for keypoint tracks (Casiez et al., CHI 2012).

DWPose runs on each frame independently, so joints jitter by a few pixels; the pose guider turns
that into flicker. The One-Euro filter is a low-pass whose cutoff rises with speed: strong smoothing
when a joint is still, little lag when it moves fast. Invisible samples are skipped and restart the
filter of that joint, so a re-appearing limb does not glide in from its last position.
"""
from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


def one_euro(values: np.ndarray, visible: np.ndarray, fps: float, min_cutoff: float = 1.5,
             beta: float = 8.0, d_cutoff: float = 1.0) -> np.ndarray:
    """Filter ``values [T, K, D]`` along time; ``visible [T, K]`` marks samples to use.

    Units: cutoffs in Hz; ``beta`` scales the speed (in value units per second) added to the cutoff.
    Invisible samples are returned unchanged.
    """
    vals = np.asarray(values, dtype=np.float64)
    vis = np.asarray(visible, dtype=bool)
    out = vals.copy()
    if vals.shape[0] == 0:
        return out
    dt = 1.0 / max(float(fps), 1e-6)
    prev = np.zeros(vals.shape[1:])
    dprev = np.zeros(vals.shape[1:])
    alive = np.zeros(vals.shape[1], dtype=bool)
    a_d = _alpha(d_cutoff, dt)
    for t in range(vals.shape[0]):
        x = vals[t]
        v = vis[t]
        fresh = v & ~alive
        cont = v & alive
        prev[fresh] = x[fresh]
        dprev[fresh] = 0.0
        if cont.any():
            dx = (x[cont] - prev[cont]) / dt
            dhat = a_d * dx + (1.0 - a_d) * dprev[cont]
            speed = np.linalg.norm(dhat, axis=-1, keepdims=True)
            a = _alpha(min_cutoff + beta * speed, dt)
            prev[cont] = a * x[cont] + (1.0 - a) * prev[cont]
            dprev[cont] = dhat
        out[t][v] = prev[v]
        alive = v
    return out
