"""The ORIGINAL MusePose algorithm's costs, computing the same function as our engine.

Used only by benchmarks, for the side-by-side ratio "ours vs the original algorithm at the same
settings". Compared with :class:`~musepose.pipeline.MusePosePipeline` this variant deliberately pays
every cost the original ``Pose2VideoPipeline`` pays (see docs/PERFORMANCE.md and
/work/shared/notes/anchors.md section 1.1):

* the reference UNet runs on the CFG-doubled batch (``[uncond, cond]``), although only the
  conditional features are ever used;
* the pose guider runs once on the WHOLE video at full resolution, and its output stays on the
  device for the whole run; each window's slice is duplicated (materialised) for CFG;
* in every spatial self-attention, the reference features are repeated once per frame, concatenated
  with the frame tokens, and K/V are projected from that concatenation for every copy, for the whole
  CFG batch (unconditional half included); the unconditional half's self-attention is then
  recomputed without the reference and overwrites the first result;
* CFG halves always run batched and windows one at a time;
* the VAE decodes one frame at a time.

Numbers equal the default engine's (same function; float rounding only), which the tests check on the
tiny fixture.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from ..models.reference_attention import ReferenceAttentionState
from ..models.unet_body import spatial_self_attention_names
from ..pipeline.preprocess import PoseFrames
from ..pipeline.sampler import MusePosePipeline, SamplingSettings


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


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

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        state = self.state
        if not state.reading or self.name not in state.features or encoder_hidden_states is not None \
                or attention_mask is not None:
            return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        batch = hidden_states.shape[0]
        n_uncond = state.num_uncond
        features = state.features[self.name].to(device=hidden_states.device, dtype=hidden_states.dtype)
        uncond_feature, cond_feature = features[:1], features[-1:]
        # The bank, materialised per frame: one copy of the right reference entry for every batch entry.
        bank = torch.cat([uncond_feature.repeat(n_uncond, 1, 1), cond_feature.repeat(batch - n_uncond, 1, 1)])
        out = self._attend(attn, hidden_states, torch.cat([hidden_states, bank], dim=1))
        if n_uncond:
            redo = hidden_states[:n_uncond]
            out = out.clone()
            out[:n_uncond] = self._attend(attn, redo, redo)
        return out


class OriginalCostPipeline(MusePosePipeline):
    """``MusePosePipeline`` with the original algorithm's costs (module docstring). Benchmarks only."""

    def __init__(self, models, device=None, placement=None):
        self._video_pose_features: torch.Tensor | None = None
        self._cfg = True
        super().__init__(models, device, placement)

    def _bind_processors(self) -> None:
        """The engine's binding (write processors on the reference UNet), then the original-cost read
        processors on the denoiser, bound to this pipeline's state."""
        super()._bind_processors()
        unet = self.models.denoising_unet
        if unet is None:
            return
        modules = dict(unet.named_modules())
        for name in spatial_self_attention_names(unet):
            processor = modules[name].processor
            if not (isinstance(processor, OriginalCostReadProcessor) and processor.state is self.state):
                modules[name].set_processor(OriginalCostReadProcessor(self.state, name))

    def _run_reference_unet(self, ref_latents: torch.Tensor, cond: torch.Tensor) -> None:
        """Under CFG the doubled batch ``[uncond, cond]``, as the original runs it."""
        if self._cfg:
            self.models.reference_unet(torch.cat([ref_latents, ref_latents]), 0,
                                       encoder_hidden_states=torch.cat([torch.zeros_like(cond), cond]))
        else:
            self.models.reference_unet(ref_latents, 0, encoder_hidden_states=cond)

    def sample(self, reference, pose_frames, settings: SamplingSettings, *args, **kwargs) -> torch.Tensor:
        settings = SamplingSettings(**{**settings.__dict__, "cfg_mode": "batched", "context_batch_size": 1})
        self._cfg = settings.guidance > 1.0
        try:
            return super().sample(reference, pose_frames, settings, *args, **kwargs)
        finally:
            self._video_pose_features = None

    def _denoise_windows(self, latents, batch_windows, t, scheduler, pose_frames: PoseFrames, context, cfg,
                         cfg_mode: str = "batched"):
        m = self.models
        if self._video_pose_features is None:  # whole video, full resolution, in one call; kept on device
            frames = pose_frames.tensor(list(range(len(pose_frames)))).to(self.device, self.dtype)
            self._video_pose_features = m.pose_guider(frames)
            del frames
        (window,) = batch_windows
        x = scheduler.scale_model_input(latents[:, :, window], t).to(self.device, self.dtype)
        pose = self._video_pose_features[torch.tensor(window, device=self.device)]
        t = t.to(self.device)
        if not cfg:
            return self._unet(x, t, context, pose, num_uncond=0)
        return self._unet(torch.cat([x, x]), t, context, torch.cat([pose, pose]), num_uncond=len(window))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk_size: int = 1, progress=None, check_interrupt=None) -> torch.Tensor:
        return super().decode(latents, 1, progress, check_interrupt)

    def __call__(self, reference, pose_frames, settings: SamplingSettings, decode_chunk_size: int = 1,
                 progress=None, check_interrupt=None, trace=None) -> torch.Tensor:
        return super().__call__(reference, pose_frames, settings, 1, progress, check_interrupt, trace)
