"""Widget option lists, kept here so building the node menus never imports the engine (diffusers).

tests/test_nodes_units.py checks each list against the engine's own, so they cannot drift.
"""
CATEGORY = "MusePose"
MODEL_TYPE = "MUSEPOSE"

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
OFFLOAD_MODES = ("none", "model", "lowvram")
SCHEDULERS = ("ddim", "euler", "unipc", "dpmpp_2m")  # musepose.pipeline.SCHEDULERS
CONTEXT_SCHEDULES = ("uniform", "static")  # musepose.pipeline.SCHEDULES
BLENDS = ("flat", "pyramid")  # musepose.pipeline.BLENDS
ASPECT_MODES = ("stretch", "crop", "pad")  # musepose.pipeline.preprocess.ASPECT_MODES
CFG_MODES = ("batched", "sequential")  # musepose.pipeline.sampler.CFG_MODES
AUTO = "auto"

# Size limits. MusePose was trained at 512-768 pixels a side; the motion module's positional encoding
# covers 128 frames, the most one context window can hold. Widgets stop at these maxima, and the Sampler
# refuses anything beyond them at queue time (its VALIDATE_INPUTS) with a message saying why.
#: Largest width/height the nodes accept (pixels; several times MusePose's training size).
MAX_RESOLUTION = 2048
#: Smallest width/height.
MIN_RESOLUTION = 64
#: Up to this size a side is the normal range; between it and MAX_RESOLUTION the Sampler is to warn with an
#: estimated memory and time (sampler_node.large_run_note, filled in once the engine's planner gives them).
NORMAL_RESOLUTION = 1024
#: Most frames in one context window (the motion module's max_seq_length).
MAX_CONTEXT_FRAMES = 128
