"""MusePose Express engine: MusePose pose-driven image-to-video in plain PyTorch + diffusers + transformers.

No ComfyUI import anywhere in this package; the ComfyUI nodes live in ``nodes/``.
"""
__version__ = "0.1.0"
