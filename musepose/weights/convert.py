"""``python -m musepose convert``: official checkpoints -> compact per-component fp16 .safetensors.

Why: the official stage-1 ``.pth`` files each carry a shared 3.4 GB training buffer (so the 2 MB pose
guider is a 3.4 GB download) and are pickles. The converted files hold each component's own tensors
only, need no unpickler, and memory-map. Key names are kept as the official ones (the motion module's
``pe`` buffers are dropped: they are rebuilt at load time), so the normal loader reads both layouts.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..device import DTYPES
from ..options import CONVERT_PRECISIONS
from .io import StateDictReader, save_safetensors
from .keymaps import is_motion_pe_key
from .layout import MUSEPOSE_COMPONENTS, WeightPaths


def convert_weights(source: str | Path, destination: str | Path, dtype: str = "fp16",
                    log=print) -> dict[str, Path]:
    paths = WeightPaths.from_root(source)
    paths.require()
    if dtype not in CONVERT_PRECISIONS:
        raise ValueError(f"unknown precision {dtype!r}; use one of {', '.join(CONVERT_PRECISIONS)}")
    target = DTYPES[dtype]
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    files = {name: getattr(paths, name) for name in MUSEPOSE_COMPONENTS}
    files["image_encoder"] = paths.image_encoder
    files["vae"] = paths.vae
    for name, path in files.items():
        reader = StateDictReader(path)
        tensors = {}
        for key in reader.keys():
            if is_motion_pe_key(key) or key == "vision_model.embeddings.position_ids":
                continue
            tensor = reader.get(key)
            tensors[key] = tensor.to(target if tensor.is_floating_point() else tensor.dtype, copy=True)
        out = save_safetensors(tensors, destination / f"{name}.safetensors",
                               metadata={"source": path.name, "dtype": dtype, "format": "musepose-express"})
        written[name] = out
        log(f"{name}: {len(tensors)} tensors -> {out} ({out.stat().st_size / 2**20:.1f} MiB)")
        del tensors
    for config, name in ((paths.unet_config, "unet_config.json"), (paths.image_encoder_config, "image_encoder_config.json"),
                         (paths.vae_config, "vae_config.json")):
        if config is not None:
            shutil.copyfile(config, destination / name)
            written[name] = destination / name
    (destination / "README.txt").write_text(
        "MusePose weights converted by `python -m musepose convert` (" + dtype + " safetensors).\n"
        "Use this folder as --weights-dir, or copy the files into ComfyUI's models/musepose/.\n")
    log(json.dumps({k: str(v) for k, v in written.items()}, indent=1))
    return written
