"""MusePose Sampler: reference image + pose frames -> video latents, in context windows."""
from __future__ import annotations

import logging
import math
import os
import time


from . import host
from .options import CATEGORY, MODEL_TYPE, NORMAL_RESOLUTION, problems, widget

#: The Sampler's widgets, in the order saved workflows have them (each defined in ``musepose.options``).
WIDGETS = ("width", "height", "seed", "steps", "cfg", "scheduler", "context_frames", "context_overlap",
           "context_schedule", "blending", "windows_per_batch", "aspect", "cfg_mode")
from .latents import to_latent
from .preview import LatestPreview

logger = logging.getLogger("musepose_express")


def aspect_note(src_w: int, src_h: int, width: int, height: int, mode: str, what: str) -> str | None:
    """A warning when ``what`` (src size) must change aspect ratio to become width x height."""
    if (src_w, src_h) == (width, height) or math.isclose(src_w / src_h, width / height, rel_tol=0.01):
        return None
    how = {"stretch": "stretched (distorted)", "crop": "centre-cropped", "pad": "padded with black borders"}[mode]
    verb = "are" if what.endswith("s") else "is"  # "the pose frames are", "the reference image is"
    return (f"MusePose Sampler: the {what} {verb} {src_w}x{src_h} but the output is {width}x{height}, so "
            f"{'they' if verb == 'are' else 'it'} {verb} {how} to fit"
            + ("; set aspect to crop or pad to keep the proportions." if mode == "stretch" else "."))


def sampler_input_problems(width=None, height=None, context_frames=None, context_overlap=None) -> list[str]:
    """What the Sampler's widgets alone rule out, each in a sentence (empty: fine). ``None`` = linked, unknown.

    The engine's own check (``musepose.options.problems``), used at queue time (VALIDATE_INPUTS) and again
    when the node runs (a linked width or height is known only then).
    """
    return problems(width=width, height=height, context_frames=context_frames, context_overlap=context_overlap)


def large_run_note(settings, musepose) -> str | None:
    """For a size between NORMAL_RESOLUTION and MAX_RESOLUTION: a warning with the planner's estimates of
    the run's device memory (with the leanest configuration) and time; None for normal sizes."""
    if max(settings.width, settings.height) <= NORMAL_RESOLUTION:
        return None
    from ..musepose.pipeline import MemorySettings
    from ..musepose.pipeline.memory import choose
    from ..musepose.pipeline.planner import WeightBytes

    job = settings.job(musepose.models)
    weights = WeightBytes.from_models(musepose.models)
    leanest = choose(MemorySettings(offload="lowvram"), job, weights, 1.0)[0].estimate
    fastest = choose(MemorySettings(offload="none"), job, weights, 1e15)[0].estimate
    return (f"{settings.width}x{settings.height} is above MusePose's usual range (512-768, trained at 768): it "
            f"needs at least about {leanest.peak_bytes / 1e9:.1f} GB of GPU memory ({fastest.peak_bytes / 1e9:.0f} GB "
            f"for the fastest setting) and about {fastest.seconds / 60:.0f} min on an H100-class GPU "
            f"({fastest.flops_per_window_step / 1e12:.0f} TFLOP per window and step); consider a smaller size and "
            f"upscaling the video.")


def count_window_batches(settings) -> int:
    return math.ceil(len(settings.windows()) / settings.windows_per_batch)


#: A run that has lasted this long keeps its state in ComfyUI's temp folder instead of RAM (seconds).
LONG_RUN_S = 60.0
_checkpoints = []  # the pack's one saved Sampler state (made on first use: the engine loads with the nodes' runs)


def sampler_checkpoints():
    """The Sampler's saved state, one for the pack: the last interrupted run's finished steps. A Cancel or an
    error keeps them (in memory; in ComfyUI's temp folder once a run has lasted ``LONG_RUN_S``); the same
    inputs queued again resume; other inputs replace them (a warning says what changed); a finished run and
    ComfyUI's Free drop them (:func:`drop_sampler_state`)."""
    if not _checkpoints:
        from ..musepose.pipeline.resume import Checkpoints, ResumeSettings

        folder = os.path.join(host.temp_directory(), "musepose-sampler-state")
        _checkpoints.append(Checkpoints(ResumeSettings(directory=folder, on_change="restart",
                                                       disk_after_s=LONG_RUN_S)))
    return _checkpoints[0]


