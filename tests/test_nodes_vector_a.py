"""The three model nodes end to end on the tiny weights, placed in the documented ComfyUI folders.

Tolerances: final latents within 1e-3 of vector A (the engine's own bound; measured ~5e-5), the decoded
video within 2.5e-4 (the engine's bound for the video).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from test_nodes_support import (VECTOR_A, VECTOR_A_SAMPLER, load_pack, max_abs, place_tiny_weights,
                                remove_standalone_model_root, vector_a_images)


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    pack = load_pack()
    host = pack.nodes.host
    models = place_tiny_weights(tmp_path_factory.mktemp("comfy") / "models")
    host.add_standalone_model_root(str(models))
    yield pack
    remove_standalone_model_root(host, str(models))
    pack.nodes.model_cache.MODEL_CACHE.clear()


@pytest.fixture(scope="module")
def run(pack):
    nodes = pack.NODE_CLASS_MAPPINGS
    (model,) = nodes["MusePoseModelLoader"]().load(precision="fp32")
    reference, poses = vector_a_images()
    (latent,) = nodes["MusePoseSampler"]().sample(model, reference, poses, **VECTOR_A_SAMPLER)
    return model, latent


def test_sampler_node_matches_vector_a(run):
    _, latent = run
    samples = latent["samples"]
    assert samples.shape == (12, 4, 12, 12) and samples.dtype == torch.float32 and samples.device.type == "cpu"
    expected = np.load(VECTOR_A / "final_latents.npy")  # (1, 4, F, h, w), sampling scale (x0.18215)
    # The LATENT holds raw VAE latents (ComfyUI's convention); back in the sampling scale the fixture's
    # tolerance applies unchanged.
    assert max_abs(samples * 0.18215, expected[0].transpose(1, 0, 2, 3)) <= 1e-3


@pytest.mark.parametrize("chunk_size", [0, 5, 1])
def test_decode_node_matches_vector_a_video(pack, run, chunk_size):
    model, latent = run
    (images,) = pack.NODE_CLASS_MAPPINGS["MusePoseDecode"]().decode(model, latent, chunk_size, False)
    expected = np.load(VECTOR_A / "video.npy")[0].transpose(1, 2, 3, 0)  # (F, H, W, 3)
    assert images.shape == (12, 96, 96, 3)
    assert max_abs(images, expected) <= 2.5e-4


def test_decode_to_video_node_writes_what_decode_returns(pack, run):
    """MusePose Decode to Video: the same frames as MusePose Decode, in an h264 mp4 written chunk by chunk
    to the temp folder, returned as a VIDEO (outside ComfyUI the engine's VideoFile, with the getters
    Save Video calls). h264 is lossy: mean error below 0.03 (in [0, 1]), as the CLI test allows."""
    import tempfile
    from pathlib import Path

    from musepose.video import read_frames

    model, latent = run
    nodes = pack.NODE_CLASS_MAPPINGS
    (images,) = nodes["MusePoseDecode"]().decode(model, latent, 5, False)
    (video,) = nodes["MusePoseDecodeToVideo"]().decode(model, latent, 5, False, fps=8.0)
    assert video.get_dimensions() == (96, 96) and video.get_frame_count() == 12 and video.get_frame_rate() == 8
    assert Path(video.get_stream_source()).parent == Path(tempfile.gettempdir()) / "musepose-express"
    frames, fps = read_frames(video.get_stream_source())
    assert frames.shape == (12, 96, 96, 3) and fps == 8.0
    assert np.abs(frames.astype(np.float32) / 255.0 - images.numpy()).mean() < 0.03
    assert nodes["MusePoseDecodeToVideo"].RETURN_TYPES == ("VIDEO",)


def test_decode_tiling_is_applied_then_restored(pack, run):
    """The tiny VAE's tile size (its config sample_size) is below 96 px, so tiling really changes the
    pixels (seams); the switch must not stick to the shared cached VAE."""
    model, latent = run
    decode = pack.NODE_CLASS_MAPPINGS["MusePoseDecode"]()
    (plain,) = decode.decode(model, latent, 4, False)
    (tiled,) = decode.decode(model, latent, 4, True)
    assert tiled.shape == plain.shape and torch.isfinite(tiled).all()
    assert max_abs(tiled, plain) > 1e-3
    assert not getattr(model.models.vae, "use_tiling", False)


def test_decode_accepts_the_engine_layout_and_rejects_others(pack, run):
    model, latent = run
    latents = pack.nodes.latents
    as_engine = latent["samples"].permute(1, 0, 2, 3)[None] * 0.18215
    assert torch.allclose(latents.from_latent(latent), as_engine)
    assert torch.allclose(latents.from_latent({"samples": latent["samples"].permute(1, 0, 2, 3)[None]}), as_engine)
    with pytest.raises(ValueError, match="frames, 4"):
        latents.from_latent({"samples": torch.zeros(2, 4, 3, 12, 12)})


def test_seed_changes_and_repeats(pack, run):
    model, latent = run
    reference, poses = vector_a_images()
    sampler = pack.NODE_CLASS_MAPPINGS["MusePoseSampler"]()
    (same,) = sampler.sample(model, reference, poses, **VECTOR_A_SAMPLER)
    assert torch.equal(same["samples"], latent["samples"])
    (other,) = sampler.sample(model, reference, poses, **{**VECTOR_A_SAMPLER, "seed": 43})
    assert max_abs(other["samples"], latent["samples"]) > 0.1


def test_progress_counts_steps_times_windows_and_interrupt_stops_between_windows(pack, run, monkeypatch):
    """3 steps x 2 windows = 6 units; an interrupt requested in the first window stops before the second."""
    model, _ = run
    host = pack.nodes.host
    reference, poses = vector_a_images()
    totals, updates = [], []

    class Counting(host.Progress):
        def __init__(self, total):
            super().__init__(total)
            totals.append(self.total)

        def update(self, n=1, preview=None):
            updates.append(n)
            super().update(n, preview)

    monkeypatch.setattr(host, "Progress", Counting)
    pack.NODE_CLASS_MAPPINGS["MusePoseSampler"]().sample(model, reference, poses, **VECTOR_A_SAMPLER)
    assert totals == [6] and sum(updates) == 6

    calls, returned = [], []
    original = model.pipeline._unet

    def unet(*args, **kwargs):
        calls.append(1)
        host.request_interrupt()
        out = original(*args, **kwargs)
        returned.append(1)
        return out

    monkeypatch.setattr(model.pipeline, "_unet", unet)
    with pytest.raises(host.Interrupted):
        pack.NODE_CLASS_MAPPINGS["MusePoseSampler"]().sample(model, reference, poses, **VECTOR_A_SAMPLER)
    assert len(calls) == 1 and not returned  # it stopped inside the UNet call, between two of its layers
    monkeypatch.undo()
    (again,) = pack.NODE_CLASS_MAPPINGS["MusePoseSampler"]().sample(model, reference, poses, **VECTOR_A_SAMPLER)
    assert again["samples"].shape == (12, 4, 12, 12)


def test_aspect_mismatch_is_never_silent(pack, run, caplog):
    model, _ = run
    reference, poses = vector_a_images()
    settings = {**VECTOR_A_SAMPLER, "width": 96, "height": 64, "steps": 1}
    with caplog.at_level("WARNING"):
        pack.NODE_CLASS_MAPPINGS["MusePoseSampler"]().sample(model, reference, poses[:4], **settings)
    text = caplog.text
    assert "reference image is 96x96 but the output is 96x64" in text and "stretched" in text
    caplog.clear()
    with caplog.at_level("WARNING"):
        (latent,) = pack.NODE_CLASS_MAPPINGS["MusePoseSampler"]().sample(model, reference, poses[:4],
                                                                           **{**settings, "aspect": "crop"})
    assert "centre-cropped" in caplog.text and latent["samples"].shape == (4, 4, 8, 12)


@pytest.fixture(scope="module")
def pose_mp4(tmp_path_factory):
    """Vector A's pose frames as an 8 fps h264 mp4, and the frames that mp4 decodes to (h264 is lossy)."""
    from musepose.video import read_frames, write_mp4

    _, poses = vector_a_images()
    path = write_mp4((poses.numpy() * 255).round().astype(np.uint8), tmp_path_factory.mktemp("poses") / "p.mp4",
                     fps=8.0)
    frames, fps = read_frames(path)
    assert frames.shape == (12, 96, 96, 3) and fps == 8.0
    return path, frames


