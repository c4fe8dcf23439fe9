"""One definition per setting (musepose/options.py): every surface that shows a setting (the command
line's ``generate``, ``plan`` and ``poses align``, the nodes' widgets, the engine's settings dataclasses)
has the same default, range and choices, and the documents that quote them (README's option tables, the
memory levels' table in README and docs/PERFORMANCE.md) agree with the code."""
from __future__ import annotations

import argparse
import re

import pytest

from conftest import REPO
from test_nodes_support import load_pack

from musepose import options
from musepose.options import LEVELS, SETTINGS, levels_markdown


def _parsers():
    """``{command: parser}`` for generate, plan and poses align."""
    from musepose.cli import build_parser

    subs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    poses = next(a for a in subs["poses"]._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {"generate": subs["generate"], "plan": subs["plan"], "poses align": poses["align"]}


def _cli_view(action: argparse.Action, setting) -> dict:
    """What a flag accepts: default, choices, and for numbers whether the range's ends (and one past them) parse."""
    view = {"default": action.default, "choices": tuple(action.choices) if action.choices else ()}
    if setting.kind in (int, float):
        def accepts(value) -> bool:
            try:
                action.type(str(value))
                return True
            except argparse.ArgumentTypeError:
                return False
        step = 1 if setting.kind is int else 0.5
        view["range"] = tuple(accepts(v) for v in (
            *((setting.low, setting.low - step) if setting.low is not None else ()),
            *((setting.high, setting.high + step) if setting.high is not None else ())))
    return view


def _expected(setting, default=None) -> dict:
    view = {"default": setting.default if default is None else default, "choices": tuple(setting.choices)}
    if setting.kind in (int, float):
        view["range"] = (True, False) * ((setting.low is not None) + (setting.high is not None))
    return view


#: Where each surface deliberately differs, and why.
PLAN_DEFAULTS = {"frames": 48}  # plan has no pose frames: its --frames is the video length (one window)


def test_every_setting_on_every_command_line_surface_matches_its_definition():
    parsers = _parsers()
    seen = set()
    for command, parser in parsers.items():
        for action in parser._actions:
            setting = SETTINGS.get(action.dest)
            if setting is None or action.dest == "help":
                continue
            seen.add(action.dest)
            default = PLAN_DEFAULTS.get(action.dest) if command == "plan" else None
            if action.required:  # poses align's --width/--height: no default, the same range
                default = action.default
            assert _cli_view(action, setting) == _expected(setting, default), (command, action.dest)
            if not (command == "plan" and action.dest in PLAN_DEFAULTS):  # plan says what its --frames means
                assert setting.help in action.help, (command, action.dest)
    assert seen == set(SETTINGS)  # every setting is on the command line


def test_every_setting_on_every_node_matches_its_definition():
    pack = load_pack()
    widgets = {}
    for node in ("MusePoseModelLoader", "MusePoseSampler", "MusePosePoseAlign", "MusePosePoseExtract"):
        spec = pack.NODE_CLASS_MAPPINGS[node].INPUT_TYPES()
        for name, value in {**spec["required"], **spec.get("optional", {})}.items():
            widgets[(node, name)] = value
    #: widget -> the setting it shows (same name, except where saved workflows have another)
    aliases = {"ref_fit": "aspect", "backend": "pose_backend"}
    checked = 0
    for (node, name), (kind, extra) in widgets.items():
        setting = SETTINGS.get(aliases.get(name, name))
        if setting is None:
            continue
        checked += 1
        assert extra["default"] == setting.default, (node, name)
        if setting.choices and name == "attention":  # the Loader offers the backends installed here
            assert kind[0] == "sdpa" and set(kind) <= set(setting.choices), (node, name)
        elif setting.choices:
            assert tuple(kind) == setting.choices, (node, name)
        else:
            assert (extra.get("min"), extra.get("max")) == (setting.low, setting.high), (node, name)
    assert checked >= 19


def test_the_engine_settings_have_the_same_defaults_and_one_validator():
    from musepose.pipeline import InputError, MemorySettings, SamplingSettings

    sampling, memory = SamplingSettings(), MemorySettings()
    for name in options.SAMPLING_FIELDS:
        assert getattr(sampling, name) == SETTINGS[name].default, name
    for name in ("offload", "cfg_mode", "decode_chunk"):
        assert getattr(memory, name) == SETTINGS[name].default, name
    with pytest.raises(InputError, match=r"width must be at most 2048 \(got 4096\).*; steps must be at least 1"):
        SamplingSettings(width=4096, steps=0).validated(10)
    with pytest.raises(InputError, match=r"context_overlap \(48\) must be smaller than context_frames \(48\)"):
        SamplingSettings(context_overlap=48).validated(10)
    with pytest.raises(InputError, match="unknown scheduler 'heun'; use one of ddim, euler, unipc, dpmpp_2m"):
        SamplingSettings(scheduler="heun").validated(10)


def test_the_memory_levels_figures_are_the_planners():
    """LEVELS' figures, recomputed: 768x768, one 48-frame window, fp16, cfg 3.5; for none its fastest
    configuration, for the others the leanest (the planner's allocated bytes, to 0.1 GB)."""
    import torch

    from musepose.pipeline import MemorySettings, SamplingSettings
    from musepose.pipeline.memory import choose
    from musepose.pipeline.planner import WeightBytes
    from musepose.weights.loader import build_models

    models = build_models(device="meta")
    models.dtype = torch.float16
    job = SamplingSettings(width=768, height=768, frames=48).validated(48).job(models)
    for name, level in LEVELS.items():
        free = 1e15 if name == "none" else 1.0
        config = choose(MemorySettings(offload=name), job, WeightBytes.full_size(2), free)[0]
        assert round(config.estimate.peak_bytes / 1e9, 1) == level.peak_gb_768, name


def test_the_documents_quote_the_levels_table_and_the_defaults():
    readme, performance = (REPO / "README.md").read_text(), (REPO / "docs" / "PERFORMANCE.md").read_text()
    assert levels_markdown() in readme and levels_markdown() in performance
    loader = load_pack().NODE_CLASS_MAPPINGS["MusePoseModelLoader"].INPUT_TYPES()["required"]
    assert options.levels_text() in loader["offload"][1]["tooltip"]
    # the option tables: "| `--flag A --flag2 B` | d1 d2 | ..." (command line) and "| a / b | d1 / d2 | ..." (nodes)
    flags = {s.flag: s for s in SETTINGS.values()}
    checked, in_default_table, previous = 0, False, ""
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and not previous.startswith("|"):  # a table's header
            in_default_table = len(cells) > 1 and cells[1] == "default"
        previous = line
        if not in_default_table or len(cells) < 3 or cells[1] == "default" or cells[1].startswith("---"):
            continue
        if cells[0].startswith("`--"):
            names = [flags.get(f) for f in re.findall(r"--[a-z-]+", cells[0])]
            defaults = cells[1].replace("`", "").split()
        else:
            names = [SETTINGS.get(n.strip()) for n in re.split(r" / |, ", cells[0])]
            defaults = [d.strip() for d in re.split(r" / |, ", cells[1])]
        if len(names) != len(defaults):
            continue
        for setting, shown in zip(names, defaults):
            if setting is not None and setting.default is not None:
                assert shown == str(setting.default), (line, setting.name)
                checked += 1
    assert checked >= 20


def test_every_scheduler_offered_has_its_diffusers_class():
    from musepose.pipeline.schedulers import SCHEDULER_CLASSES, make_scheduler

    assert tuple(SCHEDULER_CLASSES) == options.SCHEDULERS
    assert [type(make_scheduler(name)).__name__ for name in options.SCHEDULERS] == \
        [class_name for class_name, _ in SCHEDULER_CLASSES.values()]
