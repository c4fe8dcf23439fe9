"""nodes/host/ without ComfyUI: messages shown on the node, the patcher class, public model management only,
following ComfyUI's Free. ComfyUI's pieces are stand-ins here; tests/test_comfy_*.py use the real ones."""
from __future__ import annotations

import logging
import re
import sys
import types

import pytest
import torch
from torch import nn

from test_nodes_support import (REPO, VECTOR_A_SAMPLER, load_pack, place_tiny_weights, remove_standalone_model_root,
                                vector_a_images)


@pytest.fixture()
def pack():
    return load_pack()


@pytest.fixture()
def shown(pack, monkeypatch):
    """What would go to the frontend: (node_id, text) per send."""
    sent = []
    monkeypatch.setattr(pack.nodes.host.messages, "send_node_text", lambda node_id, text: sent.append((node_id, text)))
    return sent


# ---------------------------------------------------------------------------------------------
# messages on the node

def test_warnings_of_engine_and_nodes_are_shown_once_in_plain_words(pack, shown):
    host = pack.nodes.host
    engine = logging.getLogger(pack.__name__ + ".musepose.pipeline.preprocess")  # engine module under ComfyUI
    with host.node_run("7") as run:
        engine.warning("width/height %dx%d are not multiples of 8: using %dx%d", 100, 132, 96, 128)
        engine.warning("width/height %dx%d are not multiples of 8: using %dx%d", 100, 132, 96, 128)
        logging.getLogger("musepose.pose").warning("frames 3, 4 have no person: the previous pose is repeated")
        logging.getLogger("musepose_express").warning("MusePose Sampler: the reference image is stretched")
        logging.getLogger("musepose_express").info("MusePose: loading weights from disk")  # console only
        logging.getLogger("somebody_else").warning("not ours")
        host.say("memory: everything on the GPU")
        host.say("memory: everything on the GPU")
    assert run.lines == ["Width/height 100x132 are not multiples of 8: using 96x128",
                         "Frames 3, 4 have no person: the previous pose is repeated",
                         "The reference image is stretched",
                         "memory: everything on the GPU"]
    assert [node for node, _ in shown] == ["7"] * 4
    assert [text for _, text in shown] == ["\n".join(run.lines[:n]) for n in range(1, 5)]  # accumulated
    logging.getLogger("musepose.pose").warning("after the run")
    assert len(shown) == 4  # outside a node run: console only


def test_every_registered_node_is_wrapped_and_reports_to_its_node(pack, shown, monkeypatch):
    host = pack.nodes.host
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert getattr(getattr(cls, cls.FUNCTION), "_musepose_pack_node", False), node_id
    monkeypatch.setattr(host.messages, "executing_node_id", lambda: "12:3")

    class Dummy:
        FUNCTION = "go"

        def go(self, x):
            logging.getLogger("musepose.pose").warning("said %d", x)
            return (x,)

    host.pack_node(host.pack_node(Dummy))  # twice: wrapped once
    # under a prompt the lines also come back as a UI output, which the frontend keeps after the run
    assert Dummy().go(5) == {"ui": {host.MESSAGES_UI_KEY: ["Said 5"]}, "result": (5,)}
    assert shown == [("12:3", "Said 5")]
    assert Dummy.go.__wrapped__.__name__ == "go"


def test_sampler_says_each_size_fact_once(pack, shown, tmp_path, monkeypatch):
    """A size that is not a multiple of 8 and stretches the 96x96 inputs to 96x128: three facts, each said
    once (the stretch of the pose frames used to come twice, once as "the pose frames is 96x96")."""
    host = pack.nodes.host
    nodes = pack.NODE_CLASS_MAPPINGS
    models = place_tiny_weights(tmp_path / "models")
    host.add_standalone_model_root(str(models))
    try:
        (model,) = nodes["MusePoseModelLoader"]().load(precision="fp32")
        reference, poses = vector_a_images()
        settings = {**VECTOR_A_SAMPLER, "width": 100, "height": 132, "steps": 1}
        monkeypatch.setattr(host.messages, "executing_node_id", lambda: "5")  # ComfyUI's executing context
        nodes["MusePoseSampler"]().sample(model, reference, poses[:8], **settings)
    finally:
        remove_standalone_model_root(host, str(models))
        pack.nodes.model_cache.MODEL_CACHE.clear()
    assert {node for node, _ in shown} == {"5"}, shown
    # while it sampled, a status line (elapsed time, time left) stood below the facts, then went
    statuses = [text.split("\n")[-1] for _, text in shown if text.split("\n")[-1].startswith("elapsed ")]
    assert len(statuses) == 1 and statuses[0].endswith(" left")  # 1 step x 1 window
    assert len(shown) == 5 + len(statuses) + 1  # each fact, each status, the status removed
    lines = shown[-1][1].split("\n")
    assert len(lines) == 5, lines
    assert lines[0] == "Width/height 100x132 are not multiples of 8: using 96x128"
    assert lines[1] == ("The reference image is 96x96 but the output is 96x128, so it is stretched (distorted) "
                        "to fit; set aspect to crop or pad to keep the proportions.")
    assert lines[2].startswith("Pose frames are 96x96; resizing them to 96x128 with stretch")
    # then what the memory policy picked, and the run's summary
    assert lines[3].startswith("memory: offload ") and "predicted peak" in lines[3]
    assert lines[4].startswith("8 frames at 96x128, 1 step in ")


