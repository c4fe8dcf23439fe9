"""Optional download of missing weights from the Hugging Face hub (only when the user switches it on).

Each missing slot maps to files of a public repository and the ComfyUI folder they land in, laid out
so :mod:`model_files` finds them afterwards. ``REHOSTS`` lists repositories that hold the same files as
fp16 ``.safetensors`` (smaller, no pickle): tried first when set. None is published yet, so the
official ``.pth`` files are the default source. ``hub_download`` is injectable so tests run without
network.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

from . import host

logger = logging.getLogger("musepose_express")


@dataclass(frozen=True)
class HubFile:
    repo_id: str
    filename: str  # path inside the repository
    kind: str  # ComfyUI folder kind it goes to
    subdir: str = ""  # below models/<kind>/; the repository path is kept under it


#: slot -> files that fill it (official sources).
OFFICIAL = {
    "denoising_unet": [HubFile("TMElyralab/MusePose", "MusePose/denoising_unet.pth", "musepose")],
    "reference_unet": [HubFile("TMElyralab/MusePose", "MusePose/reference_unet.pth", "musepose")],
    "pose_guider": [HubFile("TMElyralab/MusePose", "MusePose/pose_guider.pth", "musepose")],
    "motion_module": [HubFile("TMElyralab/MusePose", "MusePose/motion_module.pth", "musepose")],
    "unet_config": [HubFile("lambdalabs/sd-image-variations-diffusers", "unet/config.json", "musepose",
                            "sd-image-variations-diffusers")],
    "image_encoder": [HubFile("lambdalabs/sd-image-variations-diffusers", "image_encoder/config.json", "clip_vision",
                              "sd-image-variations-diffusers"),
                      HubFile("lambdalabs/sd-image-variations-diffusers", "image_encoder/pytorch_model.bin",
                              "clip_vision", "sd-image-variations-diffusers")],
    "vae": [HubFile("stabilityai/sd-vae-ft-mse", "config.json", "vae", "sd-vae-ft-mse"),
            HubFile("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors", "vae", "sd-vae-ft-mse")],
}

#: slot -> fp16 safetensors re-host files, tried before OFFICIAL (empty: no re-host is published yet).
REHOSTS: dict[str, list[HubFile]] = {}

HubDownload = Callable[..., str]


def default_hub_download() -> HubDownload:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise RuntimeError("download_missing needs the huggingface_hub package: pip install huggingface_hub") from exc
    return hf_hub_download


def plan(slots: list[str]) -> list[HubFile]:
    """Files to fetch for ``slots`` (the UNet config comes with any UNet, as the loader needs it)."""
    wanted = list(slots)
    if any(s in wanted for s in ("denoising_unet", "reference_unet")) and "unet_config" not in wanted:
        wanted.append("unet_config")
    files: list[HubFile] = []
    for slot in wanted:
        for item in REHOSTS.get(slot) or OFFICIAL.get(slot, []):
            if item not in files:
                files.append(item)
    return files


def download_missing(slots: list[str], hub_download: HubDownload | None = None,
                     check_interrupt: Callable[[], None] = host.check_interrupt) -> list[str]:
    """Fetch the files of ``slots`` into ComfyUI's model folders; returns the local paths."""
    hub_download = hub_download or default_hub_download()
    written = []
    files = plan(slots)
    progress = host.Progress(len(files))
    for item in files:
        check_interrupt()
        local_dir = os.path.join(host.default_model_dir(item.kind), item.subdir)
        os.makedirs(local_dir, exist_ok=True)
        logger.info("MusePose: downloading %s/%s -> %s", item.repo_id, item.filename, local_dir)
        path = hub_download(repo_id=item.repo_id, filename=item.filename, local_dir=local_dir)
        written.append(str(path))
        progress.update(1)
    return written
