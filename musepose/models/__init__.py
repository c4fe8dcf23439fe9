"""MusePose model parts, one module each: reference UNet, 3D denoising UNet, motion modules, pose guider,
reference attention processors. The CLIP encoder and the VAE are transformers/diffusers classes used as is."""
from .denoising_unet import MusePoseDenoisingUNet
from .motion_module import PerFrameNormTemporalTransformer
from .pose_guider import PoseGuider
from .reference_attention import ReferenceAttentionState, ReferenceReadProcessor, ReferenceWriteProcessor
from .reference_unet import MusePoseReferenceUNet

__all__ = [
    "MusePoseDenoisingUNet", "MusePoseReferenceUNet", "PerFrameNormTemporalTransformer", "PoseGuider",
    "ReferenceAttentionState", "ReferenceReadProcessor", "ReferenceWriteProcessor",
]
