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
MAX_RESOLUTION = 8192
