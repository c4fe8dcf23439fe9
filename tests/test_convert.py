"""``python -m musepose convert``: compact fp16 safetensors that the same loader reads."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import REPO, WEIGHTS, max_abs, vector_a_settings


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16")
    result = subprocess.run([sys.executable, "-m", "musepose", "convert", "--weights-dir", str(WEIGHTS), "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


def test_files_and_dtypes(converted):
    from safetensors import safe_open

    names = {p.name for p in converted.iterdir()}
    for component in ("denoising_unet", "reference_unet", "pose_guider", "motion_module", "image_encoder", "vae"):
        assert f"{component}.safetensors" in names
        with safe_open(str(converted / f"{component}.safetensors"), "pt") as f:
            keys = list(f.keys())
            assert {f.get_tensor(k).dtype for k in keys} <= {torch.float16}
            assert not any(k.endswith(".pe") for k in keys)
    assert {"unet_config.json", "image_encoder_config.json", "vae_config.json"} <= names


def test_musepose_tensors_are_identical(converted):
    """The MusePose files are fp16 already: converting must not change a single value."""
    from musepose.weights import load_models

    a = load_models(WEIGHTS, components=["denoising_unet", "reference_unet", "pose_guider"])
    b = load_models(converted, components=["denoising_unet", "reference_unet", "pose_guider"])
    for name in ("denoising_unet", "reference_unet", "pose_guider"):
        for (key, x), (_, y) in zip(getattr(a, name).state_dict().items(), getattr(b, name).state_dict().items()):
            assert torch.equal(x, y), f"{name}.{key}"


def test_converted_weights_sample_like_the_originals(converted, vector_a_inputs, vector_a_run):
    from musepose.pipeline import MusePosePipeline
    from musepose.weights import load_models

    trace, _, _ = vector_a_run
    pipe = MusePosePipeline(load_models(converted))
    latents = pipe.sample(*vector_a_inputs, vector_a_settings())
    # Only the CLIP encoder and the VAE (fp32 originals) lose precision in fp16 storage.
    assert max_abs(latents, trace["final_latents"]) <= 2e-2
