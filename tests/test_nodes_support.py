"""Helpers shared by the node tests (no tests here): load the pack the way ComfyUI does, lay the tiny
fixture weights out in the documented ComfyUI folders, and turn fixture images into IMAGE tensors."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "fixtures" / "musepose-tiny"
WEIGHTS = TINY / "pretrained_weights"
VECTOR_A = TINY / "vector_a"

#: documented location (relative to models/) -> fixture file
TINY_LAYOUT = {
    "musepose/denoising_unet.pth": "MusePose/denoising_unet.pth",
    "musepose/reference_unet.pth": "MusePose/reference_unet.pth",
    "musepose/pose_guider.pth": "MusePose/pose_guider.pth",
    "musepose/motion_module.pth": "MusePose/motion_module.pth",
    "musepose/unet_config.json": "sd-image-variations-diffusers/unet/config.json",
    "vae/sd-vae-ft-mse/diffusion_pytorch_model.bin": "sd-vae-ft-mse/diffusion_pytorch_model.bin",
    "vae/sd-vae-ft-mse/config.json": "sd-vae-ft-mse/config.json",
    "clip_vision/sd-image-variations-diffusers/image_encoder/pytorch_model.bin": "image_encoder/pytorch_model.bin",
    "clip_vision/sd-image-variations-diffusers/image_encoder/config.json": "image_encoder/config.json",
}


def comfy_module_name(path: Path) -> str:
    """The module name ComfyUI gives a custom-node folder: its full path with '.' replaced."""
    return str(path).replace(".", "_x_")


def load_pack(name: str | None = None, root: Path = REPO):
    """Import the pack's ``__init__.py`` as a package named ``name`` (ComfyUI's way)."""
    name = name or comfy_module_name(root)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def place_tiny_weights(models_dir: Path, layout: dict[str, str] = TINY_LAYOUT, copy: bool = False) -> Path:
    """Symlink (or copy) the tiny fixture files into ``models_dir`` at the documented places."""
    import shutil

    for target, source in layout.items():
        dest = models_dir / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() or dest.is_symlink():
            dest.unlink()
        if copy:
            shutil.copyfile(WEIGHTS / source, dest)
        else:
            os.symlink(WEIGHTS / source, dest)
    return models_dir


def image_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> ComfyUI IMAGE float32 0..1 (a batch dimension is added for a single image)."""
    tensor = torch.from_numpy(np.array(array, copy=True)).float() / 255.0
    return tensor[None] if tensor.ndim == 3 else tensor


def vector_a_images() -> tuple[torch.Tensor, torch.Tensor]:
    """(reference IMAGE [1, 96, 96, 3], pose IMAGE batch [12, 96, 96, 3]) of vector A."""
    from PIL import Image

    reference = np.asarray(Image.open(VECTOR_A / "inputs" / "ref.png").convert("RGB"))
    poses = np.stack([np.asarray(Image.open(p).convert("RGB"))
                      for p in sorted((VECTOR_A / "inputs" / "pose").glob("*.png"))])
    return image_tensor(reference), image_tensor(poses)


VECTOR_A_SAMPLER = dict(width=96, height=96, seed=42, steps=3, cfg=3.5, scheduler="ddim", context_frames=8,
                        context_overlap=4, context_schedule="uniform", blending="flat", windows_per_batch=1,
                        aspect="stretch", cfg_mode="batched")


def max_abs(a, b) -> float:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def remove_standalone_model_root(host, path: str) -> None:
    """Undo ``host.add_standalone_model_root(path)`` (tests lay their models out in temporary roots)."""
    if path in host.folders.STANDALONE_ROOTS:
        host.folders.STANDALONE_ROOTS.remove(path)


def loaded_model_names(host) -> list[str]:
    """Labels of the pack's networks whose weights ComfyUI has loaded now (empty outside ComfyUI)."""
    if not host.comfyui.HAS_COMFY:
        return []
    names = []
    for patcher in host.comfyui.mm.loaded_models():
        holder = getattr(patcher, "model", None)
        if isinstance(holder, host.HeldModel) and patcher.loaded_size() > 0:
            names.append(holder.label)
    return names
