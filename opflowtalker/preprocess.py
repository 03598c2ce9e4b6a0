"""Preprocessing for any source: face crops, crop-space optical flow, landmarks and mel per clip.

Every clip of a dataset split becomes one ``<out>/<speaker>/<clip>.npz`` holding

* ``faces`` (T, S, S, 3) uint8: Wav2Lip-style face crops (S = 96 by default);
* ``boxes`` (T, 4) float32: each crop's square (x0, y0, x1, y1) in source-frame pixels;
* ``landmarks`` (T, 68, 2) float32 in crop pixels, and ``face_found`` (T,) bool;
* ``mel`` (80, M) float32: Wav2Lip's mel spectrogram of the clip's audio, M = 1 + 3.2 T at 25 fps;
* ``flow`` (T-1, S, S, 2) float16 and ``valid`` (T-1, S, S) bool: optical flow between
  consecutive crops in crop pixels, ``flow[t]`` moving pixel u of crop t to its place in crop t+1;
* ``fps`` and ``flow_source`` ("exact" for the embedded corpus, "dis" for real video).

The face box and the crops' coordinates are :mod:`opflowtalker.crops`'s (Wav2Lip's padded box,
made square and smoothed over time).

The corpus stores exact frame flow next to each video; real videos (LRS2, HDTF) have none, so
their flow is estimated with OpenCV's DIS on the crops and kept only where the forward and
backward estimates agree.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import audio, video
from .datasets import Clip, read_dataset
from .files import remove_stale_temporaries, write_npz_atomic, write_text_atomic
from .crops import crop_flow, crop_frame, crop_landmarks, face_boxes
from .flow.classical import forward_backward_valid
from .landmarks import LandmarkDetector
from .progress import progress
from .workers import worker_pool
from .errors import OpFlowTalkerError

__all__ = [
    "PreprocessError",
    "NoFaceError",
    "PreprocessParams",
    "dis_flow",
    "preprocess_clip",
    "preprocess_dataset",
]

log = logging.getLogger(__name__)

# Forward-backward disagreement (px) above which an estimated flow vector is not trusted.
FB_TOLERANCE = 0.5
# Exact flow is stored rounded to 1/64 px: exact in float16, and it compresses far better.
FLOW_QUANTUM = 64.0

LANDMARK_BACKENDS = ("dlib", "face_alignment", "auto")
FLOW_ESTIMATORS = ("dis",)


class PreprocessError(OpFlowTalkerError, ValueError):
    """Input the preprocessing cannot use; the message is one sentence for the user."""


class NoFaceError(PreprocessError):
    """A clip in which no frame shows a face."""


@dataclass(frozen=True)
class PreprocessParams:
    """params.yaml's ``preprocess`` group."""

    size: int
    """Side of the square face crops (96 as in Wav2Lip; 256 for high-resolution models)."""
    pads: tuple[int, int, int, int]
    """Wav2Lip's (top, bottom, left, right) pads in pixels for a face 96 px wide; scaled with the face."""
    smooth: int
    """Frames averaged per box (Wav2Lip's ``get_smoothened_boxes`` window); 1 turns smoothing off."""
    landmark_backend: str
    """Landmarks for videos without stored ones: dlib, face_alignment or auto."""
    flow_estimator: str
    """Flow for videos without stored exact flow."""
    fps: float
    """Frame rate the crops are taken at; real videos at another rate are resampled to it."""
    workers: int
    """Processes preprocessing a dataset's clips side by side."""

    def __post_init__(self):
        object.__setattr__(self, "pads", tuple(int(p) for p in self.pads))
        if len(self.pads) != 4 or min(self.pads) < 0:
            raise PreprocessError(
                f"pads must be four non-negative pixel counts (top, bottom, left, right), not {self.pads}")
        if not 16 <= int(self.size) <= 1024:
            raise PreprocessError(f"crop size must be between 16 and 1024 pixels, not {self.size}")
        if int(self.smooth) < 1:
            raise PreprocessError(f"the smoothing window must be at least one frame, not {self.smooth}")
        if self.landmark_backend not in LANDMARK_BACKENDS:
            raise PreprocessError(f"unknown landmark backend {self.landmark_backend!r};"
                                  f" choose one of {', '.join(LANDMARK_BACKENDS)}")
        if self.flow_estimator not in FLOW_ESTIMATORS:
            raise PreprocessError(f"unknown flow estimator {self.flow_estimator!r};"
                                  f" choose one of {', '.join(FLOW_ESTIMATORS)}")
        if not self.fps > 0:
            raise PreprocessError(f"fps must be positive, not {self.fps}")
        if int(self.workers) < 1:
            raise PreprocessError(f"workers must be at least 1, not {self.workers}")


