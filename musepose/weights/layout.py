"""Where each MusePose file lives on disk.

Two layouts are recognised under one root folder:

1. the official one, as users download it::

       pretrained_weights/
         MusePose/{denoising_unet,reference_unet,pose_guider,motion_module}.pth
         sd-image-variations-diffusers/unet/config.json   (+ diffusion_pytorch_model.bin, not needed)
         image_encoder/{config.json, pytorch_model.bin}
         sd-vae-ft-mse/{config.json, diffusion_pytorch_model.bin}

2. the compact one ``python -m musepose convert`` writes (fp16 safetensors, one file per component)::

       musepose-fp16/
         {denoising_unet,reference_unet,pose_guider,motion_module,image_encoder,vae}.safetensors
         unet_config.json  image_encoder_config.json  vae_config.json

Every MusePose file may be ``.safetensors`` or ``.pth`` in either layout.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import MissingWeightsError

MUSEPOSE_COMPONENTS = ("denoising_unet", "reference_unet", "pose_guider", "motion_module")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt", ".ckpt")

EXPECTED_LAYOUT = """\
expected layout (official download; .safetensors may replace any .pth/.bin):
  <weights-dir>/
    MusePose/denoising_unet.pth
    MusePose/reference_unet.pth
    MusePose/pose_guider.pth
    MusePose/motion_module.pth
    sd-image-variations-diffusers/unet/config.json
    image_encoder/config.json + image_encoder/pytorch_model.bin
    sd-vae-ft-mse/config.json + sd-vae-ft-mse/diffusion_pytorch_model.bin
  downloads: MusePose files from huggingface.co/TMElyralab/MusePose, the UNet config and image_encoder from
  huggingface.co/lambdalabs/sd-image-variations-diffusers, the VAE from huggingface.co/stabilityai/sd-vae-ft-mse
or the compact layout written by `python -m musepose convert`:
  <weights-dir>/{denoising_unet,reference_unet,pose_guider,motion_module,image_encoder,vae}.safetensors
  plus unet_config.json, image_encoder_config.json, vae_config.json"""


def _first_existing(candidates: list[Path]) -> Path | None:
    return next((c for c in candidates if c.is_file()), None)


def _with_suffixes(stem: Path) -> list[Path]:
    return [stem.with_name(stem.name + s) for s in WEIGHT_SUFFIXES]


@dataclass
class WeightPaths:
    """Resolved paths of every file the engine reads. ``None`` means not found."""

    denoising_unet: Path | None = None
    reference_unet: Path | None = None
    pose_guider: Path | None = None
    motion_module: Path | None = None
    unet_config: Path | None = None
    image_encoder: Path | None = None
    image_encoder_config: Path | None = None
    vae: Path | None = None
    vae_config: Path | None = None
    root: Path | None = None

    @classmethod
    def from_root(cls, root: str | os.PathLike) -> "WeightPaths":
        root = Path(root)
        if not root.is_dir():
            raise MissingWeightsError(f"weights folder not found: {root}\n{EXPECTED_LAYOUT}")
        paths = cls(root=root)
        for name in MUSEPOSE_COMPONENTS:
            setattr(paths, name, _first_existing(_with_suffixes(root / "MusePose" / name) + _with_suffixes(root / name)))
        paths.unet_config = _first_existing([root / "sd-image-variations-diffusers" / "unet" / "config.json",
                                             root / "unet_config.json"])
        paths.image_encoder = _first_existing(
            [root / "image_encoder" / n for n in ("model.safetensors", "pytorch_model.bin")]
            + _with_suffixes(root / "image_encoder"))
        paths.image_encoder_config = _first_existing([root / "image_encoder" / "config.json",
                                                      root / "image_encoder_config.json"])
        paths.vae = _first_existing(
            [root / "sd-vae-ft-mse" / n for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")]
            + _with_suffixes(root / "vae"))
        paths.vae_config = _first_existing([root / "sd-vae-ft-mse" / "config.json", root / "vae_config.json"])
        return paths

    def require(self, components: tuple[str, ...] = ("denoising_unet", "reference_unet", "pose_guider",
                                                      "motion_module", "image_encoder", "vae")) -> None:
        """Raise one error listing every missing file (not just the first)."""
        missing = []
        labels = {
            "denoising_unet": "MusePose/denoising_unet.pth", "reference_unet": "MusePose/reference_unet.pth",
            "pose_guider": "MusePose/pose_guider.pth", "motion_module": "MusePose/motion_module.pth",
            "image_encoder": "image_encoder/pytorch_model.bin (or model.safetensors)",
            "vae": "sd-vae-ft-mse/diffusion_pytorch_model.bin (or .safetensors)",
        }
        for name in components:
            if getattr(self, name) is None:
                missing.append(labels.get(name, name))
        if missing:
            where = f" in {self.root}" if self.root else ""
            raise MissingWeightsError(
                f"missing MusePose weight file(s){where}: " + ", ".join(missing) + "\n" + EXPECTED_LAYOUT)

    def as_dict(self) -> dict[str, str | None]:
        return {f.name: (str(getattr(self, f.name)) if getattr(self, f.name) else None) for f in fields(self)}
