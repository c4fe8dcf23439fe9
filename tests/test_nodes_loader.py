"""Model Loader: folders, the official layout, missing-file errors, mocked download, the model cache."""
from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
import torch

from test_nodes_support import TINY_LAYOUT, WEIGHTS, load_pack, place_tiny_weights, remove_standalone_model_root


@pytest.fixture()
def env(tmp_path):
    pack = load_pack()
    host = pack.nodes.host
    models = tmp_path / "models"
    models.mkdir()
    host.add_standalone_model_root(str(models))
    pack.nodes.model_cache.MODEL_CACHE.clear()
    yield pack, models
    remove_standalone_model_root(host, str(models))
    pack.nodes.model_cache.MODEL_CACHE.clear()


def count_disk_loads(pack, monkeypatch) -> list:
    """Wrap the engine's load_models to count reads from disk."""
    import importlib

    loader_mod = importlib.import_module(pack.__name__ + ".musepose.weights")
    calls = []
    original = loader_mod.load_models

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(loader_mod, "load_models", counting)
    return calls


def test_second_load_reuses_models_without_reading_weights(env, monkeypatch):
    pack, models = env
    place_tiny_weights(models)
    calls = count_disk_loads(pack, monkeypatch)
    loader = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]()
    (first,) = loader.load(precision="fp32")
    (second,) = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]().load(precision="fp32", attention="sdpa")
    assert len(calls) == 1
    assert second.loaded is first.loaded and second.models.denoising_unet is first.models.denoising_unet
    # another dtype is another entry (and evicts the first: capacity 1)
    (half,) = loader.load(precision="bf16")
    assert len(calls) == 2 and half.dtype == torch.bfloat16
    assert next(half.models.denoising_unet.parameters()).dtype == torch.bfloat16
    assert len(pack.nodes.model_cache.MODEL_CACHE) == 1


def test_changed_file_reloads_and_changes_is_changed(env, monkeypatch):
    pack, models = env
    place_tiny_weights(models, copy=True)
    calls = count_disk_loads(pack, monkeypatch)
    cls = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]
    before = cls.IS_CHANGED(precision="fp32")
    cls().load(precision="fp32")
    target = models / "musepose" / "pose_guider.pth"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cls.IS_CHANGED(precision="fp32") != before
    cls().load(precision="fp32")
    assert len(calls) == 2


def test_auto_precision_is_fp32_on_cpu(env):
    pack, models = env
    place_tiny_weights(models)
    (model,) = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]().load()
    assert model.dtype == torch.float32 and model.device.type == "cpu"


def test_missing_files_are_all_named_with_their_folder(env):
    pack, models = env
    layout = {k: v for k, v in TINY_LAYOUT.items() if "pose_guider" not in k and not k.startswith("vae/")}
    place_tiny_weights(models, layout)
    with pytest.raises(FileNotFoundError) as info:
        pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]().load()
    message = str(info.value)
    assert f"pose_guider: put pose_guider.pth (or .safetensors) in {models / 'musepose'}" in message
    assert "vae: put sd-vae-ft-mse/diffusion_pytorch_model.safetensors + config.json" in message
    assert str(models / "vae") in message
    assert "denoising_unet:" not in message and "image_encoder:" not in message
    assert "download_missing" in message


def test_official_pretrained_weights_folder_in_models_musepose(env):
    pack, models = env
    (models / "musepose").mkdir()
    os.symlink(WEIGHTS, models / "musepose" / "pretrained_weights")
    (model,) = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]().load(precision="fp32")
    files = model.loaded.files
    assert files["denoising_unet"].endswith("pretrained_weights/MusePose/denoising_unet.pth")
    assert files["vae"].endswith("pretrained_weights/sd-vae-ft-mse/diffusion_pytorch_model.bin")
    assert files["image_encoder_config"].endswith("pretrained_weights/image_encoder/config.json")


def test_weights_path_widget(env, tmp_path):
    pack, _ = env
    (model,) = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]().load(weights_path=str(WEIGHTS), precision="fp32")
    assert model.loaded.files["pose_guider"] == str(WEIGHTS / "MusePose" / "pose_guider.pth")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]().load(weights_path=str(tmp_path / "nope"))


def test_vae_and_encoder_combos_list_files_and_resolve(env):
    pack, models = env
    place_tiny_weights(models)
    required = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"].INPUT_TYPES()["required"]
    assert required["vae"][0] == ["auto", "sd-vae-ft-mse/diffusion_pytorch_model.bin"]
    assert "sd-image-variations-diffusers/image_encoder/pytorch_model.bin" in required["image_encoder"][0]
    (model,) = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]().load(
        vae="sd-vae-ft-mse/diffusion_pytorch_model.bin",
        image_encoder="sd-image-variations-diffusers/image_encoder/pytorch_model.bin", precision="fp32")
    assert model.loaded.files["vae_config"].endswith("sd-vae-ft-mse/config.json")


