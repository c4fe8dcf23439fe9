"""The ORIGINAL MusePose algorithm's costs, computing the same function as our engine (benchmarks only).

For side-by-side figures "ours vs the original algorithm at the same settings" (``bench.py``,
``vram_meter.py --original``). Compared with :class:`~musepose.pipeline.MusePosePipeline` this variant
deliberately pays every cost the original ``Pose2VideoPipeline`` pays (docs/PERFORMANCE.md):

* every network stays on the device for the whole run, and the UNets run diffusers' own block forwards
  (each block keeps every skip connection and layer input alive until it returns, as the original's
  UNet3D blocks do), on the whole batch at once;
* the reference UNet runs on the CFG-doubled batch (``[uncond, cond]``), although only the
  conditional features are ever used;
* the pose guider runs once on the WHOLE video at full resolution, and its output stays on the
  device for the whole run; each window's slice is duplicated (materialised) for CFG;
* cross-attention projects every query against the single CLIP token (diffusers' processor);
* in every spatial self-attention, the reference features are repeated once per frame, concatenated
  with the frame tokens, and K/V are projected from that concatenation for every copy, for the whole
  CFG batch (unconditional half included); the unconditional half's self-attention is then
  recomputed without the reference and overwrites the first result; the original's transformer-block
  forward keeps its locals (the per-frame bank, the concatenation, the normalised input, the guided
  result and its two clones) alive until the block returns, so they are held here until then too;
* CFG halves always run batched and windows one at a time;
* the VAE decodes one frame at a time.

Numbers equal the engine's (same function; float rounding only), which tests/test_memory_policy.py checks
on the tiny fixture.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

import musepose.models.denoising_unet as denoising_unet_module
import musepose.models.reference_unet as reference_unet_module
from musepose.models.reference_attention import ReferenceAttentionState
from musepose.models.unet_body import UNetWalk, spatial_self_attention_names
from musepose.pipeline import sampler
from musepose.pipeline.denoiser import DenoiserSession
from musepose.pipeline.memory import MemoryConfig
from musepose.pipeline.sampler import MusePosePipeline

#: The original's memory behaviour as a configuration of our levers (all resident, batched CFG, no
#: chunking, whole-video pose features kept, one frame per VAE decode).
ORIGINAL = MemoryConfig(offload="none", cfg_mode="batched", chunk_bytes=None, offload_models=False,
                        weight_budget=None, pose_cache=True, decode_chunk=1)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class BlockForwardWalk(UNetWalk):
    """diffusers' block forwards, called as they are (the original UNet3D's lifetimes: see module docstring)."""

    def run(self, sample: torch.Tensor) -> torch.Tensor:
        unet = self.unet
        kwargs = {"num_frames": self.num_frames} if self.num_frames is not None else {}
        up_factor = 2 ** getattr(unet, "num_upsamplers", len(unet.up_blocks) - 1)
        forward_upsample_size = any(s % up_factor for s in sample.shape[-2:])
        skips = (sample,)
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, res = block(hidden_states=sample, temb=self.emb, encoder_hidden_states=self.context, **kwargs)
            else:
                sample, res = block(hidden_states=sample, temb=self.emb, **kwargs)
            skips += res
        sample = unet.mid_block(sample, self.emb, encoder_hidden_states=self.context, **kwargs)
        for i, block in enumerate(unet.up_blocks):
            is_final = i == len(unet.up_blocks) - 1
            res = skips[-len(block.resnets):]
            skips = skips[: -len(block.resnets)]
            size = skips[-1].shape[2:] if (not is_final and forward_upsample_size) else None
            if getattr(block, "has_cross_attention", False):
                sample = block(hidden_states=sample, temb=self.emb, res_hidden_states_tuple=res,
                               encoder_hidden_states=self.context, upsample_size=size, **kwargs)
            else:
                sample = block(hidden_states=sample, temb=self.emb, res_hidden_states_tuple=res, upsample_size=size,
                               **kwargs)
        return sample


class OriginalCostReadProcessor:
    """Reference self-attention computed the way the original does (same result, higher cost)."""

    def __init__(self, state: ReferenceAttentionState, name: str):
        self.state, self.name = state, name
        self._plain = AttnProcessor2_0()

    def _attend(self, attn: Attention, queries: torch.Tensor, keys_values: torch.Tensor) -> torch.Tensor:
        q = _split_heads(attn.to_q(queries), attn.heads)
        k = _split_heads(attn.to_k(keys_values), attn.heads)
        v = _split_heads(attn.to_v(keys_values), attn.heads)
        out = _merge_heads(F.scaled_dot_product_attention(q, k, v)).to(queries.dtype)
        return attn.to_out[1](attn.to_out[0](out))

    held: list | None = None  # the original block's locals, released when the block returns

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        state = self.state
        if not state.reading or self.name not in state.features or encoder_hidden_states is not None \
                or attention_mask is not None:
            return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        batch = hidden_states.shape[0]
        n_uncond = state.uncond_entries(batch)
        features = state.features[self.name].to(device=hidden_states.device, dtype=hidden_states.dtype)
        uncond_feature, cond_feature = features[:1], features[-1:]
        # The bank, materialised per frame: one copy of the right reference entry for every batch entry.
        bank = torch.cat([uncond_feature.repeat(n_uncond, 1, 1), cond_feature.repeat(batch - n_uncond, 1, 1)])
        extended = torch.cat([hidden_states, bank], dim=1)
        out = self._attend(attn, hidden_states, extended)
        guided = out
        if n_uncond:
            redo = hidden_states[:n_uncond]
            guided = out.clone()
            guided[:n_uncond] = self._attend(attn, redo, redo)
        # what the original's block forward still references when it reaches its feed-forward: the bank, the
        # concatenation, its normalised input, the first result, its clone and the clone it continues with
        self.held = [bank, extended, hidden_states, out, guided]
        result = guided.clone()
        self.held.append(result)
        return result

    def release(self, *args) -> None:
        self.held = None


class OriginalSession(DenoiserSession):
    """Windows one at a time; the whole video's pose features computed once and kept; CFG copies made."""

    def _pose(self, batch_index, batch_windows):
        pipe = self.pipe
        if pipe._video_pose_features is None:  # whole video, full resolution, in one call; kept on device
            frames = self.pose_frames.tensor(list(range(len(self.pose_frames)))).to(pipe.device, pipe.dtype)
            pipe._video_pose_features = pipe.models.pose_guider(frames)
            del frames
        (window,) = batch_windows
        return pipe._video_pose_features[torch.tensor(window, device=pipe.device)]

    def run(self, latents, batch_index, batch_windows, t, scheduler, context, guided):
        pipe = self.pipe
        (window,) = batch_windows
        x = scheduler.scale_model_input(latents[:, :, window], t).to(pipe.device, pipe.dtype)
        pose = self._pose(batch_index, batch_windows)
        t = t.to(pipe.device)
        if not guided:
            return pipe._unet(x, t, context, pose, 0)
        return pipe._unet(torch.cat([x, x]), t, context, torch.cat([pose, pose]), len(window))


