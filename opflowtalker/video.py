"""Video in and out: RGB frames from any video ffmpeg reads, H.264 mp4 with muxed audio, and a
WebM copy (VP9 and Opus) for browsers that do not play H.264 (open-source Chromium, some Firefox).

Everything goes through the static ffmpeg that imageio-ffmpeg ships, so no system ffmpeg is
needed. Frames are uint8 RGB arrays of shape (H, W, 3). Writing is atomic: the mp4 appears under
its final name only once it is complete.
"""
from __future__ import annotations

import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import imageio_ffmpeg
import numpy as np
import soundfile

from .errors import OpFlowTalkerError

__all__ = [
    "VideoError",
    "VideoInfo",
    "probe",
    "frame_rate",
    "read_image",
    "iter_frames",
    "read_video",
    "resample_indices",
    "resize_frames",
    "VideoWriter",
    "write_video",
    "write_webm",
]


class VideoError(OpFlowTalkerError, ValueError):
    """A video that cannot be read or written; the message is one sentence for the user."""


def resize_frames(frames: np.ndarray, size: int, interpolation: int | None = None) -> np.ndarray:
    """(T, S, S, 3) uint8 frames at side ``size`` (returned as they are when already that size);
    ``interpolation`` an OpenCV flag, by default area-averaged down and bicubic up."""
    if frames.shape[1:3] == (size, size):
        return frames
    if interpolation is None:
        interpolation = cv2.INTER_AREA if frames.shape[1] > size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (size, size), interpolation=interpolation) for f in frames])


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    width: int
    height: int
    duration: float  # of the container: the longer of the video and audio streams
    audio_codec: str | None = None


def _open(path: str | Path) -> tuple[Iterator[bytes], dict]:
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video file not found: {path}")
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = next(reader)
    except (RuntimeError, OSError, StopIteration):
        raise VideoError(f"cannot read video {path}: ffmpeg finds no decodable video in it") from None
    if not meta.get("fps") or not meta.get("size"):
        reader.close()
        raise VideoError(f"{path} has no video stream")
    return reader, meta