def test_download_missing_with_a_mocked_hub(env):
    """Only the missing slots are fetched, into the documented folders, then the set loads."""
    pack, models = env
    layout = {k: v for k, v in TINY_LAYOUT.items() if not k.startswith(("vae/", "musepose/motion_module"))}
    place_tiny_weights(models, layout)
    fixture_for = {("TMElyralab/MusePose", "MusePose/motion_module.pth"): "MusePose/motion_module.pth",
                   ("stabilityai/sd-vae-ft-mse", "config.json"): "sd-vae-ft-mse/config.json",
                   ("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors"): None}
    requested = []

    def fake_hub(repo_id, filename, local_dir):
        requested.append((repo_id, filename))
        dest = os.path.join(local_dir, filename)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        source = fixture_for[(repo_id, filename)]
        if source is None:  # the hub's VAE is safetensors: write the fixture's tensors that way
            from safetensors.torch import save_file

            state = torch.load(WEIGHTS / "sd-vae-ft-mse" / "diffusion_pytorch_model.bin", weights_only=True)
            save_file({k: v.contiguous() for k, v in state.items()}, dest)
        else:
            shutil.copyfile(WEIGHTS / source, dest)
        return dest

    loader = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]()
    with pytest.raises(FileNotFoundError):
        loader.load(precision="fp32")
    (model,) = loader.load(precision="fp32", download_missing=True, hub_download=fake_hub)
    assert sorted(requested) == sorted(fixture_for)
    assert (models / "musepose" / "MusePose" / "motion_module.pth").is_file()
    assert model.loaded.files["vae"] == str(models / "vae" / "sd-vae-ft-mse" / "diffusion_pytorch_model.safetensors")


def test_download_plan_brings_the_unet_config_with_a_unet(env):
    pack, _ = env
    plan = pack.nodes.download.plan(["denoising_unet"])
    assert [(f.repo_id, f.filename) for f in plan] == [
        ("TMElyralab/MusePose", "MusePose/denoising_unet.pth"),
        ("lambdalabs/sd-image-variations-diffusers", "unet/config.json")]


def test_unknown_options_are_refused(env):
    pack, models = env
    place_tiny_weights(models)
    loader = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]()
    with pytest.raises(ValueError, match="offload"):
        loader.load(offload="sometimes")
    with pytest.raises(ValueError, match="not installed"):
        loader.load(attention="flash_nonexistent")


def test_every_offload_level_samples_vector_a_outside_comfyui(env):
    """Outside ComfyUI the engine's own placement serves every level (lowvram streams the UNet's blocks
    itself), and each gives vector A's latents (1e-3, the fixture's bound) and says what it picked."""
    from test_nodes_support import VECTOR_A, VECTOR_A_SAMPLER, vector_a_images

    pack, models = env
    place_tiny_weights(models)
    expected = np.load(VECTOR_A / "final_latents.npy")[0].transpose(1, 0, 2, 3)
    reference, poses = vector_a_images()
    loader, sampler = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"], pack.NODE_CLASS_MAPPINGS["MusePoseSampler"]
    for level in ("none", "model", "lowvram", "auto"):
        (model,) = loader().load(precision="fp32", offload=level)
        assert model.memory().offload == level
        (latent,) = sampler().sample(model, reference, poses, **{**VECTOR_A_SAMPLER, "cfg_mode": "auto"})
        assert np.abs(latent["samples"].numpy() * 0.18215 - expected).max() <= 1e-3, level
        picked = model.pipeline.stats.memory[0]
        assert picked.offload == (level if level != "auto" else picked.offload)


def test_switching_offload_reuses_the_weights(env, monkeypatch):
    """The offload mode is a per-run choice carried by the loader's output, not part of the weights' identity:
    none -> model -> lowvram -> none reads the files once (it used to read them for every mode)."""
    pack, models = env
    place_tiny_weights(models)
    calls = count_disk_loads(pack, monkeypatch)
    loader = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]
    outputs = [loader().load(precision="fp32", offload=mode)[0] for mode in ("none", "model", "lowvram", "none")]
    assert len(calls) == 1 and all(o.loaded is outputs[0].loaded for o in outputs)
    assert [o.offload for o in outputs] == ["none", "model", "lowvram", "none"]
    assert [o.memory().offload for o in outputs] == ["none", "model", "lowvram", "none"]


