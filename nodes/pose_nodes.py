"""ComfyUI nodes for poses: DWPose extraction and MusePose pose alignment.

The nodes only translate between ComfyUI types and the engine in ``musepose.pose``; ComfyUI itself
is reached through ``host`` (model folders, progress bar, cancel). POSE_KEYPOINT is
comfyui_controlnet_aux's format, so its DWPose node and ours are interchangeable on either side.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import host
from .options import CATEGORY, MAX_RESOLUTION, setting_with, widget
from ..musepose.pose.align import reference_to_output
from ..musepose.pose.cache import DEFAULT_POSE_CACHE
from ..musepose.pose.draw import RENDER_SHORT_SIDE, overlay, render_pose, render_size
from ..musepose.pose.driving import align_and_render
from ..musepose.pose.extract import DWPoseExtractor, get_extractor
from ..musepose.pose.frames import FrameSelection
from ..musepose.pose.imgops import fit_image
from ..musepose.pose.keypoint_io import frames_to_pose_keypoint, pose_keypoint_to_frames
from ..musepose.pose.log import logger
from ..musepose.pose.models import find_dwpose_models


def _selection_inputs() -> dict[str, Any]:
    return {
        "fps": ("FLOAT", {"default": 30.0, "min": 0.1, "max": 240.0, "step": 0.01,
                          "tooltip": "Frame rate of the incoming frames; the effective rate after "
                                     "every_nth comes out of the fps output."}),
        "start_frame": ("INT", {"default": 0, "min": 0, "max": 1_000_000,
                                "tooltip": "First frame to use (frames before it are skipped)."}),
        "every_nth": ("INT", {"default": 1, "min": 1, "max": 100,
                              "tooltip": "Keep one frame out of n (1 = every frame). Divides the fps."}),
        "max_frames": ("INT", {"default": 0, "min": 0, "max": 1_000_000,
                               "tooltip": "Use at most this many frames after selection (0 = all)."}),
    }


def _images_to_uint8(images: torch.Tensor, index: int) -> np.ndarray:
    """One ComfyUI IMAGE frame (float 0..1, [H, W, C]) as RGB uint8."""
    frame = images[index, :, :, :3].detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return frame.cpu().numpy()


def _to_image_batch(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0)


def _extractor(backend: str = "auto") -> DWPoseExtractor:
    """DWPose on ComfyUI's device with ``backend`` (auto: onnxruntime-gpu when it can use that GPU, else
    torch on the GPU; on the CPU the faster of the two installed). Says which, once per run."""
    models = find_dwpose_models(host.model_search_paths("dwpose"))
    extractor = get_extractor(models, DEFAULT_POSE_CACHE, device=host.torch_device(), backend=backend)
    host.say(f"pose: {extractor.runtime.describe()}")
    return extractor


def _progress_callback(total: int):
    bar = host.Progress(total)
    return lambda done, _total: bar.update(1)


class MusePosePoseExtract:
    DESCRIPTION = ("Detect whole-body poses (DWPose: YOLOX-L + DW-LL 384, run by torch or onnxruntime; no mmcv/OpenCV) "
                   "in every selected frame. Outputs comfyui_controlnet_aux's POSE_KEYPOINT (absolute "
                   "pixels, OpenPose-18 body, 70-point face, both hands) and a MusePose-style preview. "
                   "Models: yolox_l.onnx and dw-ll_ucoco_384.onnx in models/dwpose (or controlnet_aux's ckpts). "
                   "Results are cached per frame content, so re-running a graph does not re-detect. Runs on "
                   "ComfyUI's device through torch with nothing extra installed (onnxruntime-gpu is used when present).")
    CATEGORY = CATEGORY
    FUNCTION = "extract"
    RETURN_TYPES = ("POSE_KEYPOINT", "IMAGE", "FLOAT")
    RETURN_NAMES = ("pose_keypoint", "pose_preview", "fps")
    OUTPUT_TOOLTIPS = ("One dict per selected frame (controlnet_aux format, absolute pixels).",
                       "Everyone detected, drawn MusePose-style at the input size.",
                       "Frame rate of the selected frames (input fps / every_nth).")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames to analyse (a batch or a single image)."}),
                **_selection_inputs(),
                "draw_hands": ("BOOLEAN", {"default": True, "tooltip": "Draw hands in the preview."}),
                "draw_face": ("BOOLEAN", {"default": False, "tooltip": "Draw face points in the preview."}),
                "preview_resolution": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8,
                                               "tooltip": "Short side of the preview images (0 = input size). "
                                                          "Keeps long videos from filling RAM with previews."}),
            },
            # Saved workflows and API prompts give inputs by name: new ones are appended, optional, last.
            "optional": {
                "backend": widget("pose_backend"),
            },
        }

    def extract(self, images: torch.Tensor, fps: float = 30.0, start_frame: int = 0, every_nth: int = 1,
                max_frames: int = 0, draw_hands: bool = True, draw_face: bool = False,
                preview_resolution: int = 512, backend: str = "auto"):
        selection = FrameSelection(int(start_frame), int(every_nth), int(max_frames))
        idx = selection.indices(int(images.shape[0]))
        if not idx:
            raise ValueError(f"frame selection (start {start_frame}, every {every_nth}) leaves none of "
                             f"the {images.shape[0]} frames")
        selection.report(int(images.shape[0]), fps)
        extractor = _extractor(backend)
        poses = extractor.extract((_images_to_uint8(images, i) for i in idx), progress=_progress_callback(len(idx)),
                                  check_interrupt=host.check_interrupt, total=len(idx))
        h, w = int(images.shape[1]), int(images.shape[2])
        pw, ph = render_size(w, h, int(preview_resolution)) if preview_resolution else (w, h)
        preview = torch.empty((len(poses), ph, pw, 3), dtype=torch.float32)
        for i, p in enumerate(poses):  # filled frame by frame: no second full-size copy
            host.check_interrupt()
            preview[i] = torch.from_numpy(render_pose(p, pw, ph, person=None, render_short_side=0,
                                                      draw_hands=draw_hands, draw_face=draw_face)).float() / 255.0
        return frames_to_pose_keypoint(poses), preview, selection.fps(fps)


class MusePosePoseAlign:
    DESCRIPTION = ("MusePose pose alignment: re-scale the driving person's skeleton to the reference "
                   "person's proportions, place it where the reference stands, and draw it the way "
                   "MusePose was trained (colours, widths, no face) at the sampler's width x height. "
                   "Fixes the original's failure modes: invisible points never set a scale, no inf "
                   "scales, one person tracked, missing frames repeat the last pose, optional smoothing.")
    CATEGORY = CATEGORY
    FUNCTION = "align"
    # Saved workflows link outputs by index: new outputs are appended, existing ones never move.
    RETURN_TYPES = ("IMAGE", "POSE_KEYPOINT", "IMAGE", "FLOAT", "INT", "INT")
    RETURN_NAMES = ("pose_images", "aligned_pose_keypoint", "debug_overlay", "fps", "width", "height")
    OUTPUT_TOOLTIPS = ("Aligned pose renders for the pose guider, width x height.",
                       "The aligned poses (controlnet_aux format, pixels of width x height).",
                       "Aligned poses drawn over the reference (or its pose) for checking.",
                       "Frame rate of the selected frames (input fps / every_nth).",
                       "Width the poses were drawn at (a multiple of 8): connect it to the Sampler's width "
                       "so the two always match.",
                       "Height the poses were drawn at (a multiple of 8): connect it to the Sampler's height "
                       "so the two always match.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "driving_pose": ("POSE_KEYPOINT", {"tooltip": "Driving poses: from MusePose Pose Extract "
                                                   "or controlnet_aux's DWPose node (absolute or normalised)."}),
                "width": widget("width", setting_with("width", help="Output width: the Sampler's width.")),
                "height": widget("height", setting_with("height", help="Output height: the Sampler's height.")),
                "align_frame": ("INT", {"default": -1, "min": -1, "max": 1_000_000,
                                        "tooltip": "Driving frame (after selection) whose proportions are "
                                                   "measured; -1 = auto (frontal, fully visible frame)."}),
                "person": widget("person"),
                # the aspect fit, under the name saved workflows and API prompts have for it
                "ref_fit": widget("aspect", setting_with("aspect", name="ref_fit")),
                "smooth": ("BOOLEAN", {"default": False, "tooltip": "One-Euro temporal smoothing of the keypoints."}),
                "draw_hands": ("BOOLEAN", {"default": True, "tooltip": "Draw hands (MusePose does)."}),
                "draw_face": ("BOOLEAN", {"default": False, "tooltip": "Draw face points (MusePose did not)."}),
                **_selection_inputs(),
            },
            "optional": {
                "reference_image": ("IMAGE", {"tooltip": "Reference image (first of the batch); its pose is detected."}),
                "reference_pose": ("POSE_KEYPOINT", {"tooltip": "Reference pose instead of an image (first frame used)."}),
            },
        }

    def align(self, driving_pose: Any, width: int, height: int, align_frame: int = -1, person: str = "largest",
              ref_fit: str = "stretch", smooth: bool = False, draw_hands: bool = True, draw_face: bool = False,
              fps: float = 30.0, start_frame: int = 0, every_nth: int = 1, max_frames: int = 0,
              reference_image: torch.Tensor | None = None, reference_pose: Any = None):
        width, height = _round_size(int(width), int(height))
        selection = FrameSelection(int(start_frame), int(every_nth), int(max_frames))
        driving_all = pose_keypoint_to_frames(driving_pose)
        driving = [driving_all[i] for i in selection.indices(len(driving_all))]
        if not driving:
            raise ValueError(f"frame selection leaves none of the {len(driving_all)} driving frames")
        selection.report(len(driving_all), fps)
        ref_rgb = None
        if reference_pose is not None:
            reference = pose_keypoint_to_frames(reference_pose)[0]
            if reference_image is not None:
                logger.warning("Both reference_image and reference_pose are connected: the reference pose is "
                               "taken from reference_pose; the image is only the debug_overlay's background.")
        elif reference_image is not None:
            ref_rgb = _images_to_uint8(reference_image, 0)
            reference = _extractor().extract([ref_rgb], check_interrupt=host.check_interrupt,
                                             report_missing=False)[0]
        else:
            raise ValueError("connect a reference_image or a reference_pose")
        if reference_image is not None and ref_rgb is None:
            ref_rgb = _images_to_uint8(reference_image, 0)
        out_fps = selection.fps(fps)
        host.check_interrupt()
        renders, result = align_and_render(
            reference, driving, width, height, out_fps, draw_hands=draw_hands, draw_face=draw_face,
            render_short_side=RENDER_SHORT_SIDE, check_interrupt=host.check_interrupt,
            align_frame="auto" if align_frame < 0 else int(align_frame),
            person=person, ref_fit=ref_fit, smooth=smooth)
        if ref_rgb is not None:
            backdrop = fit_image(ref_rgb, width, height, ref_fit)
        else:
            backdrop = render_pose(reference_to_output(reference, width, height, person, ref_fit),
                                   render_short_side=RENDER_SHORT_SIDE) // 2
        debug = np.empty_like(renders)
        for i, r in enumerate(renders):
            host.check_interrupt()
            debug[i] = overlay(backdrop, r)
        return (_to_image_batch(renders), frames_to_pose_keypoint(result.frames), _to_image_batch(debug), out_fps,
                width, height)


def _round_size(width: int, height: int) -> tuple[int, int]:
    """W x H rounded down to multiples of 8 (what the Sampler would do), said once when it changes."""
    from ..musepose.pipeline.preprocess import round_size

    new_w, new_h = round_size(width, height, warn=False)
    if (new_w, new_h) != (width, height):
        logger.warning("The size %dx%d is not a multiple of 8, which MusePose needs: the poses are drawn at %dx%d "
                       "(the width and height outputs carry that size to the Sampler).", width, height, new_w, new_h)
    return new_w, new_h


POSE_NODE_CLASS_MAPPINGS = {
    "MusePosePoseExtract": MusePosePoseExtract,
    "MusePosePoseAlign": MusePosePoseAlign,
}

POSE_NODE_DISPLAY_NAME_MAPPINGS = {
    "MusePosePoseExtract": "MusePose Pose Extract",
    "MusePosePoseAlign": "MusePose Pose Align",
}
