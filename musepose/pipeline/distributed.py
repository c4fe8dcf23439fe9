"""Several processes or machines: one MusePose run shared by the ranks of a torch.distributed group.

Start it with torchrun (``torchrun --nproc-per-node N [--nnodes M ...] -m musepose generate ...
--distributed``); :func:`start_group` reads the environment torchrun sets. Each rank:

* loads the networks onto its own device (``cuda:LOCAL_RANK`` with NCCL; the CPU with gloo) and
  encodes the reference itself (same inputs, same numbers: nothing to send);
* runs its share of every step's window batches (batch ``i`` on rank ``i % world_size``; see
  :mod:`musepose.pipeline.parallel`) into a float32 accumulator of the whole video, then the
  accumulators are summed with ``all_reduce``; the blending weights are a function of the settings,
  the same on every rank, so only the predictions travel;
* takes the same scheduler step: the noise comes from a seeded CPU generator, and after every step
  the ranks compare a checksum of their latents (a mismatch is an error, not a silent drift);
* decodes a contiguous chunk of the frames; rank 0 gathers them and alone writes the outputs;
* with ``--checkpoint-dir``, rank 0 alone writes the state after each step; a resumed launch's ranks each
  read it (so the folder must be one they share) and check they start from the same step and latents.

A rank that dies or stops answering must not leave the others waiting: every collective runs under
the group's timeout (``init_process_group(timeout=...)``; on NCCL with blocking waits, so a timeout is
an exception, not a process abort) and any failure of one becomes a :class:`DistributedError` that
says in one line which rank saw what, during which part of the run.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import sys
import time
import zlib
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

#: Default seconds a rank waits in a collective for the others (the slowest rank's share of a step,
#: model loading and decoding included) before it gives up with an error.
DEFAULT_TIMEOUT_S = 600.0
#: Frames per gather call when rank 0 collects the decoded video (bounds the memory of one call).
GATHER_FRAMES = 8
#: Tests only: ``"RANK:STEP:kill"`` (or ``stop``) makes that rank SIGKILL (SIGSTOP) itself after that step.
TEST_FAILURE_ENV = "MUSEPOSE_TEST_RANK_FAILURE"


class DistributedError(RuntimeError):
    """A collective did not complete (another rank died or stopped answering), or the ranks disagree."""


@dataclass
class DistributedGroup:
    """This process's place in the run and the collectives the pipeline needs, each with a clear error."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device  # this rank's compute device
    backend: str
    timeout_s: float

    @property
    def name(self) -> str:
        return f"rank {self.rank} of {self.world_size}"

    @property
    def comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def share(self, count: int) -> list[int]:
        """Which of ``count`` window batches this rank runs: round-robin over the ranks."""
        return list(range(self.rank, count, self.world_size))

    @contextlib.contextmanager
    def _collective(self, what: str):
        try:
            yield
        except DistributedError:
            raise
        except RuntimeError as exc:  # gloo raises RuntimeError; NCCL/the store raise dist.DistError (a subclass)
            raise DistributedError(
                f"{self.name}: {what} did not complete ({_reason(exc)}); another rank crashed, was killed or "
                f"stopped answering (timeout {self.timeout_s:g} s): see the other ranks' output") from exc

    def all_reduce(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        """The sum over the ranks of ``tensor`` (returned on ``tensor``'s device)."""
        buffer = tensor.to(self.comm_device)
        with self._collective(what):
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        return buffer.to(tensor.device)

    def check_same(self, fingerprint: int, what: str, hint: str = "") -> None:
        """Raise on every rank unless all ranks hold the same ``fingerprint`` (an int below 2**62)."""
        values = torch.tensor([fingerprint, -fingerprint], dtype=torch.int64, device=self.comm_device)
        with self._collective(f"comparing {what}"):
            dist.all_reduce(values, op=dist.ReduceOp.MAX)
        if int(values[0]) != -int(values[1]):
            raise DistributedError(f"{self.name}: the ranks disagree on {what}" + (f": {hint}" if hint else ""))

    def check_same_run(self, fingerprint: dict[str, str]) -> None:
        """Every rank must run the same job: same settings, inputs and weights (the run's fingerprint,
        :func:`~musepose.pipeline.resume.run_fingerprint`)."""
        crc = zlib.crc32(json.dumps(fingerprint, sort_keys=True).encode())
        self.check_same(crc, "the settings and inputs",
                        "give every rank the same options, reference image, pose frames and weights")

    def check_same_start(self, step: int, latents: torch.Tensor) -> None:
        """Every rank starts from the same step and latents: a resumed run's ranks each read the saved state."""
        crc = zlib.crc32(np.ascontiguousarray(latents.detach().cpu().numpy()))
        self.check_same(step << 32 | crc, "the step the run starts from",
                        "a resumed run's ranks must all read the same state: give them the same --checkpoint-dir, "
                        "on a file system they share")

    def step_done(self, step: int, latents: torch.Tensor) -> None:
        """After a scheduler step: the ranks' latents must be identical (they took the same step)."""
        self._test_failure(step)
        crc = zlib.crc32(np.ascontiguousarray(latents.detach().cpu().numpy()))
        self.check_same(crc, f"the latents after step {step}",
                        "the ranks' scheduler steps diverged (different torch/diffusers versions?)")

    def gather_frames(self, part: torch.Tensor, per_rank: int, total: int, what: str) -> torch.Tensor | None:
        """Rank 0: the ranks' frame chunks ``[n, H, W, 3]`` (each at most ``per_rank`` frames, in rank
        order) joined into ``total`` frames; other ranks: None."""
        padded = torch.zeros((per_rank, *part.shape[1:]), dtype=torch.float32)
        padded[:part.shape[0]] = part
        pieces: list[list[torch.Tensor]] = [[] for _ in range(self.world_size)]
        for start in range(0, per_rank, GATHER_FRAMES):
            chunk = padded[start:start + GATHER_FRAMES].to(self.comm_device).contiguous()
            received = [torch.empty_like(chunk) for _ in range(self.world_size)] if self.rank == 0 else None
            with self._collective(what):
                dist.gather(chunk, received, dst=0)
            if received is not None:
                for rank, tensor in enumerate(received):
                    pieces[rank].append(tensor.cpu())
        if self.rank != 0:
            return None
        return torch.cat([torch.cat(p) for p in pieces])[:total]

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def _test_failure(self, step: int) -> None:
        spec = os.environ.get(TEST_FAILURE_ENV, "")
        if not spec:
            return
        rank, at, how = spec.split(":")
        if int(rank) == self.rank and int(at) == step:
            print(f"{self.name}: test failure: {how} after step {step} at {time.time():.3f}", file=sys.stderr,
                  flush=True)
            os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGSTOP)


