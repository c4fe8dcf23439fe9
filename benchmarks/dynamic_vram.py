#!/usr/bin/env python
"""The pack's memory policy under ComfyUI's dynamic VRAM, measured on a GPU.

The video workflow's nodes (Model Loader -> Sampler -> Decode) run inside a real ComfyUI (0.19.3 with
comfy-aimdo: the host users run in 2026), on random full-size weights (benchmarks/oneshot.py ``prepare``,
the compact layout), 768x768, 48 frames, one window, 3 steps, cfg 3.5. Each case runs in its own process:

* ``host``: ``dynamic`` (comfy-aimdo started exactly as ComfyUI's main.py starts it, so
  ``CoreModelPatcher`` is ``ModelPatcherDynamic``) or ``legacy`` (``--disable-dynamic-vram``);
* ``pack``: ``own`` (what ships: the pack's networks on the plain ModelPatcher, its own levels and planner)
  or ``pager`` (for comparison only: the networks handed to the host's pager by making the pack construct
  ``CoreModelPatcher``; patched from here, nothing in the pack offers it);
* ``card``: ``6gb`` (torch's caching allocator capped with ``set_per_process_memory_fraction`` and ComfyUI's
  ``--reserve-vram`` set to the rest, so ComfyUI's accounting and the pack's planner see a 6 GB card) or
  ``full``.

Each case reports whether it completed (or the error), ``max_memory_reserved`` / ``max_memory_allocated``,
the peak device memory in use by the process as the driver reports it (``mem_get_info``, sampled every 20 ms:
it includes what comfy-aimdo allocates outside torch's allocator), seconds per step (the first step, a
warm-up, is listed but left out of the mean) and what the Sampler said on the node.

    python benchmarks/dynamic_vram.py --comfyui PATH/TO/ComfyUI --weights /tmp/musepose-random --json out.jsonl
    python benchmarks/dynamic_vram.py --comfyui PATH/TO/ComfyUI --smoke   # the same path on the CPU, tiny weights
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY_WEIGHTS = REPO / "tests" / "fixtures" / "musepose-tiny" / "pretrained_weights"
GB = 1e9
HOSTS = ("dynamic", "legacy")
PACKS = ("own", "pager")
CARDS = ("6gb", "full")
CARD_GB = 6.0


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", required=True, help="ComfyUI source tree (0.19.3 or newer for dynamic VRAM)")
    parser.add_argument("--weights", type=Path, help="random full-size weights (written here when missing)")
    parser.add_argument("--cases", default="dynamic:own:6gb,dynamic:own:full,dynamic:pager:6gb,dynamic:pager:full,"
                                           "legacy:own:6gb,legacy:own:full",
                        help="host:pack:card, comma-separated")
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=150, help="seconds per case")
    parser.add_argument("--json", type=Path, help="append one JSON line per case here")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny weights, 96x96x12: checks the script")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def start_host(comfyui: str, host: str, card: str, smoke: bool) -> dict:
    """ComfyUI's model management set up as main.py sets it up for these arguments; returns what it did."""
    import torch

    argv = ["main.py"] + (["--cpu"] if smoke else []) + (["--disable-dynamic-vram"] if host == "legacy" else [])
    if card == "6gb" and not smoke:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(CARD_GB * GB / total)
        argv += ["--reserve-vram", f"{(total - CARD_GB * GB) / 2**30:.2f}"]
    sys.argv = argv
    sys.path.insert(0, comfyui)
    import comfy.options

    comfy.options.enable_args_parsing()
    from comfy.cli_args import args, enables_dynamic_vram

    import comfy_aimdo.control  # as main.py: before torch touches the device

    if enables_dynamic_vram():
        comfy_aimdo.control.init()
    import comfy.memory_management
    import comfy.model_management as mm
    import comfy.model_patcher

    started = False
    if host == "dynamic" and not args.cpu and mm.is_nvidia():
        started = bool(comfy_aimdo.control.init_device(mm.get_torch_device().index))
        if started:
            comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
            comfy.memory_management.aimdo_enabled = True
    return {"argv": argv[1:], "aimdo_started": started}


class DevicePeak:
    """The most device memory in use (total - free, as the driver reports it), sampled every 20 ms."""

    def __init__(self):
        import torch

        self.torch, self.peak, self._stop = torch, 0, threading.Event()
        self.baseline = self._used()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _used(self) -> int:
        free, total = self.torch.cuda.mem_get_info()
        return total - free

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used())
            time.sleep(0.02)

    def stop(self) -> float:
        self._stop.set()
        self.thread.join()
        return round((self.peak - self.baseline) / GB, 3)


