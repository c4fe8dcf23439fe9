"""Errors a user can act on: each says which file, what is wrong and what to do."""
from __future__ import annotations


class CheckpointError(ValueError):
    """Base class of every weight-loading error."""


class MissingWeightsError(CheckpointError, FileNotFoundError):
    """A required file is not where the layout expects it."""


class CorruptCheckpointError(CheckpointError):
    """The file exists but cannot be parsed (truncated download, wrong format)."""


class UnsafeCheckpointError(CheckpointError):
    """The pickle asks to run code or build objects beyond plain tensors; we refuse to load it."""


class WrongCheckpointError(CheckpointError):
    """The file is a valid checkpoint of something else (e.g. a plain SD UNet in the denoising-UNet slot)."""
