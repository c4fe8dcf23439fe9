"""The pose-driven graph without ComfyUI: dance frames -> Pose Extract -> Pose Align -> Sampler -> Decode.

The DWPose stand-ins (tests/fixtures/dwpose-tiny) return one fixed skeleton whatever the pixels, so the
check is on the plumbing: counts, sizes, fps and finite frames through all four nodes.
"""
from __future__ import annotations

import shutil

import pytest
import torch

from test_nodes_support import REPO, load_pack, place_tiny_weights, remove_standalone_model_root, vector_a_images


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    pack = load_pack()
    host = pack.nodes.host
    models = place_tiny_weights(tmp_path_factory.mktemp("comfy_pose") / "models")
    shutil.copytree(REPO / "tests" / "fixtures" / "dwpose-tiny", models / "dwpose")
    host.add_standalone_model_root(str(models))
    yield pack
    remove_standalone_model_root(host, str(models))
    pack.nodes.model_cache.MODEL_CACHE.clear()


def test_extract_align_sample_decode(pack):
    nodes = pack.NODE_CLASS_MAPPINGS
    reference, _ = vector_a_images()
    dance = torch.rand(10, 128, 96, 3)
    keypoints, preview, fps = nodes["MusePosePoseExtract"]().extract(dance, fps=24.0, every_nth=2)
    assert len(keypoints) == 5 and fps == pytest.approx(12.0) and preview.shape[0] == 5
    poses, aligned, overlay, fps, width, height = nodes["MusePosePoseAlign"]().align(
        keypoints, width=96, height=96, fps=fps, reference_image=reference)
    assert poses.shape == (5, 96, 96, 3) and len(aligned) == 5 and fps == pytest.approx(12.0)
    assert (width, height) == (96, 96)  # wired into the Sampler below, as a workflow links them
    assert poses.max() > 0.2  # a skeleton was drawn
    (model,) = nodes["MusePoseModelLoader"]().load(precision="fp32")
    (latent,) = nodes["MusePoseSampler"]().sample(model, reference, poses, width=width, height=height, steps=2,
                                                  context_frames=4, context_overlap=1)
    assert latent["samples"].shape == (5, 4, 12, 12)
    (video,) = nodes["MusePoseDecode"]().decode(model, latent, 0, False)
    assert video.shape == (5, 96, 96, 3) and torch.isfinite(video).all()
