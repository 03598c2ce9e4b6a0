"""``opflowtalker generate``: lip-sync any face video or photo to any speech, as Wav2Lip's inference does.

The steps, streamed in chunks so memory stays bounded whatever the length:

1. **Frames.** A photo is looped for the whole audio; a video plays at its own frame rate and, as
   in Wav2Lip, is looped when the audio is longer and cut when it is shorter. ``crop``,
   ``resize_factor`` and ``rotate`` change the frames first, as Wav2Lip's options of those names.
2. **Faces.** dlib's detector and 68 landmarks on every frame (once for ``static``, never with a
   fixed ``box``); the crop box is made exactly as the training crops were
   (:func:`opflowtalker.crops.face_boxes`: landmarks' box, ``pads``, square) and averaged over
   five frames unless ``nosmooth``. A frame with no face passes through unchanged and is counted.
3. **Generation.** Windows of the model's length: the crops with their lower halves blanked, the
   crops themselves as references (what Wav2Lip's inference passes), and the mel window of each
   frame at the video's frame rate. Our checkpoints see RGB; Wav2Lip's published ``.pth`` sees BGR.
4. **Blending.** The generated crop is resized back into the frame, and only its lower face is
   taken, through a mask that fades over several pixels at its edges, so no seam shows where the
   generated and the original pixels meet.
5. **Output.** H.264 mp4 at the frames' size and rate, with the speech muxed in; as many frames as
   the audio's mel windows, so the video lasts as long as the audio. The file appears only when
   everything succeeded.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from tqdm import tqdm

from . import audio as audio_lib
from .crops import crop_frame, face_boxes
from .video import VideoError, VideoWriter, iter_frames, probe, read_image
from .errors import OpFlowTalkerError

__all__ = ["GenerateError", "GenerateOptions", "Generator", "generate", "blend_mask", "fixed_mmap_threshold",
           "IMAGE_SUFFIXES"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# x264's preset for the output: at the same CRF (18) its fastest, which spends the bits medium's
# search would save, so the frames are as close to what was blended (or closer) in larger files, and
# encoding a 720p frame takes well under half of medium's time (``benchmarks/generate.py`` measures both).
ENCODER_PRESET = "ultrafast"


class GenerateError(OpFlowTalkerError, ValueError):
    """Input that cannot be lip-synced; one sentence for the user."""


@dataclass(frozen=True)
class GenerateOptions:
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right at a 96-px face (Wav2Lip's)
    resize_factor: int = 1  # shrink the frames by this factor first
    fps: float = 25.0  # frame rate of the output for a photo
    static: bool = False  # detect the face once (a photo, or a video whose first frame is used)
    nosmooth: bool = False  # no averaging of the face box over time
    box: tuple[int, int, int, int] | None = None  # a fixed face box: top, bottom, left, right (pixels)
    crop: tuple[int, int, int, int] = (0, -1, 0, -1)  # top, bottom, left, right of the frame; -1 = edge
    rotate: bool = False  # turn frames 90 degrees clockwise first
    # Windows per forward pass: the fastest of 1-32 for the embedded model on two cores (the paper-size
    # one runs alike at any), as `benchmarks/generate.py` measures.
    batch_size: int = 4
    chunk_frames: int = 100  # frames read, generated and written at a time
    precision: str = "fp32"  # or "bf16" (autocast; on CPUs with bf16 support it is about twice as fast)
    smooth_window: int = 5
    track: bool = True  # follow the face from frame to frame, searching the whole frame only when it is lost
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("resize_factor", "batch_size", "chunk_frames", "smooth_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GenerateError(f"{name} takes a whole number, 1 or more, got {value!r}")
        if not (isinstance(self.fps, (int, float)) and 0 < self.fps < 1000):
            raise GenerateError(f"fps takes a frame rate above 0 and under 1000 frames per second, got {self.fps!r}")
        if self.precision not in ("fp32", "bf16"):
            raise GenerateError(f"precision must be fp32 or bf16, not {self.precision!r}")
        for name in ("pads", "crop") + (("box",) if self.box is not None else ()):
            value = getattr(self, name)
            if len(value) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise GenerateError(f"{name} takes four whole numbers (top, bottom, left, right), got {value!r}")
        if min(self.pads) < 0:
            raise GenerateError(f"pads takes pixel counts of 0 or more, got {self.pads}")
        if self.box is not None:
            top, bottom, left, right = self.box
            if not (0 <= top < bottom and 0 <= left < right):
                raise GenerateError(f"box takes pixels with 0 <= top < bottom and 0 <= left < right, got {self.box}")
        top, bottom, left, right = self.crop
        if top < 0 or left < 0 or bottom < -1 or right < -1 or -1 < bottom <= top or -1 < right <= left:
            raise GenerateError(f"crop takes 0 <= top < bottom and 0 <= left < right (-1: to the edge), got {self.crop}")


def blend_mask(size: int, top: float = 0.45, feather: float = 0.08) -> np.ndarray:
    """(size, size) weights in [0, 1]: 1 over the lower face of a crop (below ``top`` of its
    height, inside the margins), falling smoothly to 0 over ``feather`` of the side at every edge."""
    mask = np.zeros((size, size), np.float32)
    margin = int(round(feather * size))
    y0 = int(round(top * size))
    mask[y0 + margin : size - margin, 2 * margin : size - 2 * margin] = 1.0
    blur = max(3, 2 * margin + 1)
    return cv2.GaussianBlur(mask, (blur, blur), margin / 1.5 if margin else 0)


class Generator:
    """A generator checkpoint ready for inference: ours (safetensors) or Wav2Lip's ``.pth``."""

    def __init__(self, checkpoint: str | Path, precision: str = "fp32", device: str | None = None):
        from .models.checkpoints import CheckpointError
        from .models.registry import load_model_checkpoint
        from .models.conv import fold_batchnorm
        from .models.generator import is_generator

        path = Path(checkpoint)
        if not path.is_file():
            raise GenerateError(f"checkpoint not found: {path}")
        try:
            model = load_model_checkpoint(path)
        except CheckpointError as error:
            raise GenerateError(str(error)) from None
        if not is_generator(model):
            raise GenerateError(f"{path} holds a {type(model).__name__}, not a generator (OpFlowTalker or Wav2Lip)")
        if precision not in ("fp32", "bf16"):
            raise GenerateError(f"precision must be fp32 or bf16, not {precision!r}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # Channels-last: the crops arrive as (H, W, 3) arrays, so the convolutions read them without a
        # transpose, and oneDNN's kernels are faster in that layout on the CPU.
        self.model = fold_batchnorm(model.to(self.device).eval()).to(memory_format=torch.channels_last)
        self.window = model.window
        self.size = model.image_size
        # Wav2Lip's published weights were trained on OpenCV's BGR frames; ours on RGB.
        self.bgr = path.suffix.lower() != ".safetensors"
        self.precision = precision

    @torch.no_grad()
    def __call__(self, crops: np.ndarray, mels: np.ndarray, batch_size: int = 4) -> np.ndarray:
        """Generated crops (N, S, S, 3) uint8 for crops (N, S, S, 3) uint8 and mel windows (N, 80, 16).

        When every crop is the same (a photo, or ``--static``) and the model can say what depends on
        its faces alone (:meth:`OpFlowTalker.encode_faces`), that is computed for one window and
        reused, so only the audio's part of the network runs per frame."""
        n, t = len(crops), self.window
        pad = (-n) % t
        if pad:  # the last window is filled with copies of the last frame
            crops = np.concatenate([crops, np.repeat(crops[-1:], pad, 0)])
            mels = np.concatenate([mels, np.repeat(mels[-1:], pad, 0)])
        frames = crops[..., ::-1] if self.bgr else crops
        windows = frames.reshape(-1, t, *frames.shape[1:])
        masked = windows.copy()
        masked[:, :, self.size // 2 :] = 0
        still = hasattr(self.model, "encode_faces") and bool((crops == crops[:1]).all())
        features = None
        out = []
        for i in range(0, len(windows), batch_size):
            faces = self._faces(masked[i : i + batch_size], windows[i : i + batch_size])
            audio = torch.from_numpy(mels.reshape(-1, t, 80, 16)[i : i + batch_size]).to(self.device).unsqueeze(2)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                if not still:
                    generated = self.model.generate(audio, faces).frames
                else:
                    if features is None:
                        features = self.model.encode_faces(faces[:1])
                    generated = self.model.generate(audio, faces, face_features=features.repeat(len(faces))).frames
            out.append((generated.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 4, 1).cpu().numpy())
        result = np.concatenate(out).reshape(-1, self.size, self.size, 3)[:n]
        return result[..., ::-1].copy() if self.bgr else result

    def _faces(self, masked: np.ndarray, windows: np.ndarray) -> torch.Tensor:
        """(B, 6, T, S, S) in [0, 1] from (B, T, S, S, 3) masked and reference crops, channels last in memory."""
        faces = np.concatenate([masked, windows], axis=-1)
        return torch.from_numpy(np.ascontiguousarray(faces)).to(self.device).permute(0, 4, 1, 2, 3).float() / 255


def _prepare_frame(frame: np.ndarray, options: GenerateOptions) -> np.ndarray:
    if options.resize_factor > 1:
        h, w = frame.shape[:2]
        frame = cv2.resize(frame, (w // options.resize_factor, h // options.resize_factor), interpolation=cv2.INTER_AREA)
    if options.rotate:
        frame = cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)
    top, bottom, left, right = options.crop
    h, w = frame.shape[:2]
    frame = frame[top : h if bottom == -1 else bottom, left : w if right == -1 else right]
    if frame.size == 0:
        raise GenerateError(f"--crop {options.crop} leaves nothing of a {w}x{h} frame")
    return np.ascontiguousarray(frame)


def _source_frames(face: Path, n_frames: int, options: GenerateOptions) -> Iterator[np.ndarray]:
    """The frame for every output frame: a photo repeated; a video looped (re-read from the start) or cut."""
    if face.suffix.lower() in IMAGE_SUFFIXES:
        try:
            image = _prepare_frame(read_image(face), options)
        except VideoError as error:
            raise GenerateError(str(error)) from None
        return (image for _ in range(n_frames))

    def frames() -> Iterator[np.ndarray]:
        produced = 0
        if options.static:
            first = _prepare_frame(next(iter_frames(face)), options)
            yield from (first for _ in range(n_frames))
            return
        while produced < n_frames:
            any_frame = False
            for frame in iter_frames(face):
                any_frame = True
                yield _prepare_frame(frame, options)
                produced += 1
                if produced == n_frames:
                    return
            if not any_frame:
                raise GenerateError(f"{face} contains no frames")

    return frames()


class _FaceTracker:
    """Boxes for a stream of frames: the face, then the training crops' geometry, then a moving
    average over ``window`` frames (centred: each box waits for the next frames before it is used).

    With ``track`` the face is searched in the whole frame once every ``research`` frames and
    followed in between: dlib's landmark regressor is fitted in the detector's box of the last
    search moved by as much as the landmarks have moved since, twice a frame (first where the face
    would be at its pace, then where that fit put it). A fit costs a few hundredths of a search of
    a 720p frame; the search every second puts the box back where the detector sees the face. A frame whose fit no longer
    looks like the searched face (correlation under ``min_likeness``: a cut, the face gone) or whose
    landmarks spread more than ``max_resize`` wider or narrower than at the search (a fit gone
    astray more often than a face coming closer) is searched whole at once.
    ``benchmarks/generate.py`` measures both ways against the known motion of a moving face.
    ``track=False`` searches every frame whole, as Wav2Lip does.
    """

    def __init__(self, options: GenerateOptions, track: bool = True, research: int = 25, min_likeness: float = 0.5,
                 max_resize: float = 0.06):
        from .landmarks import LandmarkDetector

        self.options = options
        self.detector = LandmarkDetector("dlib")
        self.static_box: np.ndarray | None = None
        self.track, self.research = track, research
        self.searched: tuple[np.ndarray, np.ndarray] | None = None  # the last search's box and landmark centre
        self.moved: np.ndarray | None = None  # that box moved with the face to the frame before
        self.velocity = np.zeros(4)  # how far it moved from the frame before that
        self.template: np.ndarray | None = None  # the face as the last search saw it (_thumbnail)
        self.min_likeness, self.max_resize = min_likeness, max_resize
        self.extent = 1.0  # the landmarks' size at the last search
        self.since_search = 0
        self.searches = 0  # frames searched whole

    def box(self, frame: np.ndarray) -> np.ndarray | None:
        o = self.options
        if o.box is not None:
            top, bottom, left, right = o.box
            return np.array([left, top, right, bottom], np.float32)
        if o.static and self.static_box is not None:
            return self.static_box
        landmarks = self._landmarks(frame)
        if landmarks is None:
            return None
        box = face_boxes(landmarks[None], frame.shape, tuple(o.pads), 1)[0]  # smoothed later, over the stream
        if o.static:
            self.static_box = box
        return box

    def _landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        if self.track and self.searched is not None and self.since_search < self.research:
            self.since_search += 1
            box, centre = self.searched
            before, self.moved = self.moved, self.moved + self.velocity  # where the face would be at its pace
            for _ in range(2):
                landmarks = self._fit(frame, self.moved)
                if landmarks is None:  # followed out of the frame
                    return self._search(frame)
                self.moved = box + np.tile(landmarks.mean(0) - centre, 2)
            self.velocity = self.moved - before
            steady = abs(_extent(landmarks) / self.extent - 1) <= self.max_resize
            if steady and _likeness(self.template, _thumbnail(frame, self.moved)) >= self.min_likeness:
                return landmarks
        return self._search(frame)

    def _fit(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The 68 landmarks fitted in ``box``, given the regressor only the part of the frame about
        the box (it reads pixels near the face alone; handing it a whole 720p frame costs a copy);
        None when the box has left the frame."""
        side = max(box[2] - box[0], box[3] - box[1])
        x0, y0 = max(0, int(box[0] - side)), max(0, int(box[1] - side))
        x1, y1 = min(frame.shape[1], int(box[2] + side) + 1), min(frame.shape[0], int(box[3] + side) + 1)
        if x1 - x0 < 8 or y1 - y0 < 8 or box[2] <= 0 or box[3] <= 0 or box[0] >= frame.shape[1] or box[1] >= frame.shape[0]:
            return None
        offset = np.array([x0, y0, x0, y0], np.float64)
        return self.detector.detect(frame[y0:y1, x0:x1], [box - offset])[0].landmarks + offset[:2]

    def _search(self, frame: np.ndarray) -> np.ndarray | None:
        self.searches += 1
        # dlib's HOG detector works on frames up to ~640 px; larger ones are searched downscaled.
        scale = min(1.0, 640.0 / max(frame.shape[:2]))
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame
        faces = self.detector.detect(small)
        if not faces:
            self.searched = None
            return None
        box = np.array(faces[0].box, np.float64) / scale
        # The landmarks fitted at full resolution in the box, as the frames that follow fit theirs.
        landmarks = self._fit(frame, box)
        if landmarks is None:
            self.searched = None
            return None
        self.searched, self.moved, self.since_search = (box, landmarks.mean(0)), box, 0
        self.velocity = np.zeros(4)
        self.template, self.extent = _thumbnail(frame, box), _extent(landmarks)
        return landmarks


def _thumbnail(frame: np.ndarray, box: np.ndarray, size: int = 24) -> np.ndarray:
    """The grey picture inside ``box`` (x0, y0, x1, y1), as much as lies in the frame, at ``size`` x ``size``."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    patch = frame[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)]
    if patch.shape[0] < 2 or patch.shape[1] < 2:
        return np.zeros((size, size))
    return cv2.resize(cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY), (size, size), interpolation=cv2.INTER_AREA).astype(np.float64)


def _extent(landmarks: np.ndarray) -> float:
    """The larger side of the landmarks' bounding box: the face's size, whatever its position."""
    return float(max(np.ptp(landmarks[:, 0]), np.ptp(landmarks[:, 1]), 1.0))


def _likeness(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two thumbnails; 0 when either is flat."""
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 1e-6 else 0.0


def _smoothed(boxes: list[np.ndarray | None], window: int) -> list[np.ndarray | None]:
    """Each found box averaged with the found boxes within ``window // 2`` frames of it."""
    half = window // 2
    out = []
    for i, box in enumerate(boxes):
        if box is None:
            out.append(None)
            continue
        near = [b for b in boxes[max(0, i - half) : i + half + 1] if b is not None]
        out.append(np.mean(near, axis=0))
    return out


def _paste(frame: np.ndarray, generated: np.ndarray, box: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``frame`` with the generated crop of ``box`` blended in through ``mask``."""
    full = int(round(box[2] - box[0]))
    bx, by = int(round(box[0])), int(round(box[1]))
    x0, y0 = max(0, bx), max(0, by)
    x1, y1 = min(frame.shape[1], bx + full), min(frame.shape[0], by + full)
    if full < 2 or x1 - x0 < 2 or y1 - y0 < 2:
        return frame
    patch = cv2.resize(generated, (full, full), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    weights = cv2.resize(mask, (full, full), interpolation=cv2.INTER_LINEAR)[..., None]
    # A box clipped by the frame's edge takes the matching part of the crop.
    inside = (slice(y0 - by, y1 - by), slice(x0 - bx, x1 - bx))
    region = frame[y0:y1, x0:x1].astype(np.float32)
    out = frame.copy()
    w = weights[inside]
    out[y0:y1, x0:x1] = np.clip(w * patch[inside] + (1 - w) * region, 0, 255).round().astype(np.uint8)
    return out


def fixed_mmap_threshold(threshold: int = 8 << 20) -> bool:
    """Have glibc's malloc serve every block of ``threshold`` bytes or more with its own mapping,
    returned to the system when freed; True if it took effect (glibc only).

    By default glibc raises that threshold each time a large block is freed, so the tensors of later
    chunks come from the heap, which fragments: the peak memory then grows with the length of the
    video for a while. Measured with ``python benchmarks/generate.py`` (embedded model, 2 threads):
    972 MB for a 4 s and 1099 MB for a 40 s video by default (+13%); 925 and 991 MB (+7%) with this
    8 MB threshold; a 1 MB threshold bounds memory a little better (+7%, 895 and 954 MB) but slows
    every model by 15-60% through page faults. The 8 MB threshold costs speed too, in page faults
    of the large activations. A later run of the same benchmark, batch norms folded, gave for the
    model alone 15.0 / 12.3 / 22.0 frames/s (Wav2Lip fp32 / paper-size OpFlowTalker fp32 / bf16)
    with it and 15.0 / 12.7 / 26.1 with ``--glibc-default``; its peak memory grew by 6% (943 to
    1002 MB) with it and by 5% (995 to 1046 MB) without, so the growth without it varies from run to
    run. The command line sets it before a run, for memory that stays bounded in every run.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(-3, int(threshold)))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def _load_speech(path: Path) -> np.ndarray:
    if not path.is_file():
        raise GenerateError(f"audio file not found: {path}")
    try:
        wav = audio_lib.load_wav(path, audio_lib.WAV2LIP.sample_rate)
    except audio_lib.AudioError as error:
        raise GenerateError(str(error)) from None
    if wav.size == 0 or not np.any(wav):
        raise GenerateError(f"{path} has no audio samples (or only silence)")
    return wav


def generate(face: str | Path, speech: str | Path, checkpoint: str | Path, outfile: str | Path,
             options: GenerateOptions = GenerateOptions()) -> dict:
    """Lip-sync ``face`` (video or photo) to ``speech`` (audio, or a video's sound track) with the
    generator in ``checkpoint``; write ``outfile`` (mp4). Returns a summary of what was done."""
    face, speech, outfile = Path(face), Path(speech), Path(outfile)
    if not face.is_file():
        raise GenerateError(f"face file not found: {face}")
    if outfile.suffix.lower() != ".mp4":
        raise GenerateError(f"the output is an mp4 video; {outfile} does not end in .mp4")
    if face.suffix.lower() in IMAGE_SUFFIXES:
        options = dataclasses.replace(options, static=True)  # one photo: one detection
    start = time.perf_counter()
    wav = _load_speech(speech)
    generator = Generator(checkpoint, options.precision)
    mel = audio_lib.melspectrogram(wav)
    # Frame rate first: a video keeps its own, a photo takes options.fps.
    fps = float(options.fps) if face.suffix.lower() in IMAGE_SUFFIXES else probe_fps(face)
    try:
        n_frames = audio_lib.num_video_frames(mel, fps)
    except audio_lib.AudioError as error:
        raise GenerateError(str(error)) from None
    frames = _source_frames(face, n_frames, options)
    tracker = _FaceTracker(options, options.track)
    mask = blend_mask(generator.size)
    found = passed = 0
    progress = tqdm(total=n_frames, unit="frame", file=sys.stderr, disable=not options.progress, desc="generate")
    pending: deque = deque()  # frames read and detected, waiting for their smoothing neighbours
    half = 0 if options.nosmooth else options.smooth_window // 2

    # One chunk is generated, blended and written by a second thread while this one reads and follows
    # the faces of the next: the model's operators, OpenCV and the pipes to ffmpeg let go of Python's
    # lock, dlib's fits do not, so the two overlap on two cores. Chunks are written in order.
    with (VideoWriter(outfile, fps, audio=(wav, audio_lib.WAV2LIP.sample_rate), preset=ENCODER_PRESET) as writer,
          ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate") as worker):
        index = 0
        window_boxes: list = []
        in_flight = None

        def collect() -> None:
            nonlocal found, passed
            f_, p_, n_ = in_flight.result()
            found, passed = found + f_, passed + p_
            progress.update(n_)

        for frame in frames:
            pending.append((index, frame, tracker.box(frame)))
            index += 1
            if len(pending) >= options.chunk_frames + 2 * half or index == n_frames:
                last = index == n_frames
                items = list(pending)
                boxes = _smoothed(window_boxes + [b for _, _, b in items], 2 * half + 1)[len(window_boxes):]
                ready = len(items) if last else len(items) - half
                chunk = [(i, f, b) for (i, f, _), b in zip(items[:ready], boxes[:ready])]
                if in_flight is not None:
                    collect()
                in_flight = worker.submit(_generate_chunk, writer, generator, chunk, mel, fps, mask, options)
                # Keep the boxes of this chunk's end as the left context of the next chunk's smoothing.
                window_boxes = [b for _, _, b in items[max(0, ready - half) : ready]]
                for _ in range(ready):
                    pending.popleft()
        if in_flight is not None:
            collect()
        if found == 0:
            raise GenerateError(f"no face found in any frame of {face}")
    progress.close()
    seconds = time.perf_counter() - start
    return {"frames": n_frames, "faces": found, "passed_through": passed, "fps": fps,
            "seconds": seconds, "frames_per_second": n_frames / seconds, "outfile": str(outfile)}


def probe_fps(face: Path) -> float:
    try:
        return probe(face).fps
    except VideoError as error:
        raise GenerateError(str(error)) from None


def _generate_chunk(writer: VideoWriter, generator: Generator, chunk, mel: np.ndarray, fps: float,
                    mask: np.ndarray, options: GenerateOptions) -> tuple[int, int, int]:
    """Generate, blend and write ``chunk`` ((index, frame, box or None) in order); returns the frames
    with a face, the frames passed through and the frames written."""
    with_face = [(i, f, b) for i, f, b in chunk if b is not None]
    outputs = {}
    if with_face:
        crops = np.stack([crop_frame(f, b, generator.size) for _, f, b in with_face])
        mels = np.stack([audio_lib.mel_window(mel, i, fps) for i, _, _ in with_face]).astype(np.float32)
        generated = generator(crops, mels, options.batch_size)
        for (i, f, b), g in zip(with_face, generated):
            outputs[i] = _paste(f, g, b, mask)
    writer.write([outputs.get(i, f) for i, f, _ in chunk])  # one at a time: no stacked copy of the frames
    return len(with_face), len(chunk) - len(with_face), len(chunk)

