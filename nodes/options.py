"""What the node menus are made of. The option lists are the engine's own (musepose/options.py has
no heavy imports, so building the menus never imports torch or diffusers); the rest is node-only."""
from ..musepose.options import (ASPECT_MODES, BLENDINGS, CFG_MODES, CONTEXT_SCHEDULES, OFFLOAD_LEVELS,  # noqa: F401
                                PRECISIONS, SCHEDULERS)

CATEGORY = "MusePose"
MODEL_TYPE = "MUSEPOSE"
AUTO = "auto"

# Size limits. MusePose was trained at 512-768 pixels a side; the motion module's positional encoding
# covers 128 frames, the most one context window can hold. Widgets stop at these maxima; at queue time
# ComfyUI refuses sizes beyond them and the Sampler's VALIDATE_INPUTS the window inputs, and the Sampler
# checks everything again, with a message saying why, when it runs.
#: Largest width/height the nodes accept (pixels; several times MusePose's training size).
MAX_RESOLUTION = 2048
#: Smallest width/height.
MIN_RESOLUTION = 64
#: Up to this size a side is the normal range; between it and MAX_RESOLUTION the Sampler is to warn with an
#: estimated memory and time (sampler_node.large_run_note, filled in once the engine's planner gives them).
NORMAL_RESOLUTION = 1024
#: Most frames in one context window (the motion module's max_seq_length).
MAX_CONTEXT_FRAMES = 128
