"""Where the loader finds each MusePose file among ComfyUI's model folders.

Documented layout (README.md, "ComfyUI nodes"), each folder as folder_paths / extra_model_paths.yaml resolve it:

* ``models/musepose/``: ``denoising_unet``, ``reference_unet``, ``pose_guider``, ``motion_module``
  (``.safetensors`` or ``.pth``), flat or in a ``MusePose/`` subfolder, plus ``unet_config.json`` (the
  base ``sd-image-variations-diffusers/unet/config.json``; the built-in SD1.5 config is used without it);
  the official ``pretrained_weights/`` tree may also sit here whole;
* ``models/vae/``: the SD VAE ``sd-vae-ft-mse`` (single file, or the diffusers folder with config.json);
* ``models/clip_vision/``: the image encoder of ``sd-image-variations-diffusers`` (single file, or the
  ``image_encoder/`` folder with config.json).

A ``weights_path`` (an official ``pretrained_weights/`` or compact folder) is searched first.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import host
from .options import AUTO

MUSEPOSE_COMPONENTS = ("denoising_unet", "reference_unet", "pose_guider", "motion_module")
SUFFIXES = (".safetensors", ".pth")
OFFICIAL_ROOTS = ("", "pretrained_weights/")

UNET_CONFIG_NAMES = ("unet_config.json", "sd-image-variations-diffusers/unet/config.json",
                     "pretrained_weights/sd-image-variations-diffusers/unet/config.json")
#: models/vae names tried by ``auto``, most specific first.
VAE_NAMES = ("sd-vae-ft-mse/diffusion_pytorch_model.safetensors", "sd-vae-ft-mse/diffusion_pytorch_model.bin",
             "sd-vae-ft-mse.safetensors", "vae-ft-mse-840000-ema-pruned.safetensors",
             "vae-ft-mse-840000-ema-pruned.ckpt")
#: models/clip_vision names tried by ``auto``.
CLIP_NAMES = ("sd-image-variations-diffusers/image_encoder/model.safetensors",
              "sd-image-variations-diffusers/image_encoder/pytorch_model.bin",
              "image_encoder/model.safetensors", "image_encoder/pytorch_model.bin",
              "sd-image-variations-image_encoder.safetensors")
#: The same parts inside an official tree kept in models/musepose.
VAE_IN_MUSEPOSE = tuple(f"{r}sd-vae-ft-mse/diffusion_pytorch_model{s}" for r in OFFICIAL_ROOTS
                        for s in (".safetensors", ".bin"))
CLIP_IN_MUSEPOSE = tuple(f"{r}image_encoder/{n}" for r in OFFICIAL_ROOTS for n in ("model.safetensors",
                                                                                   "pytorch_model.bin"))
#: Files whose folder's config.json describes them (diffusers / transformers folder layouts).
FOLDER_FILES = {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model.safetensors",
                "pytorch_model.bin"}

#: What goes where, for error messages: slot -> (folder kind, file name to use).
EXPECTED = {
    "denoising_unet": ("musepose", "denoising_unet.pth (or .safetensors)"),
    "reference_unet": ("musepose", "reference_unet.pth (or .safetensors)"),
    "pose_guider": ("musepose", "pose_guider.pth (or .safetensors)"),
    "motion_module": ("musepose", "motion_module.pth (or .safetensors)"),
    "vae": ("vae", "sd-vae-ft-mse/diffusion_pytorch_model.safetensors + config.json, or a single "
                   "vae-ft-mse-840000-ema-pruned.safetensors"),
    "image_encoder": ("clip_vision", "sd-image-variations-diffusers/image_encoder/pytorch_model.bin + config.json"),
}
SOURCES = {
    "denoising_unet": "huggingface.co/TMElyralab/MusePose (MusePose/denoising_unet.pth)",
    "reference_unet": "huggingface.co/TMElyralab/MusePose (MusePose/reference_unet.pth)",
    "pose_guider": "huggingface.co/TMElyralab/MusePose (MusePose/pose_guider.pth)",
    "motion_module": "huggingface.co/TMElyralab/MusePose (MusePose/motion_module.pth)",
    "vae": "huggingface.co/stabilityai/sd-vae-ft-mse",
    "image_encoder": "huggingface.co/lambdalabs/sd-image-variations-diffusers (image_encoder/)",
}


#: What a weights_path folder may hold (either layout); a folder with none of it is refused.
WEIGHTS_PATH_SLOTS = ("denoising_unet", "reference_unet", "pose_guider", "motion_module", "unet_config",
                      "image_encoder", "image_encoder_config", "vae", "vae_config")
WEIGHTS_PATH_FILES = (
    "MusePose/denoising_unet.pth", "MusePose/reference_unet.pth", "MusePose/pose_guider.pth",
    "MusePose/motion_module.pth", "sd-image-variations-diffusers/unet/config.json",
    "image_encoder/config.json + image_encoder/pytorch_model.bin",
    "sd-vae-ft-mse/config.json + sd-vae-ft-mse/diffusion_pytorch_model.bin",
)
WEIGHTS_PATH_COMPACT = ("denoising_unet", "reference_unet", "pose_guider", "motion_module", "image_encoder", "vae")


def weights_path_message(weights_path: str, root: Path) -> str:
    """A weights_path folder that holds none of the expected files: say so, list them, say what to do."""
    try:
        found = sorted(p.name for p in root.iterdir())
    except OSError:
        found = []
    shown = ", ".join(found[:8]) + (", ..." if len(found) > 8 else "") if found else "nothing"
    lines = [f"MusePose: the weights_path folder {str(root)!r} holds none of the MusePose files "
             f"(it holds: {shown}).",
             "Expected there (the official pretrained_weights/ layout; .safetensors may replace .pth/.bin):"]
    lines += [f"  - {name}" for name in WEIGHTS_PATH_FILES]
    lines.append("or the compact layout of `python -m musepose convert`: "
                 + ", ".join(f"{n}.safetensors" for n in WEIGHTS_PATH_COMPACT)
                 + " with unet_config.json, image_encoder_config.json, vae_config.json.")
    lines.append("Point weights_path at the folder that holds these files (the one with MusePose/ in it), or leave "
                 "it empty to use ComfyUI's models/musepose, models/vae and models/clip_vision folders.")
    return "\n".join(lines)


def musepose_candidates(component: str) -> list[str]:
    return [f"{root}{sub}{component}{suffix}" for root in OFFICIAL_ROOTS for sub in ("", "MusePose/")
            for suffix in SUFFIXES]


def _config_beside(path: Path | None) -> Path | None:
    if path is None or path.name not in FOLDER_FILES:
        return None
    config = path.parent / "config.json"
    return config if config.is_file() else None


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def resolve_weight_paths(weights_path: str = "", vae: str = AUTO, image_encoder: str = AUTO):
    """A WeightPaths with every file found (``None`` where nothing was found; see :func:`missing_files`)."""
    from ..musepose.weights.errors import MissingWeightsError
    from ..musepose.weights.layout import WeightPaths

    weights_path = (weights_path or "").strip()
    if weights_path:
        root = Path(os.path.expanduser(weights_path))
        if not root.is_dir():
            raise MissingWeightsError(f"weights_path {weights_path!r} is not a folder; leave it empty to use "
                                      f"ComfyUI's models/musepose folder")
        paths = WeightPaths.from_root(root)
        if not any(getattr(paths, slot) is not None for slot in WEIGHTS_PATH_SLOTS):
            raise MissingWeightsError(weights_path_message(weights_path, root))
        if paths.vae is not None and paths.vae_config is None:
            paths.vae_config = _config_beside(paths.vae)
    else:
        paths = WeightPaths()
    for component in MUSEPOSE_COMPONENTS:
        if getattr(paths, component) is None:
            setattr(paths, component, _path(host.find_model_file("musepose", musepose_candidates(component))))
    if paths.unet_config is None:
        paths.unet_config = _path(host.find_model_file("musepose", UNET_CONFIG_NAMES))

    if vae != AUTO:
        paths.vae = _path(host.resolve_model_file("vae", vae))
        if paths.vae is None:
            raise MissingWeightsError(f"the VAE {vae!r} is no longer in models/vae; pick another or 'auto'")
        paths.vae_config = _config_beside(paths.vae)
    elif paths.vae is None:
        paths.vae = _path(host.find_model_file("vae", VAE_NAMES) or host.find_model_file("musepose", VAE_IN_MUSEPOSE))
        paths.vae_config = _config_beside(paths.vae)

    if image_encoder != AUTO:
        paths.image_encoder = _path(host.resolve_model_file("clip_vision", image_encoder))
        if paths.image_encoder is None:
            raise MissingWeightsError(f"the image encoder {image_encoder!r} is no longer in models/clip_vision; "
                                      f"pick another or 'auto'")
        paths.image_encoder_config = _config_beside(paths.image_encoder)
    elif paths.image_encoder is None:
        paths.image_encoder = _path(host.find_model_file("clip_vision", CLIP_NAMES)
                                    or host.find_model_file("musepose", CLIP_IN_MUSEPOSE))
        paths.image_encoder_config = _config_beside(paths.image_encoder)
    return paths


def missing_files(paths) -> list[str]:
    """Slots still empty after :func:`resolve_weight_paths`."""
    return [slot for slot in EXPECTED if getattr(paths, slot) is None]


def missing_message(missing: list[str], download_hint: bool = True) -> str:
    """One message naming every missing file, the folder it goes in and where to get it."""
    lines = ["MusePose: missing model file(s):"]
    for slot in missing:
        kind, name = EXPECTED[slot]
        folders = host.model_search_paths(kind) or [f"ComfyUI/models/{kind}"]
        lines.append(f"  - {slot}: put {name} in {folders[0]}   (from {SOURCES[slot]})")
    lines.append("The official pretrained_weights/ folder also works: put it in models/musepose/ or give its "
                 "path in weights_path.")
    if download_hint:
        lines.append("Or switch on download_missing to fetch them from Hugging Face (needs huggingface_hub).")
    return "\n".join(lines)


def file_fingerprint(paths) -> tuple:
    """(slot, path, mtime_ns, size) of every resolved file: the model cache key and IS_CHANGED value."""
    items = []
    for slot in ("denoising_unet", "reference_unet", "pose_guider", "motion_module", "unet_config",
                 "image_encoder", "image_encoder_config", "vae", "vae_config"):
        value = getattr(paths, slot)
        if value is None:
            items.append((slot, None, 0, 0))
            continue
        stat = Path(value).stat()
        items.append((slot, str(Path(value).resolve()), stat.st_mtime_ns, stat.st_size))
    return tuple(items)
