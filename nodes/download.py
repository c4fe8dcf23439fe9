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


class DownloadError(OSError):
    """download_missing could not fetch every file: says which, from where, to where, and what to do."""


def default_hub_download() -> HubDownload:
    from huggingface_hub import hf_hub_download  # ImportError: reported by download_missing with the files

    return hf_hub_download


def hub_url(item: HubFile) -> str:
    return f"https://huggingface.co/{item.repo_id}/resolve/main/{item.filename}"


def target_path(item: HubFile) -> str:
    """Where ``item`` lands (hf_hub_download keeps the repository path below ``local_dir``)."""
    return os.path.join(host.default_model_dir(item.kind), item.subdir, *item.filename.split("/"))


def failure_message(reason: str, pending: list[HubFile], fetched: list[str]) -> str:
    lines = [f"MusePose: download_missing could not fetch {len(pending)} file(s) from Hugging Face: {reason}",
             "Still missing (source -> where it goes):"]
    lines += [f"  - {hub_url(item)}\n      -> {target_path(item)}" for item in pending]
    if fetched:
        lines.append(f"Already fetched and kept: {', '.join(fetched)}.")
    lines.append("Download each file by hand (open the address in a browser, or `huggingface-cli download "
                 "<repo> <file> --local-dir <folder>`) and put it at the path shown, then queue again. Or fix "
                 "the network access (proxy settings, HF_ENDPOINT for a mirror, HF_TOKEN) and keep "
                 "download_missing on.")
    return "\n".join(lines)


def _reason(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    if len(first) > 200:
        first = first[:200] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


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
    """Fetch the files of ``slots`` into ComfyUI's model folders; returns the local paths.

    Stops at the first file that cannot be fetched (no network: every further try would wait as long)
    and raises :class:`DownloadError` naming that file and every one not fetched yet.
    """
    files = plan(slots)
    if hub_download is None:
        try:
            hub_download = default_hub_download()
        except ImportError:
            raise DownloadError(failure_message(
                "the huggingface_hub package is not installed (pip install huggingface_hub, in ComfyUI's "
                "Python)", files, [])) from None
    written: list[str] = []
    progress = host.Progress(len(files))
    for index, item in enumerate(files):
        check_interrupt()
        local_dir = os.path.join(host.default_model_dir(item.kind), item.subdir)
        os.makedirs(local_dir, exist_ok=True)
        logger.info("MusePose: downloading %s/%s -> %s", item.repo_id, item.filename, local_dir)
        try:
            path = hub_download(repo_id=item.repo_id, filename=item.filename, local_dir=local_dir)
        except Exception as exc:
            if type(exc).__name__ in ("InterruptProcessingException", "Interrupted"):
                raise  # Cancel, not a download failure
            raise DownloadError(failure_message(_reason(exc), files[index:], written)) from exc
        written.append(str(path))
        progress.update(1)
    return written
