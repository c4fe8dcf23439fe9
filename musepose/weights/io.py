"""Lazy, safe state-dict readers for .safetensors, .pth/.bin/.ckpt (torch zip pickles).

* ``.pth`` & co. go through ``torch.load(weights_only=True, mmap=True)``: the unpickler only rebuilds
  tensors and plain containers (a pickle that tries to run code is refused), and ``mmap`` keeps the
  file on disk. That matters: each real stage-1 MusePose file serialises one shared 3.4 GB fp16
  storage, so a plain load of the 2 MB pose guider would cost 3.4 GB of RAM.
* Tensors are handed out one at a time, so the caller casts each straight to its target dtype and
  device; no whole fp32 copy of a model is ever held.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Iterator

import torch

from .errors import CorruptCheckpointError, MissingWeightsError, UnsafeCheckpointError

SAFETENSORS_SUFFIXES = {".safetensors", ".sft"}
PICKLE_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}


class StateDictReader:
    """Read-only mapping ``key -> tensor`` over one checkpoint file; tensors are loaded on access."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingWeightsError(f"checkpoint not found: {self.path}")
        if self.path.stat().st_size == 0:
            raise CorruptCheckpointError(f"{self.path} is empty (0 bytes): the download failed; download it again")
        suffix = self.path.suffix.lower()
        if suffix in SAFETENSORS_SUFFIXES:
            self._open_safetensors()
        else:
            self._open_pickle()

    # -- safetensors ------------------------------------------------------------------------------
    def _open_safetensors(self) -> None:
        from safetensors import safe_open

        try:
            self._handle = safe_open(str(self.path), framework="pt", device="cpu")
            self._keys = list(self._handle.keys())
            self.metadata = self._handle.metadata() or {}
        except Exception as exc:
            raise CorruptCheckpointError(
                f"{self.path} is not a readable .safetensors file ({exc}); it is probably truncated: download "
                f"or convert it again") from exc
        self._tensors = None

    # -- torch pickles ------------------------------------------------------------------------------
    def _open_pickle(self) -> None:
        self.metadata = {}
        is_zip = zipfile.is_zipfile(self.path)
        try:
            obj = torch.load(self.path, map_location="cpu", weights_only=True, mmap=is_zip)
        except pickle.UnpicklingError as exc:
            message = str(exc)
            if "weights_only" in message or "Unsupported global" in message or "GLOBAL" in message:
                raise UnsafeCheckpointError(
                    f"refused to load {self.path}: the file asks the unpickler to create Python objects or run "
                    f"code, not just tensors. MusePose checkpoints hold only tensors, so this file is not a genuine "
                    f"checkpoint or was modified; download it again from the official source (torch said: "
                    f"{message.splitlines()[0][:300]})") from exc
            raise CorruptCheckpointError(f"{self.path} cannot be unpickled ({message[:300]}); download it again") from exc
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
            raise CorruptCheckpointError(
                f"{self.path} is truncated or corrupt ({type(exc).__name__}: {str(exc)[:300]}); file size "
                f"{self.path.stat().st_size} bytes: download it again") from exc
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
            raise CorruptCheckpointError(f"{self.path} does not hold a state dict (found {type(obj).__name__})")
        non_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if non_tensors:
            raise CorruptCheckpointError(f"{self.path} holds non-tensor entries: {non_tensors[:5]}")
        self._tensors = obj
        self._keys = list(obj.keys())

    # -- mapping API ------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in set(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape(self, key: str) -> tuple[int, ...]:
        if self._tensors is not None:
            return tuple(self._tensors[key].shape)
        return tuple(self._handle.get_slice(key).get_shape())

    def dtype(self, key: str) -> torch.dtype:
        if self._tensors is not None:
            return self._tensors[key].dtype
        return self.get(key).dtype

    def get(self, key: str) -> torch.Tensor:
        """The tensor (an mmap-backed view for zip pickles: copy it before keeping it)."""
        if self._tensors is not None:
            return self._tensors[key]
        try:
            return self._handle.get_tensor(key)
        except Exception as exc:
            raise CorruptCheckpointError(f"{self.path}: tensor {key!r} cannot be read ({exc}); the file is "
                                         f"probably truncated: download it again") from exc

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: self.shape(k) for k in self._keys}


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write tensors as .safetensors (contiguous CPU copies; shared storages are split)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path),
              metadata={k: str(v) for k, v in (metadata or {}).items()})
    return path