def test_sampler_pose_video_gives_the_latents_of_its_frames_as_images(pack, run, pose_mp4):
    """The Sampler's pose_video (a VIDEO read to uint8 without an IMAGE batch) samples exactly what the same
    decoded frames give as pose_images (max abs 0); Decode to Video takes the frame rate from that VIDEO."""
    from musepose.video import VideoFile

    model, _ = run
    path, frames = pose_mp4
    video = VideoFile(Path(path), 96, 96, 12, 8.0)
    reference, _ = vector_a_images()
    sampler = pack.NODE_CLASS_MAPPINGS["MusePoseSampler"]()
    (from_images,) = sampler.sample(model, reference, torch.from_numpy(frames).float() / 255.0, **VECTOR_A_SAMPLER)
    (from_video,) = sampler.sample(model, reference, None, pose_video=video, **VECTOR_A_SAMPLER)
    assert torch.equal(from_video["samples"], from_images["samples"])
    (out,) = pack.NODE_CLASS_MAPPINGS["MusePoseDecodeToVideo"]().decode(model, from_video, 0, False, fps=30.0,
                                                                         pose_video=video)
    assert out.get_frame_rate() == 8 and out.get_frame_count() == 12


def test_sampler_needs_exactly_one_pose_input(pack, run, pose_mp4):
    from musepose.video import VideoFile

    model, _ = run
    reference, poses = vector_a_images()
    video = VideoFile(Path(pose_mp4[0]), 96, 96, 12, 8.0)
    sampler = pack.NODE_CLASS_MAPPINGS["MusePoseSampler"]()
    with pytest.raises(ValueError, match="link pose_images .* or pose_video"):
        sampler.sample(model, reference, **VECTOR_A_SAMPLER)
    with pytest.raises(ValueError, match="link only one of pose_images and pose_video"):
        sampler.sample(model, reference, poses, pose_video=video, **VECTOR_A_SAMPLER)
    broken = VideoFile(Path(pose_mp4[0]).with_name("missing.mp4"), 96, 96, 12, 8.0)
    with pytest.raises(ValueError, match="MusePose Sampler: pose_video: video not found"):
        sampler.sample(model, reference, pose_video=broken, **VECTOR_A_SAMPLER)