def _reason(exc: BaseException) -> str:
    """The first sentence of a torch.distributed error, without gloo's source-file prefix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    text = text.split(". This is typically")[0]
    return text.rstrip(".")


def start_group(device: str | None = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistributedGroup:
    """Join the run torchrun started (its ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR/PORT``).

    ``device``: ``auto`` (a GPU when there is one), ``cuda`` (each rank takes ``cuda:LOCAL_RANK``) or
    ``cpu``; the backend follows: NCCL on GPUs, gloo on the CPU.
    """
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise DistributedError(f"--distributed needs the environment torchrun sets ({', '.join(missing)} missing): "
                               "start it as torchrun --nproc-per-node N -m musepose generate ... --distributed")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(device)
    if chosen.type == "cuda":
        if chosen.index is not None:
            raise ValueError("with --distributed each process takes the GPU of its local rank (cuda:LOCAL_RANK): "
                             "give --device cuda (or auto), not a numbered GPU")
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise ValueError(f"local rank {local_rank} needs GPU cuda:{local_rank}, but this machine has "
                             f"{torch.cuda.device_count()}: start at most that many processes per machine")
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    elif chosen.type != "cpu":
        raise ValueError(f"--distributed runs on CUDA GPUs (NCCL) or the CPU (gloo), not on {chosen.type}")
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    if backend == "nccl":  # a timed-out collective raises in Python instead of aborting the process
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
    group = DistributedGroup(rank=rank, world_size=world, local_rank=local_rank, device=chosen, backend=backend,
                             timeout_s=float(timeout_s))
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    with group._collective(f"joining the run at {where}"):
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s),
                                device_id=chosen if backend == "nccl" else None)
    return group


@torch.no_grad()
def decode_shared(pipe, latents: torch.Tensor, group: DistributedGroup, memory=None, progress=None,
                  check_interrupt=None, on_message=None) -> torch.Tensor | None:
    """Each rank decodes a contiguous chunk of the frames; rank 0 returns the whole video ``[F, H, W, 3]``,
    the other ranks None."""
    from ..config import VAE_DOWNSCALE

    total = latents.shape[2]
    per_rank = math.ceil(total / group.world_size)
    start, stop = min(group.rank * per_rank, total), min((group.rank + 1) * per_rank, total)
    if stop > start:
        part = pipe.decode(latents[:, :, start:stop], memory, progress=progress, check_interrupt=check_interrupt,
                           on_message=on_message)
    else:  # more ranks than frames
        part = torch.zeros((0, latents.shape[3] * VAE_DOWNSCALE, latents.shape[4] * VAE_DOWNSCALE, 3))
    return group.gather_frames(part, per_rank, total, "decoding: gathering the frames on rank 0")
