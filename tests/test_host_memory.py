"""Host memory flat in the video's length: the CLI streams decoded chunks into the mp4 (and the .npy),
keeps the pose frames once as uint8, and no float32 copy of the whole video exists."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from conftest import REPO, WEIGHTS, load, max_abs

sys.path.insert(0, str(REPO / "benchmarks"))


def test_peak_rss_growth_per_frame_is_flat(tmp_path):
    """The whole CLI job at 96x96 with N = 48 and 3N = 144 frames (tiny weights, 1 step, no guidance).
    Both runs use 12-frame windows and 12 frames per decode call, so their activations are the same size
    and only the length differs. N is past libx264's lookahead, whose buffers grow with the first ~45
    frames whatever the code around it (encoding alone at 128x128: +23.8 MiB at 6 frames, +32.0 MiB at 48,
    60 and 144), so it would pass for a per-frame cost between 6 and 60 frames.

    Before streaming, each frame cost its pose frame (27.6 KB) plus two float32 copies of the decoded
    frame (2 x 110.6 KB): measured 0.27 MB (commit 2643aae, this test's command). Now it costs its uint8
    pose frame, its share of the latent state and of the pose features kept per window: measured 0.12 MB.
    The bound, 0.18 MB per frame (17 MB over 96 frames), sits between the two."""
    from oneshot import inputs
    from rss_length import child_peak_rss, generate_command

    ref, poses = inputs(tmp_path, 96, 96, 144)
    peaks = {}
    for frames in (48, 144):
        command = generate_command(WEIGHTS, ref, poses, 96, frames, tmp_path / f"{frames}.mp4", "--steps", "1", "--cfg",
                                   "1", "--context-frames", "12", "--context-overlap", "0", "--decode-chunk", "12")
        peaks[frames], _ = child_peak_rss(command, REPO, tmp_path / f"{frames}.log")
    growth = (peaks[144] - peaks[48]) / 96
    print(f"peak RSS {peaks[48] / 2**20:.1f} MiB at 48 frames, {peaks[144] / 2**20:.1f} MiB at 144: "
          f"{growth / 1e6:.3f} MB per frame")
    assert growth <= 0.18e6


def test_streamed_npy_and_mp4_equal_the_whole_array_writes(tmp_path):
    """Chunk by chunk, the .npy holds the same array np.save writes, and the mp4 the same frames as one
    write_mp4 call; an unfinished array (fewer frames than its header says) is an error and no file."""
    from musepose.video import FrameArrayWriter, Mp4Writer, read_frames, write_mp4

    frames = np.random.default_rng(0).random((7, 18, 22, 3)).astype(np.float32)
    with FrameArrayWriter(tmp_path / "a.npy", frames.shape) as array, Mp4Writer(tmp_path / "a.mp4", fps=8) as video:
        for start in (0, 3, 6):
            array.write(frames[start:start + 3])
            video.write(frames[start:start + 3])
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), frames)
    whole = write_mp4(frames, tmp_path / "b.mp4", fps=8)
    np.testing.assert_array_equal(read_frames(tmp_path / "a.mp4")[0], read_frames(whole)[0])
    assert video.video().get_dimensions() == (22, 18) and video.video().get_frame_count() == 7
    with pytest.raises(ValueError, match="3 of 7 frames written"):
        with FrameArrayWriter(tmp_path / "c.npy", frames.shape) as array:
            array.write(frames[:3])
    assert not (tmp_path / "c.npy").exists()


def test_decode_chunks_join_to_the_vector_a_video(tiny_models):
    """The chunks come in frame order, ``decode_chunk`` frames each (the last one shorter), and join to
    the original's video within the engine's video bound (2.5e-4)."""
    from musepose.pipeline import MemorySettings, MusePosePipeline

    latents = torch.from_numpy(load("final_latents.npy"))
    pipe = MusePosePipeline(tiny_models)
    chunks = list(pipe.decode_chunks(latents, MemorySettings(decode_chunk=5)))
    assert [c.shape[0] for c in chunks] == [5, 5, 2] and all(c.dtype == torch.float32 for c in chunks)
    assert max_abs(torch.cat(chunks), load("video.npy")[0].transpose(1, 2, 3, 0)) <= 2.5e-4
    assert pipe.stats.decode_seconds > 0


def test_frames_are_stacked_in_place_and_grow_past_a_wrong_count():
    """Reading frames fills one array (no list + np.stack copy); a source that announces too few frames
    (or none) still gives every frame, and max_frames stops early."""
    from musepose.video import _stack

    frames = [np.full((4, 5, 3), i, np.uint8) for i in range(10)]
    for expected in (0, 3, 10, 40):
        out = _stack(iter(frames), expected)
        assert out.shape == (10, 4, 5, 3) and [int(f[0, 0, 0]) for f in out] == list(range(10))
    assert _stack(iter(frames), 0, max_frames=4).shape == (4, 4, 5, 3)
    assert _stack(iter([]), 5) is None


def test_a_one_shot_run_reads_each_network_once(monkeypatch, vector_a_inputs):
    """The CLI's one-shot run (lazy weights, each network dropped after its last use): the VAE encodes the
    reference and later decodes, and its weights are read from the files once, not again for decoding."""
    from musepose.pipeline import MemorySettings, MusePosePipeline
    from musepose.weights import load_models
    from musepose.weights.loader import WeightSource

    from conftest import vector_a_settings

    reads = []
    fill = WeightSource.fill
    monkeypatch.setattr(WeightSource, "fill", lambda self, name, *args: (reads.append(name), fill(self, name, *args))[1])
    pipe = MusePosePipeline(load_models(WEIGHTS, dtype=torch.float32, device="cpu", lazy=True))
    latents = pipe.sample(*vector_a_inputs, vector_a_settings(steps=1), MemorySettings(keep_weights=False))
    assert len(list(pipe.decode_chunks(latents, pipe.stats.memory[-1]))) >= 1
    assert sorted(reads) == ["denoising_unet", "image_encoder", "pose_guider", "reference_unet", "vae"]


def test_sampling_gives_its_freed_heap_back_before_the_decode(monkeypatch, tiny_models, vector_a_inputs):
    """The engine returns the step temporaries' freed heap to the OS once sampling ends (musepose/host_memory.py:
    0.80 MB per frame at 512x512 before, 0.09 after), also when a run is cancelled."""
    from conftest import vector_a_settings
    from musepose.pipeline import MusePosePipeline, sampler

    calls, steps = [], []
    monkeypatch.setattr(sampler, "release_free_host_memory", lambda: calls.append(len(steps)) or True)
    pipe = MusePosePipeline(tiny_models)
    pipe.sample(*vector_a_inputs, vector_a_settings(), on_step=lambda step, total, latents: steps.append(step))
    assert calls == [len(steps)] and len(steps) == vector_a_settings().steps

    def cancel(step, total, latents):
        raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        pipe.sample(*vector_a_inputs, vector_a_settings(), on_step=cancel)
    assert len(calls) == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_free_host_memory_returns_freed_heap_pages():
    """What the call is for: blocks freed in the middle of the heap stay resident until it is made."""
    from musepose.host_memory import release_free_host_memory

    def rss() -> int:
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024

    large = np.ones(8 << 20, dtype=np.uint8)
    del large  # freeing an mmapped block raises glibc's mmap threshold past 2 MB
    blocks = [np.ones(2 << 20, dtype=np.uint8) for _ in range(60)]  # 2 MB blocks, now from the heap
    before = rss()
    del blocks[::2]  # every other block: each freed one lies between two live ones, so none can coalesce
    kept = rss()
    assert release_free_host_memory()
    after = rss()
    print(f"RSS {before / 2**20:.0f} MiB, after freeing 60 MiB {kept / 2**20:.0f} MiB, trimmed {after / 2**20:.0f} MiB")
    assert before - kept < 20e6 and kept - after > 40e6