def test_aspect_note_grammar(pack):
    note = pack.nodes.sampler_node.aspect_note
    assert note(96, 96, 96, 128, "stretch", "pose frames").startswith(
        "MusePose Sampler: the pose frames are 96x96 but the output is 96x128, so they are stretched")
    assert note(96, 96, 96, 128, "pad", "reference image").endswith("so it is padded with black borders to fit.")
    assert note(96, 96, 192, 192, "stretch", "reference image") is None


# ---------------------------------------------------------------------------------------------
# ComfyUI's model management, with stand-ins

class _Patcher:
    """Stands in for comfy.model_patcher.ModelPatcher: records construction, callbacks and detaches."""

    def __init__(self, model, load_device, offload_device, size=0):
        self.model, self.load_device, self.offload_device = model, load_device, offload_device
        self.callbacks: dict[str, list] = {}
        self.detaches = []

    def add_callback(self, key, callback):
        self.callbacks.setdefault(key, []).append(callback)

    def detach(self, unpatch_all=True):
        self.detaches.append(unpatch_all)
        for callback in self.callbacks.get("on_detach_after", []):
            callback(self, unpatch_all)
        return self.model

    def loaded_size(self):
        return 0


class _Core(_Patcher):
    pass


@pytest.fixture()
def fake_comfy(pack, monkeypatch):
    """host as if ComfyUI were there: stand-in comfy.model_patcher / patcher_extension / model_management."""
    host = pack.nodes.host
    loads = []
    mm = types.SimpleNamespace(
        get_torch_device=lambda: torch.device("cpu"), unet_offload_device=lambda: torch.device("cpu"),
        load_models_gpu=lambda models, **kw: loads.append((list(models), kw)), loaded_models=lambda: [],
        soft_empty_cache=lambda: None)
    patcher_module = types.ModuleType("comfy.model_patcher")
    patcher_module.ModelPatcher = _Patcher
    patcher_module.CoreModelPatcher = _Core
    extension = types.ModuleType("comfy.patcher_extension")
    extension.CallbacksMP = types.SimpleNamespace(ON_DETACH="on_detach_after")
    comfy = types.ModuleType("comfy")
    comfy.model_patcher, comfy.patcher_extension = patcher_module, extension
    for name, module in (("comfy", comfy), ("comfy.model_patcher", patcher_module),
                         ("comfy.patcher_extension", extension)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(host.comfyui, "HAS_COMFY", True)
    monkeypatch.setattr(host.comfyui, "mm", mm)
    monkeypatch.setattr(host.free_watch, "_free_watch", None)
    return types.SimpleNamespace(host=host, loads=loads, patcher_module=patcher_module)


def test_plain_model_patcher_even_where_the_host_pages_dynamically(fake_comfy):
    """ComfyUI 0.19+ with dynamic VRAM swaps CoreModelPatcher for its pager (_Core here): the pack's networks
    and its Free watch stay on the plain ModelPatcher, so its levels keep their meaning."""
    host = fake_comfy.host
    unet, vae = nn.Linear(2, 2), nn.Linear(2, 2)
    placement = host.ComfyPlacement({"denoising_unet": unet, "vae": vae}, torch.float32)
    assert type(placement.patcher(unet)) is _Patcher and type(placement.patcher(vae)) is _Patcher
    with placement.use(unet):
        pass
    models, options = fake_comfy.loads[-1]
    assert models[0] is placement.patcher(unet) and type(models[1]) is _Patcher  # + the Free watch
    assert isinstance(models[1].model, host.MusePoseFreeWatch) and options["force_full_load"] is True

    del fake_comfy.patcher_module.CoreModelPatcher  # ComfyUI 0.8.0
    assert host.patcher_class() is _Patcher


def test_free_memory_counts_what_the_dynamic_pager_can_hand_back(fake_comfy, monkeypatch):
    """0.19+: the patcher's get_free_memory (torch's free + what comfy-aimdo can page out) is the free figure;
    other models count on top, except dynamic ones (already in the pager's figure)."""
    host = fake_comfy.host

    class Other(_Patcher):
        def __init__(self, size, dynamic):
            super().__init__(None, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
            self.size, self.dynamic = size, dynamic

        def loaded_size(self):
            return self.size

        def is_dynamic(self):
            return self.dynamic

    others = [Other(100, dynamic=False), Other(1000, dynamic=True)]
    monkeypatch.setattr(fake_comfy.host.comfyui.mm, "loaded_models", lambda: others, raising=False)
    monkeypatch.setattr(fake_comfy.host.comfyui.mm, "get_free_memory", lambda device=None: 5000, raising=False)
    monkeypatch.setattr(fake_comfy.host.comfyui.mm, "extra_reserved_memory", lambda: 10, raising=False)
    placement = host.ComfyPlacement({"vae": nn.Linear(2, 2)}, torch.float32)
    assert placement.free_memory() == 5000 + 100 + 1000 - 10  # 0.8.0: no pager, every other model counts
    monkeypatch.setattr(_Patcher, "get_free_memory", lambda self, device: 5000 + 1000, raising=False)
    assert placement.free_memory() == 5000 + 1000 + 100 - 10  # the dynamic model's 1000 counted once


def test_unloads_by_us_and_by_comfyui_are_told_apart(fake_comfy):
    host = fake_comfy.host
    unet, clip = nn.Linear(2, 2), nn.Linear(2, 2)
    placement = host.ComfyPlacement({"denoising_unet": unet, "image_encoder": clip}, torch.float32)
    told = []
    placement.on_comfy_unload = lambda: told.append("unloaded")
    with placement.use(unet):
        pass
    placement.release(unet, clip)  # the memory policy offloads them after use
    assert placement.patcher(unet).detaches == [True] and placement.patcher(clip).detaches == [True]
    assert told == []  # our own unloads
    placement.patcher(unet).detach(unpatch_all=False)  # ComfyUI re-listing a loaded model / a patcher's __del__
    assert told == []
    placement.patcher(unet).detach(unpatch_all=True)  # ComfyUI unloading it (model_unload -> detach)
    assert told == ["unloaded"]


def test_free_watch_tells_the_listeners(pack, fake_comfy):
    host = fake_comfy.host
    heard = []
    listener = lambda: heard.append("free")  # noqa: E731
    host.on_free(listener)
    try:
        host.watch_free()
        (watch,) = fake_comfy.loads[-1][0]
        watch.detach(unpatch_all=True)  # what unload_all_models (POST /free) does to every loaded model
        assert heard == ["free"]
        watch.detach(unpatch_all=False)
        assert heard == ["free"]
    finally:
        host.free_watch._free_listeners.remove(listener)


def test_host_uses_no_private_loaded_model_list():
    source = "\n".join(path.read_text() for path in sorted((REPO / "nodes" / "host").glob("*.py")))
    assert "current_loaded_models" not in source
    assert re.search(r"\bmm\.\w+", source)  # (the check reads the right files)
    for call in set(re.findall(r"\bmm\.(\w+)", source)):
        assert not call.startswith("_"), call


def test_messages_become_a_ui_output_only_under_a_comfyui_prompt(pack):
    """The lines a node run said travel as a UI output (the frontend keeps it after the run; progress text is
    cleared by frontend 1.58), merged with the node's own UI output; outside a prompt the result is as is."""
    host = pack.nodes.host
    with host.node_run("7") as messages:
        messages.add("memory: offload none", verbatim=True)
        messages.add("MusePose Sampler: the reference image is stretched")
    assert host.with_messages(("latent",), messages) == {
        "ui": {host.MESSAGES_UI_KEY: ["memory: offload none\nThe reference image is stretched"]},
        "result": ("latent",)}
    own = {"ui": {"images": [1]}, "result": ("video",)}
    assert host.with_messages(own, messages)["ui"] == {"images": [1], host.MESSAGES_UI_KEY: [messages.lines[0] + "\n"
                                                                                             + messages.lines[1]]}
    with host.node_run(None) as outside:
        outside.add("said outside a prompt")
    assert host.with_messages(("latent",), outside) == ("latent",)
    with host.node_run("7") as quiet:
        pass
    assert host.with_messages(("latent",), quiet) == ("latent",)


def test_the_sampler_says_when_the_host_pages_dynamically(fake_comfy, monkeypatch):
    """ComfyUI 0.19+ on NVIDIA (comfy-aimdo started): the node says which memory manager holds the networks."""
    host = fake_comfy.host
    memory_management = types.ModuleType("comfy.memory_management")
    memory_management.aimdo_enabled = False
    monkeypatch.setitem(sys.modules, "comfy.memory_management", memory_management)
    assert not host.dynamic_vram() and host.memory_host_note() is None
    memory_management.aimdo_enabled = True
    assert host.dynamic_vram()
    assert "dynamic VRAM is on" in host.memory_host_note() and "non-dynamic patcher" in host.memory_host_note()
    monkeypatch.delitem(sys.modules, "comfy.memory_management")  # 0.8.0: no such module
    monkeypatch.setitem(sys.modules, "comfy.memory_management", None)
    assert not host.dynamic_vram()
