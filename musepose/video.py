"""Video and image-sequence I/O through PyAV and Pillow.

The engine never touches OpenCV: PyAV decodes and encodes (h264/yuv420p), Pillow reads PNG folders.
Frames travel as uint8 numpy arrays ``[F, H, W, 3]`` (RGB) between these helpers and the pipeline.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif", ".m4v"}


class VideoReadError(ValueError):
    """A video or image folder could not be read (missing, empty or undecodable)."""


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder in natural (numeric-aware) order, so 2.png sorts before 10.png."""
    import re

    def natural_key(p: Path):
        return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]

    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=natural_key)


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """One image as uint8 RGB ``[H, W, 3]``."""
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:  # PIL raises several unrelated types for bad files
        raise VideoReadError(f"cannot read image {path}: {exc}") from exc


def read_video_frames(path: str | os.PathLike, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a video file with PyAV into uint8 RGB ``[F, H, W, 3]`` plus its frame rate."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"video not found: {path}")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(25, 1)
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.error.FFmpegError as exc:
        raise VideoReadError(f"cannot decode video {path}: {exc}") from exc
    if not frames:
        raise VideoReadError(f"video has no frames: {path}")
    return np.stack(frames), float(rate)


def read_frames(source: str | os.PathLike, max_frames: int | None = None) -> tuple[np.ndarray, float | None]:
    """Frames from an image folder, a single image or a video file: ``(uint8 [F,H,W,3], fps or None)``.

    Frames of one folder must share one size; the pipeline resizes them to the target size later.
    """
    source = Path(source)
    if source.is_dir():
        files = list_image_files(source)
        if max_frames is not None:
            files = files[:max_frames]
        if not files:
            raise VideoReadError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {source}")
        images = [read_image_rgb(f) for f in files]
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise VideoReadError(f"images in {source} have different sizes: {sorted(shapes)}")
        return np.stack(images), None
    if source.suffix.lower() in IMAGE_SUFFIXES:
        return read_image_rgb(source)[None], None
    return read_video_frames(source, max_frames=max_frames)


def write_mp4(frames: np.ndarray | Iterable[np.ndarray], path: str | os.PathLike, fps: float = 12.0,
              crf: int = 18) -> Path:
    """Encode RGB frames (uint8 or float in [0, 1]) as h264/yuv420p mp4.

    yuv420p needs even width and height, so odd sizes are padded by one edge pixel (replicated)
    rather than resized: no resampling blur, and players that require even sizes accept the file.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = list(frames) if not isinstance(frames, np.ndarray) else frames
    if len(frames) == 0:
        raise ValueError("write_mp4: no frames to write")
    first = np.asarray(frames[0])
    height, width = first.shape[:2]
    pad_h, pad_w = height % 2, width % 2
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width + pad_w, height + pad_h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            frame = np.asarray(frame)
            if frame.dtype != np.uint8:
                frame = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def save_png_sequence(frames: Sequence[np.ndarray], folder: str | os.PathLike) -> list[Path]:
    """Write frames as 0000.png, 0001.png, ... (lossless, for pose renders)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            frame = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        p = folder / f"{i:04d}.png"
        Image.fromarray(frame).save(p)
        paths.append(p)
    return paths
