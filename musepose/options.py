"""Every option list of the engine, defined once. Plain tuples with no heavy imports: the command line
and ComfyUI's node menus read them without loading torch or diffusers. Names and values are the nodes'
widget names and values."""

#: Noise schedulers (``musepose.pipeline.schedulers`` maps each to its diffusers class).
SCHEDULERS = ("ddim", "euler", "unipc", "dpmpp_2m")
#: Context-window schedules: the original's wrap-around ``uniform``, or ``static`` (no wrap).
CONTEXT_SCHEDULES = ("uniform", "static")
#: How overlapping windows' predictions are mixed.
BLENDINGS = ("flat", "pyramid")
#: How a reference image or pose frames of another shape are fitted to width x height.
ASPECT_MODES = ("stretch", "crop", "pad")
#: Memory levels (``musepose.pipeline.memory``): auto, or a pinned level.
OFFLOAD_LEVELS = ("auto", "none", "model", "lowvram")
#: Classifier-free-guidance halves in one UNet call or one after the other; auto lets the policy choose.
CFG_MODES = ("auto", "batched", "sequential")
#: Weight/compute precision; fp8 stores the UNets' large weights as fp8 and computes in fp16 (lossy).
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "fp8")
#: What ``musepose convert`` can write (fp8 is a storage format applied when loading, not kept on disk).
CONVERT_PRECISIONS = ("fp16", "bf16", "fp32")