def run_case(args) -> dict:
    host, pack_mode, card = args.child.split(":")
    import torch

    result = {"case": args.child, "host": host, "pack": pack_mode, "card": card, "size": args.size,
              "frames": args.frames, "steps": args.steps, **start_host(args.comfyui, host, card, args.smoke)}
    import comfy.model_patcher

    sys.path.insert(0, str(REPO / "tests"))
    from test_nodes_support import load_pack  # imports this checkout as ComfyUI imports a custom-node folder

    pack = load_pack()
    if pack_mode == "pager":  # comparison only: the pack's networks on the host's (dynamic) CoreModelPatcher
        pack.nodes.host.patchers.patcher_class = lambda: comfy.model_patcher.CoreModelPatcher
    nodes = pack.NODE_CLASS_MAPPINGS
    weights = TINY_WEIGHTS if args.smoke else args.weights
    size = args.size
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(1, size, size, 3, generator=generator)
    poses = torch.zeros(args.frames, size, size, 3)
    for i in range(args.frames):  # sparse bright strokes, like pose renders
        poses[i, (i * 7) % size: (i * 7) % size + max(2, size // 32), size // 4: 3 * size // 4] = 1.0
    cuda = torch.cuda.is_available() and not args.smoke
    meter = DevicePeak() if cuda else None
    started = time.perf_counter()
    said = []
    host_module = pack.nodes.host
    host_module.executing_node_id = lambda: "bench"  # as under a prompt: each node returns what it said

    def node(name, function, *args, **kwargs):
        out = getattr(nodes[name](), function)(*args, **kwargs)
        if isinstance(out, dict):
            said.extend(out.get("ui", {}).get(host_module.MESSAGES_UI_KEY, [""])[0].splitlines())
            return out["result"]
        return out

    try:
        (model,) = node("MusePoseModelLoader", "load", weights_path=str(weights), precision="auto", offload="auto")
        (latent,) = node("MusePoseSampler", "sample", model, reference, poses, width=size, height=size,
                         steps=args.steps, context_frames=min(48, args.frames), context_overlap=4)
        if cuda:
            torch.cuda.synchronize()
        result["sample_seconds"] = round(time.perf_counter() - started, 2)
        decoded = time.perf_counter()
        node("MusePoseDecode", "decode", model, latent, 0, False)
        if cuda:
            torch.cuda.synchronize()
        result["decode_seconds"] = round(time.perf_counter() - decoded, 2)
        steps = model.pipeline.stats.seconds_per_step
        timed = steps[1:] if len(steps) > 1 else steps
        result.update(completed=True, step_seconds=[round(s, 3) for s in steps],
                      seconds_per_step=round(sum(timed) / len(timed), 3))
    except BaseException as exc:  # a case that fails is a result too
        import traceback

        result.update(completed=False, error=f"{type(exc).__name__}: {str(exc)[:400]}",
                      traceback=traceback.format_exc()[-2500:])
    result["said"] = said
    if cuda:
        result["device_peak_gb"] = meter.stop()
        result["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / GB, 3)
        result["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated() / GB, 3)
    return result


def table(results: list[dict]) -> str:
    lines = ["| host | pack | card | completed | s/step | reserved GB | allocated GB | device GB | memory line |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        memory = next((s for s in r.get("said", []) if s.startswith("memory: offload")), "")
        lines.append(f"| {r['host']}{'' if r.get('aimdo_started') or r['host'] != 'dynamic' else ' (aimdo off)'} "
                     f"| {r['pack']} | {r['card']} | {'yes' if r.get('completed') else 'no: ' + r.get('error', '?')[:80]} "
                     f"| {r.get('seconds_per_step', '')} | {r.get('peak_reserved_gb', '')} | {r.get('peak_allocated_gb', '')} "
                     f"| {r.get('device_peak_gb', '')} | {memory[:90]} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse(argv)
    if args.child:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        print("RESULT " + json.dumps(run_case(args)), flush=True)
        return 0
    if args.smoke:
        args.size, args.frames, args.steps = 96, 12, 2
    elif args.weights is None:
        raise SystemExit("--weights is required (a folder for the random full-size weights)")
    else:
        sys.path.insert(0, str(REPO / "benchmarks"))
        sys.path.insert(0, str(REPO))
        from oneshot import prepare

        prepare(args.weights)
    results = []
    for case in args.cases.split(","):
        command = [sys.executable, __file__, "--child", case, "--comfyui", args.comfyui, "--size", str(args.size),
                   "--frames", str(args.frames), "--steps", str(args.steps)]
        command += ["--smoke"] if args.smoke else ["--weights", str(args.weights)]
        started = time.perf_counter()
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, cwd=args.comfyui)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if args.json:  # the case's log (ComfyUI's and the pack's lines) beside the results
                (args.json.parent / f"{case.replace(':', '-')}.log").write_text(proc.stderr)
            result = json.loads(lines[-1][7:]) if lines else {
                "case": case, "completed": False, "error": f"exit {proc.returncode}: {proc.stderr[-400:]}"}
        except subprocess.TimeoutExpired:
            result = {"case": case, "completed": False, "error": f"timed out after {args.timeout:.0f} s"}
        result.setdefault("host"), result.setdefault("pack"), result.setdefault("card")
        result["host"], result["pack"], result["card"] = case.split(":")
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(result), flush=True)
        results.append(result)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(result) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
