"""Video and image-sequence I/O through PyAV and Pillow.

The engine never touches OpenCV: PyAV decodes and encodes (h264/yuv420p), Pillow reads PNG folders.
Frames travel as uint8 numpy arrays ``[F, H, W, 3]`` (RGB) between these helpers and the pipeline.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

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


def read_video_frames(path: str | os.PathLike | BinaryIO, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a video with PyAV into uint8 RGB ``[F, H, W, 3]`` plus its frame rate.

    ``path``: a file path, or an open binary file (ComfyUI's ``VideoFromFile`` can hold its video as a
    ``BytesIO``); frames are decoded one at a time into the uint8 array, never as float.
    """
    import av

    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
        if not path.is_file():
            raise VideoReadError(f"video not found: {path}")
        source, name = str(path), str(path)
    else:
        source, name = path, "the video stream"
    try:
        with av.open(source) as container:
            if not container.streams.video:
                raise VideoReadError(f"{name} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(25, 1)
            decoded = (frame.to_ndarray(format="rgb24") for frame in container.decode(stream))
            frames = _stack(decoded, stream.frames or 0, max_frames)
    except av.error.FFmpegError as exc:
        raise VideoReadError(f"cannot decode video {name}: {exc}") from exc
    if frames is None:
        raise VideoReadError(f"video has no frames: {name}")
    return frames, float(rate)


def _stack(frames: Iterable[np.ndarray], expected: int, max_frames: int | None = None) -> np.ndarray | None:
    """Up to ``max_frames`` same-shaped uint8 frames into one ``[F, H, W, 3]`` array, filled in place (a list
    then ``np.stack`` would hold every frame twice at the peak); None when there are none.

    ``expected``: the count the source announces (0: unknown); past it the array grows by half, in place where
    the allocator can (``ndarray.resize`` reallocates; no view of it exists yet).
    """
    out, count = None, 0
    for frame in frames:
        if out is None:
            size = max(expected, 1) if max_frames is None else min(max(expected, 1), max_frames)
            out = np.empty((size, *frame.shape), dtype=np.uint8)
        elif frame.shape != out.shape[1:]:
            raise VideoReadError(f"frames of different sizes: {out.shape[1:]} then {frame.shape}")
        if count == out.shape[0]:
            grown = count + max(count // 2, 1)
            out.resize((grown if max_frames is None else min(grown, max_frames), *out.shape[1:]), refcheck=False)
        out[count] = frame
        count += 1
        if max_frames is not None and count >= max_frames:
            break
    if out is not None and count != out.shape[0]:
        out.resize((count, *out.shape[1:]), refcheck=False)
    return out


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
        try:
            return _stack(map(read_image_rgb, files), len(files)), None
        except VideoReadError as exc:
            if not str(exc).startswith("frames of different sizes"):
                raise
            shapes = {read_image_rgb(f).shape for f in files}  # every size, for the message
            raise VideoReadError(f"images in {source} have different sizes: {sorted(shapes)}") from None
    if source.suffix.lower() in IMAGE_SUFFIXES:
        return read_image_rgb(source)[None], None
    return read_video_frames(source, max_frames=max_frames)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Frames in [0, 1] (any float dtype, any shape ``[..., 3]``) -> uint8, rounded to the nearest level;
    uint8 input is returned as is. The one quantisation every writer uses."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class Mp4Writer:
    """h264/yuv420p mp4 written chunk by chunk: :meth:`write` takes ``[n, H, W, 3]`` frames (uint8 or float
    in [0, 1]) as they come, so a long video is never held whole; only the chunk in hand is converted.

    yuv420p needs even width and height, so odd sizes are padded by one edge pixel (replicated) rather
    than resized: no resampling blur, and players that require even sizes accept the file. Used as a
    context manager; when the body raises, the unfinished file is removed (never a truncated video).
    """

    def __init__(self, path: str | os.PathLike, fps: float = 12.0, crf: int = 18):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps, self.crf = fps, crf
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (width, height) of the frames given
        self._container = av.open(str(self.path), mode="w")
        self._stream = None

    def _open_stream(self, width: int, height: int) -> None:
        self.size = (width, height)
        self._stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(self.crf)}

    def write(self, frames: np.ndarray) -> None:
        """Encode ``[n, H, W, 3]`` RGB frames (every call the same H and W)."""
        import av

        frames = np.asarray(frames)
        if self._stream is None:
            self._open_stream(frames.shape[2], frames.shape[1])
        if (frames.shape[2], frames.shape[1]) != self.size:
            raise ValueError(f"Mp4Writer: frames of {frames.shape[2]}x{frames.shape[1]} after {self.size[0]}x{self.size[1]}")
        pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
        for frame in frames:
            frame = to_uint8(frame)
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                self._container.mux(packet)
            self.frames += 1

    def close(self) -> Path:
        """Flush the encoder and finish the file; its path."""
        if self._stream is None:
            self._container.close()
            self.path.unlink(missing_ok=True)
            raise ValueError("write_mp4: no frames to write")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        return self.path

    def video(self) -> "VideoFile":
        """The finished file and what it holds (after :meth:`close`)."""
        return VideoFile(self.path, self._stream.width, self._stream.height, self.frames, self.fps)

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
            return
        self._container.close()
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class VideoFile:
    """A finished video file: the engine's stand-in for ComfyUI's ``VIDEO`` (``VideoFromFile``) where ComfyUI
    is absent, with the getters video nodes call. ``width``/``height`` are the encoded (even) size."""

    path: Path
    width: int
    height: int
    frames: int
    fps: float

    def get_stream_source(self) -> str:
        return str(self.path)

    def get_dimensions(self) -> tuple[int, int]:
        return self.width, self.height

    def get_frame_count(self) -> int:
        return self.frames

    def get_frame_rate(self) -> Fraction:
        return Fraction(self.fps).limit_denominator(1001)


def write_mp4(frames: np.ndarray | Iterable[np.ndarray], path: str | os.PathLike, fps: float = 12.0,
              crf: int = 18) -> Path:
    """Encode RGB frames (an array ``[F, H, W, 3]`` or an iterable of ``[H, W, 3]`` frames, uint8 or float in
    [0, 1]) as h264/yuv420p mp4 (:class:`Mp4Writer`)."""
    with Mp4Writer(path, fps, crf) as writer:
        for frame in frames:
            writer.write(np.asarray(frame)[None])
    return writer.path


class FrameArrayWriter:
    """A float32 ``.npy`` of ``[frames, H, W, 3]`` written chunk by chunk (the CLI's ``--save-array``).

    The header (with the final shape) goes first and each chunk is appended to the file, so the array is
    never held in memory, nor mapped (a memory map's written pages would count in the resident set).
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int, int]):
        self.path, self.shape, self.written = Path(path), tuple(shape), 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")
        np.lib.format.write_array_header_1_0(self._file, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                          "fortran_order": False, "shape": self.shape})

    def write(self, frames: np.ndarray) -> None:
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        if frames.shape[1:] != self.shape[1:] or self.written + frames.shape[0] > self.shape[0]:
            raise ValueError(f"FrameArrayWriter: chunk {frames.shape} does not fit {self.shape} after {self.written} frames")
        frames.tofile(self._file)
        self.written += frames.shape[0]

    def __enter__(self) -> "FrameArrayWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self._file.close()
        if kind is None and self.written == self.shape[0]:
            return
        self.path.unlink(missing_ok=True)  # never leave a file whose header promises frames it lacks
        if kind is None:
            raise ValueError(f"FrameArrayWriter: {self.written} of {self.shape[0]} frames written")


def save_png_sequence(frames: Sequence[np.ndarray], folder: str | os.PathLike) -> list[Path]:
    """Write frames as 0000.png, 0001.png, ... (lossless, for pose renders)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        frame = to_uint8(frame)
        p = folder / f"{i:04d}.png"
        Image.fromarray(frame).save(p)
        paths.append(p)
    return paths