def dis_flow(crop: np.ndarray, next_crop: np.ndarray, dis=None) -> tuple[np.ndarray, np.ndarray]:
    """DIS flow from ``crop`` to ``next_crop`` (RGB or grey) and its forward-backward validity.

    A vector is valid when the backward flow at its target brings it back within
    ``FB_TOLERANCE`` px (occlusions and mismatches fail this) and the target is inside the crop.
    """
    if dis is None:
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    a, b = (cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) if c.ndim == 3 else c for c in (crop, next_crop))
    forward = dis.calc(a, b, None)
    ok = forward_backward_valid(forward, dis.calc(b, a, None), FB_TOLERANCE)
    return forward, ok


# ---------------------------------------------------------------- one clip


def _exact_flow_path(clip: Clip) -> Path:
    return Path(clip.video).with_suffix(".npz")


def _stored(clip: Clip, fps: float) -> dict[str, np.ndarray]:
    path = _exact_flow_path(clip)
    try:
        with np.load(path) as data:
            stored = {k: data[k] for k in ("landmarks", "flow", "valid")}
    except (OSError, ValueError, KeyError) as err:
        raise PreprocessError(f"cannot read exact landmarks and flow from {path}: {err}") from None
    source_fps = video.probe(clip.video).fps
    if abs(source_fps - fps) > 1e-3:
        raise PreprocessError(
            f"{clip.video} runs at {source_fps:g} fps; its exact flow cannot be resampled to {fps:g} fps")
    n = len(stored["landmarks"])
    if stored["flow"].shape[0] != n - 1 or stored["valid"].shape[0] != n - 1:
        raise PreprocessError(f"{path} holds {n} landmark frames but {stored['flow'].shape[0]} flow fields")
    return stored


