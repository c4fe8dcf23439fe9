"""Noise schedulers: DDIM exactly as MusePose configures it, plus diffusers schedulers that support
v-prediction with a zero-terminal-SNR beta rescale (the model was trained that way)."""
from __future__ import annotations

from ..config import SCHEDULER_CONFIG
from ..options import SCHEDULERS

#: scheduler name (``musepose.options.SCHEDULERS``) -> (diffusers class name, extra config). All get
#: SCHEDULER_CONFIG's betas / v-prediction / zero SNR.
SCHEDULER_CLASSES = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"final_sigmas_type": "zero"}),
}


def make_scheduler(name: str = "ddim"):
    import diffusers

    if name not in SCHEDULER_CLASSES:
        raise ValueError(f"unknown scheduler {name!r}; use one of {', '.join(SCHEDULERS)}")
    class_name, extra = SCHEDULER_CLASSES[name]
    cls = getattr(diffusers, class_name)
    config = dict(SCHEDULER_CONFIG)
    if name != "ddim":  # DDIM-only options
        for key in ("clip_sample", "set_alpha_to_one"):
            config.pop(key, None)
    config.update(extra)
    return cls.from_config(config)
