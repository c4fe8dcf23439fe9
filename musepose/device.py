"""The engine's own device and dtype handling (used when ComfyUI is not the host: CLI, tests)."""
from __future__ import annotations

import sys

import torch

#: Precision names (``musepose.options.PRECISIONS``) -> the dtype weights are loaded and computed in.
#: ``fp8`` computes in fp16 and stores the UNets' large weights as fp8 on top (``musepose.weights.fp8``).
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp8": torch.float16}


def resolve_device(name: str | None = None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but this torch build has no CUDA device available")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype of a precision name; ``auto`` is fp16 on a GPU and fp32 on the CPU."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown precision {name!r}; use one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory, whatever form it takes.

    ``torch.OutOfMemoryError`` is what the CUDA caching allocator raises; allocations it does not make
    (ComfyUI's dynamic VRAM pager, some kernels' workspaces) fail with a generic ``torch.AcceleratorError``
    whose message says so (ComfyUI PR #12835 handles it the same way). Everything that steps down to a
    leaner configuration on out-of-memory asks this, so both forms step down.
    """
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    accelerator_error = getattr(torch, "AcceleratorError", None)
    return (accelerator_error is not None and isinstance(exc, accelerator_error)
            and "out of memory" in str(exc).lower())


def peak_memory_report(device: torch.device) -> str:
    """Peak memory of this process: CUDA allocator peaks on a GPU, peak resident set size on the CPU."""
    if device.type == "cuda":
        allocated = torch.cuda.max_memory_allocated(device) / 2**30
        reserved = torch.cuda.max_memory_reserved(device) / 2**30
        return f"peak VRAM {allocated:.2f} GiB allocated, {reserved:.2f} GiB reserved"
    return f"peak RSS {peak_rss_bytes() / 2**30:.2f} GiB"


def peak_rss_bytes() -> int:
    """This process's peak resident set size (0 where the platform does not report it, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return 0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024
