"""The engine's own device and dtype handling (used when ComfyUI is not the host: CLI, tests)."""
from __future__ import annotations

import resource
import sys

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str | None = None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but this torch build has no CUDA device available")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(DTYPES)}")
    return DTYPES[name]


def peak_memory_report(device: torch.device) -> str:
    """Peak memory of this process: CUDA allocator peaks on a GPU, peak resident set size on the CPU."""
    if device.type == "cuda":
        allocated = torch.cuda.max_memory_allocated(device) / 2**30
        reserved = torch.cuda.max_memory_reserved(device) / 2**30
        return f"peak VRAM {allocated:.2f} GiB allocated, {reserved:.2f} GiB reserved"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = rss if sys.platform == "darwin" else rss * 1024
    return f"peak RSS {rss_bytes / 2**30:.2f} GiB"
