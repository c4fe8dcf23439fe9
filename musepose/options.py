"""Every run setting and option list of the pack, defined once.

A :class:`Setting` holds a setting's name (the node widget's name and the settings field's), type,
default, range or choices and help text. The command line's flags (:func:`add_cli_argument`), the node
widgets (:func:`widget`) and the engine's checks (:func:`problem`) are all generated from it, so a
default, a range or a tooltip is changed here and nowhere else. Plain Python with no heavy imports: the
command line's parser and ComfyUI's node menus read it without loading torch or diffusers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Noise schedulers (``musepose.pipeline.schedulers`` maps each to its diffusers class).
SCHEDULERS = ("ddim", "euler", "unipc", "dpmpp_2m")
#: Context-window schedules: the original's wrap-around ``uniform``, or ``static`` (no wrap).
CONTEXT_SCHEDULES = ("uniform", "static")
#: How overlapping windows' predictions are mixed.
BLENDINGS = ("flat", "pyramid")
#: How a reference image or pose frames of another shape are fitted to width x height (the aspect fit).
ASPECT_MODES = ("stretch", "crop", "pad")


@dataclass(frozen=True)
class Level:
    """A memory level: what it moves off the device, in words, and the planner's predicted peak at
    768x768, one 48-frame window, fp16, cfg on (allocated bytes; the CUDA caching allocator adds ~15 %):
    for ``none`` its fastest configuration, for the others the leanest they go down to.
    tests/test_settings.py recomputes the figures and checks every document that quotes this table."""

    offload_models: bool  # each network on the device only while it runs
    streamed: bool  # the denoising UNet's weights streamed to the device within a budget
    meaning: str
    peak_gb_768: float


#: The memory levels, one table: the policy's levers (``musepose.pipeline.memory``), the widgets' and the
#: command line's help, and the docs all read it. Every level can also run the guidance halves one after
#: the other, chunk activations and recompute pose features; auto picks those per run.
LEVELS = {
    "none": Level(False, False, "everything stays on the device (fastest)", 19.7),
    "model": Level(True, False, "each network on the device only while it runs", 4.3),
    "lowvram": Level(True, True, "as model, and the denoising UNet's weights are also streamed to the device "
                     "block by block", 1.9),
}
#: Memory levels: auto (the fastest configuration predicted to fit), or a pinned level.
OFFLOAD_LEVELS = ("auto", *LEVELS)


def levels_markdown() -> str:
    """The levels' table as the README and docs/PERFORMANCE.md print it (tests/test_settings.py compares)."""
    rows = ["| offload | what it moves off the device | predicted peak at 768x768x48, fp16 |", "|---|---|---|",
            "| `auto` | the fastest configuration of any level predicted to fit the free memory; steps down on "
            "out-of-memory | |"]
    rows += [f"| `{name}` | {level.meaning} | {'' if name == 'none' else 'down to '}~{level.peak_gb_768:g} GB |"
             for name, level in LEVELS.items()]
    return "\n".join(rows)


def levels_text() -> str:
    """The levels in one sentence each, with their figures (the widgets' and the command line's help)."""
    return " ".join(f"{name}: {level.meaning} (down to ~{level.peak_gb_768:g} GB at 768x768x48)."
                    if name != "none" else f"{name}: {level.meaning}; ~{level.peak_gb_768:g} GB at 768x768x48."
                    for name, level in LEVELS.items())

#: Classifier-free-guidance halves in one UNet call or one after the other; auto lets the policy choose.
CFG_MODES = ("auto", "batched", "sequential")
#: Weight/compute precision; fp8 stores the UNets' large weights as fp8 and computes in fp16 (lossy).
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "fp8")
#: What ``musepose convert`` can write (fp8 is a storage format applied when loading, not kept on disk).
CONVERT_PRECISIONS = ("fp16", "bf16", "fp32")
#: Which person the pose alignment follows when several are detected.
PERSON_MODES = ("largest", "most_central")
#: What runs DWPose (docs/POSE.md).
POSE_BACKENDS = ("auto", "torch", "onnxruntime")
#: Attention kernels (``musepose.attention``): PyTorch SDPA, or xformers / sageattention where installed.
ATTENTION_BACKENDS = ("sdpa", "xformers", "sageattention")

#: Largest width/height (pixels; several times MusePose's 512-768 training size).
MAX_RESOLUTION = 2048
#: Smallest width/height.
MIN_RESOLUTION = 64
#: Up to this size a side is the normal range; beyond it the Sampler warns with the planner's estimates.
NORMAL_RESOLUTION = 1024
#: Most frames in one context window (the motion module's max_seq_length).
MAX_CONTEXT_FRAMES = 128


