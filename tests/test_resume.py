"""Resumable runs (issue 15): the state after each finished step is kept and continued exactly; a killed
command-line run, resumed, writes the uninterrupted run's video (max abs 0 on the CPU, every scheduler);
another run's state or a damaged file is refused by name; the time-left estimate.

The kills are real: tests/resume_kill.py runs the command line and SIGKILLs its own process right after the
state of step K was written. Every process of these tests computes with one intra-op thread, the in-process
baselines too (the thread count alone moves results by ~1e-6).
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import REPO, VECTOR_A, WEIGHTS, max_abs

from musepose.pipeline.resume import (STATE_FILE, Checkpoints, ResumeError, ResumeSettings, differences,
                                      read_state, restore_scheduler, run_fingerprint, scheduler_state, step_state,
                                      weights_digest, write_state)
from musepose.options import SCHEDULERS
from musepose.pipeline.schedulers import make_scheduler

#: The killed runs: 2 windows of 4 frames (overlap 2) over 6 frames, 3 steps, guidance on.
RUN = dict(width=96, height=96, frames=6, steps=3, cfg=3.5, seed=42, context_frames=4, context_overlap=2)


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- time left ---------------------------------------------------------------------------------------------------

def test_time_left_is_the_mean_window_batch_after_the_first_step_times_the_batches_left():
    from musepose.pipeline.timeleft import clock, progress_text, seconds_left

    assert seconds_left([], 10, 2) is None  # nothing measured yet
    assert seconds_left([5.0], 4, 2) == 20.0  # one batch so far: its time
    # within the first step, the first batch (the coldest) is left out once a second one has finished: on
    # the GPU it had put the estimate 93 % over after two batches (benchmarks/RESULTS.md, GPU run 2)
    assert seconds_left([5.0, 3.0], 4, 2) == 12.0
    assert seconds_left([9.0, 3.0, 2.0], 4, 4) == 10.0
    # the first step's batches (pose features, a cold device) are left out once a later one has finished
    assert seconds_left([5.0, 3.0, 1.0], 3, 2) == 3.0
    assert seconds_left([5.0, 3.0, 1.0, 2.0], 2, 2) == 3.0
    assert seconds_left([1.0, 1.0], 0, 1) == 0.0
    # a steady run with a slow first step: exact from the second step on
    units = [4.0, 4.0] + [1.5] * 6
    assert all(seconds_left(units[:done], 8 - done, 2) == 1.5 * (8 - done) for done in range(3, 9))
    assert clock(42) == "0:42" and clock(599.6) == "10:00" and clock(3723) == "1:02:03"
    assert progress_text(62, None) == "elapsed 1:02"
    assert progress_text(62.4, 190) == "elapsed 1:02, about 3:10 left"


# -- the scheduler's state ------------------------------------------------------------------------------------

def _steps(scheduler, latents, start, stop):
    """Scheduler steps ``start..stop-1`` with a stand-in model output that depends on the latents and step."""
    for i in range(start, stop):
        t = scheduler.timesteps[i]
        scaled = scheduler.scale_model_input(latents, t)
        output = torch.sin(scaled * (i + 1)) + 0.1 * torch.randn(latents.shape, generator=torch.Generator().manual_seed(i))
        latents = scheduler.step(output, t, latents).prev_sample
    return latents


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_a_scheduler_restored_from_a_file_continues_bit_identically(name, tmp_path):
    """After k of 6 steps (k = 1: the multistep history half empty; 5: next to last), through the file."""
    steps = 6
    noise = torch.randn((1, 4, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    straight = make_scheduler(name)
    straight.set_timesteps(steps, device="cpu")
    expected = _steps(straight, noise, 0, steps)
    for k in (1, 2, 5):
        first = make_scheduler(name)
        first.set_timesteps(steps, device="cpu")
        latents = _steps(first, noise, 0, k)
        write_state(tmp_path, step_state(k, steps, latents, first, {"scheduler": name}, [1.0]))
        saved = read_state(tmp_path / STATE_FILE)
        second = make_scheduler(name)
        second.set_timesteps(steps, device="cpu")
        restore_scheduler(second, saved.scheduler_tensors, saved.scheduler_values)
        resumed = _steps(second, saved.latents, k, steps)
        assert saved.step == k and torch.equal(saved.latents, latents)
        assert torch.equal(resumed, expected), f"{name}: resumed after step {k} differs"


def test_a_scheduler_state_it_cannot_represent_is_refused():
    scheduler = make_scheduler("unipc")
    scheduler.set_timesteps(4, device="cpu")
    scheduler.extra = np.zeros(3)
    with pytest.raises(ResumeError, match="its attribute extra is a ndarray"):
        scheduler_state(scheduler)
    del scheduler.extra
    tensors, values = scheduler_state(scheduler)
    del values["sigmas"]
    with pytest.raises(ResumeError, match="lacks sigmas"):
        restore_scheduler(scheduler, tensors, values)


# -- the file and the fingerprint ---------------------------------------------------------------------------------

def _small_state(fingerprint=None, step=1):
    scheduler = make_scheduler("dpmpp_2m")
    scheduler.set_timesteps(3, device="cpu")
    latents = _steps(scheduler, torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(1)), 0, step)
    return step_state(step, 3, latents, scheduler, fingerprint or {"steps": "3"}, [0.5, 0.5])


def test_a_damaged_or_foreign_state_file_is_a_clear_error(tmp_path, caplog):
    from safetensors.torch import save_file

    path = write_state(tmp_path, _small_state())
    data = path.read_bytes()
    assert torch.equal(read_state(path).latents, _small_state().latents)
    path.write_bytes(data[: len(data) // 2])  # a truncated file
    with pytest.raises(ResumeError, match=f"saved state {path} is damaged"):
        read_state(path)
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF  # one byte of tensor data
    path.write_bytes(bytes(flipped))
    with pytest.raises(ResumeError, match="checksums do not match"):
        read_state(path)
    save_file({"x": torch.zeros(2)}, str(path))  # a safetensors file, not ours
    with pytest.raises(ResumeError, match="not a MusePose state"):
        read_state(path)
    # the command line's mode stops with the advice; ComfyUI's warns, drops the file and starts afresh
    with pytest.raises(ResumeError, match="use --fresh"):
        Checkpoints(ResumeSettings(directory=tmp_path)).restore({"steps": "3"}, make_scheduler("dpmpp_2m"))
    with caplog.at_level("WARNING"):
        assert Checkpoints(ResumeSettings(directory=tmp_path, on_change="restart")).restore(
            {"steps": "3"}, make_scheduler("dpmpp_2m")) is None
    assert "starting afresh" in caplog.text and not path.exists()


def test_the_state_file_is_replaced_atomically(tmp_path):
    """A write killed half-way leaves its temporary file and the previous state intact; the next write
    cleans the temporary file up."""
    write_state(tmp_path, _small_state(step=1))
    stale = tmp_path / f".{STATE_FILE}.999999.tmp"
    stale.write_bytes(b"half a file")
    assert read_state(tmp_path / STATE_FILE).step == 1
    write_state(tmp_path, _small_state(step=2))
    assert read_state(tmp_path / STATE_FILE).step == 2 and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


def test_another_run_is_refused_naming_what_differs(tiny_models, vector_a_inputs, tmp_path):
    from musepose.pipeline import PoseFrames, SamplingSettings
    from musepose.weights.loader import MusePoseModels

    reference, poses = vector_a_inputs
    settings = SamplingSettings(**RUN).validated(len(poses))
    frames = PoseFrames(poses, settings.width, settings.height)
    fingerprint = run_fingerprint(settings, reference, frames, tiny_models)
    assert run_fingerprint(settings, reference.copy(), PoseFrames(poses.copy(), 96, 96), tiny_models) == fingerprint
    other = run_fingerprint(replace(settings, steps=4), reference[::-1], frames, tiny_models)
    assert differences(fingerprint, other) == ["the reference image", "steps 3 -> 4"]
    later_frames = poses.copy()
    later_frames[settings.frames:] = 0  # frames the run does not use do not count
    assert run_fingerprint(settings, reference, PoseFrames(later_frames, 96, 96), tiny_models) == fingerprint
    later_frames[0, 0, 0] += 1
    assert differences(fingerprint, run_fingerprint(settings, reference, PoseFrames(later_frames, 96, 96),
                                                    tiny_models)) == ["the pose frames"]
    write_state(tmp_path, _small_state(fingerprint))
    with pytest.raises(ResumeError, match=r"what differs: the reference image; steps 3 -> 4"):
        Checkpoints(ResumeSettings(directory=tmp_path)).restore(other, make_scheduler("dpmpp_2m"))
    # networks built in memory: a digest of their parameters
    built = MusePoseModels(dtype=torch.float32, pose_guider=copy.deepcopy(tiny_models.pose_guider))
    before = weights_digest(built)
    with torch.no_grad():
        next(built.pose_guider.parameters()).view(-1)[0] += 1e-3
    assert weights_digest(built) != before


# -- killed command-line runs -------------------------------------------------------------------------------------

def _cli(tmp_path, scheduler: str, *extra, kill: int | None = None, dry: bool = False):
    """Run the command line through tests/resume_kill.py (SIGKILLed after step ``kill``); ``dry``: only
    return its arguments."""
    args = ["generate", "--weights-dir", str(WEIGHTS), "--ref", str(VECTOR_A / "inputs" / "ref.png"),
            "--poses", str(VECTOR_A / "inputs" / "pose"), "--scheduler", scheduler, "--precision", "fp32",
            *([] if "--devices" in extra else ["--device", "cpu"]), "--checkpoint-dir", str(tmp_path / "state"), "--out", str(tmp_path / "v.mp4"),
            "--save-array", str(tmp_path / "v.npy")]
    for key, value in RUN.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    if dry:
        return args + list(extra)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("MUSEPOSE_TEST_KILL_AFTER_STEP", None)
    if kill is not None:
        env["MUSEPOSE_TEST_KILL_AFTER_STEP"] = str(kill)
    return subprocess.run([sys.executable, str(REPO / "tests" / "resume_kill.py"), *args, *extra], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


#: scheduler -> the steps a run is killed after, one kill per process (the next process resumes and is killed
#: again); ddim also meets a changed setting, euler's last process starts afresh instead of resuming, unipc's
#: resumes on two devices of one process (--devices: same latents as one device, so the same video).
KILLS = {"ddim": (2,), "euler": (1,), "unipc": (1, 2), "dpmpp_2m": (1, 2)}
LAST_RUN = {"euler": ["--fresh"], "unipc": ["--devices", "cpu,cpu"]}


@pytest.mark.parametrize("scheduler", list(KILLS))
def test_a_killed_run_resumes_to_the_uninterrupted_video(tmp_path, tiny_models, vector_a_inputs, one_thread,
                                                          scheduler):
    from musepose.pipeline import MusePosePipeline, SamplingSettings

    settings = SamplingSettings(scheduler=scheduler, **RUN)
    expected = MusePosePipeline(tiny_models)(*vector_a_inputs, settings).numpy()
    resumed_from = 0
    for k in KILLS[scheduler]:
        result = _cli(tmp_path, scheduler, kill=k)
        assert result.returncode == -9 and f"test: killed after step {k}" in result.stderr, result.stderr[-3000:]
        assert (f"resumed at step {resumed_from} of 3" in result.stderr) == bool(resumed_from)
        assert read_state(tmp_path / "state" / STATE_FILE).step == k
        resumed_from = k
    if scheduler == "ddim":
        refused = _cli(tmp_path, scheduler, "--cfg", "4")
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert "what differs: cfg 3.5 -> 4.0" in refused.stderr and "--fresh" in refused.stderr
    final = _cli(tmp_path, scheduler, *LAST_RUN.get(scheduler, []))
    assert final.returncode == 0, final.stderr[-3000:]
    if scheduler == "euler":
        assert "resumed" not in final.stderr
    else:
        assert f"resumed at step {resumed_from} of 3" in final.stderr
        assert "time left: about" in final.stderr  # the interrupted run's pace, before the first step
    assert "elapsed 0:" in final.stderr and " left" in final.stderr  # the progress line
    assert ("on 2 devices (cpu, cpu)" in final.stdout) == (scheduler == "unipc")
    difference = max_abs(np.load(tmp_path / "v.npy"), expected)
    print(f"{scheduler}: killed after step(s) {KILLS[scheduler]}, max abs vs uninterrupted {difference}")
    assert difference == 0.0
    assert not (tmp_path / "state" / STATE_FILE).exists()  # the video is written: the state is gone


def test_a_killed_two_process_run_resumes_on_both_ranks(tmp_path, tiny_models, vector_a_inputs, one_thread):
    """torchrun, 2 ranks on gloo: rank 0 (the rank that writes the state) is SIGKILLed after step 1 and the
    launch ends; the same launch again resumes on both ranks from the file rank 0 wrote (each rank reads it;
    they check they start from the same step and latents) and writes one process's video (the bound of
    tests/test_distributed.py for 2 ranks vs 1 process)."""
    from test_distributed import TOLERANCE, free_port

    from musepose.pipeline import MusePosePipeline, SamplingSettings

    expected = MusePosePipeline(tiny_models)(*vector_a_inputs, SamplingSettings(scheduler="dpmpp_2m", **RUN)).numpy()
    args = _cli(tmp_path, "dpmpp_2m", dry=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    results = []
    for kill in ("1", None):
        env.pop("MUSEPOSE_TEST_KILL_AFTER_STEP", None)
        if kill:
            env["MUSEPOSE_TEST_KILL_AFTER_STEP"] = kill
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                   str(free_port()), str(REPO / "tests" / "resume_kill.py"), *args, "--distributed",
                   "--dist-timeout", "60"]
        results.append(subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600))
    killed, resumed = results
    assert killed.returncode != 0 and "test: killed after step 1" in killed.stderr, killed.stderr[-3000:]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("resumed at step 1 of 3") == 1 and "on 2 ranks" in resumed.stdout
    difference = max_abs(np.load(tmp_path / "v.npy"), expected)
    print(f"2 ranks, rank 0 killed after step 1 and resumed: max abs vs one process {difference:.3g}")
    assert difference <= TOLERANCE


def test_a_state_after_the_last_step_returns_its_latents_without_sampling(tiny_models, vector_a_inputs):
    """Sampling had finished when the run failed (in decoding, say): the same run again only says so and
    returns the latents, without running a network."""
    from musepose.pipeline import MusePosePipeline, SamplingSettings

    settings = SamplingSettings(**{**RUN, "steps": 1})
    pipe = MusePosePipeline(tiny_models)
    checkpoints = Checkpoints()
    latents = pipe.sample(*vector_a_inputs, settings, checkpoints=checkpoints)
    assert checkpoints.saved().step == 1
    said, calls = [], []
    hook = tiny_models.denoising_unet.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        again = pipe.sample(*vector_a_inputs, settings, checkpoints=checkpoints, on_message=said.append)
    finally:
        hook.remove()
    assert "resumed at step 1 of 1" in said and not calls and torch.equal(again, latents)


def test_the_time_ahead_is_said_before_the_first_step():
    """A resumed run: the interrupted run's pace; a new run on a GPU: the planner's figure; on the CPU:
    nothing (the planner has no CPU time model)."""
    from musepose.pipeline.memory import MemoryConfig
    from musepose.pipeline.planner import Job, WeightBytes, estimate
    from musepose.pipeline.sampler import _say_time_ahead
    from musepose.pipeline.stats import SamplingStats
    from musepose.pipeline.timeleft import clock

    job = Job(width=768, height=768, window_frames=48, video_frames=300, windows=7, steps=20)
    config = MemoryConfig(estimate=estimate(MemoryConfig(), job, WeightBytes.full_size()))
    stats = SamplingStats(units_per_step=7, units_left=70)
    said = []
    _say_time_ahead(said.append, None, stats, config, torch.device("cpu"))
    assert said == []
    _say_time_ahead(said.append, None, stats, config, torch.device("cuda"))
    assert 0 < config.estimate.sampling_seconds < config.estimate.seconds
    assert said == [f"time: about {clock(config.estimate.sampling_seconds)} of sampling by the planner's model of an "
                    "H100-class GPU; the estimate from this run's own steps follows the first window"]
    resumed = _small_state()
    resumed.unit_seconds = [9.0] * 7 + [2.0] * 7  # a slow first step, then 2 s a window batch
    said.clear()
    _say_time_ahead(said.append, resumed, stats, config, torch.device("cuda"))
    assert said == ["time left: about 2:20 (at the interrupted run's pace)"]  # 70 batches x 2 s


def test_a_resumed_run_starts_in_the_configuration_the_interrupted_run_had_stepped_down_to(
        tiny_models, vector_a_inputs, one_thread, monkeypatch):
    """An out-of-memory in step 1 steps the run down; it is interrupted after step 2 and resumed: the resumed
    run starts in the stepped-down configuration (found on the GPU: starting from the top again steps down at
    another moment, and the video differed by up to 1.2/255), and ends with the uninterrupted run's latents."""
    from musepose.pipeline import MemorySettings, MusePosePipeline, SamplingSettings

    settings, memory = SamplingSettings(**RUN), MemorySettings(budget_bytes=10 ** 12)
    pipe = MusePosePipeline(tiny_models)
    real, calls = pipe._unet, {"n": 0}

    def failing_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipe, "_unet", failing_once)
    expected = pipe.sample(*vector_a_inputs, settings, memory)
    stepped_down = pipe.stats.memory[1]

    class Interrupted(Exception):
        pass

    def stop_after_step_2(step, steps, denoised):
        if step == 2:
            raise Interrupted()

    calls["n"] = 0
    checkpoints = Checkpoints()
    with pytest.raises(Interrupted):
        pipe.sample(*vector_a_inputs, settings, memory, checkpoints=checkpoints, on_step=stop_after_step_2)
    assert checkpoints.saved().step == 2 and checkpoints.saved().step_downs == 1
    monkeypatch.setattr(pipe, "_unet", real)
    said = []
    resumed = pipe.sample(*vector_a_inputs, settings, memory, checkpoints=checkpoints, on_message=said.append)
    assert pipe.stats.memory == [stepped_down]
    assert "memory: " + stepped_down.describe() + " (where the interrupted run had stepped down to)" in said
    assert torch.equal(resumed, expected)
