"""MusePose Sampler: reference image + pose frames -> video latents, in context windows."""
from __future__ import annotations

import logging
import math
import os
import time

from . import host
from .latents import to_latent
from .options import CATEGORY, MODEL_TYPE, problems, widget
from .preview import LatestPreview

#: The Sampler's widgets, in the order saved workflows have them (each defined in ``musepose.options``).
WIDGETS = ("width", "height", "seed", "steps", "cfg", "scheduler", "context_frames", "context_overlap",
           "context_schedule", "blending", "windows_per_batch", "aspect", "cfg_mode")

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

    The engine's own check (``musepose.options.problems``), used at queue time (VALIDATE_INPUTS); when the node
    runs, the engine's ``SamplingSettings.validated`` makes the same check (a linked width or height is known
    only then).
    """
    return problems(width=width, height=height, context_frames=context_frames, context_overlap=context_overlap)


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
                **{name: widget(name) for name in WIDGETS},
            },
            # One of the two pose inputs; by name, so saved workflows with pose_images linked keep loading.
            "optional": {
                "pose_images": ("IMAGE", {"tooltip": "Pose frames (MusePose-style skeleton renders), one per output "
                                                     "frame: e.g. from MusePose Pose Align. Or use pose_video."}),
                "pose_video": ("VIDEO", {"tooltip": (
                    "A pose video (e.g. from Load Video), instead of pose_images: read straight to 8-bit frames, "
                    "so a long video costs 4x less host memory than through Get Video Components' IMAGE batch.")}),
            },
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

    def sample(self, musepose, reference_image, pose_images=None, width=512, height=768, seed=0, steps=20, cfg=3.5,
               scheduler="ddim", context_frames=48, context_overlap=4, context_schedule="uniform", blending="flat",
               windows_per_batch=1, aspect="stretch", cfg_mode="auto", pose_video=None):
        reference_image = reference_image if reference_image.ndim == 4 else reference_image[None]
        pose_images = pose_frames(pose_images, pose_video)
        settings = validated_settings(int(pose_images.shape[0]), width=int(width), height=int(height), seed=int(seed),
                                      steps=int(steps), cfg=float(cfg), scheduler=scheduler,
                                      context_frames=int(context_frames), context_overlap=int(context_overlap),
                                      context_schedule=context_schedule, windows_per_batch=int(windows_per_batch),
                                      blending=blending, aspect=aspect)
        say_before_run(settings, musepose, reference_image)
        started = time.perf_counter()
        latents = run_engine(musepose, reference_image[0], pose_images, settings, cfg_mode)
        say_after_run(settings, musepose.pipeline.stats, time.perf_counter() - started)
        return (to_latent(latents),)


def pose_frames(pose_images=None, pose_video=None):
    """The pose frames ``[F, H, W, 3]`` from whichever pose input is linked: the IMAGE batch as it is, or the
    VIDEO read as uint8 (:func:`host.video_frames`). Exactly one must be linked."""
    if pose_images is not None and pose_video is not None:
        raise ValueError("MusePose Sampler: link only one of pose_images and pose_video")
    if pose_images is None and pose_video is None:
        raise ValueError("MusePose Sampler: link pose_images (an IMAGE batch, e.g. from MusePose Pose Align) or "
                         "pose_video (a VIDEO, e.g. from Load Video)")
    if pose_video is not None:
        from ..musepose.video import VideoReadError

        try:
            frames, _fps = host.video_frames(pose_video)
        except VideoReadError as exc:
            raise ValueError(f"MusePose Sampler: pose_video: {exc}") from None
        return frames
    return pose_images if pose_images.ndim == 4 else pose_images[None]


def validated_settings(frames: int, **widgets):
    """The engine's ``SamplingSettings`` from the widgets, validated by the engine once (an input out of its
    range stops the node with the engine's reason)."""
    from ..musepose.pipeline import SamplingSettings
    from ..musepose.pipeline.preprocess import InputError

    try:
        return SamplingSettings(frames=None, **widgets).validated(frames)
    except InputError as exc:
        raise ValueError(f"MusePose Sampler: {exc}") from None


def say_before_run(settings, musepose, reference_image) -> None:
    """The facts only the node reports, before any work: the reference's resize, a size above the usual range
    (the engine's estimate) and, under dynamic VRAM, which memory manager holds the networks. The pose
    frames' resize is reported by the engine as it prepares them, so each fact is said once."""
    from ..musepose.pipeline.outlook import large_run_note

    for note in (aspect_note(int(reference_image.shape[2]), int(reference_image.shape[1]), settings.width,
                             settings.height, settings.aspect, "reference image"),
                 large_run_note(settings, musepose.models)):
        if note:
            logger.warning(note)
    note = host.memory_host_note()
    if note:
        host.say(note)


def run_engine(musepose, reference, pose_images, settings, cfg_mode: str):
    """The engine's sampling with the node's progress bar (the engine's ``(done, total)`` window batches),
    status line, previews, cancel checks, saved state and messages. Returns the engine's latents."""
    previews = LatestPreview(host.make_previewer())
    pipeline = musepose.pipeline
    progress = None

    def on_progress(done: int, total: int) -> None:  # done counts the whole run (a resumed one starts late)
        nonlocal progress
        progress = progress or host.Progress(total)
        host.show_status(pipeline.stats.progress_text())
        progress.update(done - progress.value, previews.image())

    checkpoints = sampler_checkpoints()
    musepose.route_attention()
    try:
        latents = pipeline.sample(reference, pose_images, settings, musepose.memory(cfg_mode=cfg_mode),
                                  progress=on_progress, check_interrupt=host.check_interrupt,
                                  on_step=previews.on_step if previews.enabled else None, on_message=host.say,
                                  replicas=musepose.replicas(), checkpoints=checkpoints)
    finally:
        host.show_status(None)
    checkpoints.discard()  # the output is ComfyUI's now (its cache keeps it)
    return latents


def say_after_run(settings, stats, seconds: float) -> None:
    """The run's summary line on the node."""
    per_step = sum(stats.seconds_per_step) / max(1, len(stats.seconds_per_step))
    host.say(f"{settings.frames} frames at {settings.width}x{settings.height}, {settings.steps} "
             f"step{'s' if settings.steps != 1 else ''} in {seconds:.1f} s ({per_step:.2f} s per step, "
             f"{len(settings.windows())} window(s) per step)")