@dataclass(frozen=True)
class Setting:
    """One setting: what every surface shows and checks.

    ``kind`` is ``int``, ``float``, ``str`` (then ``choices``) or ``bool``. ``low``/``high`` bound a
    number (``None``: unbounded); ``step`` is the widget's step (width and height are also rounded down
    to it by the engine). ``flags`` are the command line's spellings, the first the main one (default
    ``--name-with-dashes``). ``widget_extra`` is what only a ComfyUI widget has (``control_after_generate``).
    ``why`` extends the out-of-range message.
    """

    name: str
    kind: type
    default: object
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    flags: tuple[str, ...] = ()
    widget_extra: dict = field(default_factory=dict)
    why: str = ""

    @property
    def flag(self) -> str:
        return self.flags[0] if self.flags else "--" + self.name.replace("_", "-")


def _size(name: str, default: int) -> Setting:
    return Setting(name, int, default, f"Output {name} in pixels (rounded down to a multiple of 8; "
                   f"{MIN_RESOLUTION}-{MAX_RESOLUTION}).", low=MIN_RESOLUTION, high=MAX_RESOLUTION, step=8,
                   why="MusePose was trained at 512-768; use a smaller size and upscale the video afterwards")


_SETTINGS = (
    _size("width", 512),
    _size("height", 768),
    Setting("frames", int, None, "Frames to generate (default: all pose frames).", low=1),
    Setting("steps", int, 20, "Denoising steps (MusePose used 20 with DDIM).", low=1, high=200),
    Setting("cfg", float, 3.5, "Classifier-free guidance scale (MusePose: 3.5). <= 1 disables guidance and "
            "halves the work.", low=0.0, high=30.0, step=0.1, widget_extra={"round": 0.01}),
    Setting("seed", int, 0, "Noise seed: the same seed and settings give the same video (the noise comes "
            "from a CPU generator, so the same numbers on any device).", low=0, high=0xFFFFFFFFFFFFFFFF,
            widget_extra={"control_after_generate": True}),
    Setting("scheduler", str, "ddim", "Sampler. ddim is MusePose's own; the others use the same v-prediction / "
            "zero-SNR schedule.", choices=SCHEDULERS),
    Setting("context_frames", int, 48, f"Frames per context window (MusePose: 48; at most {MAX_CONTEXT_FRAMES}, the "
            "motion module's limit). Smaller windows need less memory and run faster per step.", low=1,
            high=MAX_CONTEXT_FRAMES, why=f"the motion module handles at most {MAX_CONTEXT_FRAMES} frames per window "
            "(MusePose used 48)"),
    Setting("context_overlap", int, 4, "Frames shared by neighbouring windows (must be smaller than "
            "context_frames).", low=0, high=MAX_CONTEXT_FRAMES - 1),
    Setting("context_schedule", str, "uniform", "uniform: MusePose's windows (the last one wraps around to the "
            "first frames). static: the last window ends on the last frame (no wrap, no wasted frames).",
            choices=CONTEXT_SCHEDULES),
    Setting("blending", str, "flat", "How overlapping window predictions are mixed: flat average (MusePose) or "
            "pyramid (window centres weigh more: smoother seams).", choices=BLENDINGS, flags=("--blending", "--blend")),
    Setting("windows_per_batch", int, 1, "Windows denoised together in one UNet call: faster on big GPUs, more "
            "memory.", low=1, high=64, flags=("--windows-per-batch", "--context-batch-size")),
    Setting("aspect", str, "stretch", "When the reference or pose frames have another shape than width x height: "
            "stretch (as MusePose; warned), crop (centre) or pad (black borders). The pose alignment's ref_fit "
            "is the same choice.", choices=ASPECT_MODES),
    Setting("cfg_mode", str, "auto", "auto: the memory policy decides. batched: both guidance halves in one UNet "
            "call (fastest when memory allows). sequential: one after the other, same result with about half the "
            "activation memory.", choices=CFG_MODES),
    Setting("offload", str, "auto", "Memory level of the runs. auto: "
            "the fastest configuration predicted to fit the free memory (said as 'memory: ...'; on out-of-memory "
            "it steps down). " + levels_text(), choices=OFFLOAD_LEVELS),
    Setting("precision", str, "auto", "Weight/compute dtype. auto = fp16 on a GPU (ComfyUI's recommendation under "
            "ComfyUI), fp32 on the CPU. fp8 stores the UNets' large weights in 8 bits and computes in fp16: about "
            "half the UNet memory, slightly different output (lossy).", choices=PRECISIONS,
            flags=("--precision", "--dtype")),
    Setting("attention", str, "sdpa", "Attention kernel: PyTorch SDPA, or xformers / sageattention when "
            "installed.", choices=ATTENTION_BACKENDS),
    Setting("decode_chunk", int, 0, "Frames decoded per VAE call; 0 = as many as fit (tiled when not even one "
            "does); halved automatically on out-of-memory.", low=0),
    Setting("person", str, "largest", "Which person the pose alignment follows when several are detected.",
            choices=PERSON_MODES),
    Setting("pose_backend", str, "auto", "What runs DWPose: auto (onnxruntime when installed with a provider for "
            "the device, else torch), torch, onnxruntime (docs/POSE.md).", choices=POSE_BACKENDS),
)

