"""Several devices in one process, several processes (torch.distributed, gloo on the CPU): the same video as
one device; a rank that dies or stops answering ends the run on the others with a one-line error."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist

from conftest import REPO, VECTOR_A, WEIGHTS, max_abs, vector_a_settings

pytestmark = pytest.mark.skipif(sys.platform == "win32" or not dist.is_gloo_available(),
                                reason="needs gloo and POSIX signals")

#: 5 windows (4 frames, overlap 2) in 3 batches of 2, 2, 1 windows: uneven shares, pyramid weights.
SEVERAL = dict(context_frames=4, context_overlap=2, windows_per_batch=2, blending="pyramid")
CASES = {"vector_a": {}, "several_windows": SEVERAL}
TOLERANCE = 1e-5


@pytest.fixture()
def one_thread():
    """Every process of these tests computes with one intra-op thread (torchrun's default), the baseline
    too: the thread count alone moves results by ~1e-6."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def one_device_video(models, inputs, settings):
    from musepose.pipeline import MusePosePipeline

    return MusePosePipeline(models)(*inputs, settings).numpy()


def cli_args(case: str) -> list[str]:
    s = vector_a_settings(**CASES[case])
    return ["generate", "--weights-dir", str(WEIGHTS), "--ref", str(VECTOR_A / "inputs" / "ref.png"),
            "--poses", str(VECTOR_A / "inputs" / "pose"), "--width", str(s.width), "--height", str(s.height),
            "--frames", str(s.frames), "--steps", str(s.steps), "--cfg", str(s.cfg), "--seed", str(s.seed),
            "--context-frames", str(s.context_frames), "--context-overlap", str(s.context_overlap),
            "--windows-per-batch", str(s.windows_per_batch), "--blending", s.blending, "--dtype", "fp32",
            "--device", "cpu"]


def environment(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop(TEST_FAILURE_ENV, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


from musepose.pipeline.distributed import TEST_FAILURE_ENV  # noqa: E402


# -- several devices in one process ----------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_two_cpu_workers_in_one_process_match_one_device(tiny_models, vector_a_inputs, one_thread, case,
                                                         monkeypatch):
    from musepose.pipeline import MusePosePipeline
    from musepose.pipeline import parallel

    settings = vector_a_settings(**CASES[case])
    expected = one_device_video(tiny_models, vector_a_inputs, settings)
    ran = []
    run = parallel.Runner.run

    def recording(self, latents, batch_index, *args):
        ran.append((batch_index, self.executor is not None))
        return run(self, latents, batch_index, *args)

    monkeypatch.setattr(parallel.Runner, "run", recording)
    reference_calls = []
    tiny_models.reference_unet.register_forward_hook(lambda *a: reference_calls.append(1))
    pipe = MusePosePipeline(tiny_models)
    replica = parallel.replicate(pipe, "cpu")
    video = pipe.decode(pipe.sample(*vector_a_inputs, settings, replicas=[replica]), pipe.stats.memory[-1]).numpy()
    difference = max_abs(video, expected)
    print(f"{case}: max abs difference, 2 CPU workers vs 1 device: {difference:.3g}")
    assert difference <= TOLERANCE
    # the batches were dealt round-robin, the same way every step: even ones here, odd ones on the worker
    batches = -(-len(settings.validated(12).windows()) // settings.windows_per_batch)
    assert sorted(set(ran)) == [(b, b % 2 == 1) for b in range(batches)]
    assert len(ran) == batches * settings.steps
    assert len(reference_calls) == 1  # the reference UNet ran once; the replica got its features
    assert not replica.state.features and not pipe.state.features  # dropped after the run
    parallel.release_replica(replica)


def test_a_failing_worker_stops_the_run_with_its_own_error(tiny_models, vector_a_inputs):
    """An error on an extra device (out of memory in its leanest configuration, after stepping down) is what
    the caller sees, and the run ends cleanly (sessions closed, features dropped)."""
    from musepose.pipeline import MusePosePipeline
    from musepose.pipeline import parallel

    from musepose.pipeline.denoiser import DenoiserSession as session_class

    pipe = MusePosePipeline(tiny_models)
    replica = parallel.replicate(pipe, "cpu")
    original = session_class.run

    def run(self, *args):
        if self.pipe is replica:
            raise torch.OutOfMemoryError("out of memory on the worker (test)")
        return original(self, *args)

    said = []
    session_class.run = run
    try:
        with pytest.raises(torch.OutOfMemoryError, match="on the worker"):
            pipe.sample(*vector_a_inputs, vector_a_settings(), replicas=[replica], on_message=said.append)
    finally:
        session_class.run = original
    assert any(line.startswith("memory on cpu: out of memory; stepping down") for line in said)
    assert not replica.state.features and not pipe.state.features
    parallel.release_replica(replica)


def test_devices_option_of_the_command_line(tmp_path, tiny_models, vector_a_inputs, one_thread):
    expected = one_device_video(tiny_models, vector_a_inputs, vector_a_settings(**SEVERAL))
    out = tmp_path / "v.npy"
    result = subprocess.run([sys.executable, "-m", "musepose", *cli_args("several_windows"), "--device", "auto",
                             "--devices", "cpu,cpu", "--out", str(tmp_path / "v.mp4"), "--save-array", str(out)],
                            cwd=REPO, env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 devices (cpu, cpu)" in result.stdout
    assert max_abs(np.load(out), expected) <= TOLERANCE


# -- several processes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_match_one_process(tmp_path, tiny_models, vector_a_inputs, one_thread, case):
    """torchrun, 2 ranks on gloo: each takes its share of the windows, the predictions are all-reduced, the
    frames are decoded in two halves and gathered; only rank 0 writes."""
    expected = one_device_video(tiny_models, vector_a_inputs, vector_a_settings(**CASES[case]))
    out = tmp_path / "v.npy"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), "-m", "musepose", *cli_args(case), "--out", str(tmp_path / "v.mp4"),
               "--save-array", str(out), "--distributed", "--dist-timeout", "120"]
    result = subprocess.run(command, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1 and "on 2 ranks" in result.stdout
    difference = max_abs(np.load(out), expected)
    print(f"{case}: max abs difference, 2 processes vs 1: {difference:.3g}")
    assert difference <= TOLERANCE


@pytest.mark.parametrize("how,failing", [("kill", 1), ("stop", 0)])
def test_a_lost_rank_ends_the_run_on_the_others(tmp_path, how, failing):
    """Rank ``failing`` is SIGKILLed (or SIGSTOPped: it hangs) after step 1; the other rank exits with a
    one-line error: at once for a dead peer (its connection closes), within the timeout for a silent one."""
    timeout = 15
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = environment(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE=2, RANK=rank, LOCAL_RANK=rank,
                          **{TEST_FAILURE_ENV: f"{failing}:1:{how}"})
        procs.append(subprocess.Popen([sys.executable, "-m", "musepose", *cli_args("vector_a"), "--out",
                                       str(tmp_path / "v.mp4"), "--distributed", "--dist-timeout", str(timeout)],
                                      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    survivor, lost = procs[1 - failing], procs[failing]
    try:
        _, err = survivor.communicate(timeout=300)
        ended = time.time()
    finally:
        lost.kill()
    _, lost_err = lost.communicate()
    failed_at = float(re.search(r"test failure: \w+ after step 1 at ([\d.]+)", lost_err).group(1))
    latency = ended - failed_at
    last = err.strip().splitlines()[-1]
    print(f"{how} rank {failing}: rank {1 - failing} exited {latency:.2f} s later: {last}")
    assert survivor.returncode == 3, err[-3000:]
    assert re.match(rf"error: rank {1 - failing} of 2: .* did not complete \(.+\); another rank crashed", last)
    assert "Traceback" not in err
    if how == "kill":
        assert latency < timeout
    else:
        assert timeout - 1 <= latency < timeout + 20


def test_distributed_needs_torchrun_and_one_device_per_process(tmp_path):
    from musepose.cli import main

    assert main([*cli_args("vector_a"), "--out", str(tmp_path / "v.mp4"), "--distributed"]) == 3
    with pytest.raises(SystemExit, match="do not mix"):
        main([*cli_args("vector_a"), "--out", str(tmp_path / "v.mp4"), "--distributed", "--devices", "cpu,cpu"])


# -- the planner and the nodes ---------------------------------------------------------------------------

def test_planner_counts_rounds_of_window_batches(capsys):
    from dataclasses import replace

    from musepose.cli import main
    from musepose.pipeline.memory import MemoryConfig
    from musepose.pipeline.planner import Job, WeightBytes, estimate

    job = Job(width=512, height=512, window_frames=48, video_frames=180, windows=4, steps=20)
    weights = WeightBytes.full_size()
    seconds = {n: estimate(MemoryConfig(), replace(job, devices=n), weights).seconds for n in (1, 2, 3, 4, 8)}
    assert seconds[2] == seconds[3]  # 4 windows on 2 or 3 devices: 2 rounds
    assert seconds[4] == seconds[8]  # 1 round
    assert seconds[1] > seconds[2] > seconds[4]
    per_round = seconds[2] - seconds[4]
    assert seconds[1] - seconds[2] == pytest.approx(2 * per_round, rel=0.05)
    assert main(["plan", "--width", "512", "--height", "512", "--frames", "180", "--devices", "3"]) == 0
    text = capsys.readouterr().out
    assert "3 devices share each step's 4 window batch(es): 2 round(s) per step instead of 4" in text
    assert "on 3 devices" in text


def test_model_loader_extra_devices(tmp_path, one_thread):
    """The loader's extra_devices: a CPU worker here; same latents as ComfyUI's device alone; the replica is
    made once and freed with the model set."""
    from test_nodes_support import (VECTOR_A_SAMPLER, load_pack, place_tiny_weights, remove_standalone_model_root,
                                    vector_a_images)

    pack = load_pack()
    host, cache = pack.nodes.host, pack.nodes.model_cache.MODEL_CACHE
    models = tmp_path / "models"
    models.mkdir()
    host.add_standalone_model_root(str(models))
    cache.clear()
    try:
        place_tiny_weights(models)
        loader, sampler = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"], pack.NODE_CLASS_MAPPINGS["MusePoseSampler"]
        assert "extra_devices" in loader.INPUT_TYPES()["optional"]
        reference, poses = vector_a_images()
        (alone,) = loader().load(precision="fp32")
        (expected,) = sampler().sample(alone, reference, poses, **VECTOR_A_SAMPLER)
        (shared,) = loader().load(precision="fp32", extra_devices="cpu")
        assert shared.loaded is alone.loaded and shared.extra_devices == (torch.device("cpu"),)
        for _ in range(2):
            (latent,) = sampler().sample(shared, reference, poses, **VECTOR_A_SAMPLER)
            assert max_abs(latent["samples"], expected["samples"]) <= TOLERANCE
        (replica,) = shared.loaded.replicas.values()
        assert shared.replicas() == [replica]  # made once, kept for the next runs
        unet = replica.models.denoising_unet
        assert not any(p.is_meta for p in unet.parameters())
        host.notify_free()  # ComfyUI's Free: the set goes, and its replicas with it
        assert shared.loaded.released and not shared.loaded.replicas
        assert all(p.is_meta for p in unet.parameters())
        for bad, message in (("cuda:7", "does not exist"), ("tpu", "not a device name|only CUDA"),
                             ("cuda", "numbered")):
            if bad.startswith("cuda") and torch.cuda.is_available():
                continue
            with pytest.raises(ValueError, match=message):
                loader().load(precision="fp32", extra_devices=bad)
    finally:
        remove_standalone_model_root(host, str(models))
        cache.clear()
