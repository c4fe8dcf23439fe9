"""What the node menus are made of. Every setting, option list and size limit is the engine's own
(``musepose/options.py`` defines each once and has no heavy imports, so building the menus never imports
torch or diffusers); the rest is node-only."""
from ..musepose.options import (ASPECT_MODES, BLENDINGS, CFG_MODES, CONTEXT_SCHEDULES, MAX_CONTEXT_FRAMES,  # noqa: F401
                                MAX_RESOLUTION, MIN_RESOLUTION, NORMAL_RESOLUTION, OFFLOAD_LEVELS, PERSON_MODES,
                                POSE_BACKENDS, PRECISIONS, SCHEDULERS, problems, setting_with, widget)

CATEGORY = "MusePose"
MODEL_TYPE = "MUSEPOSE"
AUTO = "auto"
