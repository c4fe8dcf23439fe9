"""Resumable sampling: the state after each finished denoising step, kept so that an interrupted run (a
crash, a killed process, an out-of-memory error, a Cancel in ComfyUI) goes on from its last finished step
and ends with exactly the latents an uninterrupted run ends with.

A state after step ``k`` of ``n`` (:class:`StepState`) holds:

* the latents ``(1, 4, F, H/8, W/8)`` float32;
* the scheduler's mutable state (:func:`scheduler_state`): every attribute of the diffusers scheduler
  object but its config, captured generically: tensors (timesteps, sigmas, the multistep history of
  DPM++ 2M and UniPC: ``model_outputs``, ``timestep_list``, ``last_sample``) and lists of them go to
  safetensors, numbers, strings, booleans and lists of them to JSON; anything else is refused with a
  :class:`ResumeError` rather than guessed at;
* the run's fingerprint (:func:`run_fingerprint`): every setting, digests of the reference image, the pose
  frames and the weights, the precision and the diffusers version. A state is only ever continued by a
  run with the same fingerprint; a difference is named (``steps: 20 -> 30``, ``the reference image``);
* the measured seconds of each finished window batch (the resumed run's first time-left estimate).

There is no noise-generator state to keep: a run's only random numbers are its initial noise, drawn from
a CPU generator seeded with the run's seed (the seed is in the fingerprint), and the schedulers offered
draw none while stepping (DDIM with eta 0, Euler without churn, DPM++ 2M, UniPC); the kill-and-resume
tests would see any that did.

On disk a state is one file, ``<directory>/musepose-state.safetensors``: the tensors, and the rest as JSON
in the safetensors header (``metadata["musepose"]``) with a CRC-32 of every tensor. It is written to a
temporary file in the same folder, synced, then renamed over the old one (``os.replace``), so a process
killed at any moment leaves the previous state or the new one, never a mix; a file that is truncated,
damaged or not ours is a :class:`ResumeError` (or, with ``on_change="restart"``, a warning and a fresh
start), never a wrong video. Nothing is unpickled.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: The state file's name inside the checkpoint folder.
STATE_FILE = "musepose-state.safetensors"
#: Version of the file's layout; another version is refused by name.
FORMAT = 1
_META_KEY = "musepose"
_RESTART, _REFUSE = "restart", "refuse"


class ResumeError(ValueError):
    """A saved state that cannot continue this run: another run's, or a damaged file."""


@dataclass
class ResumeSettings:
    """Where a run keeps its state after each finished step, and what it does with a state it finds.

    ``directory``: the folder of the state file; None keeps the state in memory only (the same process can
    resume, e.g. after a Cancel). ``fresh``: ignore a saved state (it is replaced as the run goes).
    ``on_change``: ``"refuse"`` raises :class:`ResumeError` naming what differs when the saved state is
    another run's or damaged (the command line); ``"restart"`` drops it with a warning and starts afresh
    (ComfyUI: any change of the inputs starts a new run). ``disk_after_s``: with a directory, the state
    stays in memory until the run has lasted this long, then goes to disk (and leaves memory); 0 writes
    every step to disk.
    """

    directory: str | os.PathLike | None = None
    fresh: bool = False
    on_change: str = _REFUSE
    disk_after_s: float = 0.0

    def validated(self) -> "ResumeSettings":
        if self.on_change not in (_REFUSE, _RESTART):
            raise ValueError(f"on_change must be {_REFUSE!r} or {_RESTART!r} (got {self.on_change!r})")
        if self.disk_after_s < 0:
            raise ValueError(f"disk_after_s must be >= 0 (got {self.disk_after_s})")
        return self


@dataclass
class StepState:
    """A run after ``step`` of its ``steps`` denoising steps (module docstring)."""

    step: int
    steps: int
    latents: torch.Tensor  # (1, 4, F, H/8, W/8) float32, CPU
    scheduler_tensors: dict[str, torch.Tensor]  # safetensors name -> tensor (CPU)
    scheduler_values: dict  # attribute -> JSON description (see scheduler_state)
    fingerprint: dict[str, str]
    unit_seconds: list[float] = field(default_factory=list)  # each finished window batch, in order
    # How many times this device had stepped down its memory configuration on out-of-memory: a resumed run
    # starts where the interrupted one had got to, so it runs the same configuration (and so the same
    # arithmetic) as an uninterrupted run does after that step, instead of failing over again.
    step_downs: int = 0


