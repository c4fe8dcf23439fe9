"""Activation levers, applied to loaded models from outside (documented diffusers/torch APIs only).

* :func:`enable_activation_chunking` bounds the largest transient tensors of every transformer block
  (spatial blocks and motion modules) to about ``chunk_bytes`` per chunk:
  - the GEGLU feed-forward (its ``8C``-wide intermediate is the single largest tensor of a block) runs
    in row chunks via ``BasicTransformerBlock.set_chunk_feed_forward``; a forward pre-hook picks, for
    the actual input shape, a chunk size that divides it (diffusers requires that), so any resolution,
    window length or batch works;
  - self/cross/temporal attention run in batch chunks through processors installed with
    ``Attention.set_processor``: Q/K/V, the attention output and the concatenated reference K/V exist
    for one chunk at a time instead of for the whole window.
  - resnets (per-frame operations: GroupNorm per sample, 3x3 convs, the time embedding) run in batch
    chunks: each resnet in the blocks' ``resnets`` lists is replaced (``ModuleList.__setitem__``) by an
    instance of a chunking subclass of its own class that SHARES the original's submodules and
    parameters, so state-dict keys, parameter objects and numbers are unchanged; ``remove()`` puts the
    original instances back. No method of any class is patched.
  Results are the same up to float rounding (each row is computed by the same operations).
* :func:`sdpa_backend` selects the scaled-dot-product-attention kernel and fails loudly when it cannot
  run; :class:`SdpaBackendLog` records which kernels actually ran.
* :func:`decode_chunk_for_memory` / :func:`enable_vae_tiling` size VAE decoding to free memory.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from ..models.reference_attention import ReferenceReadProcessor, _check_plain_self_attention, _heads

# -- activation chunking ---------------------------------------------------------------------------


def _largest_divisor_at_most(n: int, limit: int) -> int:
    limit = max(1, min(n, limit))
    for d in range(limit, 0, -1):
        if n % d == 0:
            return d
    return 1


#: Transient elements per query row and channel: attention (Q, K, V, output, merged heads, to_out) and
#: the concatenated reference K/V (2 x (T + T_ref) / T = 4 more when T_ref = T); GEGLU feed-forward
#: (8C projection, 4C GELU(gate), 4C product).
ATTN_ROW_FACTOR = 6
REF_ATTN_ROW_FACTOR = 10
FF_ROW_FACTOR = 16


def rows_per_chunk(chunk_bytes: int, channels: int, element_size: int, factor: int) -> int:
    """Token rows whose transient tensors fit in ``chunk_bytes`` (at least 1)."""
    return max(1, int(chunk_bytes) // max(1, channels * element_size * factor))


class ChunkedAttnProcessor:
    """Plain attention (diffusers ``AttnProcessor2_0``) over batch chunks of about ``chunk_bytes``."""

    def __init__(self, chunk_bytes: int, inner=None):
        self.chunk_bytes = int(chunk_bytes)
        self.inner = inner or AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        batch, tokens = hidden_states.shape[0], hidden_states.shape[1]
        rows = rows_per_chunk(self.chunk_bytes, attn.inner_dim, hidden_states.element_size(), ATTN_ROW_FACTOR)
        per_chunk = max(1, rows // max(tokens, 1))
        if per_chunk >= batch or hidden_states.ndim != 3 or attention_mask is not None:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        out = None
        for start in range(0, batch, per_chunk):
            stop = min(start + per_chunk, batch)
            ehs = encoder_hidden_states
            if ehs is not None and ehs.shape[0] == batch:
                ehs = ehs[start:stop]
            part = self.inner(attn, hidden_states[start:stop], ehs, None, temb)
            if out is None:
                out = part.new_empty((batch, *part.shape[1:]))
            out[start:stop] = part
        return out


class ChunkedReferenceReadProcessor:
    """The engine's reference self-attention, computed in frame chunks (same state, same K/V cache)."""

    def __init__(self, base: ReferenceReadProcessor, chunk_bytes: int):
        self.base = base
        self.chunk_bytes = int(chunk_bytes)
        self._plain = ChunkedAttnProcessor(chunk_bytes)

    @property
    def state(self):
        return self.base.state

    @property
    def name(self):
        return self.base.name

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        state = self.base.state
        if not state.reading or self.base.name not in state.features or encoder_hidden_states is not None \
                or attention_mask is not None:
            return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        _check_plain_self_attention(attn)
        batch, tokens, _ = hidden_states.shape
        n_uncond = state.num_uncond
        rows = rows_per_chunk(self.chunk_bytes, attn.inner_dim, hidden_states.element_size(), REF_ATTN_ROW_FACTOR)
        per_chunk = max(1, rows // max(tokens, 1))
        ref_k, ref_v = self.base.reference_kv(attn, hidden_states)
        n_cond = batch - n_uncond
        if n_cond and ref_k.shape[0] not in (1, n_cond):
            raise ValueError(f"{ref_k.shape[0]} reference images for {n_cond} conditional frames")
        out = None
        start = 0
        while start < batch:
            # chunks never straddle the uncond/cond boundary
            stop = min(start + per_chunk, batch, n_uncond if start < n_uncond else batch)
            h = hidden_states[start:stop]
            q = _heads(attn.to_q(h), attn.heads)
            k = _heads(attn.to_k(h), attn.heads)
            v = _heads(attn.to_v(h), attn.heads)
            if start >= n_uncond:
                n = stop - start
                rk = ref_k if ref_k.shape[0] == 1 else ref_k[start - n_uncond:stop - n_uncond]
                rv = ref_v if ref_v.shape[0] == 1 else ref_v[start - n_uncond:stop - n_uncond]
                k = torch.cat([k, rk.expand(n, -1, -1, -1)], dim=2)
                v = torch.cat([v, rv.expand(n, -1, -1, -1)], dim=2)
            o = F.scaled_dot_product_attention(q, k, v)
            del q, k, v
            o = o.transpose(1, 2).reshape(stop - start, tokens, -1).to(hidden_states.dtype)
            o = attn.to_out[1](attn.to_out[0](o))
            if out is None:
                out = o.new_empty((batch, *o.shape[1:]))
            out[start:stop] = o
            start = stop
        return out


#: Resnet transient elements per entry and channel (input-width GroupNorm + SiLU, conv outputs).
RESNET_ROW_FACTOR = 3

_CHUNKED_RESNET_CLASSES: dict[type, type] = {}


def _chunked_resnet_class(cls: type) -> type:
    """A subclass of ``cls`` whose forward runs ``cls.forward`` on batch chunks (frames are independent)."""
    if cls in _CHUNKED_RESNET_CLASSES:
        return _CHUNKED_RESNET_CLASSES[cls]

    def forward(self, input_tensor, temb=None, *args, **kwargs):
        batch = input_tensor.shape[0]
        per_entry = input_tensor[0].numel() * input_tensor.element_size() * RESNET_ROW_FACTOR
        per_chunk = max(1, int(self.chunk_bytes // max(per_entry, 1)))
        if per_chunk >= batch:
            return cls.forward(self, input_tensor, temb, *args, **kwargs)
        out = None
        for start in range(0, batch, per_chunk):
            stop = min(start + per_chunk, batch)
            t = temb[start:stop] if (temb is not None and temb.shape[0] == batch) else temb
            part = cls.forward(self, input_tensor[start:stop], t, *args, **kwargs)
            if out is None:
                out = part.new_empty((batch, *part.shape[1:]))
            out[start:stop] = part
        return out

    sub = type(f"FrameChunked{cls.__name__}", (cls,), {"forward": forward, "__doc__": forward.__doc__})
    _CHUNKED_RESNET_CLASSES[cls] = sub
    return sub


def _chunked_resnet(resnet: nn.Module, chunk_bytes: int) -> nn.Module:
    sub = _chunked_resnet_class(type(resnet))
    twin = sub.__new__(sub)
    twin.__dict__.update(resnet.__dict__)  # same _parameters/_modules/_buffers dicts: shared weights
    for key, value in resnet.__dict__.items():  # but hooks registered on one must not appear on the other
        if "hook" in key and isinstance(value, dict):
            twin.__dict__[key] = type(value)(value)
    twin.chunk_bytes = int(chunk_bytes)
    return twin


@dataclass
class ChunkingHandle:
    """Undo record of :func:`enable_activation_chunking`; ``remove()`` restores the previous state."""

    processors: list = field(default_factory=list)  # (attention, previous processor)
    hooks: list = field(default_factory=list)
    blocks: list = field(default_factory=list)  # (block, previous chunk size, previous dim)
    resnets: list = field(default_factory=list)  # (module list, index, original resnet)

    def remove(self) -> None:
        for container, index, original in self.resnets:
            container[index] = original
        self.resnets.clear()
        for attn, previous in self.processors:
            attn.set_processor(previous)
        for hook in self.hooks:
            hook.remove()
        for block, size, dim in self.blocks:
            block.set_chunk_feed_forward(size, dim)
        self.processors.clear()
        self.hooks.clear()
        self.blocks.clear()


def _ff_pre_hook(chunk_bytes: int):
    def hook(block: BasicTransformerBlock, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        if hidden is None or hidden.ndim != 3:
            block.set_chunk_feed_forward(None, 0)
            return None
        max_tokens = rows_per_chunk(chunk_bytes, hidden.shape[-1], hidden.element_size(), FF_ROW_FACTOR)
        rows, length = hidden.shape[0], hidden.shape[1]
        if rows * length <= max_tokens:
            block.set_chunk_feed_forward(None, 0)
        elif length <= max_tokens:
            block.set_chunk_feed_forward(_largest_divisor_at_most(rows, max_tokens // length), 0)
        else:  # one entry alone is too long: chunk its tokens
            block.set_chunk_feed_forward(_largest_divisor_at_most(length, max_tokens), 1)
        return None
    return hook


def enable_activation_chunking(unet: nn.Module, chunk_bytes: int = 256 << 20, attention: bool = True,
                               feed_forward: bool = True, resnets: bool = True) -> ChunkingHandle:
    """Chunk feed-forwards and attentions of every transformer block of ``unet`` (module docstring).

    ``chunk_bytes``: the transient memory one chunk may use (per attention or feed-forward call). The
    number of rows per chunk follows from the layer width and dtype (``*_ROW_FACTOR`` above); the
    planner (``musepose.perf.planner``) picks it from a memory budget.
    Call it after the pipeline is created (it wraps the pipeline's reference read processors).
    """
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be >= 1")
    handle = ChunkingHandle()
    if resnets:
        from diffusers.models.resnet import ResnetBlock2D

        for module in list(unet.modules()):
            container = getattr(module, "resnets", None)
            if isinstance(container, nn.ModuleList):
                for index, resnet in enumerate(container):
                    if isinstance(resnet, ResnetBlock2D) and type(resnet) not in _CHUNKED_RESNET_CLASSES.values():
                        handle.resnets.append((container, index, resnet))
                        container[index] = _chunked_resnet(resnet, chunk_bytes)
    for module in unet.modules():
        if isinstance(module, BasicTransformerBlock) and feed_forward:
            handle.blocks.append((module, module._chunk_size, module._chunk_dim))
            handle.hooks.append(module.register_forward_pre_hook(_ff_pre_hook(chunk_bytes), with_kwargs=True))
        if isinstance(module, Attention) and attention:
            previous = module.processor
            if isinstance(previous, ReferenceReadProcessor):
                new = ChunkedReferenceReadProcessor(previous, chunk_bytes)
            elif isinstance(previous, (ChunkedReferenceReadProcessor, ChunkedAttnProcessor)):
                continue
            elif type(previous).__name__ in ("AttnProcessor2_0", "AttnProcessor"):
                new = ChunkedAttnProcessor(chunk_bytes, previous)
            else:  # write processors and anything else we do not know: leave alone
                continue
            handle.processors.append((module, previous))
            module.set_processor(new)
    return handle


# -- SDPA backend ----------------------------------------------------------------------------------

SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
_KERNEL_NAMES = {
    "flash": ("aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_flash_attention_for_cpu"),
    "efficient": ("aten::_scaled_dot_product_efficient_attention",),
    "cudnn": ("aten::_scaled_dot_product_cudnn_attention",),
    "math": ("aten::_scaled_dot_product_attention_math", "aten::_scaled_dot_product_attention_math_for_mps"),
}


class BackendUnavailableError(RuntimeError):
    """The requested SDPA backend cannot run for this device/dtype/shape."""


def _backend_enum(name: str):
    from torch.nn.attention import SDPBackend

    return {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name]


class SdpaBackendLog:
    """Context manager recording which SDPA kernels ran inside it (torch profiler op names).

    ``.backends`` is the set of backend names seen ("flash", "efficient", "cudnn", "math").
    """

    def __init__(self):
        self.backends: set[str] = set()
        self.calls = 0
        self._prof = None

    def __enter__(self):
        from torch.profiler import ProfilerActivity, profile

        self._prof = profile(activities=[ProfilerActivity.CPU])
        self._prof.__enter__()
        return self

    def __exit__(self, *exc):
        self._prof.__exit__(*exc)
        for event in self._prof.events():
            if event.name == "aten::scaled_dot_product_attention":
                self.calls += 1
            for backend, names in _KERNEL_NAMES.items():
                if event.name in names:
                    self.backends.add(backend)
        return False


def probe_sdpa_backend(backend: str, device: torch.device | str, dtype: torch.dtype, head_dim: int = 40,
                       heads: int = 8) -> str:
    """Run one small attention with only ``backend`` enabled; return the backend that ran, else raise."""
    from torch.nn.attention import sdpa_kernel

    device = torch.device(device)
    q = torch.randn(2, heads, 64, head_dim, device=device, dtype=dtype)
    try:
        with SdpaBackendLog() as log, sdpa_kernel([_backend_enum(backend)]):
            F.scaled_dot_product_attention(q, q, q)
    except RuntimeError as exc:
        raise BackendUnavailableError(f"SDPA backend {backend!r} is not available for {dtype} on {device} "
                                      f"(head dim {head_dim}): {exc}") from exc
    if log.backends != {backend}:
        raise BackendUnavailableError(f"SDPA backend {backend!r} requested but {sorted(log.backends)} ran")
    return backend


@contextlib.contextmanager
def sdpa_backend(backend: str = "auto", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 head_dims=(40, 80, 160)) -> Iterator[None]:
    """Run the body with only ``backend`` enabled for ``F.scaled_dot_product_attention``.

    The backend is probed first for each head dimension MusePose uses (SD-1.5 spatial heads: 40, 80, 160;
    motion modules use the same C/8) and :class:`BackendUnavailableError` is raised if it cannot run.
    Inside the block, torch itself raises if any attention call cannot use the backend (there is no
    silent fallback, because only one backend is enabled). ``auto`` leaves torch's choice alone.
    """
    if backend not in SDPA_BACKENDS:
        raise ValueError(f"unknown SDPA backend {backend!r}; use one of {SDPA_BACKENDS}")
    if backend == "auto":
        yield
        return
    from torch.nn.attention import sdpa_kernel

    for head_dim in head_dims:
        probe_sdpa_backend(backend, device, dtype, head_dim)
    with sdpa_kernel([_backend_enum(backend)]):
        yield


@dataclass
class SdpaBackendHandle:
    hooks: list = field(default_factory=list)

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()


def apply_sdpa_backend(module: nn.Module, backend: str, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32, head_dims=(40, 80, 160)) -> SdpaBackendHandle:
    """Restrict SDPA to ``backend`` inside ``module``'s forward only (forward pre-hook enters
    ``sdpa_kernel``, an always-called forward hook leaves it). Use it on the UNets: the VAE's single
    512-wide attention head cannot run on flash attention, so a global restriction around the whole
    pipeline would fail there. Probes the backend first (raises :class:`BackendUnavailableError`)."""
    if backend not in SDPA_BACKENDS:
        raise ValueError(f"unknown SDPA backend {backend!r}; use one of {SDPA_BACKENDS}")
    handle = SdpaBackendHandle()
    if backend == "auto":
        return handle
    from torch.nn.attention import sdpa_kernel

    for head_dim in head_dims:
        probe_sdpa_backend(backend, device, dtype, head_dim)
    stack: list = []

    def enter(mod, args):
        context = sdpa_kernel([_backend_enum(backend)])
        context.__enter__()
        stack.append(context)

    def leave(mod, args, output):
        if stack:
            stack.pop().__exit__(None, None, None)

    handle.hooks.append(module.register_forward_pre_hook(enter))
    handle.hooks.append(module.register_forward_hook(leave, always_call=True))
    return handle


# -- VAE decoding ----------------------------------------------------------------------------------

def vae_decode_bytes_per_frame(width: int, height: int, dtype_bytes: int = 2, tiled: bool = False,
                               tile_px: int = 256, vae_config: dict | None = None) -> int:
    """Peak transient bytes of decoding ONE frame (see planner.vae_decode_activation_bytes)."""
    from .planner import vae_decode_activation_bytes

    return vae_decode_activation_bytes(width, height, 1, dtype_bytes, tiled=tiled, tile_px=tile_px,
                                       vae_config=vae_config)


def decode_chunk_for_memory(free_bytes: int, width: int, height: int, dtype_bytes: int = 2,
                            tiled: bool = False, max_chunk: int = 16, safety: float = 0.8) -> int:
    """Frames per VAE decode call that fit in ``free_bytes`` (>= 1; use tiling if even 1 does not fit)."""
    per_frame = vae_decode_bytes_per_frame(width, height, dtype_bytes, tiled)
    return int(max(1, min(max_chunk, math.floor(free_bytes * safety / max(per_frame, 1)))))


def enable_vae_tiling(vae: nn.Module, tile_px: int | None = None) -> None:
    """diffusers' tiled VAE decoding (``AutoencoderKL.enable_tiling``); optionally set the tile size in
    pixels. Tiles are blended at their seams, so the output differs slightly from untiled decoding."""
    vae.enable_tiling()
    if tile_px is not None:
        vae.tile_sample_min_size = int(tile_px)
        vae.tile_latent_min_size = int(tile_px) // 8


def free_device_memory(device: torch.device | str) -> int:
    """Free bytes on a CUDA device (driver's view, plus what torch's cache holds); on CPU: available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    import psutil

    return int(psutil.virtual_memory().available)
