"""Command line: ``python -m musepose {generate,demo,convert,poses,plan}``."""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DATA = Path("tests") / "fixtures" / "musepose-tiny"


def find_demo_data() -> Path:
    """The bundled tiny weights and sample: beside the package when it runs from a clone (or an editable
    install), else in the current directory (a clone after a plain ``pip install .``)."""
    for root in dict.fromkeys((REPO_ROOT, Path.cwd().resolve())):
        if (root / DEMO_DATA / "pretrained_weights").is_dir():
            return root / DEMO_DATA
    raise SystemExit(f"demo data ({DEMO_DATA.as_posix()}) not found beside the musepose package ({REPO_ROOT}) "
                     f"nor in the current directory ({Path.cwd()}): run `musepose demo` from the root of a clone "
                     "of the repository (https://github.com/musepose-express/comfyui-musepose-express)")


def _device_list(text: str) -> list[str]:
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices:
        raise argparse.ArgumentTypeError("give at least one device, e.g. cuda:0,cuda:1")
    return devices


#: The run settings ``generate`` takes, in ``--help`` order (each defined once in ``musepose.options``).
GENERATE_SETTINGS = ("width", "height", "frames", "steps", "cfg", "seed", "context_frames", "context_overlap",
                     "context_schedule", "windows_per_batch", "blending", "scheduler", "aspect", "precision")
#: What ``generate`` and ``plan`` both take about memory.
MEMORY_SETTINGS = ("offload", "cfg_mode")
#: The run settings ``plan`` takes (it has no pose frames: ``--frames`` counts the video's frames).
PLAN_SETTINGS = ("width", "height", "context_frames", "context_overlap", "windows_per_batch", "steps", "cfg",
                 "precision")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    from .options import add_cli_argument

    for name in GENERATE_SETTINGS + MEMORY_SETTINGS + ("decode_chunk", "attention"):
        add_cli_argument(p, name)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--devices", default=None, type=_device_list,
                   help="several devices in this process, e.g. cuda:0,cuda:1: one model replica each, every step's "
                        "windows shared out (the first device also encodes the reference and decodes)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNets' repeated blocks (same output; the first run compiles: minutes)")
    p.add_argument("--distributed", action="store_true",
                   help="one rank of a torchrun launch (torchrun --nproc-per-node N -m musepose generate ... "
                        "--distributed): each rank runs on cuda:LOCAL_RANK (NCCL) or the CPU (gloo) and takes its "
                        "share of the windows; rank 0 writes the outputs")
    p.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --distributed: how long a rank waits for the others before it stops with an error "
                        "(default 600)")
    p.add_argument("--vram-gb", type=float, default=None,
                   help="device memory this run may use, in GB (default: what is free on the device)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: the pose video's, else 12)")
    p.add_argument("--out", default="outputs/musepose.mp4", help="output .mp4 path")
    p.add_argument("--save-array", default=None,
                   help="also write the frames as float32 [frames, height, width, 3] in [0, 1] (.npy)")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="keep the run's state here after every denoising step; the same command again resumes "
                        "from the last finished step (another input or setting is refused)")
    p.add_argument("--fresh", action="store_true", help="with --checkpoint-dir: ignore a saved state, start afresh")


def _add_plan_args(plan: argparse.ArgumentParser) -> None:
    from .options import add_cli_argument, setting_with

    for name in PLAN_SETTINGS + MEMORY_SETTINGS:
        add_cli_argument(plan, name)
    add_cli_argument(plan, "frames", setting_with("frames", default=PLAN_FRAMES, help="video frames"))
    plan.add_argument("--vram-gb", type=float, default=24.0, help="free device memory to plan for (default 24)")
    plan.add_argument("--devices", type=_count, default=1,
                      help="devices sharing each step's windows (GPUs of one process or torchrun ranks)")


