"""MusePose Decode: video latents -> IMAGE batch; MusePose Decode to Video: latents -> core VIDEO, written to
an mp4 as it is decoded (no float32 copy of the video). Both decode in frame chunks sized to free memory."""
from __future__ import annotations

import logging

import torch

from . import host
from .latents import from_latent
from .options import CATEGORY, MODEL_TYPE

logger = logging.getLogger("musepose_express")


class MusePoseDecode:
    DESCRIPTION = ("Decode MusePose Sampler latents into video frames with the SD VAE of the loaded model set. "
                   "Frames are decoded in chunks (0 = as many as free memory allows); on out-of-memory the chunk "
                   "is halved and retried. Tiling decodes each frame in tiles for very large frames.")
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The video frames, an IMAGE batch [frames, H, W, 3].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "musepose": (MODEL_TYPE, {"tooltip": "From MusePose Model Loader (its VAE is used)."}),
                "latent": ("LATENT", {"tooltip": "From MusePose Sampler (or any SD1.5 video LATENT): [frames, 4, H/8, W/8]."}),
                "chunk_size": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip": (
                    "Frames decoded per VAE call. 0 = auto from free memory. Smaller = less VRAM.")}),
                "tiling": ("BOOLEAN", {"default": False, "tooltip": (
                    "Decode each frame in overlapping tiles (diffusers VAE tiling): for large frames on small "
                    "GPUs; slightly slower, may show faint seams.")}),
            }
        }

    def decode(self, musepose, latent, chunk_size=0, tiling=False):
        return (torch.cat(list(decoded_chunks(musepose, latent, chunk_size, tiling))).contiguous(),)


def decoded_chunks(musepose, latent, chunk_size: int, tiling: bool):
    """The engine's decoded chunks (float32 ``[n, H, W, 3]``, frame order) with the node's progress bar,
    cancel checks and messages."""
    latents = from_latent(latent)
    progress = host.Progress(latents.shape[2])

    def on_progress(done: int, total: int) -> None:
        progress.update(done - progress.value)

    musepose.route_attention()
    yield from musepose.pipeline.decode_chunks(
        latents, musepose.memory(decode_chunk=int(chunk_size), decode_tiling=bool(tiling)),
        progress=on_progress, check_interrupt=host.check_interrupt, on_message=host.say)


class MusePoseDecodeToVideo:
    DESCRIPTION = ("Decode MusePose Sampler latents straight into a VIDEO (for Save Video and the other video "
                   "nodes): each chunk of frames is encoded to an h264 mp4 in ComfyUI's temp folder as soon as "
                   "it is decoded, so host memory stays flat however long the video is. Use MusePose Decode "
                   "instead when you need the frames as an IMAGE batch for post-processing.")
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    OUTPUT_TOOLTIPS = ("The video (h264 mp4, yuv420p, crf 18; an odd width or height is padded by one edge pixel).",)

    @classmethod
    def INPUT_TYPES(cls):
        decode = MusePoseDecode.INPUT_TYPES()["required"]
        fps = ("FLOAT", {"default": 12.0, "min": 1.0, "max": 120.0, "step": 1.0, "tooltip": (
            "Frame rate of the video: the pose video's (Get Video Components' fps) keeps the dance in time.")})
        pose_video = ("VIDEO", {"tooltip": (
            "The pose video given to the Sampler as pose_video: when linked, the video gets its frame rate and fps "
            "is not used (nothing is decoded to read it).")})
        return {"required": {"musepose": decode["musepose"], "latent": decode["latent"], "fps": fps,
                             "chunk_size": decode["chunk_size"], "tiling": decode["tiling"]},
                "optional": {"pose_video": pose_video}}

    def decode(self, musepose, latent, chunk_size=0, tiling=False, fps=12.0, pose_video=None):
        from ..musepose.video import Mp4Writer

        if pose_video is not None:
            fps = host.video_frame_rate(pose_video)
        with Mp4Writer(host.temp_video_path(), fps=float(fps)) as writer:
            for chunk in decoded_chunks(musepose, latent, chunk_size, tiling):
                writer.write(chunk.numpy())
        return (host.video_output(writer.video()),)