def test_video_frames_reads_files_and_bytes_as_uint8_and_components_as_they_are(pack, pose_mp4):
    """host.video_frames: a file-backed VIDEO (a path or a BytesIO, as ComfyUI's VideoFromFile holds) is
    decoded to uint8; one trimmed by ComfyUI 0.19 (private start time) and one made of components give
    get_components()'s frames, which honour the trim."""
    import io
    from fractions import Fraction
    from types import SimpleNamespace

    videos = pack.nodes.host.videos
    path, frames = pose_mp4

    class VideoFromFile:  # the name is what host.videos recognises, as for ComfyUI's class
        def __init__(self, source, start_time=0.0):
            self._VideoFromFile__start_time, self._VideoFromFile__duration = start_time, 0.0
            self.source = source

        def get_stream_source(self):
            return self.source

        def get_components(self):
            return SimpleNamespace(images=torch.zeros(3, 96, 96, 3), frame_rate=Fraction(8))

    for source in (str(path), io.BytesIO(Path(path).read_bytes())):
        got, fps = videos.video_frames(VideoFromFile(source))
        assert got.dtype == np.uint8 and np.array_equal(got, frames) and fps == 8.0
    trimmed, fps = videos.video_frames(VideoFromFile(str(path), start_time=0.5))
    assert trimmed.shape == (3, 96, 96, 3) and trimmed.dtype == torch.float32 and fps == 8.0

    class VideoFromComponents(VideoFromFile):
        pass

    assert videos.video_frames(VideoFromComponents(str(path)))[0].shape == (3, 96, 96, 3)