#: The video length ``plan`` assumes: one window of the default length.
PLAN_FRAMES = 48


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--devices must be at least 1 (got {value})")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .options import CONVERT_PRECISIONS, add_cli_argument

    parser = argparse.ArgumentParser(prog="python -m musepose", description="MusePose Express engine")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="reference image + pose frames (or a driving video) -> video")
    gen.add_argument("--weights-dir", required=True, help="MusePose weights folder (official or converted layout)")
    gen.add_argument("--ref", required=True, help="reference image")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--poses", help="pose renders: a folder of images or a video file")
    source.add_argument("--driving-video", help="a dance video: DWPose extraction + alignment + drawing first")
    gen.add_argument("--dwpose-dir", default=None, help="folder with yolox_l.onnx and dw-ll_ucoco_384.onnx "
                     "(needed with --driving-video)")
    add_cli_argument(gen, "pose_backend")
    _add_sampling_args(gen)

    demo = sub.add_parser("demo", help="run the whole pipeline on the bundled tiny weights and sample")
    demo.add_argument("--out", default="outputs/demo.mp4")
    demo.add_argument("--save-array", default=None)
    demo.add_argument("--steps", type=int, default=3)

    conv = sub.add_parser("convert", help="official checkpoints -> compact fp16 .safetensors per component")
    conv.add_argument("--weights-dir", required=True)
    conv.add_argument("--out", required=True)
    conv.add_argument("--precision", "--dtype", dest="dtype", choices=CONVERT_PRECISIONS, default="fp16",
                      help="precision of the converted files")

    from .pose.cli import add_pose_subcommands

    add_pose_subcommands(sub)

    plan = sub.add_parser("plan", help="predict peak device memory and time per memory level (no GPU needed)")
    _add_plan_args(plan)
    return parser


def _sampling_settings(args):
    """The run settings the parsed arguments hold (``musepose.options.SAMPLING_FIELDS`` by name; the ones a
    command does not take keep their defaults)."""
    from .options import SAMPLING_FIELDS
    from .pipeline import SamplingSettings

    return SamplingSettings(**{name: getattr(args, name) for name in SAMPLING_FIELDS if hasattr(args, name)})


def run_plan(args) -> int:
    """Auto's choice for the given free memory, and each level's best configuration, with predictions."""
    from dataclasses import replace

    import torch

    from .pipeline import MemorySettings
    from .pipeline.memory import SAFETY, choose
    from .pipeline.planner import WeightBytes
    from .weights.loader import build_models

    settings = _sampling_settings(args).validated(args.frames)
    precision = "fp16" if args.precision == "auto" else args.precision  # auto: what a GPU run gets
    dtype_bytes = 4 if precision == "fp32" else 2
    models = build_models(device="meta")
    models.dtype = torch.float32 if dtype_bytes == 4 else torch.float16
    job = replace(settings.job(models), devices=args.devices)
    weights = WeightBytes.full_size(dtype_bytes, fp8=precision == "fp8")
    free = args.vram_gb * 1e9
    print(f"MusePose plan: {settings.width}x{settings.height}, {job.video_frames} frames in {job.windows} window(s) of "
          f"{job.window_frames}, cfg {settings.cfg}, {precision}, {settings.steps} steps; {args.vram_gb:g} GB free")
    if args.devices > 1:
        batches = job.window_batches
        print(f"{args.devices} devices share each step's {batches} window batch(es): "
              f"{math.ceil(batches / args.devices)} round(s) per step instead of {batches}; peaks are per device")
    print("Peaks are allocated bytes (torch.cuda.max_memory_allocated); the CUDA context (~0.5 GB) and allocator "
          "slack come on top. Times are a model of an H100-class GPU, for comparing configurations.")
    levels = [args.offload] if args.offload != "auto" else ["auto", "none", "model", "lowvram"]
    for level in levels:
        config = choose(MemorySettings(offload=level, cfg_mode=args.cfg_mode), job, weights, free)[0]
        e = config.estimate
        fits = "fits" if e.peak_before_decode <= free * SAFETY else "DOES NOT FIT"
        print(f"\n{level:8s} {fits}: {config.describe()}")
        print("         peak {:.2f} GB in {}; ".format(e.peak_bytes / 1e9, e.where)
              + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in e.stages.items() if v)
              + f"; {e.flops_per_window_step / 1e12:.0f} TFLOP per window-step; run ~{e.seconds:.0f} s"
              + (f" on {args.devices} devices" if args.devices > 1 else ""))
    return 0