def test_comfyui_free_releases_the_set_and_its_output_reads_again(env, monkeypatch):
    """What ComfyUI's Free runs (host.notify_free, from the Free watch's unload): the cache lets the set go,
    the networks are dropped, DWPose sessions are closed; an output ComfyUI kept reads the weights again."""
    import weakref

    pack, models = env
    place_tiny_weights(models)
    calls = count_disk_loads(pack, monkeypatch)
    pose_cache = sys.modules[pack.__name__ + ".musepose.pose.cache"].DEFAULT_POSE_CACHE
    pose_cache.models.put("session", object())
    (model,) = pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]().load(precision="fp32")
    unet = weakref.ref(model.models.denoising_unet)
    pack.nodes.host.notify_free()
    cache = pack.nodes.model_cache.MODEL_CACHE
    assert len(cache) == 0 and model.loaded.released and "session" not in pose_cache.models
    import gc

    gc.collect()
    assert unet() is None  # nothing holds the weights any more
    assert model.models.denoising_unet is not None and len(calls) == 2 and len(cache) == 1


def _failing_hub(message="An error happened while trying to locate the file on the Hub and we cannot find the "
                         "requested files in the local cache. Please check your connection and try again."):
    requested = []

    def hub(repo_id, filename, local_dir):
        requested.append(filename)
        raise OSError(message)

    return hub, requested


def test_download_without_network_names_every_file_source_and_folder(env):
    pack, models = env
    layout = {k: v for k, v in TINY_LAYOUT.items() if not k.startswith(("vae/", "musepose/motion_module"))}
    place_tiny_weights(models, layout)
    hub, requested = _failing_hub()
    with pytest.raises(pack.nodes.download.DownloadError) as info:
        pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]().load(precision="fp32", download_missing=True,
                                                               hub_download=hub)
    message = str(info.value)
    assert requested == ["MusePose/motion_module.pth"]  # stops at the first failure (no network: all would wait)
    assert "could not fetch 3 file(s) from Hugging Face: OSError: An error happened" in message
    for url, target in (
            ("https://huggingface.co/TMElyralab/MusePose/resolve/main/MusePose/motion_module.pth",
             models / "musepose" / "MusePose" / "motion_module.pth"),
            ("https://huggingface.co/stabilityai/sd-vae-ft-mse/resolve/main/config.json",
             models / "vae" / "sd-vae-ft-mse" / "config.json"),
            ("https://huggingface.co/stabilityai/sd-vae-ft-mse/resolve/main/diffusion_pytorch_model.safetensors",
             models / "vae" / "sd-vae-ft-mse" / "diffusion_pytorch_model.safetensors")):
        assert f"{url}\n      -> {target}" in message, message
    assert "by hand" in message and "put it at the path shown" in message


def test_download_failure_after_some_files_says_what_was_kept(env):
    pack, models = env
    layout = {k: v for k, v in TINY_LAYOUT.items() if not k.startswith("vae/")}
    place_tiny_weights(models, layout)

    def hub(repo_id, filename, local_dir):
        if filename == "config.json":
            dest = os.path.join(local_dir, filename)
            shutil.copyfile(WEIGHTS / "sd-vae-ft-mse" / "config.json", dest)
            return dest
        raise ConnectionError("connection reset")

    with pytest.raises(pack.nodes.download.DownloadError) as info:
        pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]().load(download_missing=True, hub_download=hub)
    message = str(info.value)
    assert "could not fetch 1 file(s) from Hugging Face: ConnectionError: connection reset" in message
    assert "diffusion_pytorch_model.safetensors" in message and "Already fetched and kept:" in message


def test_download_without_huggingface_hub_names_the_files(env, monkeypatch):
    pack, models = env
    layout = {k: v for k, v in TINY_LAYOUT.items() if "pose_guider" not in k}
    place_tiny_weights(models, layout)

    def no_hub():
        raise ImportError("No module named 'huggingface_hub'")

    monkeypatch.setattr(pack.nodes.download, "default_hub_download", no_hub)
    with pytest.raises(pack.nodes.download.DownloadError, match="huggingface_hub package is not installed") as info:
        pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]().load(download_missing=True)
    assert "TMElyralab/MusePose/resolve/main/MusePose/pose_guider.pth" in str(info.value)


@pytest.mark.parametrize("content", [[], ["notes.txt", "other_model.safetensors"]])
def test_weights_path_with_none_of_the_files_is_refused(env, tmp_path, content):
    """An existing weights_path folder holding none of the files used to be ignored silently (the model
    folders were used instead): it is an error that lists what the folder should hold."""
    pack, models = env
    place_tiny_weights(models)  # the model folders could serve: the widget must still not be ignored
    folder = tmp_path / "my_weights"
    folder.mkdir()
    for name in content:
        (folder / name).write_text("x")
    with pytest.raises(FileNotFoundError) as info:
        pack.NODE_CLASS_MAPPINGS["MusePoseModelLoader"]().load(weights_path=str(folder))
    message = str(info.value)
    assert f"the weights_path folder '{folder}' holds none of the MusePose files" in message
    assert f"(it holds: {', '.join(content) or 'nothing'})" in message
    for name in ("MusePose/denoising_unet.pth", "MusePose/motion_module.pth", "sd-vae-ft-mse/config.json",
                 "image_encoder/config.json", "denoising_unet.safetensors"):
        assert name in message
    assert "leave it empty" in message