def _detect_landmarks(clip: Clip, params: PreprocessParams) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks of the largest face per frame, and which frames had one; a frame without a face
    takes the nearest earlier face (the first face, for frames before it)."""
    detector = _detector(params.landmark_backend)
    found: list[np.ndarray | None] = []
    for frame in video.iter_frames(clip.video, params.fps):
        faces = detector.detect(frame)
        found.append(faces[0].landmarks if faces else None)
    hits = np.array([lm is not None for lm in found], dtype=bool)
    if not hits.any():
        raise NoFaceError(f"no face found in any of the {len(found)} frames of {clip.video}")
    first = found[int(np.argmax(hits))]
    landmarks, last = [], first
    for lm in found:
        last = lm if lm is not None else last
        landmarks.append(last)
    return np.stack(landmarks).astype(np.float32), hits


_DETECTORS: dict[str, LandmarkDetector] = {}


def _detector(backend: str) -> LandmarkDetector:
    # Loading the models takes longer than detecting in a short clip: keep one per process.
    if backend not in _DETECTORS:
        _DETECTORS[backend] = LandmarkDetector(backend)
    return _DETECTORS[backend]


def _clip_mel(clip: Clip, n_frames: int, fps: float) -> np.ndarray:
    """The mel of the audio over exactly the video's span, so that every frame has its window.

    Containers rarely hold audio and video of equal length (encoder priming, the renderer's
    rounding to whole frames): the waveform is cut or padded with silence to T / fps seconds.
    """
    wav = audio.load_wav(clip.video)
    n_samples = int(round(n_frames / fps * audio.WAV2LIP.sample_rate))
    wav = np.pad(wav[:n_samples], (0, max(0, n_samples - len(wav))))
    return audio.melspectrogram(wav)


def preprocess_clip(clip: Clip, params: PreprocessParams) -> dict[str, np.ndarray]:
    """Crops, boxes, crop landmarks, mel and crop-space flow of one clip (the npz's arrays).

    Uses the exact landmarks and flow stored beside a corpus video (``<clip>.npz``), else detects
    landmarks per frame and estimates flow with DIS. Raises :class:`NoFaceError` when no frame
    shows a face, :class:`PreprocessError` for anything else it cannot use.
    """
    if not Path(clip.video).is_file():
        raise PreprocessError(f"video file not found: {clip.video}")
    size = int(params.size)
    exact = _exact_flow_path(clip).is_file()
    if exact:
        stored = _stored(clip, params.fps)
        frame_landmarks, found = stored["landmarks"].astype(np.float32), np.ones(len(stored["landmarks"]), bool)
        frames = video.iter_frames(clip.video)
    else:
        frame_landmarks, found = _detect_landmarks(clip, params)
        frames = video.iter_frames(clip.video, params.fps)
    n = len(frame_landmarks)

    boxes = faces = flow = valid = None
    dis = None if exact else cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    t = -1
    for t, frame in enumerate(frames):
        if t >= n:
            raise PreprocessError(f"{clip.video} has more frames than the {n} its landmarks cover")
        if boxes is None:
            boxes = face_boxes(frame_landmarks, frame.shape, params.pads, params.smooth)
            faces = np.empty((n, size, size, 3), np.uint8)
            flow = np.zeros((max(n - 1, 0), size, size, 2), np.float16)
            valid = np.zeros((max(n - 1, 0), size, size), bool)
        faces[t] = crop_frame(frame, boxes[t], size)
        if t == 0:
            continue
        if exact:
            f, ok = crop_flow(stored["flow"][t - 1], stored["valid"][t - 1], boxes[t - 1], boxes[t], size)
        else:
            f, ok = dis_flow(faces[t - 1], faces[t], dis)
        flow[t - 1] = np.round(f * FLOW_QUANTUM) / FLOW_QUANTUM
        valid[t - 1] = ok
    if t + 1 != n:
        raise PreprocessError(f"{clip.video} has {t + 1} frames but its landmarks cover {n}")
    if n < 2:
        raise PreprocessError(f"{clip.video} has a single frame; flow needs at least two")

    return {
        "faces": faces,
        "boxes": boxes,
        "landmarks": crop_landmarks(frame_landmarks, boxes, size),
        "face_found": found,
        "mel": _clip_mel(clip, n, params.fps),
        "flow": flow,
        "valid": valid,
        "fps": np.float32(params.fps),
        "flow_source": np.str_("exact" if exact else "dis"),
    }


# ---------------------------------------------------------------- a dataset


def _is_done(clip: Clip, out_path: Path) -> bool:
    return out_path.is_file() and out_path.stat().st_mtime_ns >= Path(clip.video).stat().st_mtime_ns


def _run_clip(job: tuple[Clip, PreprocessParams, str]) -> dict:
    clip, params, out_path = job
    start = time.perf_counter()
    try:
        arrays = preprocess_clip(clip, params)
    except NoFaceError as why:
        return {"status": "no_face", "why": str(why), "frames": 0, "not_found": 0}
    write_npz_atomic(Path(out_path), arrays)
    return {"status": "written", "frames": len(arrays["faces"]),
            "not_found": int((~arrays["face_found"]).sum()), "seconds": time.perf_counter() - start}


def _init_worker() -> None:
    # Two processes on two cores: OpenCV's own threads would only contend with each other.
    cv2.setNumThreads(1)


def preprocess_dataset(kind: str, root: str | Path, out: str | Path, params: PreprocessParams,
                       splits=("train", "val", "test")) -> dict:
    """Preprocess every clip of ``splits`` of dataset ``kind`` at ``root`` into ``out``, in
    ``params.workers`` processes.

    Writes ``<out>/<speaker>/<clip>.npz`` per clip and ``<out>/<split>.txt`` listing the clips
    that have one. A clip whose npz is at least as new as its video is not redone; a clip with no
    face in any frame is left out with a one-line warning. Returns counts per split (``clips``
    listed, ``written``, ``skipped`` as already done, ``no_face``), the ``frames`` and
    ``faces_not_found`` (frames that reused a neighbour's face) of the clips written, and
    ``seconds``.
    """
    start = time.perf_counter()
    out = Path(out)
    workers = int(params.workers)
    clips = {split: read_dataset(kind, root, split) for split in splits}
    remove_stale_temporaries(out)  # what a killed run was writing; its finished clips stay
    jobs, summary = [], {"splits": {}, "frames": 0, "faces_not_found": 0}
    for split, split_clips in clips.items():
        counts = summary["splits"][split] = {"clips": 0, "written": 0, "skipped": 0, "no_face": 0}
        for clip in split_clips:
            path = out / clip.speaker / f"{clip.name}.npz"
            if _is_done(clip, path):
                counts["skipped"] += 1
            else:
                jobs.append((clip, params, str(path)))

    if workers > 1 and len(jobs) > 1:
        with worker_pool(min(workers, len(jobs)), _init_worker) as pool:
            results = list(progress(pool.map(_run_clip, jobs), total=len(jobs), desc="preprocess", unit="clip"))
    else:
        results = [_run_clip(job) for job in progress(jobs, desc="preprocess", unit="clip")]

    dropped = set()
    for (clip, _, _), result in zip(jobs, results):
        counts = summary["splits"][clip.split]
        if result["status"] == "no_face":
            log.warning("skipping %s: %s", clip.key, result["why"])
            counts["no_face"] += 1
            dropped.add((clip.split, clip.key))
            continue
        counts["written"] += 1
        summary["frames"] += result["frames"]
        summary["faces_not_found"] += result["not_found"]

    for split, split_clips in clips.items():
        keys = [c.key for c in split_clips if (split, c.key) not in dropped]
        summary["splits"][split]["clips"] = len(keys)
        write_text_atomic(out / f"{split}.txt", "".join(k + "\n" for k in keys))
    summary["seconds"] = time.perf_counter() - start
    return summary

