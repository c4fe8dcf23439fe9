"""nodes/host/ against the real comfy.model_management, in-process (skipped unless COMFYUI_PATH is set).

Runs in a child interpreter ($COMFYUI_PYTHON or this one) so ComfyUI's module-level state (CPU mode,
loaded-model list, interrupt flag) never leaks into the other tests. Each check prints one line; the
pytest side asserts on the child's exit code and output.

What is checked: folder registration; auto precision; the patcher class (ModelPatcher on 0.8.0);
ComfyPlacement through load_models_gpu (single-use models leave the loaded list, 'model' offload unloads
all); vector A through ComfyPlacement; switching the offload mode reuses the same weights (no re-read);
the comfy.ops conversion computing the same result with every layer forced to stream its weights;
ComfyUI's unload_all_models (what POST /free runs) releasing the cached set (its RAM is collected) and
the DWPose sessions, after which the next load reads the weights again; an unload of one of our models
by ComfyUI releasing the set; and a real ModelPatcher partial load (budget < UNet size,
device_to="meta" standing in for a GPU) that then runs a forward pass without a device mismatch.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

COMFYUI = os.environ.get("COMFYUI_PATH")
HERE = Path(__file__).resolve().parent


def test_host_against_real_model_management(tmp_path):
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([COMFYUI, str(HERE)])}
    result = subprocess.run([python, str(Path(__file__)), str(tmp_path)], cwd=COMFYUI, env=env,
                            capture_output=True, text=True, timeout=600)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    for check in ("folders", "auto_dtype", "patcher_class", "placement_none", "vector_a", "placement_model",
                  "offload_switch_no_reread", "ops_stream_equal", "free_releases_cache", "comfy_unload_releases_set",
                  "partial_load_meta"):
        assert f"PASS {check}" in result.stdout
    import comfy_support

    if comfy_support.comfyui_version() >= (0, 19):  # dynamic VRAM exists from there on
        assert "PASS dynamic_vram_boundary" in result.stdout


def _child(tmp: Path) -> None:
    import time

    import numpy as np
    import torch

    torch.set_num_threads(2)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (must be imported after args.cpu is set)
    import comfy.model_patcher
    import folder_paths

    from test_nodes_support import (VECTOR_A, VECTOR_A_SAMPLER, load_pack, loaded_model_names, max_abs,
                                    place_tiny_weights, vector_a_images)

    models = place_tiny_weights(tmp / "models")
    for kind in ("vae", "clip_vision", "musepose"):
        folder_paths.add_model_folder_path(kind, str(models / kind), is_default=True)
    pack = load_pack()
    host = pack.nodes.host
    assert host.HAS_COMFY
    host.register_model_folders()
    assert str(models / "musepose") in host.model_search_paths("musepose")
    assert host.list_model_files("vae") == ["sd-vae-ft-mse/diffusion_pytorch_model.bin"]
    print("PASS folders", f"{time.perf_counter():.1f}")
    assert host.auto_dtype(torch.device("cpu")) == torch.float32
    print("PASS auto_dtype")
    assert host.patcher_class() is comfy.model_patcher.ModelPatcher  # 0.8.0 has no CoreModelPatcher
    print("PASS patcher_class")
    cache = pack.nodes.model_cache.MODEL_CACHE

    nodes = pack.NODE_CLASS_MAPPINGS
    reference, poses = vector_a_images()
    # LATENT samples are raw VAE latents: the fixture's latents (x0.18215) are scaled back; the stated
    # tolerance 1e-3 in the sampling scale becomes 1e-3 / 0.18215 here.
    expected = np.load(VECTOR_A / "final_latents.npy")[0].transpose(1, 0, 2, 3) / 0.18215
    tolerance = 1e-3 / 0.18215

    (model,) = nodes["MusePoseModelLoader"]().load(precision="fp32", offload="none")
    assert isinstance(model.placement, host.ComfyPlacement)
    (latent,) = nodes["MusePoseSampler"]().sample(model, reference, poses, **VECTOR_A_SAMPLER)
    loaded = loaded_model_names(host)
    # level none keeps every network loaded for the next run (ComfyUI evicts them when it needs the room);
    # level model, below, leaves nothing loaded
    assert sorted(loaded) == ["denoising_unet", "image_encoder", "pose_guider", "reference_unet", "vae"], loaded
    print("PASS placement_none", loaded)
    error = max_abs(latent["samples"], expected)
    assert error <= tolerance, error
    print(f"PASS vector_a max_abs {error:.2e}", f"{time.perf_counter():.1f}")

    loads = cache.loads
    (model_off,) = nodes["MusePoseModelLoader"]().load(precision="fp32", offload="model")
    assert model_off.loaded is model.loaded and cache.loads == loads  # same weights, not read again
    (latent2,) = nodes["MusePoseSampler"]().sample(model_off, reference, poses, **VECTOR_A_SAMPLER)
    nodes["MusePoseDecode"]().decode(model_off, latent2, 0, False)
    assert loaded_model_names(host) == [], loaded_model_names(host)
    assert max_abs(latent2["samples"], expected) <= tolerance
    print("PASS placement_model", f"{time.perf_counter():.1f}")

    # lowvram: converted layers; force every converted layer to stream (cast) its weights on each call
    (low,) = nodes["MusePoseModelLoader"]().load(precision="fp32", offload="lowvram")
    assert low.loaded is model.loaded and cache.loads == loads
    print(f"PASS offload_switch_no_reread (none -> model -> lowvram: {cache.loads} disk load)")
    import comfy.ops

    castable = tuple(set(host.comfy_layer_classes().values()))
    unet = low.models.denoising_unet
    converted = [m for m in unet.modules() if isinstance(m, castable)]
    assert len(converted) > 600 and host.streaming_report(unet) == [], host.streaming_report(unet)
    for layer in converted:
        layer.comfy_cast_weights = True
    (latent3,) = nodes["MusePoseSampler"]().sample(low, reference, poses, **VECTOR_A_SAMPLER)
    error = max_abs(latent3["samples"], expected)
    assert error <= tolerance, error
    assert max_abs(latent3["samples"], latent["samples"]) <= 1e-5
    for layer in converted:
        layer.comfy_cast_weights = False
    print(f"{time.perf_counter():.1f}")
    print(f"PASS ops_stream_equal ({len(converted)} layers streamed; max_abs {error:.2e})")

    del unet, converted  # (the free checks count the references left to the set's networks)
    _free_checks(pack, nodes, reference, poses, model, low)

    _dynamic_vram_checks(pack, model)

    # a real partial load: a budget of 40% of the UNet, "meta" standing in for the GPU (a fresh set: the
    # free checks released the one above)
    (low,) = nodes["MusePoseModelLoader"]().load(precision="fp32", offload="lowvram")
    unet = low.models.denoising_unet
    converted = [m for m in unet.modules() if isinstance(m, castable)]
    holder = host.HeldModel(unet, torch.float32, "denoising_unet")
    patcher = comfy.model_patcher.ModelPatcher(holder, load_device=torch.device("meta"), offload_device=torch.device("cpu"))
    size = patcher.model_size()
    patcher.patch_model(device_to=torch.device("meta"), lowvram_model_memory=int(size * 0.4))
    on_meta = sum(1 for m in converted if m.weight.device.type == "meta")
    streamed = sum(1 for m in converted if m.weight.device.type == "cpu" and m.comfy_cast_weights)
    assert holder.model_lowvram and on_meta > 0 and streamed > 0 and on_meta + streamed == len(converted)
    host.models._move_stray_buffers(unet, torch.device("meta"))
    pipe = low.pipeline  # no reference pass ran on this set: every entry is unconditional (plain self-attention)
    x = torch.zeros(2, 4, 8, 12, 12, device="meta")
    context = torch.zeros(2, 1, 16, device="meta")
    pose = torch.zeros(8, 32, 12, 12, device="meta")
    with torch.no_grad():
        out = pipe._unet(x, torch.tensor(999, device="meta"), context, pose_features=pose, num_uncond=16)
    assert out.shape == (2, 4, 8, 12, 12) and out.device.type == "meta"
    # (no unpatch: weights moved to "meta" hold no data; this set is thrown away with the process)
    print(f"PASS partial_load_meta ({on_meta} layers resident, {streamed} streamed; budget {int(size * 0.4)} of {size} bytes)")


def _free_checks(pack, nodes, reference, poses, *outputs) -> None:
    """unload_all_models (what POST /free runs) and an unload of our UNet by ComfyUI both release the cached
    set: its networks are garbage-collected at once, and the next use reads the weights again."""
    import gc
    import weakref

    import comfy.model_management as mm

    from test_nodes_support import loaded_model_names

    host = pack.nodes.host
    cache = pack.nodes.model_cache.MODEL_CACHE
    pose_cache = sys.modules[pack.__name__ + ".musepose.pose.cache"].DEFAULT_POSE_CACHE
    pose_cache.models.put("session", object())
    assert len(cache) == 1
    unet = weakref.ref(outputs[0].loaded.models.denoising_unet)
    mm.unload_all_models()
    gc.collect()
    assert len(cache) == 0 and cache.releases == 1, (len(cache), cache.releases)
    assert unet() is None, ("the UNet is still referenced after ComfyUI's Free",
                            [type(r).__name__ for r in gc.get_referrers(unet())])
    assert loaded_model_names(host) == [] and "session" not in pose_cache.models
    assert all(o.loaded.released for o in outputs)

    loads = cache.loads
    (latent,) = nodes["MusePoseSampler"]().sample(outputs[0], reference, poses, **VECTOR_A_SAMPLER_SHORT)
    assert cache.loads == loads + 1  # an output of the released set read the weights again
    print("PASS free_releases_cache (its UNet garbage-collected; the next run read the weights again)")

    model = outputs[0]
    assert len(cache) == 1 and "denoising_unet" in loaded_model_names(host)
    unet = weakref.ref(model.models.denoising_unet)
    patcher = model.placement.patcher(model.models.denoising_unet)
    patcher.detach(unpatch_all=True)  # what ComfyUI's unload of one model (LoadedModel.model_unload) ends in
    del patcher
    gc.collect()
    assert len(cache) == 0 and unet() is None, "an unload of our UNet by ComfyUI should release the cached set"
    (again,) = nodes["MusePoseModelLoader"]().load(precision="fp32", offload="model")
    assert cache.loads == loads + 2
    print("PASS comfy_unload_releases_set")


def _dynamic_vram_checks(pack, model) -> None:
    """ComfyUI 0.19+: what main.py does when comfy-aimdo starts (CoreModelPatcher swapped for the host's own
    ModelPatcherDynamic, aimdo_enabled set), then our side of the boundary. comfy-aimdo itself cannot start
    without CUDA, so the pager's figure (vbars_analyze) is set here; only a GPU shows the paging itself
    (benchmarks/dynamic_vram.py)."""
    import comfy.model_management as mm
    import comfy.model_patcher as model_patcher
    import torch

    dynamic = getattr(model_patcher, "ModelPatcherDynamic", None)
    if dynamic is None:  # 0.8.0: no dynamic VRAM (and no comfy.memory_management)
        return
    import comfy.memory_management as memory_management
    import comfy_aimdo.model_vbar

    host = pack.nodes.host
    saved = (model_patcher.CoreModelPatcher, memory_management.aimdo_enabled, comfy_aimdo.model_vbar.vbars_analyze,
             mm.get_free_memory)
    try:
        model_patcher.CoreModelPatcher, memory_management.aimdo_enabled = dynamic, True
        mm.get_free_memory = lambda dev=None, torch_free_too=False: 10 * 2**30  # (the CPU's free RAM moves)
        assert host.dynamic_vram() and "dynamic VRAM is on" in host.memory_host_note()
        real = dynamic(torch.nn.Linear(2, 2), load_device=torch.device("meta"), offload_device=torch.device("cpu"))
        assert real.is_dynamic()  # the host's class, as it would page our networks
        cls = host.patcher_class()
        patcher = cls(host.HeldModel(torch.nn.Linear(2, 2), torch.float32, "x"), load_device=torch.device("meta"),
                      offload_device=torch.device("cpu"))
        assert cls is model_patcher.ModelPatcher and not patcher.is_dynamic()
        assert not any(p.is_dynamic() for p in host.free_watch.free_watch_patchers())  # the Free watch never pages
        placement = model.placement
        before = placement.free_memory()
        comfy_aimdo.model_vbar.vbars_analyze = lambda: 3 * 2**30  # what the pager could hand back
        assert placement.free_memory() - before == 3 * 2**30
    finally:
        (model_patcher.CoreModelPatcher, memory_management.aimdo_enabled, comfy_aimdo.model_vbar.vbars_analyze,
         mm.get_free_memory) = saved
    print("PASS dynamic_vram_boundary (plain ModelPatcher under the swap; free memory counts the pager's 3 GiB)")


VECTOR_A_SAMPLER_SHORT = dict(width=96, height=96, seed=1, steps=1, cfg=3.5, scheduler="ddim", context_frames=8,
                              context_overlap=4, context_schedule="uniform", blending="flat", windows_per_batch=1,
                              aspect="stretch", cfg_mode="batched")


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