def read_image(path: str | Path) -> np.ndarray:
    """A still image (png, jpg, ...) as an (H, W, 3) uint8 RGB array."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"cannot read image {path}: file not found")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError):
        raise VideoError(f"cannot read image {path}: not an image file") from None


def frame_rate(path: str | Path, shown: float) -> float:
    """The exact frame rate of the video at ``path``, whose rate ffmpeg shows as ``shown``.

    ffmpeg shows a rate to two decimals (23.98 for NTSC film's 24000/1001), and a video rewritten at
    the shown rate runs fast: a frame ahead of its own timeline every four minutes. The exact rate
    is the stream's time base over the duration of its packets (no frame is decoded); ``shown`` is
    kept when the packets give no duration, differ in it (a variable rate), or disagree with it.
    """
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(path),
               "-map", "0:v:0", "-c", "copy", "-frames:v", "16", "-f", "framecrc", "-"]
    result = subprocess.run(command, capture_output=True, text=True)
    base, durations = None, set()
    for line in result.stdout.splitlines():
        if line.startswith("#tb 0:"):
            base = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            durations.add(int(line.split(",")[3]))
    if result.returncode != 0 or base is None or len(durations) != 1 or min(durations) <= 0:
        return shown
    exact = 1 / (base * durations.pop())
    return float(exact) if abs(float(exact) - shown) < 0.01 else shown


def probe(path: str | Path) -> VideoInfo:
    """Frame rate (exact: :func:`frame_rate`), size and duration of a video (no frames are decoded)."""
    reader, meta = _open(path)
    reader.close()
    width, height = meta["size"]
    return VideoInfo(frame_rate(path, float(meta["fps"])), int(width), int(height),
                     float(meta.get("duration") or 0.0), meta.get("audio_codec"))


def resample_indices(n_src: int, src_fps: float, dst_fps: float) -> np.ndarray:
    """Source frame shown at each output frame when ``n_src`` frames at ``src_fps`` play at ``dst_fps``.

    Output frame k is the source frame on screen at time k / dst_fps (nearest-earlier frame),
    which is what ffmpeg's ``-r`` does; the duration is kept.
    """
    n_dst = max(1, int(round(n_src * dst_fps / src_fps)))
    idx = np.floor(np.arange(n_dst) * (src_fps / dst_fps) + 1e-6).astype(np.int64)
    return np.minimum(idx, n_src - 1)


def iter_frames(path: str | Path, fps: float | None = None) -> Iterator[np.ndarray]:
    """Yield RGB frames one at a time (memory stays bounded); resampled to ``fps`` if given."""
    reader, meta = _open(path)
    width, height = meta["size"]
    step = 1.0 if fps is None else frame_rate(path, float(meta["fps"])) / fps
    next_src = 0.0  # source frame index the next output frame shows
    try:
        for i, raw in enumerate(reader):
            frame = np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
            # A source frame is shown by every output frame whose time falls inside it.
            while math.floor(next_src + 1e-6) == i:
                yield frame.copy()
                next_src += step
    finally:
        reader.close()


def read_video(path: str | Path, fps: float | None = None) -> tuple[np.ndarray, float]:
    """All frames as a (N, H, W, 3) uint8 array, and their frame rate (``fps`` if resampled)."""
    info = probe(path)
    frames = list(iter_frames(path, fps))
    if not frames:
        raise VideoError(f"{path} contains no frames")
    return np.stack(frames), float(fps if fps is not None else info.fps)


AudioSource = str | Path | tuple[np.ndarray, int] | None


class VideoWriter:
    """Write frames to an H.264 mp4 (yuv420p, CRF 18, x264's ``preset``) with an optional AAC audio track.

    Use as a context manager; frames can be written one or many at a time, so a long video never
    has to be held in memory. The file is renamed into place only when the block ends without an
    exception; on error nothing is left behind.
    """

    def __init__(self, path: str | Path, fps: float, audio: AudioSource = None, crf: int = 18,
                 preset: str = "medium"):
        self.path = Path(path)
        self.fps = float(fps)
        self.audio = audio
        self.crf = crf
        self.preset = preset
        self._writer = None
        self._size: tuple[int, int] | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self.n_frames = 0

    def __enter__(self) -> "VideoWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmpdir = tempfile.TemporaryDirectory(prefix=".video-", dir=self.path.parent)
        return self

    def _audio_path(self) -> str | None:
        if self.audio is None:
            return None
        if isinstance(self.audio, tuple):
            wav, sr = self.audio
            target = os.path.join(self._tmpdir.name, "audio.wav")
            soundfile.write(target, np.asarray(wav, dtype=np.float32), int(sr), subtype="FLOAT")
            return target
        if not Path(self.audio).is_file():
            raise VideoError(f"audio file not found: {self.audio}")
        return str(self.audio)

    def _start(self, height: int, width: int) -> None:
        self._size = (width, height)
        audio_path = self._audio_path()
        # libx264 with yuv420p needs even sides: pad odd ones by a pixel rather than rescale.
        filters = ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"] if width % 2 or height % 2 else []
        self._writer = imageio_ffmpeg.write_frames(
            self._tmp_video, (width, height), fps=self.fps, codec="libx264", quality=None,
            macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-crf", str(self.crf), "-preset", self.preset, "-movflags", "+faststart", *filters],
            audio_path=audio_path, audio_codec="aac" if audio_path else None,
        )
        self._writer.send(None)

    @property
    def _tmp_video(self) -> str:
        return os.path.join(self._tmpdir.name, "video" + (self.path.suffix or ".mp4"))

    def write(self, frames: np.ndarray | Iterable[np.ndarray]) -> None:
        """Append one (H, W, 3) frame or a stack/iterable of them."""
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            frames = [frames]
        for frame in frames:
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise VideoError(f"frames must be (H, W, 3) RGB, got {frame.shape}")
            if self._writer is None:
                self._start(frame.shape[0], frame.shape[1])
            elif (frame.shape[1], frame.shape[0]) != self._size:
                raise VideoError(f"frame size {frame.shape[1]}x{frame.shape[0]} differs from {self._size}")
            self._writer.send(frame)
            self.n_frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if exc_type is None:
                if self.n_frames == 0:
                    raise VideoError(f"no frames were written to {self.path}")
                os.replace(self._tmp_video, self.path)
        finally:
            self._tmpdir.cleanup()


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, audio: AudioSource = None) -> Path:
    """Write ``frames`` to ``path`` as H.264 mp4 at ``fps``, muxing ``audio`` (a file or (wav, sr))."""
    with VideoWriter(path, fps, audio) as writer:
        writer.write(frames)
    return Path(path)



def write_webm(path: str | Path, out: str | Path | None = None, crf: int = 34) -> Path:
    """A WebM copy of the video at ``path`` (VP9 video, Opus audio when it has audio), written to
    ``out`` (by default next to it, ``.webm``) and renamed into place only once complete.

    VP9 in constant-quality mode (``-b:v 0``); ``crf`` 34 keeps a 96-256 px face sharp at a size
    close to the H.264 file's.
    """
    path = Path(path)
    probe(path)  # one clear line for a missing or undecodable file
    out = path.with_suffix(".webm") if out is None else Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".webm-", dir=out.parent) as tmp:
        target = os.path.join(tmp, "video.webm")
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(path),
                   "-map", "0:v:0", "-map", "0:a:0?", "-c:v", "libvpx-vp9", "-crf", str(crf), "-b:v", "0",
                   "-row-mt", "1", "-deadline", "good", "-cpu-used", "4", "-pix_fmt", "yuv420p",
                   "-c:a", "libopus", "-b:a", "64k", target]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not os.path.getsize(target):
            message = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise VideoError(f"cannot write a WebM copy of {path}: {message}")
        os.replace(target, out)
    return out