#: name -> Setting.
SETTINGS = {s.name: s for s in _SETTINGS}

#: The run settings (``musepose.pipeline.SamplingSettings``'s fields, in the Sampler node's widget order).
SAMPLING_FIELDS = ("width", "height", "frames", "steps", "cfg", "seed", "context_frames", "context_overlap",
                   "context_schedule", "windows_per_batch", "blending", "scheduler", "aspect")


def setting_with(base: str, **changes) -> Setting:
    """``SETTINGS[base]`` with some fields replaced (another help text, or the name a widget has)."""
    from dataclasses import replace

    return replace(SETTINGS[base], **changes)


def problem(name: str, value, setting: Setting | None = None) -> str | None:
    """What is wrong with ``value`` for setting ``name``, in a sentence; None when it is fine (None values
    are fine: linked or left to the default)."""
    s = setting or SETTINGS[name]
    if value is None:
        return None
    if s.choices:
        return None if value in s.choices else f"unknown {name} {value!r}; use one of {', '.join(s.choices)}"
    if s.kind in (int, float):
        try:  # an int as it is: a 64-bit seed does not survive float()
            number = value if isinstance(value, int) else float(value)
        except (TypeError, ValueError):
            return f"{name} must be a number (got {value!r})"
        if not math.isfinite(number):
            return f"{name} must be a finite number (got {value})"
        shown = int(number) if s.kind is int else number
        if s.low is not None and number < s.low:
            return f"{name} must be at least {_num(s.low)} (got {shown})"
        if s.high is not None and number > s.high:
            return f"{name} must be at most {_num(s.high)} (got {shown})" + (f": {s.why}" if s.why else "")
    return None


def window_problem(context_frames, context_overlap) -> str | None:
    """The one rule between two settings: the overlap must be smaller than the window."""
    if context_frames is None or context_overlap is None or int(context_overlap) < int(context_frames):
        return None
    return (f"context_overlap ({int(context_overlap)}) must be smaller than context_frames ({int(context_frames)}): "
            "otherwise neighbouring windows share every frame (MusePose used 4 with 48-frame windows)")


def problems(**values) -> list[str]:
    """Every problem of the given settings (by name), the window rule included; empty when all are fine."""
    found = [p for name, value in values.items() if (p := problem(name, value))]
    window = window_problem(values.get("context_frames"), values.get("context_overlap"))
    return found + ([window] if window and not any(n.startswith("context_") for n in found) else [])


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# -- the surfaces ---------------------------------------------------------------------------------------------

def widget(name: str, setting: Setting | None = None) -> tuple:
    """The ComfyUI (V1) input tuple of setting ``name``: ``("INT", {...})``, ``([choices], {...})`` ..."""
    s = setting or SETTINGS[name]
    options = {"default": s.default, "tooltip": s.help}
    if s.choices:
        return list(s.choices), options
    if s.kind is bool:
        return "BOOLEAN", options
    kind = "INT" if s.kind is int else "FLOAT"
    for key, value in (("min", s.low), ("max", s.high), ("step", s.step)):
        if value is not None:
            options[key] = int(value) if s.kind is int else value
    return kind, {**options, **s.widget_extra}


def cli_type(name: str, setting: Setting | None = None):
    """An argparse ``type`` that converts and checks (the message names the flag)."""
    import argparse

    s = setting or SETTINGS[name]

    def parse(text: str):
        value = s.kind(text)
        why = problem(name, value, s)
        if why:
            raise argparse.ArgumentTypeError(why.replace(name, s.flag, 1))
        return value
    parse.__name__ = s.kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


def add_cli_argument(parser, name: str, setting: Setting | None = None, **overrides):
    """``parser.add_argument`` for setting ``name``: its flags, default, choices or checked type, help."""
    s = setting or SETTINGS[name]
    default = overrides.pop("default", s.default)
    shown = "" if default is None or overrides.get("required") else f" (default {default})"
    kwargs = dict(dest=name, default=default, help=s.help + shown)
    if s.choices:
        kwargs["choices"] = s.choices
    elif s.kind is bool:
        kwargs["action"] = "store_true"
    else:
        kwargs["type"] = cli_type(name, s)
    kwargs.update(overrides)
    return parser.add_argument(*(s.flags or (s.flag,)), **kwargs)