class _ProgressBar:
    """A tqdm bar fed by the pipeline's (done, total) callback; ``status()`` (the elapsed time and the
    estimate of the time left) is shown after the counts, instead of tqdm's own rate-based estimate."""

    def __init__(self, desc: str, status=None):
        from tqdm.auto import tqdm

        self._tqdm, self._bar, self.desc, self.status = tqdm, None, desc, status

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = self._tqdm(total=total, desc=self.desc, unit="win", file=sys.stderr,
                                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix}")
        if self.status is not None:
            self._bar.set_postfix_str(self.status(), refresh=False)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self._bar.close()

    def write(self, text: str) -> None:
        """A message on a line of its own above the bar (printed plainly while no bar is shown)."""
        if self._bar is not None and not self._bar.disable:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        """End the bar's line (a run that stops early: what comes next starts on a line of its own)."""
        if self._bar is not None:
            self._bar.close()


def run_generate(args) -> int:
    """``generate``: on one device, on several (``--devices``), or as one rank of a torchrun launch."""
    if not args.distributed:
        if args.dist_timeout is not None:
            raise SystemExit("error: --dist-timeout goes with --distributed")
        return _generate(args)
    if args.devices:
        raise SystemExit("error: --devices and --distributed do not mix: under torchrun each process uses the GPU of "
                         "its local rank (start one process per GPU with --nproc-per-node)")
    from .pipeline.distributed import DEFAULT_TIMEOUT_S, start_group

    timeout = DEFAULT_TIMEOUT_S if args.dist_timeout is None else args.dist_timeout
    if timeout <= 0:
        raise SystemExit("error: --dist-timeout must be a positive number of seconds")
    group = None
    try:
        group = start_group(args.device, timeout)
        if group.rank != 0:  # rank 0 speaks for the run; the others report only errors
            logging.getLogger().setLevel(logging.WARNING)
        code = _generate(args, group)
    except BaseException as exc:  # noqa: BLE001 - one line per rank, then out without waiting on the others
        code = _rank_failed(exc, group)
        import torch.distributed as dist

        if dist.is_initialized():  # never wait on peers that may be gone (process-group teardown can block)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    group.close()
    return code