def drop_sampler_state() -> None:
    """Forget the saved Sampler state, in memory and on disk (ComfyUI's Free)."""
    if _checkpoints:
        _checkpoints[0].discard()


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
                **{name: widget(name) for name in WIDGETS},
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, context_frames=None, context_overlap=None):
        """Queue-time check of the window inputs together (linked inputs arrive as None).

        ComfyUI (V1) pins one returned message on every argument this method takes, so it takes only the two
        inputs whose combination it judges: a bad overlap is blamed on context_frames and context_overlap,
        never on width or height. Width and height keep ComfyUI's own min/max check at queue time (their
        widgets' limits) and get ours, with the reason, when the node runs (a linked size is known only then).
        """
        problems = sampler_input_problems(context_frames=context_frames, context_overlap=context_overlap)
        return "; ".join(problems) if problems else True

    def sample(self, musepose, reference_image, pose_images, width=512, height=768, seed=0, steps=20, cfg=3.5,
               scheduler="ddim", context_frames=48, context_overlap=4, context_schedule="uniform", blending="flat",
               windows_per_batch=1, aspect="stretch", cfg_mode="auto"):
        from ..musepose.pipeline import SamplingSettings

        problems = sampler_input_problems(width, height, context_frames, context_overlap)
        if problems:
            raise ValueError("MusePose Sampler: " + "; ".join(problems))
        if reference_image.ndim == 3:
            reference_image = reference_image[None]
        if pose_images.ndim == 3:
            pose_images = pose_images[None]
        settings = SamplingSettings(
            width=int(width), height=int(height), frames=None, steps=int(steps), cfg=float(cfg),
            seed=int(seed), context_frames=int(context_frames), context_overlap=int(context_overlap),
            context_schedule=context_schedule, windows_per_batch=int(windows_per_batch), blending=blending,
            scheduler=scheduler, aspect=aspect).validated(int(pose_images.shape[0]))
        # The pose frames' resize (and stretch) is reported by the engine as it prepares them: only the
        # reference is the node's to report, so each fact is said once.
        note = aspect_note(int(reference_image.shape[2]), int(reference_image.shape[1]), settings.width,
                           settings.height, aspect, "reference image")
        if note:
            logger.warning(note)
        note = large_run_note(settings, musepose)
        if note:
            logger.warning(note)

        note = host.memory_host_note()  # under dynamic VRAM: which memory manager holds our networks
        if note:
            host.say(note)
        progress = host.Progress(settings.steps * count_window_batches(settings))
        previews = LatestPreview(host.make_previewer())
        pipeline = musepose.pipeline

        def on_progress(done: int, total: int) -> None:  # done counts the whole run (a resumed one starts late)
            host.show_status(pipeline.stats.progress_text())
            progress.update(done - progress.value, previews.image())

        started = time.perf_counter()
        checkpoints = sampler_checkpoints()
        musepose.route_attention()
        try:
            latents = pipeline.sample(reference_image[0], pose_images, settings,
                                      musepose.memory(cfg_mode=cfg_mode), progress=on_progress,
                                      check_interrupt=host.check_interrupt,
                                      on_step=previews.on_step if previews.enabled else None, on_message=host.say,
                                      replicas=musepose.replicas(), checkpoints=checkpoints)
        finally:
            host.show_status(None)
        checkpoints.discard()  # the output is ComfyUI's now (its cache keeps it)
        seconds = time.perf_counter() - started
        per_step = sum(pipeline.stats.seconds_per_step) / max(1, len(pipeline.stats.seconds_per_step))
        host.say(f"{settings.frames} frames at {settings.width}x{settings.height}, {settings.steps} step{'s' if settings.steps != 1 else ''} in "
                 f"{seconds:.1f} s ({per_step:.2f} s per step, {len(settings.windows())} window(s) per step)")
        return (to_latent(latents),)
