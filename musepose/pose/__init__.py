"""Pose engine of MusePose Express: DWPose (run by torch or onnxruntime), MusePose pose alignment and drawing.

Submodules each do one job (image ops, detector, keypoint model, layout conversion, I/O in
controlnet_aux's POSE_KEYPOINT format, alignment, drawing, CLI). Import them directly; this package
file stays import-light so that loading a node pack does not pull onnx or onnxruntime until they are needed.
Imports inside the pack are relative because ComfyUI loads it as a package under any name.
"""
from __future__ import annotations

from .layout import VISIBLE_THRESHOLD, FramePose, PersonPose  # noqa: F401

__all__ = ["VISIBLE_THRESHOLD", "FramePose", "PersonPose"]