def _rank_failed(exc: BaseException, group) -> int:
    """Print why this rank stops, in one line (a traceback only for unexpected errors); the exit code."""
    from .pipeline.distributed import DistributedError
    from .pipeline.preprocess import InputError
    from .video import VideoReadError
    from .weights.errors import CheckpointError

    who = group.name if group is not None else "rank " + os.environ.get("RANK", "?")
    if isinstance(exc, DistributedError):
        print(f"error: {exc}", file=sys.stderr)
        return 3
    if isinstance(exc, (CheckpointError, InputError, VideoReadError, ValueError)):
        print(f"error: {who}: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, SystemExit):
        if exc.code not in (None, 0):
            print(exc.code if isinstance(exc.code, str) else f"error: {who}: exit {exc.code}", file=sys.stderr)
        return exc.code if isinstance(exc.code, int) else 1
    if isinstance(exc, KeyboardInterrupt):
        print(f"error: {who}: interrupted", file=sys.stderr)
        return 130
    import traceback

    traceback.print_exception(exc)
    print(f"error: {who}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1


def _generate(args, group=None) -> int:
    from .pipeline import MemorySettings
    from .pipeline.preprocess import PoseFrames

    devices = _devices(args, group)
    lead = group is None or group.rank == 0  # the process that reports and writes the outputs
    reference, poses, fps = _read_inputs(args, devices[0])
    started = time.perf_counter()
    pipe, replicas = _pipelines(args, devices)
    memory = MemorySettings(offload=args.offload, cfg_mode=args.cfg_mode, decode_chunk=args.decode_chunk,
                            budget_bytes=int(args.vram_gb * 1e9) if args.vram_gb else None, keep_weights=False)
    # The pose frames at the output size, kept once as uint8; the frames as read (any size) are dropped here.
    settings = _sampling_settings(args).validated(len(poses))
    poses = PoseFrames(poses, settings.width, settings.height, settings.aspect)
    bar = _ProgressBar("sampling", lambda: pipe.stats.progress_text()) if lead else None
    say = bar.write if lead else (lambda text: None)
    checkpoints = _checkpoints(args)
    try:
        latents = pipe.sample(reference, poses, settings, memory, progress=bar, on_message=say, replicas=replicas,
                              group=group, checkpoints=checkpoints)
    finally:
        if bar is not None:
            bar.close()
    written = _decode_and_write(pipe, latents, group, lead, args, fps)
    if written is None:
        return 0
    _report(pipe, written, fps, time.perf_counter() - started, devices, group)
    if checkpoints is not None:  # the video is written: the state has served
        checkpoints.discard()
    return 0


def _devices(args, group) -> list:
    """The devices of this process, the main one first (``--device``, ``--devices`` or the rank's)."""
    from .device import resolve_device

    if group is not None:
        return [group.device]
    if args.devices:
        if args.device != "auto":
            raise SystemExit("error: give --device or --devices, not both (the first of --devices is the main one)")
        return [resolve_device(d) for d in args.devices]
    return [resolve_device(args.device)]


def _read_inputs(args, device):
    """``(reference uint8 [H, W, 3], pose frames uint8 [F, h, w, 3], fps)``: pose renders as read, or drawn
    from a driving video by DWPose."""
    from .pipeline.preprocess import round_size
    from .video import read_frames, read_image_rgb

    reference = read_image_rgb(args.ref)
    if args.poses:
        poses, source_fps = read_frames(args.poses, max_frames=args.frames)
    else:
        if not args.dwpose_dir:
            raise SystemExit("--driving-video needs --dwpose-dir (folder with yolox_l.onnx and dw-ll_ucoco_384.onnx)")
        from .pose.cli import driving_video_to_pose_frames

        poses, source_fps = driving_video_to_pose_frames(args.dwpose_dir, reference, args.driving_video,
                                                         *round_size(args.width, args.height, warn=False), ref_fit=args.aspect,
                                                         max_frames=args.frames, device=str(device),
                                                         backend=args.pose_backend)
    return reference, poses, args.fps or source_fps or 12.0


def _pipelines(args, devices):
    """The main device's pipeline and one replica per further device. One-shot run: each network's weights
    are read when it is first needed and dropped after its last use, so the process never holds more than
    the networks of the current stage."""
    import torch

    from .attention import set_attention_backend
    from .device import resolve_dtype
    from .pipeline import EnginePlacement, MusePosePipeline
    from .pipeline.parallel import replicate
    from .weights import load_models

    dtype = resolve_dtype(args.precision, devices[0])
    if devices[0].type == "cpu" and dtype == torch.float16:
        logging.warning("fp16 on the CPU is slow and some ops lack fp16 kernels; fp32 or bf16 is recommended")
    models = load_models(args.weights_dir, dtype=dtype, device="cpu", lazy=True, fp8=args.precision == "fp8")
    pipe = MusePosePipeline(models, placement=EnginePlacement(devices[0]))
    replicas = [replicate(pipe, d) for d in devices[1:]]
    for each in (pipe, *replicas):
        set_attention_backend(each.models, args.attention)
    if args.compile:
        from .models.compile import compile_unets

        for each in (pipe, *replicas):
            compile_unets(each.models, each.device)
    return pipe, replicas


def _report(pipe, written, fps: float, seconds: float, devices, group) -> None:
    """The run's last lines: what was written, where, and the time and memory it took."""
    from .device import peak_memory_report

    out, shape = written
    steps = pipe.stats.seconds_per_step
    where = (f" on {len(devices)} devices ({', '.join(map(str, devices))})" if len(devices) > 1 else
             f" on {group.world_size} ranks" if group is not None and group.world_size > 1 else "")
    print(f"wrote {out} ({shape[0]} frames, {shape[2]}x{shape[1]}, {fps:g} fps) in {seconds:.1f} s{where}")
    print(f"time per step {np.mean(steps) if steps else 0:.3f} s over {len(steps)} steps; reference "
          f"{pipe.stats.reference_seconds:.2f} s; decode {pipe.stats.decode_seconds:.2f} s; "
          f"{peak_memory_report(devices[0])}")


def _checkpoints(args):
    """``--checkpoint-dir``/``--fresh`` as the sampler's checkpoints (None without a folder)."""
    if not args.checkpoint_dir:
        if args.fresh:
            raise SystemExit("error: --fresh goes with --checkpoint-dir")
        return None
    from .pipeline.resume import Checkpoints, ResumeSettings

    return Checkpoints(ResumeSettings(directory=args.checkpoint_dir, fresh=args.fresh))


def _decode_and_write(pipe, latents, group, lead: bool, args, fps: float):
    """Decode; on the process that writes the outputs, write them: ``(mp4 path, video shape (F, H, W, 3))``
    there, None on the other ranks. One process streams (each decoded chunk goes to the writers, then is
    dropped); under torchrun rank 0 gathers the ranks' frames first."""
    from .config import VAE_DOWNSCALE

    if group is None:
        chunks = pipe.decode_chunks(latents, pipe.stats.memory[-1])
    else:
        from .pipeline.distributed import decode_shared

        video = decode_shared(pipe, latents, group, pipe.stats.memory[-1])
        chunks = [video] if lead else []
    if not lead:
        return None
    shape = (latents.shape[2], latents.shape[3] * VAE_DOWNSCALE, latents.shape[4] * VAE_DOWNSCALE, 3)
    return write_outputs(chunks, args.out, fps, args.save_array, shape), shape


def write_outputs(chunks, out: str, fps: float, save_array: str | None, shape: tuple[int, int, int, int]) -> Path:
    """Write decoded chunks (float32 ``[n, H, W, 3]`` tensors in [0, 1], in frame order) to the mp4 and, when
    asked, to the ``--save-array`` .npy, one chunk at a time: the whole video is never in memory.
    ``shape``: the whole video's ``(F, H, W, 3)`` (the .npy header is written first)."""
    import contextlib

    from .video import FrameArrayWriter, Mp4Writer

    with Mp4Writer(out, fps=fps) as video, contextlib.ExitStack() as stack:
        array = stack.enter_context(FrameArrayWriter(save_array, shape)) if save_array else None
        for chunk in chunks:
            frames = chunk.numpy()
            video.write(frames)
            if array is not None:
                array.write(frames)
    return video.path


def run_demo(args) -> int:
    bundled = find_demo_data()
    weights = bundled / "pretrained_weights"
    sample = bundled / "vector_a" / "inputs"
    print("demo: bundled TINY RANDOM weights (stand-ins, not the real MusePose): the video shows noise-like "
          "colours, not a dancing person. See README for the real weights.", file=sys.stderr)
    argv = ["generate", "--weights-dir", str(weights), "--ref", str(sample / "ref.png"), "--poses", str(sample / "pose"),
            "--width", "96", "--height", "96", "--steps", str(args.steps), "--cfg", "3.5", "--seed", "42",
            "--context-frames", "8", "--context-overlap", "4", "--precision", "fp32", "--device", "cpu",
            "--out", args.out, "--fps", "8"]
    if args.save_array:
        argv += ["--save-array", args.save_array]
    return main(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .pipeline.preprocess import InputError
    from .video import VideoReadError
    from .weights.errors import CheckpointError

    try:
        if args.command == "generate":
            return run_generate(args)
        if args.command == "demo":
            return run_demo(args)
        if args.command == "plan":
            return run_plan(args)
        if args.command == "convert":
            from .weights.convert import convert_weights

            convert_weights(args.weights_dir, args.out, args.dtype)
            return 0
        return args.func(args)
    except (CheckpointError, InputError, VideoReadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
