"""The real full-size checkpoints load, proven without downloading them.

The full-size architecture is built on the meta device; every key and shape of the official files
(tests/fixtures/musepose-full-keys.json, derived from the original classes) must land on our modules
through the loader's key mapping, with nothing missing and nothing left over.
"""
from __future__ import annotations

import json

import pytest

from conftest import FIXTURES

FULL = json.loads((FIXTURES / "musepose-full-keys.json").read_text())


@pytest.fixture(scope="module")
def full_models():
    from musepose.weights import build_models

    return build_models(device="meta")


def shapes_of(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def file_keys(name):
    return {k: shape for k, shape, _ in FULL["official_files"][name]["keys"]}


def test_full_size_parameter_counts(full_models):
    counts = FULL["parameter_counts_summary"]
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in full_models.components().items()}
    assert params["reference_unet"] == counts["reference_unet.pth"]
    assert params["pose_guider"] == counts["pose_guider.pth"]
    assert params["denoising_unet"] == counts["runtime_denoising_unet_total_parameters"]
    assert params["image_encoder"] == counts["clip_image_encoder"]
    assert params["vae"] == counts["vae_sd_vae_ft_mse"]


def test_denoising_unet_and_motion_module_cover_the_model_exactly(full_models):
    from musepose.weights.keymaps import is_motion_pe_key, motion_key

    ours = shapes_of(full_models.denoising_unet)
    provided = dict(file_keys("denoising_unet.pth"))
    motion = file_keys("motion_module.pth")
    pe = {k for k in motion if is_motion_pe_key(k)}
    assert len(pe) == FULL["official_files"]["motion_module.pth"]["num_pe_keys"]
    for key, shape in motion.items():
        if key not in pe:
            provided[motion_key(key)] = shape
    left_over = sorted(set(provided) - set(ours))
    assert not left_over, left_over[:10]
    derived = {k for k in ours if k.endswith("pos_embed.pe")}
    assert len(derived) == 21  # one per motion module (the original has two identical copies per module)
    missing = sorted(set(ours) - set(provided) - derived)
    assert not missing, missing[:10]
    mismatched = [k for k in provided if provided[k] != ours[k]]
    assert not mismatched, mismatched[:10]
    for key in pe:  # the file's PE buffers have the shape our rebuilt ones have: (1, 128, C)
        assert FULL["official_files"]["motion_module.pth"]["keys"] and motion[key][1] == 128


@pytest.mark.parametrize("component,file", [("reference_unet", "reference_unet.pth"), ("pose_guider", "pose_guider.pth")])
def test_strict_components(full_models, component, file):
    ours = shapes_of(getattr(full_models, component))
    assert ours == file_keys(file)


def test_clip_image_encoder(full_models):
    ours = shapes_of(full_models.image_encoder)
    theirs = {k: s for k, s, _ in FULL["other_files"]["image_encoder/pytorch_model.bin"]["keys"]}
    theirs.pop("vision_model.embeddings.position_ids", None)  # ignored explicitly by the loader
    assert ours == theirs


def test_vae_modern_and_legacy_names(full_models):
    from musepose.weights.keymaps import vae_key

    info = FULL["other_files"]["sd-vae-ft-mse/diffusion_pytorch_model.bin"]
    modern = {k: s for k, s, _ in info["keys_modern_names"]}
    ours = shapes_of(full_models.vae)
    assert ours == modern
    legacy = {info["legacy_map"].get(k, k): s for k, s in modern.items()}
    assert {vae_key(k): s for k, s in legacy.items()} == ours