class OriginalCostPipeline(MusePosePipeline):
    """``MusePosePipeline`` with the original algorithm's costs (module docstring). Benchmarks only."""

    def __init__(self, models, device=None, placement=None):
        self._video_pose_features: torch.Tensor | None = None
        self._cfg = True
        self._release_hooks: dict[str, list] = {}
        super().__init__(models, device, placement)

    def _bind_processors(self) -> None:
        """The engine's binding (write processors on the reference UNet), then the original-cost read
        processors on the denoiser, bound to this pipeline's state."""
        super()._bind_processors()
        unet = self.models.denoising_unet
        if unet is None:
            return
        modules = dict(unet.named_modules())
        for name, module in modules.items():  # cross-attention with every query projected, as the original
            if name.endswith("attn2") and "motion_modules" not in name and \
                    not isinstance(module.processor, AttnProcessor2_0):
                module.set_processor(AttnProcessor2_0())
        for name in spatial_self_attention_names(unet):
            processor = modules[name].processor
            if not (isinstance(processor, OriginalCostReadProcessor) and processor.state is self.state):
                processor = OriginalCostReadProcessor(self.state, name)
                modules[name].set_processor(processor)
                block = modules[name.rpartition(".")[0]]  # the BasicTransformerBlock that owns attn1
                for hook in self._release_hooks.pop(name, []):
                    hook.remove()
                self._release_hooks[name] = [block.register_forward_hook(
                    lambda module, args, output, p=processor: p.release(), always_call=True)]

    def _run_reference_unet(self, ref_latents: torch.Tensor, cond: torch.Tensor, check_interrupt=None) -> None:
        """Under CFG the doubled batch ``[uncond, cond]``, as the original runs it."""
        if self._cfg:
            self.models.reference_unet(torch.cat([ref_latents, ref_latents]), 0,
                                       encoder_hidden_states=torch.cat([torch.zeros_like(cond), cond]))
        else:
            self.models.reference_unet(ref_latents, 0, encoder_hidden_states=cond)

    def plan_memory(self, settings, memory=None):
        return [ORIGINAL]

    def sample(self, reference, pose_frames, settings, memory=None, *args, **kwargs) -> torch.Tensor:
        settings = replace(settings, windows_per_batch=1)
        self._cfg = settings.cfg > 1.0
        try:
            with original_algorithm():
                return super().sample(reference, pose_frames, settings, ORIGINAL, *args, **kwargs)
        finally:
            self._video_pose_features = None

    def decode(self, latents: torch.Tensor, memory=None, progress=None, check_interrupt=None,
               on_message=None) -> torch.Tensor:
        return super().decode(latents, ORIGINAL, progress, check_interrupt, on_message)


@contextlib.contextmanager
def original_algorithm():
    """While it lasts, both UNets walk their blocks with diffusers' block forwards (:class:`BlockForwardWalk`)
    and the sampler runs its windows in :class:`OriginalSession`: the engine's module attributes, swapped
    from here so that the engine keeps no hooks for benchmarks."""
    swaps = [(reference_unet_module, "UNetWalk", BlockForwardWalk),
             (denoising_unet_module, "UNetWalk", BlockForwardWalk),
             (sampler, "DenoiserSession", OriginalSession)]
    saved = [(module, name, getattr(module, name)) for module, name, _ in swaps]
    for module, name, value in swaps:
        setattr(module, name, value)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
