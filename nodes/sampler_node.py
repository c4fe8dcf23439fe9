"""MusePose Sampler: reference image + pose frames -> video latents, in context windows."""
from __future__ import annotations

import logging
import math


from . import host
from .attention import attention_backend
from .memory import reference_memory, vae_encode_memory, window_memory, CLIP_BYTES
from .options import (ASPECT_MODES, BLENDS, CATEGORY, CFG_MODES, CONTEXT_SCHEDULES, MAX_RESOLUTION, MODEL_TYPE,
                      SCHEDULERS)
from .preview import LatestPreview, engine_to_latent

logger = logging.getLogger("musepose_express")


def aspect_note(src_w: int, src_h: int, width: int, height: int, mode: str, what: str) -> str | None:
    """A warning when ``what`` (src size) must change aspect ratio to become width x height."""
    if (src_w, src_h) == (width, height) or math.isclose(src_w / src_h, width / height, rel_tol=0.01):
        return None
    how = {"stretch": "stretched (distorted)", "crop": "centre-cropped", "pad": "padded with black borders"}[mode]
    return (f"MusePose Sampler: the {what} is {src_w}x{src_h} but the output is {width}x{height}: it is {how}"
            + ("; set aspect to crop or pad to keep proportions" if mode == "stretch" else ""))


def count_window_batches(frames: int, settings) -> int:
    from ..musepose.pipeline import context_windows

    windows = context_windows(frames, settings.context_frames, settings.context_overlap, settings.context_schedule)
    return math.ceil(len(windows) / settings.context_batch_size)


class MusePoseSampler:
    DESCRIPTION = ("Generate a video of the reference person following the pose frames (MusePose). The video is "
                   "denoised in overlapping context windows, so memory depends on the window length, not on the "
                   "video length. Output: LATENT with frames in the batch dimension [frames, 4, H/8, W/8], raw SD "
                   "VAE latents as ComfyUI's LATENT convention has them (MusePose Decode or core VAE Decode).")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Video latents [frames, 4, height/8, width/8] (raw SD VAE latents), one frame per batch entry.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "musepose": (MODEL_TYPE, {"tooltip": "From MusePose Model Loader."}),
                "reference_image": ("IMAGE", {"tooltip": "The person to animate (the first image of the batch)."}),
                "pose_images": ("IMAGE", {"tooltip": "Pose frames (MusePose-style skeleton renders), one per output "
                                                     "frame: e.g. from MusePose Pose Align."}),
                "width": ("INT", {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 8,
                                  "tooltip": "Output width (multiple of 8)."}),
                "height": ("INT", {"default": 768, "min": 64, "max": MAX_RESOLUTION, "step": 8,
                                   "tooltip": "Output height (multiple of 8)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Noise seed: the same seed and settings give the same video."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 200,
                                  "tooltip": "Denoising steps (MusePose used 20 with DDIM)."}),
                "cfg": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale (MusePose: 3.5). <= 1 disables guidance "
                                             "and halves the work."}),
                "scheduler": (list(SCHEDULERS), {"default": "ddim", "tooltip": (
                    "Sampler. ddim is MusePose's own; the others use the same v-prediction / zero-SNR schedule.")}),
                "context_frames": ("INT", {"default": 48, "min": 1, "max": 256, "tooltip": (
                    "Frames per context window (MusePose: 48). Smaller windows need less memory and run "
                    "faster per step.")}),
                "context_overlap": ("INT", {"default": 4, "min": 0, "max": 255, "tooltip": (
                    "Frames shared by neighbouring windows (must be smaller than context_frames).")}),
                "context_schedule": (list(CONTEXT_SCHEDULES), {"default": "uniform", "tooltip": (
                    "uniform: MusePose's windows (the last one wraps around to the first frames). static: the "
                    "last window ends on the last frame (no wrap, no wasted frames).")}),
                "blending": (list(BLENDS), {"default": "flat", "tooltip": (
                    "How overlapping window predictions are mixed: flat average (MusePose) or pyramid "
                    "(window centres weigh more: smoother seams).")}),
                "windows_per_batch": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": (
                    "Windows denoised together in one UNet call: faster on big GPUs, more memory.")}),
                "aspect": (list(ASPECT_MODES), {"default": "stretch", "tooltip": (
                    "When the reference or pose frames have another shape than width x height: stretch (as "
                    "MusePose; a warning is logged), crop (centre) or pad (black borders). Use the same choice "
                    "as the pose alignment's ref_fit.")}),
                "cfg_mode": (list(CFG_MODES), {"default": "batched", "tooltip": (
                    "batched: both guidance halves in one UNet call (fastest). sequential: one after the other, "
                    "same result with about half the activation memory.")}),
            }
        }

    def sample(self, musepose, reference_image, pose_images, width=512, height=768, seed=0, steps=20, cfg=3.5,
               scheduler="ddim", context_frames=48, context_overlap=4, context_schedule="uniform", blending="flat",
               windows_per_batch=1, aspect="stretch", cfg_mode="batched"):
        from ..musepose.pipeline import SamplingSettings

        if reference_image.ndim == 3:
            reference_image = reference_image[None]
        if pose_images.ndim == 3:
            pose_images = pose_images[None]
        settings = SamplingSettings(
            width=int(width), height=int(height), num_frames=None, steps=int(steps), guidance=float(cfg),
            seed=int(seed), context_frames=int(context_frames), context_overlap=int(context_overlap),
            context_schedule=context_schedule, context_batch_size=int(windows_per_batch), blend=blending,
            scheduler=scheduler, aspect=aspect, cfg_mode=cfg_mode).validated(int(pose_images.shape[0]))
        for tensor, what in ((reference_image, "reference image"), (pose_images, "pose frames")):
            note = aspect_note(int(tensor.shape[2]), int(tensor.shape[1]), settings.width, settings.height, aspect, what)
            if note:
                logger.warning(note)

        self._plan_memory(musepose, settings)
        batches = count_window_batches(settings.num_frames, settings)
        progress = host.Progress(settings.steps * batches)
        previews = LatestPreview(host.make_previewer())

        def on_progress(done: int, total: int) -> None:
            progress.update(1, previews.image())

        with attention_backend(musepose.attention):
            latents = musepose.pipeline.sample(reference_image[0], pose_images, settings, progress=on_progress,
                                               check_interrupt=host.check_interrupt,
                                               on_step=previews.on_step if previews.enabled else None)
        return ({"samples": engine_to_latent(latents)},)

    @staticmethod
    def _plan_memory(musepose, settings) -> None:
        """Per-stage activation estimates for ComfyUI's load_models_gpu (one window, not the video)."""
        m = musepose.models
        dtype = musepose.dtype
        window = min(settings.context_frames, settings.num_frames)
        required, minimum = window_memory(settings.width, settings.height, window, settings.context_batch_size,
                                          settings.guidance, settings.cfg_mode, dtype)
        musepose.set_estimate(m.denoising_unet, required, minimum)
        musepose.set_estimate(m.pose_guider, 0)
        musepose.set_estimate(m.reference_unet, reference_memory(settings.width, settings.height, dtype))
        musepose.set_estimate(m.image_encoder, CLIP_BYTES)
        musepose.set_estimate(m.vae, vae_encode_memory(settings.width, settings.height, dtype))
