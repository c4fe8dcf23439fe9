"""Optional ``torch.compile`` of the repeated blocks (not run in tests: CPU compile is slow and the
numbers are for GPUs).

Compiling the repeated units (resnets, spatial transformers, motion modules) rather than the whole
UNet keeps compile time short (identical block shapes share one graph per shape), leaves the engine's
Python walk, hooks and reference-attention state outside the graph, and works with block streaming
(hooks run outside the compiled region).
"""
from __future__ import annotations

from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from torch import nn


def compile_repeated_blocks(unet: nn.Module, mode: str | None = "max-autotune-no-cudagraphs",
                            dynamic: bool = False, fullgraph: bool = False,
                            kinds: tuple[type, ...] = (ResnetBlock2D, BasicTransformerBlock)) -> int:
    """``nn.Module.compile`` every module of the given kinds in place; returns how many were compiled.

    Attention processors with Python-side state (reference attention) are called from inside
    ``BasicTransformerBlock``; torch.compile traces through them (the state flags are plain Python
    attributes read at call time, which dynamo guards on). Call before the first sampling run; the
    first run then pays the compile time (about a minute on an H100).
    """
    count = 0
    for module in unet.modules():
        if isinstance(module, kinds):
            module.compile(mode=mode, dynamic=dynamic, fullgraph=fullgraph)
            count += 1
    return count
