"""Build every MusePose model on the meta device, then fill it from the checkpoint files.

Loading follows the original's semantics (see the fixture README, "How the original code loads these
files") without its costs:

* the base ``sd-image-variations`` UNet weights are never read: every one of them is overwritten by
  ``denoising_unet.pth`` / ``reference_unet.pth``; only its ``config.json`` is used;
* each tensor is cast straight to the target dtype/device as it is read (no fp32 model copy);
* every tensor of every file must be consumed or be on an explicit ignore list, and every parameter must
  be filled; anything else is an error that names the keys.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from ..config import (CLIP_VIT_L14, SD15_UNET, SD_VAE_FT_MSE, MotionModuleConfig, UNetConfig)
from ..models import MusePoseDenoisingUNet, MusePoseReferenceUNet, PoseGuider
from .errors import CheckpointError, MissingWeightsError, WrongCheckpointError
from .io import StateDictReader
from .keymaps import DESCRIPTIONS, identify, is_motion_pe_key, motion_key, vae_key
from .layout import WeightPaths

logger = logging.getLogger(__name__)

ALL_COMPONENTS = ("reference_unet", "denoising_unet", "pose_guider", "image_encoder", "vae")


@dataclass
class MusePoseModels:
    """The five networks of MusePose. Any may be ``None`` when only some components were loaded."""

    reference_unet: MusePoseReferenceUNet | None = None
    denoising_unet: MusePoseDenoisingUNet | None = None
    pose_guider: PoseGuider | None = None
    image_encoder: nn.Module | None = None
    vae: nn.Module | None = None
    dtype: torch.dtype = torch.float32
    source: "WeightSource | None" = None  # set by load_models: lets a network be (re)read on demand
    unet_config: UNetConfig = SD15_UNET  # the base UNet config both UNets were built from

    def components(self) -> dict[str, nn.Module]:
        return {n: getattr(self, n) for n in ALL_COMPONENTS if getattr(self, n) is not None}

    def name_of(self, module: nn.Module) -> str:
        for name, candidate in self.components().items():
            if candidate is module:
                return name
        raise ValueError("not a network of this model set")

    def materialize(self, module: nn.Module, device: torch.device | str) -> None:
        """Read a lazily loaded (or dropped) network's weights now; a no-op when they are there."""
        if self.source is not None and any(p.is_meta for p in module.parameters()):
            self.source.fill(self.name_of(module), module, device)

    def can_drop(self, module: nn.Module) -> bool:
        return self.source is not None

    def drop(self, module: nn.Module) -> None:
        """Free a network's weights (it goes back to the meta device); :meth:`materialize` reads them again."""
        if self.source is None:
            raise ValueError("these weights were not loaded from files; dropping them would lose them")
        module.to_empty(device="meta")


# -- building --------------------------------------------------------------------------------------

def _clip_config(data: dict):
    from transformers import CLIPVisionConfig

    keep = {k: v for k, v in data.items() if not k.startswith("_") and k not in ("architectures", "torch_dtype",
                                                                                  "transformers_version")}
    return CLIPVisionConfig(**keep)


def build_image_encoder(config: dict) -> nn.Module:
    from transformers import CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(_clip_config(config))


def build_vae(config: dict) -> nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config({k: v for k, v in config.items() if not k.startswith("_")})


def build_models(unet_config: UNetConfig = SD15_UNET, clip_config: dict | None = None, vae_config: dict | None = None,
                 motion: MotionModuleConfig = MotionModuleConfig(), device: str | torch.device = "meta",
                 components: Iterable[str] = ALL_COMPONENTS) -> MusePoseModels:
    """Construct the architecture without weights (``device='meta'``: no memory is allocated).

    Defaults are the full-size MusePose configs, so ``build_models()`` is the real architecture.
    """
    components = set(components)
    models = MusePoseModels(unet_config=unet_config)
    with torch.device(device):
        if "reference_unet" in components:
            models.reference_unet = MusePoseReferenceUNet.build(unet_config)
        if "denoising_unet" in components:
            models.denoising_unet = MusePoseDenoisingUNet.build(unet_config, motion)
        if "pose_guider" in components:
            models.pose_guider = PoseGuider(unet_config.block_out_channels[0])
        if "image_encoder" in components:
            models.image_encoder = build_image_encoder(clip_config or CLIP_VIT_L14)
        if "vae" in components:
            models.vae = build_vae(vae_config or SD_VAE_FT_MSE)
    return models


# -- filling ---------------------------------------------------------------------------------------

@dataclass
class Source:
    """One checkpoint file feeding (part of) a module."""

    reader: StateDictReader
    rename: Callable[[str], str] = lambda k: k
    ignore: Callable[[str], bool] = lambda k: False


