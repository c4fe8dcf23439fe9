"""Test helper, not part of the package: ``python tests/resume_kill.py <musepose arguments>`` runs the
command line like ``python -m musepose``, and SIGKILLs its own process right after the state of step K was
saved, K from ``MUSEPOSE_TEST_KILL_AFTER_STEP`` (under torchrun: on rank 0, the rank that writes)."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

KILL_ENV = "MUSEPOSE_TEST_KILL_AFTER_STEP"


def install_kill(step: int) -> None:
    from musepose.pipeline import resume

    save = resume.Checkpoints.save

    def save_then_kill(self, state, elapsed_s, write=True):
        save(self, state, elapsed_s, write)
        if state.step == step and write:
            print(f"test: killed after step {step}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    resume.Checkpoints.save = save_then_kill


if __name__ == "__main__":
    if os.environ.get(KILL_ENV):
        install_kill(int(os.environ[KILL_ENV]))
    from musepose.cli import main

    sys.exit(main(sys.argv[1:]))
