"""The Sampler node keeps an interrupted run's finished steps (issue 15), without ComfyUI: a Cancel after
step 1 of 3, then the same inputs queued again, resume at step 1 and give exactly the uninterrupted latents;
other inputs start afresh; Free drops the state; a long run's state lives in the temp folder, not in RAM;
the node shows the elapsed time and the time left while it runs."""
from __future__ import annotations

import pytest
import torch

from test_nodes_support import VECTOR_A_SAMPLER, vector_a_images
from test_nodes_vector_a import pack  # noqa: F401  (fixture: the pack with the tiny weights in its model folders)

#: 6 frames in 2 windows, 3 steps: 6 window batches; the Cancel comes in the 3rd (the first of step 2).
SAMPLER = {**VECTOR_A_SAMPLER, "context_frames": 4, "context_overlap": 2}
CANCEL_AT = 3


@pytest.fixture()
def node(pack, tmp_path, monkeypatch):
    """(run, said): ``run(cancel=False, **changes)`` queues the Sampler; ``said`` collects what it showed.
    The state folder is this test's own."""
    sampler_node, host = pack.nodes.sampler_node, pack.nodes.host
    monkeypatch.setattr(host, "temp_directory", lambda: str(tmp_path))
    sampler_node._checkpoints.clear()
    (model,) = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]().load(precision="fp32")
    reference, poses = vector_a_images()
    said, statuses = [], []
    monkeypatch.setattr(host, "say", said.append)
    monkeypatch.setattr(host, "show_status", statuses.append)

    class CancelAt(host.Progress):
        cancel = False

        def update(self, n=1, preview=None):
            if self.cancel and self.value + n == CANCEL_AT:
                host.request_interrupt()
            super().update(n, preview)

    monkeypatch.setattr(host, "Progress", CancelAt)

    def run(cancel: bool = False, **changes):
        said.clear()
        statuses.clear()
        CancelAt.cancel = cancel
        call = lambda: pack.NODE_CLASS_MAPPINGS["MusePoseSampler"]().sample(  # noqa: E731
            model, reference, poses[:6], **{**SAMPLER, **changes})
        if not cancel:
            return call()[0]["samples"]
        with pytest.raises(host.Interrupted):
            call()

    yield run, said, statuses, sampler_node
    sampler_node.drop_sampler_state()
    sampler_node._checkpoints.clear()


def test_cancel_then_the_same_inputs_resume_exactly(node):
    run, said, statuses, sampler_node = node
    expected = run()
    assert not any("resumed" in line for line in said)
    assert sampler_node.sampler_checkpoints().saved() is None  # a finished run keeps nothing
    # the node showed the elapsed time and the time left after every window batch, then cleared the line
    assert len(statuses) == 7 and statuses[-1] is None
    assert statuses[0].startswith("elapsed 0:") and all(" left" in s for s in statuses[:-1])

    run(cancel=True)
    saved = sampler_node.sampler_checkpoints().saved()
    assert saved.step == 1 and saved.steps == 3
    resumed = run()
    assert "resumed at step 1 of 3" in said
    assert torch.equal(resumed, expected)
    assert sampler_node.sampler_checkpoints().saved() is None


def test_other_inputs_start_afresh_and_free_drops_the_state(node, pack, caplog):
    run, said, _, sampler_node = node
    run(cancel=True)
    with caplog.at_level("WARNING"):
        other = run(seed=43)
    assert not any("resumed" in line for line in said)
    assert "what differs: seed 42 -> 43" in caplog.text and "starting afresh" in caplog.text
    assert other.shape == (6, 4, 12, 12)
    run(cancel=True)
    assert sampler_node.sampler_checkpoints().saved().step == 1
    pack.nodes.host.notify_free()  # ComfyUI's Free
    assert sampler_node.sampler_checkpoints().saved() is None
    run()
    assert not any("resumed" in line for line in said)


def test_a_long_runs_state_is_kept_in_the_temp_folder(node, tmp_path, monkeypatch):
    run, said, _, sampler_node = node
    expected = run()
    monkeypatch.setattr(sampler_node, "LONG_RUN_S", 0.0)  # every run counts as long
    sampler_node._checkpoints.clear()
    run(cancel=True)
    checkpoints = sampler_node.sampler_checkpoints()
    assert checkpoints._memory is None and checkpoints.path.parent.parent == tmp_path
    assert checkpoints.path.exists()
    sampler_node._checkpoints.clear()  # the memory copy is gone anyway: the file alone resumes
    assert torch.equal(run(), expected) and "resumed at step 1 of 3" in said
    assert not checkpoints.path.exists()