def _derived_motion_pe(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The sinusoidal PE the original builds at construction (fp32 sin/cos, max_len from the config)."""
    _, length, dim = shape
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, length, dim)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


def _format_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def fill_module(module: nn.Module, sources: list[Source], dtype: torch.dtype, device: torch.device | str,
                derived: Callable[[str, tuple[int, ...]], torch.Tensor | None] = lambda n, s: None,
                what: str = "model") -> nn.Module:
    """Load ``sources`` into a meta-built ``module``; cast each tensor on the fly; strict both ways."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    tensors: dict[str, torch.Tensor] = {}
    unexpected, mismatched = [], []
    for source in sources:
        for key in source.reader.keys():
            if source.ignore(key):
                continue
            target = source.rename(key)
            if target not in expected:
                unexpected.append(key)
                continue
            shape = source.reader.shape(key)
            if shape != expected[target]:
                mismatched.append(f"{key}: file {list(shape)} vs model {list(expected[target])}")
                continue
            tensor = source.reader.get(key)
            cast = dtype if tensor.is_floating_point() else tensor.dtype
            tensors[target] = tensor.to(device=device, dtype=cast, copy=True)
    files = ", ".join(str(s.reader.path) for s in sources)
    if mismatched:
        raise CheckpointError(f"{what}: tensor shapes in {files} do not match the architecture built from the "
                              f"config (wrong config.json, or a checkpoint of another model size): "
                              + "; ".join(mismatched[:8]) + (f" ... ({len(mismatched)} in all)" if len(mismatched) > 8 else ""))
    if unexpected:
        raise CheckpointError(f"{what}: {len(unexpected)} tensor(s) in {files} have no place in the model: "
                              f"{_format_keys(unexpected)}")
    for name, shape in expected.items():
        if name not in tensors:
            value = derived(name, shape)
            if value is not None:
                tensors[name] = value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise CheckpointError(f"{what}: {len(missing)} weight(s) missing from {files}: {_format_keys(missing)}")
    module.load_state_dict(tensors, strict=True, assign=True)
    # Non-persistent buffers (not in any state dict) are rebuilt by their owners' rules.
    for name, buf in list(module.named_buffers()):
        if buf.is_meta:
            owner_name, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            if attr == "position_ids":
                owner.register_buffer(attr, torch.arange(buf.shape[-1], device=device).expand(buf.shape), persistent=False)
            else:
                raise CheckpointError(f"{what}: buffer {name} has no rule to rebuild it")
    module.requires_grad_(False)
    module.eval()
    return module


def _open_checked(path: Path, slot: str, expected_kind: str) -> StateDictReader:
    """Open a checkpoint and make sure its keys say it is what this slot needs."""
    reader = StateDictReader(path)
    kind = identify(reader.keys())
    if kind != expected_kind:
        raise WrongCheckpointError(
            f"{reader.path} was given as the {slot}, but its keys say it is {DESCRIPTIONS.get(kind, kind)}; "
            f"expected {DESCRIPTIONS.get(expected_kind, slot)}")
    return reader


def _read_json(path: Path | None, default: dict | None, what: str) -> dict:
    if path is None:
        if default is None:
            raise MissingWeightsError(f"{what} config.json not found")
        logger.info("%s: no config.json found; using the built-in full-size config", what)
        return dict(default)
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def infer_clip_config(shapes: dict[str, tuple[int, ...]]) -> dict:
    """CLIP vision config from tensor shapes, for single-file encoders (e.g. ComfyUI's clip_vision folder)."""
    hidden = shapes["vision_model.embeddings.class_embedding"][0]
    patch = shapes["vision_model.embeddings.patch_embedding.weight"][-1]
    positions = shapes["vision_model.embeddings.position_embedding.weight"][0]
    layers = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k)))
    return {
        "hidden_size": hidden, "patch_size": patch, "image_size": patch * int(round(math.sqrt(positions - 1))),
        "num_hidden_layers": layers, "num_attention_heads": max(hidden // 64, 1),
        "intermediate_size": shapes["vision_model.encoder.layers.0.mlp.fc1.weight"][0],
        "projection_dim": shapes["visual_projection.weight"][0], "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
    }


def _is_ldm_vae(keys: list[str]) -> bool:
    return any(k.startswith(("encoder.down.", "decoder.up.")) for k in keys)


def load_models(paths: WeightPaths | str | Path, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu", components: Iterable[str] = ALL_COMPONENTS,
                lazy: bool = False, fp8: bool = False) -> MusePoseModels:
    """Load the requested components from the official (or converted) layout, cast to ``dtype`` on ``device``.

    ``lazy``: build the networks without weights (meta device) and read each one's files only when the
    pipeline first needs it (:meth:`MusePoseModels.materialize`); one-shot runs also drop them after
    their last use. Every file is checked (present, the right kind) up front either way.
    ``fp8``: store the UNets' large weights as fp8 (lossy; see :mod:`musepose.weights.fp8`).
    """
    if not isinstance(paths, WeightPaths):
        paths = WeightPaths.from_root(paths)
    components = tuple(components)
    needed = []
    for name in components:
        needed.extend(["denoising_unet", "motion_module"] if name == "denoising_unet" else [name])
    paths.require(tuple(needed))

    unet_config = UNetConfig.from_dict(_read_json(paths.unet_config, SD15_UNET.unet2d_kwargs(), "base UNet"))
    source = WeightSource(paths, unet_config, dtype, fp8)
    models = MusePoseModels(dtype=dtype, source=source, unet_config=unet_config)
    for name in components:
        module = source.build(name)
        if not lazy:
            source.fill(name, module, device)
        setattr(models, name, module)
    return models


class WeightSource:
    """Where each network's weights come from, so they can be (re)read on demand (``lazy`` loading)."""

    def __init__(self, paths: WeightPaths, unet_config: UNetConfig, dtype: torch.dtype, fp8: bool = False):
        self.paths, self.unet_config, self.dtype, self.fp8 = paths, unet_config, dtype, fp8
        self._configs: dict[str, dict] = {}
        self._readers: dict[str, StateDictReader] = {}

    #: slot label and expected kind of each file
    FILES = {"reference_unet": ("reference UNet (reference_unet.pth)", "reference_unet"),
             "pose_guider": ("pose guider (pose_guider.pth)", "pose_guider"),
             "denoising_unet": ("denoising UNet (denoising_unet.pth)", "denoising_unet"),
             "motion_module": ("motion module (motion_module.pth)", "motion_module"),
             "image_encoder": ("CLIP image encoder", "clip_vision"), "vae": ("VAE", "vae")}

    def _reader(self, name: str) -> StateDictReader:
        if name not in self._readers:
            self._readers[name] = _open_checked(getattr(self.paths, name), *self.FILES[name])
        return self._readers[name]

    def _close(self, *names: str) -> None:
        """Forget open files once their tensors are copied (an mmap'ed file would stay in the RSS)."""
        for name in names:
            self._readers.pop(name, None)

    def build(self, name: str) -> nn.Module:
        """The network on the meta device (no memory), its config read and its files checked."""
        if name in ("reference_unet", "pose_guider", "denoising_unet"):
            for file in (("denoising_unet", "motion_module") if name == "denoising_unet" else (name,)):
                self._reader(file)
            return getattr(build_models(self.unet_config, components=[name]), name)
        if name == "image_encoder":
            reader = self._reader(name)
            config = (_read_json(self.paths.image_encoder_config, None, "image encoder")
                      if self.paths.image_encoder_config else infer_clip_config(reader.shapes()))
            with torch.device("meta"):
                return build_image_encoder(config)
        if name == "vae":
            self._reader(name)
            self._configs["vae"] = _read_json(self.paths.vae_config, SD_VAE_FT_MSE, "VAE")
            with torch.device("meta"):
                return build_vae(self._configs["vae"])
        raise ValueError(f"unknown component {name!r}")

    def fill(self, name: str, module: nn.Module, device: torch.device | str) -> nn.Module:
        """Read ``name``'s weights into the meta-built ``module`` (in place), cast to the dtype on ``device``."""
        dtype = self.dtype
        if name in ("reference_unet", "pose_guider"):
            label = {"reference_unet": "reference UNet", "pose_guider": "pose guider"}[name]
            fill_module(module, [Source(self._reader(name))], dtype, device, what=label)
        elif name == "denoising_unet":
            fill_module(module, [Source(self._reader("motion_module"), rename=motion_key, ignore=is_motion_pe_key),
                                 Source(self._reader("denoising_unet"))], dtype, device,
                        derived=lambda n, shape: _derived_motion_pe(n, shape) if n.endswith("pos_embed.pe") else None,
                        what="denoising UNet")
            self._close("motion_module")
        elif name == "image_encoder":
            fill_module(module, [Source(self._reader(name), ignore=lambda k: k == "vision_model.embeddings.position_ids")],
                        dtype, device, what="CLIP image encoder")
        elif name == "vae":
            reader = self._reader(name)
            if _is_ldm_vae(reader.keys()):
                _fill_ldm_vae(module, reader, self._configs["vae"], dtype, device)
            else:
                fill_module(module, [Source(reader, rename=vae_key)], dtype, device, what="VAE")
        self._close(name)
        if self.fp8 and name in ("denoising_unet", "reference_unet"):
            from .fp8 import apply_fp8_storage

            apply_fp8_storage(module)
        return module


class _DictReader:
    """A StateDictReader look-alike over an in-memory dict (used after an LDM->diffusers key conversion)."""

    def __init__(self, tensors: dict[str, torch.Tensor], path: Path):
        self._t, self.path = tensors, path

    def keys(self):
        return list(self._t)

    def shape(self, key):
        return tuple(self._t[key].shape)

    def get(self, key):
        return self._t[key]


def _fill_ldm_vae(module: nn.Module, reader: StateDictReader, config: dict, dtype, device) -> nn.Module:
    """A VAE in the original LDM layout (``encoder.down.N.block...``, as ComfyUI's models/vae files are):
    diffusers' own converter renames the keys; its 1x1-conv attention weights are reshaped to Linear."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    raw = {k: reader.get(k) for k in reader.keys() if k.startswith(("encoder.", "decoder.", "quant_conv.",
                                                                   "post_quant_conv."))}
    converted = convert_ldm_vae_checkpoint(raw, dict(config))
    expected = module.state_dict()
    fixed = {k: (v.reshape(expected[k].shape) if k in expected and v.numel() == expected[k].numel() else v)
             for k, v in converted.items()}
    return fill_module(module, [Source(_DictReader(fixed, reader.path))], dtype, device, what="VAE")
