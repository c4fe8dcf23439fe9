"""Reading the official MusePose checkpoints (and our fp16 safetensors) safely, cast on load."""
from .errors import (CheckpointError, CorruptCheckpointError, MissingWeightsError, UnsafeCheckpointError,
                     WrongCheckpointError)
from .layout import WeightPaths
from .loader import MusePoseModels, build_models, load_models

__all__ = [
    "CheckpointError", "CorruptCheckpointError", "MissingWeightsError", "UnsafeCheckpointError",
    "WrongCheckpointError", "WeightPaths", "MusePoseModels", "build_models", "load_models",
]
