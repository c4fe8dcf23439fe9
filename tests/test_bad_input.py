"""Bad input gets a clear error (or documented handling), never a stack trace from deep inside torch."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch

from conftest import WEIGHTS, vector_a_settings


def copy_weights(tmp_path):
    target = tmp_path / "weights"
    shutil.copytree(WEIGHTS, target)
    return target


# -- files ------------------------------------------------------------------------------------------

def test_missing_files_are_all_named_with_the_layout(tmp_path):
    from musepose.weights import MissingWeightsError, load_models

    weights = copy_weights(tmp_path)
    (weights / "MusePose" / "pose_guider.pth").unlink()
    (weights / "sd-vae-ft-mse" / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(MissingWeightsError) as info:
        load_models(weights)
    message = str(info.value)
    assert "MusePose/pose_guider.pth" in message and "sd-vae-ft-mse/diffusion_pytorch_model.bin" in message
    assert "expected layout" in message and "huggingface.co/TMElyralab/MusePose" in message


def test_plain_sd_unet_in_the_denoising_slot(tmp_path):
    from safetensors.torch import save_file

    from musepose.weights import WrongCheckpointError, load_models

    weights = copy_weights(tmp_path)
    (weights / "MusePose" / "denoising_unet.pth").unlink()
    save_file({"input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3), "middle_block.0.in_layers.0.weight": torch.zeros(4),
               "output_blocks.0.0.in_layers.0.weight": torch.zeros(4)},
              str(weights / "MusePose" / "denoising_unet.safetensors"))
    with pytest.raises(WrongCheckpointError, match="LDM layout"):
        load_models(weights, components=["denoising_unet"])


def test_reference_unet_given_as_denoising_unet(tmp_path):
    from musepose.weights import WrongCheckpointError, load_models

    weights = copy_weights(tmp_path)
    shutil.copyfile(weights / "MusePose" / "reference_unet.pth", weights / "MusePose" / "denoising_unet.pth")
    with pytest.raises(WrongCheckpointError, match="reference_unet.pth"):
        load_models(weights, components=["denoising_unet"])


def test_truncated_checkpoint(tmp_path):
    from musepose.weights import CorruptCheckpointError, load_models

    weights = copy_weights(tmp_path)
    path = weights / "MusePose" / "pose_guider.pth"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="truncated or corrupt"):
        load_models(weights, components=["pose_guider"])


def test_truncated_safetensors(tmp_path):
    from musepose.weights import CorruptCheckpointError
    from musepose.weights.io import StateDictReader, save_safetensors

    path = save_safetensors({"a": torch.ones(1000)}, tmp_path / "x.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptCheckpointError):
        reader = StateDictReader(path)
        reader.get("a")


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch MALICIOUS_MARKER",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    from musepose.weights import UnsafeCheckpointError, load_models

    monkeypatch.chdir(tmp_path)
    weights = copy_weights(tmp_path)
    path = weights / "MusePose" / "pose_guider.pth"
    torch.save({"conv_in.weight": torch.zeros(1), "payload": _RunsCode()}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_models(weights, components=["pose_guider"])
    assert not (tmp_path / "MALICIOUS_MARKER").exists()


def test_leftover_keys_are_named(tmp_path):
    from musepose.weights import CheckpointError, load_models

    weights = copy_weights(tmp_path)
    path = weights / "MusePose" / "pose_guider.pth"
    state = torch.load(path, weights_only=True)
    state["blocks.9.weight"] = torch.zeros(3)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"blocks\.9\.weight"):
        load_models(weights, components=["pose_guider"])


def test_missing_keys_are_named(tmp_path):
    from musepose.weights import CheckpointError, load_models

    weights = copy_weights(tmp_path)
    path = weights / "MusePose" / "pose_guider.pth"
    state = torch.load(path, weights_only=True)
    del state["blocks.2.bias"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing .*blocks\.2\.bias"):
        load_models(weights, components=["pose_guider"])


def test_pth_loads_with_mmap(monkeypatch):
    """The real stage-1 files share a 3.4 GB storage: reading must go through weights_only + mmap."""
    from musepose.weights import io

    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(io.torch, "load", spy)
    io.StateDictReader(WEIGHTS / "MusePose" / "pose_guider.pth")
    assert calls and calls[0]["weights_only"] is True and calls[0]["mmap"] is True


def test_cast_on_load_to_target_dtype():
    from musepose.weights import load_models

    models = load_models(WEIGHTS, dtype=torch.bfloat16, components=["pose_guider", "vae"])
    assert {p.dtype for p in models.pose_guider.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in models.vae.parameters()} == {torch.bfloat16}


def test_legacy_and_current_vae_names_load(tmp_path):
    from musepose.weights import load_models
    from musepose.weights.keymaps import vae_key

    weights = copy_weights(tmp_path)
    path = weights / "sd-vae-ft-mse" / "diffusion_pytorch_model.bin"
    legacy = torch.load(path, weights_only=True)
    assert any(".query." in k for k in legacy)
    torch.save({vae_key(k): v for k, v in legacy.items()}, path)
    modern = load_models(weights, components=["vae"]).vae
    reference = load_models(WEIGHTS, components=["vae"]).vae
    for (name, a), (_, b) in zip(modern.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


# -- sampling inputs ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipe(tiny_models):
    from musepose.pipeline import MusePosePipeline

    return MusePosePipeline(tiny_models)


def test_size_not_multiple_of_8_is_rounded_down_with_a_warning(pipe, vector_a_inputs, caplog):
    ref, poses = vector_a_inputs
    with caplog.at_level(logging.WARNING):
        latents = pipe.sample(ref, poses[:4], vector_a_settings(width=101, height=99, frames=4, steps=1))
    assert latents.shape == (1, 4, 4, 12, 12)
    assert any("not multiples of 8" in r.message and "96x96" in r.message for r in caplog.records)


def test_pose_frames_of_another_size_are_resized_and_said_once(pipe, vector_a_inputs, caplog):
    ref, poses = vector_a_inputs
    big = np.repeat(np.repeat(poses[:4], 2, axis=1), 2, axis=2)  # 192x192
    with caplog.at_level(logging.WARNING):
        latents = pipe.sample(ref, big, vector_a_settings(frames=4, steps=1))
    assert latents.shape == (1, 4, 4, 12, 12)
    messages = [r.message for r in caplog.records if "resizing them" in r.message]
    assert len(messages) == 1 and "192x192" in messages[0]


def test_aspect_mismatch_warns_about_stretch(vector_a_inputs, caplog):
    from musepose.pipeline import PoseFrames

    wide = np.zeros((2, 50, 100, 3), np.uint8)
    with caplog.at_level(logging.WARNING):
        frames = PoseFrames(wide, 96, 96, "stretch")
    assert "stretched" in caplog.text
    assert frames.tensor([0]).shape == (1, 3, 96, 96)
    assert PoseFrames(wide, 96, 96, "pad").tensor([0]).shape == (1, 3, 96, 96)


def test_fewer_pose_frames_than_requested(pipe, vector_a_inputs, caplog):
    ref, poses = vector_a_inputs
    with caplog.at_level(logging.WARNING):
        latents = pipe.sample(ref, poses[:5], vector_a_settings(frames=12, steps=1))
    assert latents.shape[2] == 5
    assert "only 5 pose frames" in caplog.text


@pytest.mark.parametrize("poses,match", [(np.zeros((0, 96, 96, 3), np.uint8), "0 frames"), ([], "no pose frames")])
def test_zero_frames(pipe, vector_a_inputs, poses, match):
    from musepose.pipeline import InputError

    with pytest.raises(InputError, match=match):
        pipe.sample(vector_a_inputs[0], poses, vector_a_settings(frames=None))


@pytest.mark.parametrize("overlap", [8, 9])
def test_overlap_not_smaller_than_context(pipe, vector_a_inputs, overlap):
    from musepose.pipeline import InputError

    with pytest.raises(InputError, match="must be smaller than context_frames"):
        pipe.sample(*vector_a_inputs, vector_a_settings(context_overlap=overlap))


def test_nan_in_inputs(pipe, vector_a_inputs):
    from musepose.pipeline import InputError

    ref, poses = vector_a_inputs
    bad_poses = torch.from_numpy(poses).float() / 255
    bad_poses[3, 10, 10, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        pipe.sample(ref, bad_poses, vector_a_settings())
    bad_ref = torch.from_numpy(ref).float() / 255
    bad_ref[0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        pipe.sample(bad_ref, poses, vector_a_settings())