# -- the scheduler ------------------------------------------------------------------------------------------

def _is_plain(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def scheduler_state(scheduler) -> tuple[dict[str, torch.Tensor], dict]:
    """Copies of a diffusers scheduler's attributes (its config aside): ``(tensors, values)``.

    ``tensors`` maps ``"scheduler/<attr>"`` (``"scheduler/<attr>/<i>"`` for list items) to CPU clones;
    ``values`` maps each attribute to ``{"tensor": name}``, ``{"tensors": [name or None, ...]}`` or
    ``{"value": json}``. Raises :class:`ResumeError` for an attribute of any other kind.
    """
    tensors: dict[str, torch.Tensor] = {}
    values: dict = {}
    for attr, value in vars(scheduler).items():
        if attr == "_internal_dict":  # the config: rebuilt from the scheduler's name
            continue
        name = f"scheduler/{attr}"
        if isinstance(value, torch.Tensor):
            tensors[name] = value.detach().to("cpu", copy=True)
            values[attr] = {"tensor": name}
        elif isinstance(value, list) and any(isinstance(v, torch.Tensor) for v in value):
            items = []
            for i, item in enumerate(value):
                if item is not None and not isinstance(item, torch.Tensor):
                    raise ResumeError(f"cannot save the scheduler's {attr}: a list mixing tensors and "
                                      f"{type(item).__name__}")
                items.append(None if item is None else f"{name}/{i}")
                if item is not None:
                    tensors[f"{name}/{i}"] = item.detach().to("cpu", copy=True)
            values[attr] = {"tensors": items}
        elif _is_plain(value) or (isinstance(value, list) and all(_is_plain(v) for v in value)):
            values[attr] = {"value": list(value) if isinstance(value, list) else value}
        else:
            raise ResumeError(f"cannot save the state of {type(scheduler).__name__}: its attribute {attr} is a "
                              f"{type(value).__name__} (only tensors, numbers, strings and lists of them are saved)")
    return tensors, values


def restore_scheduler(scheduler, tensors: dict[str, torch.Tensor], values: dict) -> None:
    """Set a scheduler (made for the same run, its timesteps set) to a saved state.

    The saved attributes must include every one the scheduler has (stepping may add more, e.g. UniPC's
    ``this_order``): a state of another scheduler class or diffusers version is refused, never half applied.
    """
    missing = sorted(set(vars(scheduler)) - {"_internal_dict"} - set(values))
    if missing:
        raise ResumeError(f"the saved scheduler state does not fit {type(scheduler).__name__} "
                          f"(it lacks {', '.join(missing)})")
    restored = {}
    for attr, saved in values.items():
        if "tensor" in saved:
            restored[attr] = tensors[saved["tensor"]].clone()
        elif "tensors" in saved:
            restored[attr] = [None if n is None else tensors[n].clone() for n in saved["tensors"]]
        else:
            restored[attr] = saved["value"]
    vars(scheduler).update(restored)


# -- the run's fingerprint -----------------------------------------------------------------------------------

def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        # hashlib reads a contiguous array's buffer in place; ``.tobytes()`` would copy a long video's
        # pose frames (F x H x W x 3 bytes) just to hash them.
        h.update(part if isinstance(part, bytes) else memoryview(np.ascontiguousarray(part)).cast("B"))
    return h.hexdigest()[:16]


def _file_digest(path: Path, sample: int = 1 << 16) -> str:
    """Size plus five 64 KiB samples spread over the file: tells checkpoints apart without reading gigabytes,
    whatever the file's name, folder or modification time."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
            f.seek(max(0, min(int(size * fraction), size - sample)))
            h.update(f.read(sample))
    return h.hexdigest()[:16]


def weights_digest(models) -> str:
    """The networks' identity: their files (:func:`_file_digest`) when loaded from files, else a digest of
    every parameter (networks built in memory)."""
    source = getattr(models, "source", None)
    if source is not None:
        paths = source.paths
        parts = [f"{f.name}:{_file_digest(Path(getattr(paths, f.name)))}" for f in fields(paths)
                 if f.name != "root" and getattr(paths, f.name) is not None]
        return _digest(";".join(parts).encode())
    h = hashlib.sha256()
    for name, module in sorted(models.components().items()):
        for key, tensor in module.state_dict().items():
            h.update(f"{name}.{key}{tuple(tensor.shape)}{tensor.dtype}".encode())
            if tensor.device.type != "meta":
                h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def run_fingerprint(settings, reference, pose_frames, models) -> dict[str, str]:
    """What decides a run's result besides the code: ``{what: value or digest}``.

    ``settings``: validated :class:`~musepose.pipeline.sampler.SamplingSettings`; ``reference``: the image
    (any form :func:`~musepose.pipeline.preprocess.to_uint8_rgb` takes); ``pose_frames``: the prepared
    :class:`~musepose.pipeline.preprocess.PoseFrames` (only the frames the run uses count). The memory
    configuration, the device(s) and the attention backend are left out: they change the result only by
    rounding, and a run that ran out of memory must be able to go on with a leaner configuration.
    """
    import diffusers

    from .preprocess import to_uint8_rgb

    image = to_uint8_rgb(reference)
    poses = pose_frames.frames[:settings.frames]
    source = getattr(models, "source", None)
    fingerprint = {name: repr(value) for name, value in asdict(settings).items()}
    fingerprint.update({
        "reference image": _digest(repr(image.shape).encode(), image),
        "pose frames": _digest(repr(poses.shape).encode(), poses),
        "precision": str(models.dtype).replace("torch.", "") + (" (fp8 storage)" if getattr(source, "fp8", False)
                                                                else ""),
        "weights": weights_digest(models),
        "diffusers": diffusers.__version__,
    })
    return fingerprint


def differences(saved: dict[str, str], current: dict[str, str]) -> list[str]:
    """What differs between two fingerprints, in words: ``steps 20 -> 30``, ``the reference image``."""
    out = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if old == new:
            continue
        if key in ("reference image", "pose frames", "weights"):
            out.append(f"the {key}")
        else:
            out.append(f"{key} {old if old is not None else '(not saved)'} -> {new if new is not None else '(none)'}")
    return out


# -- the file -------------------------------------------------------------------------------------------------

def _crc(tensor: torch.Tensor) -> int:
    return zlib.crc32(tensor.contiguous().view(-1).view(torch.uint8).numpy())


def write_state(directory: str | os.PathLike, state: StepState) -> Path:
    """Write ``state`` to ``directory/STATE_FILE`` atomically (temporary file, fsync, ``os.replace``)."""
    from ..weights.io import save_safetensors

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / STATE_FILE
    for stale in directory.glob(f".{STATE_FILE}.*.tmp"):  # left by a process killed while writing
        stale.unlink(missing_ok=True)
    tensors = {"latents": state.latents, **state.scheduler_tensors}
    meta = {"format": FORMAT, "step": state.step, "steps": state.steps, "scheduler": state.scheduler_values,
            "fingerprint": state.fingerprint, "unit_seconds": state.unit_seconds, "step_downs": state.step_downs,
            "crc32": {name: _crc(t) for name, t in tensors.items()}}
    temporary = directory / f".{STATE_FILE}.{os.getpid()}.tmp"
    save_safetensors(tensors, temporary, metadata={_META_KEY: json.dumps(meta)})
    with open(temporary, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temporary, target)
    if hasattr(os, "O_DIRECTORY"):  # the rename itself survives a power cut
        descriptor = os.open(directory, os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    return target


def read_state(path: str | os.PathLike) -> StepState:
    """The state in ``path``; :class:`ResumeError` if it is truncated, damaged, or not a MusePose state."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[_META_KEY])
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        if meta.get("format") != FORMAT:
            raise ResumeError(f"format {meta.get('format')!r}, this version reads format {FORMAT}")
        if set(meta["crc32"]) != set(tensors) or any(_crc(tensors[n]) != c for n, c in meta["crc32"].items()):
            raise ResumeError("its checksums do not match its contents")
        state = StepState(step=int(meta["step"]), steps=int(meta["steps"]), latents=tensors.pop("latents"),
                          scheduler_tensors=tensors, scheduler_values=meta["scheduler"],
                          fingerprint=dict(meta["fingerprint"]), unit_seconds=[float(s) for s in meta["unit_seconds"]],
                          step_downs=int(meta.get("step_downs", 0)))
    except Exception as exc:  # noqa: BLE001 - whatever the reason, one message naming the file
        reason = str(exc) if isinstance(exc, ResumeError) else f"{type(exc).__name__}: {exc}"
        raise ResumeError(f"the saved state {path} is damaged or not a MusePose state ({reason})") from exc
    if not 1 <= state.step <= state.steps:
        raise ResumeError(f"the saved state {path} is damaged (step {state.step} of {state.steps})")
    return state


# -- where a run keeps its state ------------------------------------------------------------------------------

class Checkpoints:
    """The state of the last unfinished run, in memory or in ``settings.directory`` (never both).

    It lives as long as a run may be resumed: the command line makes one per process (the state is on
    disk); the ComfyUI Sampler keeps one for the pack (the memory copy outlives a Cancel; a long run's
    state goes to ComfyUI's temp folder instead of RAM). The sampler calls :meth:`restore` before its
    first step and :meth:`save` after each finished one; the caller calls :meth:`discard` once the result
    is safe (the video written, the node's output returned).
    """

    def __init__(self, settings: ResumeSettings | None = None):
        self.settings = (settings or ResumeSettings()).validated()
        self._memory: StepState | None = None

    @property
    def path(self) -> Path | None:
        """The state file (None: memory only)."""
        return None if self.settings.directory is None else Path(self.settings.directory) / STATE_FILE

    def saved(self) -> StepState | None:
        """The latest state (memory first, then the file), or None; :class:`ResumeError` if the file is damaged."""
        if self._memory is not None:
            return self._memory
        if self.path is not None and self.path.exists():
            return read_state(self.path)
        return None

    def restore(self, fingerprint: dict[str, str], scheduler) -> StepState | None:
        """The state this run continues from, with ``scheduler`` set to it; None to start afresh.

        A state of another run (or a damaged file) raises :class:`ResumeError` naming what differs, or with
        ``on_change="restart"`` is dropped with a warning.
        """
        if self.settings.fresh:
            self.discard()
            return None
        try:
            state = self.saved()
            if state is None:
                return None
            changed = differences(state.fingerprint, fingerprint)
            if changed:
                where = self.path if self._memory is None else "memory"
                raise ResumeError(f"the saved state ({where}, step {state.step} of {state.steps}) is another run's; what "
                                  f"differs: {'; '.join(changed)}")
            restore_scheduler(scheduler, state.scheduler_tensors, state.scheduler_values)
        except ResumeError as exc:
            if self.settings.on_change == _REFUSE:
                raise ResumeError(f"{exc}. To start this run afresh, use --fresh (the saved state is replaced) "
                                  "or another checkpoint folder") from exc
            logger.warning("%s: starting afresh", exc)
            self.discard()
            return None
        return state

    def save(self, state: StepState, elapsed_s: float, write: bool = True) -> None:
        """Keep ``state`` after a finished step: in memory, or (with a directory, once the run has lasted
        ``disk_after_s``) in the file. ``write=False``: another process writes the file (ranks other than 0)."""
        if self.path is not None and elapsed_s >= self.settings.disk_after_s:
            if write:
                write_state(self.settings.directory, state)
            self._memory = None
        else:
            self._memory = state

    def discard(self) -> None:
        """Forget the state (memory and file)."""
        self._memory = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def step_state(step: int, steps: int, latents: torch.Tensor, scheduler, fingerprint: dict[str, str],
               unit_seconds: list[float], step_downs: int = 0) -> StepState:
    """The state after ``step`` finished steps (the latents are the step's new tensor: not copied)."""
    tensors, values = scheduler_state(scheduler)
    return StepState(step=step, steps=steps, latents=latents, scheduler_tensors=tensors, scheduler_values=values,
                     fingerprint=fingerprint, unit_seconds=list(unit_seconds), step_downs=step_downs)
