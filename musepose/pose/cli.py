"""``poses`` sub-commands of the MusePose Express CLI (``python -m musepose poses ...``).

``poses extract`` writes POSE_KEYPOINT JSON (one entry per frame, absolute pixels);
``poses align`` writes aligned MusePose pose renders (PNG folder or mp4). The lead's main CLI calls
:func:`add_pose_subcommands`; :func:`main` runs the same parser on its own (tests, ``python -m
musepose.pose.cli``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ..video import read_frames, read_image_rgb, save_png_sequence, write_mp4
from .driving import DEFAULT_FPS, align_and_render, driving_video_to_pose_frames, extractor_for_dir  # noqa: F401
from .frames import FrameSelection
from .keypoint_io import frames_to_pose_keypoint, pose_keypoint_to_frames
from ..options import add_cli_argument, setting_with


def _align_frame_arg(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("align frame must be 'auto' or a frame index") from None


def _add_selection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start-frame", type=int, default=0, help="first frame to use (default 0)")
    p.add_argument("--every-nth", type=int, default=1, help="keep one frame out of n (default 1 = all)")
    p.add_argument("--max-frames", type=int, default=0, help="at most this many frames (default 0 = all)")
    p.add_argument("--device", default="auto",
                   help="where DWPose runs: auto (a GPU when torch sees one), cpu, cuda, cuda:1, mps ...")
    add_cli_argument(p, "pose_backend")


def _progress(done: int, total: int) -> None:
    print(f"\rposes: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def cmd_extract(args: argparse.Namespace) -> int:
    sel = FrameSelection(args.start_frame, args.every_nth, args.max_frames)
    frames, fps = read_frames(args.input, max_frames=sel.frames_needed())
    idx = sel.report(len(frames), fps)
    if not idx:
        raise SystemExit(f"frame selection leaves none of the {len(frames)} frames of {args.input}")
    extractor = extractor_for_dir(args.dwpose_dir, device=args.device, backend=args.pose_backend)
    print(f"pose: {extractor.runtime.describe()}", file=sys.stderr)
    poses = extractor.extract((frames[i] for i in idx), progress=None if args.quiet else _progress, total=len(idx))
    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(frames_to_pose_keypoint(poses)))
    fps_txt = f", {sel.fps(fps):.4g} fps" if fps else ""
    print(f"wrote {len(poses)} frame(s){fps_txt} -> {out}")
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    options = dict(start_frame=args.start_frame, every_nth=args.every_nth, max_frames=args.max_frames,
                   align_frame=args.align_frame, person=args.person, ref_fit=args.ref_fit,
                   smooth=args.smooth, draw_hands=not args.no_hands, draw_face=args.draw_face)
    ref = read_image_rgb(args.ref)
    progress = None if args.quiet else _progress
    if args.driving_video:
        renders, fps = driving_video_to_pose_frames(args.dwpose_dir, ref, args.driving_video, args.width,
                                                    args.height, progress=progress,
                                                    default_fps=args.fps or DEFAULT_FPS, device=args.device,
                                                    backend=args.pose_backend, **options)
    else:
        sel = FrameSelection(args.start_frame, args.every_nth, args.max_frames)
        data = json.loads(Path(args.driving_json).read_text())
        driving_all = pose_keypoint_to_frames(data)
        driving = [driving_all[i] for i in sel.report(len(driving_all), args.fps or DEFAULT_FPS)]
        if not driving:
            raise SystemExit("frame selection leaves no frames of the driving JSON")
        fps = sel.fps(args.fps or DEFAULT_FPS)
        extractor = extractor_for_dir(args.dwpose_dir, device=args.device, backend=args.pose_backend)
        reference = extractor.extract([ref], report_missing=False)[0]
        for k in ("start_frame", "every_nth", "max_frames"):
            options.pop(k)
        renders, _ = align_and_render(reference, driving, args.width, args.height, fps, **options)
    out = Path(args.out)
    if out.suffix.lower() in (".mp4", ".mov", ".mkv"):
        write_mp4(renders, out, fps=fps)
    else:
        save_png_sequence(renders, out)
    print(f"wrote {len(renders)} aligned pose frame(s) at {args.width}x{args.height}, {fps:.4g} fps -> {out}")
    return 0


def add_pose_subcommands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``poses extract`` and ``poses align``; each parser sets ``func(args) -> int``."""
    poses = subparsers.add_parser("poses", help="DWPose extraction and MusePose pose alignment")
    sub = poses.add_subparsers(dest="poses_command", required=True)

    ex = sub.add_parser("extract", help="detect whole-body poses, write POSE_KEYPOINT JSON")
    ex.add_argument("--dwpose-dir", required=True, help="folder with yolox_l.onnx and dw-ll_ucoco_384.onnx")
    ex.add_argument("--input", required=True, help="image, video file or folder of images")
    ex.add_argument("--out-json", required=True, help="output JSON: list with one POSE_KEYPOINT dict per frame")
    _add_selection_args(ex)
    ex.add_argument("--quiet", action="store_true", help="no progress output")
    ex.set_defaults(func=cmd_extract)

    al = sub.add_parser("align", help="align a driving pose sequence to a reference image, write renders")
    al.add_argument("--dwpose-dir", required=True, help="folder with yolox_l.onnx and dw-ll_ucoco_384.onnx")
    al.add_argument("--ref", required=True, help="reference image")
    src = al.add_mutually_exclusive_group(required=True)
    src.add_argument("--driving-video", help="driving video (or image folder)")
    src.add_argument("--driving-json", help="driving POSE_KEYPOINT JSON (from poses extract or controlnet_aux)")
    add_cli_argument(al, "width", required=True)
    add_cli_argument(al, "height", required=True)
    al.add_argument("--out", required=True, help="output folder (PNG sequence) or .mp4 file")
    al.add_argument("--align-frame", type=_align_frame_arg, default="auto",
                    help="driving frame used to measure proportions, or 'auto' (default)")
    add_cli_argument(al, "person")
    # the aspect fit, under the name the Pose Align node's widget has (saved workflows keep it)
    add_cli_argument(al, "aspect", setting_with("aspect", flags=("--ref-fit", "--aspect")), dest="ref_fit")
    al.add_argument("--smooth", action="store_true", help="One-Euro temporal smoothing of the keypoints")
    al.add_argument("--no-hands", action="store_true", help="do not draw hands")
    al.add_argument("--draw-face", action="store_true", help="draw face points (MusePose never did)")
    al.add_argument("--fps", type=float, default=0.0,
                    help="frame rate of the input when it has none (JSON, image folder); default 25")
    _add_selection_args(al)
    al.add_argument("--quiet", action="store_true", help="no progress output")
    al.set_defaults(func=cmd_align)
    return poses


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``main(["poses", "extract", ...])``."""
    parser = argparse.ArgumentParser(prog="musepose", description="MusePose Express pose tools")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_pose_subcommands(subparsers)
    args = parser.parse_args(list(argv) if argv is not None else None)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # python -m musepose.pose.cli poses ...
    sys.exit(main())
