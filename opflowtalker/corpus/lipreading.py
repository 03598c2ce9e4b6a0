"""A lip-reading corpus: many more training sentences, as mouth crops and shapes only, for the lip reader.

The lip reader must tell 25 letters and 10 digits apart on a face it never saw; the talking-face
corpus gives it about 250 training sentences (ten examples of a letter) on three faces, which it
learns by heart. This corpus says many more sentences with the training identities and with further
faces that the talking-face corpus does not use (``data/external/lipreading_faces``: portraits with
parted lips, a smile, a painting), each with voices of its own, rendered by the same renderer, encoded and decoded as H.264 like every corpus video, cropped to faces as
:func:`~opflowtalker.preprocess.preprocess_clip` crops them and reduced to what either kind of lip
reader reads (:func:`~opflowtalker.models.lipreader.lip_inputs`): the mouth crops, and the mouth
shapes from the landmarks dlib finds on the face crops. It keeps no flow, no audio and no face
crops: only what lip reading needs, a few kB a clip.

Its sentences are training sentences by the corpus's own rule (:func:`~.sentences.split_of`) and
none of them is a sentence of the talking-face corpus, so the validation and test sentences stay
unseen, and the held-out identity never appears (it is refused as a lip-reading identity). One file holds it all (``lipreading.npz``):

    crops        (N_frames, h, w) uint8, every clip's crops one after another
    shapes       (N_frames, 20, 2) float32, every clip's mouth shapes, in the same order
    lengths      (N_clips,) frames per clip
    transcripts  (N_clips,) str, upper case
    keys         (N_clips,) str, ``<identity>/<clip>``
    crop         str, JSON of the crop settings the crops were made with
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import write_npz_atomic
from ..progress import progress
from ..workers import worker_pool
from ..video import iter_frames, write_video
from .build import ClipSpec, CorpusParams, plan_corpus, portrait_file
from .render import RenderConfig, build_rig, load_portrait, render
from .sentences import Sentence, sample_sentences, split_of
from .speech import SAMPLE_RATE, get_voice, synthesize
from .viseme import viseme_tracks
from ..errors import OpFlowTalkerError

__all__ = ["LipReadingCorpusParams", "CropSettings", "plan_lipreading", "lipreading_crops",
           "build_lipreading_corpus", "read_lipreading_corpus", "LipReadingCorpusError"]


class LipReadingCorpusError(OpFlowTalkerError, ValueError):
    """The lip-reading corpus cannot be built or read as asked."""


@dataclass(frozen=True)
class LipReadingCorpusParams:
    """params.yaml's ``lipreading_corpus`` group."""

    n_sentences: int
    """Sentences drawn before keeping training ones only; 0 builds an empty corpus."""
    seed: int
    faces: str
    identities: dict[str, list[str]]
    """Faces beyond the corpus's training identities (portraits in ``faces``) -> the voices they may speak with."""
    workers: int

    def __post_init__(self) -> None:
        if self.n_sentences < 0 or self.workers < 1:
            raise LipReadingCorpusError(f"need n_sentences >= 0 and workers >= 1, not {self.n_sentences} "
                                        f"and {self.workers}")
        if any(not voices for voices in self.identities.values()):
            raise LipReadingCorpusError("every lip-reading identity needs at least one voice")


@dataclass(frozen=True)
class CropSettings:
    """How a clip becomes the lip reader's crops: the face crop of preprocessing, then the mouth."""

    face_size: int = 96
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)
    smooth: int = 5
    crop_height: int = 32
    crop_width: int = 48
    crop_scale: float = 1.1
    crop_sigma: float | None = None

    def mouth(self) -> dict:
        return {"crop_height": self.crop_height, "crop_width": self.crop_width, "crop_scale": self.crop_scale,
                "crop_sigma": self.crop_sigma}


def plan_lipreading(corpus: CorpusParams, params: LipReadingCorpusParams) -> list[ClipSpec]:
    """The clips to render: training sentences not in the corpus, on the training identities."""
    if params.n_sentences == 0:
        return []
    taken = {spec.sentence for spec in plan_corpus(corpus)}
    voices_of = {**{i: v for i, v in corpus.identities.items() if i != corpus.test_identity}, **params.identities}
    if corpus.test_identity in params.identities:
        raise LipReadingCorpusError(f"the held-out identity {corpus.test_identity!r} cannot train the lip reader")
    train_ids = list(voices_of)
    rng = np.random.default_rng(params.seed)
    specs, seen = [], set()
    for k, sentence in enumerate(sample_sentences(params.n_sentences, seed=params.seed)):
        if split_of(sentence) != "train" or sentence.text in taken or sentence.text in seen:
            continue
        seen.add(sentence.text)
        identity = train_ids[rng.integers(len(train_ids))]
        voices = voices_of[identity]
        voice = voices[rng.integers(len(voices))]
        specs.append(ClipSpec(identity, f"lr{k:05d}", "train", sentence.text, voice, int(rng.integers(2**31))))
    return specs


_RIGS: dict[tuple[str, int], object] = {}


def _rig(corpus: CorpusParams, params: LipReadingCorpusParams, identity: str):
    # Fitting a rig to a photo (face detection included) costs more than rendering a clip.
    key = (identity, corpus.size)
    if key not in _RIGS:
        faces = params.faces if identity in params.identities else corpus.faces
        portrait = load_portrait(str(portrait_file(faces, identity)), pick="largest")
        _RIGS[key] = build_rig(portrait, RenderConfig(size=corpus.size, fps=corpus.fps))
    return _RIGS[key]


def lipreading_crops(spec: ClipSpec, corpus: CorpusParams, crop: CropSettings,
                     params: LipReadingCorpusParams) -> tuple[np.ndarray, np.ndarray]:
    """One clip's mouth crops (T, h, w) uint8 and mouth shapes (T, 20, 2) float32: rendered,
    through H.264, face-cropped, then mouth-cropped and measured as a lip reader does."""
    from ..models.lipreader import LipReaderConfig, lip_inputs
    from ..models.mouths import mouth_crops
    from ..crops import crop_frame, crop_landmarks, face_boxes

    wav, phones = synthesize(Sentence.from_text(spec.sentence).spoken, get_voice(spec.voice), seed=spec.seed)
    n_frames = max(2, int(round(len(wav) / SAMPLE_RATE * corpus.fps)))
    tracks = viseme_tracks([tuple(p) for p in phones], n_frames, fps=corpus.fps)
    clip = render(_rig(corpus, params, spec.identity), tracks, seed=spec.seed)
    with tempfile.TemporaryDirectory(prefix=".lipreading-") as tmp:
        path = write_video(Path(tmp) / "clip.mp4", clip.frames, corpus.fps)
        frames = np.stack(list(iter_frames(path)))
    if len(frames) != len(clip.landmarks):
        raise LipReadingCorpusError(f"{spec.key}: {len(frames)} decoded frames for {len(clip.landmarks)} rendered")
    boxes = face_boxes(clip.landmarks, frames.shape[1:3], crop.pads, crop.smooth)
    faces = np.stack([crop_frame(f, b, crop.face_size) for f, b in zip(frames, boxes)])
    landmarks = crop_landmarks(clip.landmarks, boxes, crop.face_size)
    crops = mouth_crops(faces, landmarks, size=(crop.crop_height, crop.crop_width), width_scale=crop.crop_scale,
                        sigma=crop.crop_sigma)
    shapes = lip_inputs(LipReaderConfig(inputs="landmarks"), faces, landmarks)
    return np.round(crops * 255).astype(np.uint8), shapes


def _crops_of(job: tuple[ClipSpec, CorpusParams, CropSettings, LipReadingCorpusParams]) -> tuple[np.ndarray, np.ndarray]:
    return lipreading_crops(*job)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def build_lipreading_corpus(out: str | Path, corpus: CorpusParams, params: LipReadingCorpusParams,
                            crop: CropSettings) -> dict:
    """Render the lip-reading corpus into ``out`` (one npz, written atomically); returns a summary."""
    start = time.perf_counter()
    specs = plan_lipreading(corpus, params)
    for identity in params.identities:
        portrait_file(params.faces, identity)  # a missing portrait is refused before any work
    jobs = [(spec, corpus, crop, params) for spec in specs]
    if params.workers > 1 and len(jobs) > 1:
        with worker_pool(min(params.workers, len(jobs)), _init_worker) as pool:
            clips = list(progress(pool.map(_crops_of, jobs, chunksize=8), total=len(jobs), desc="lipreading corpus",
                                  unit="clip"))
    else:
        clips = [_crops_of(job) for job in progress(jobs, desc="lipreading corpus", unit="clip")]
    h, w = crop.crop_height, crop.crop_width
    shapes = [c[1] for c in clips]
    clips = [c[0] for c in clips]
    write_npz_atomic(out, {
        "crops": np.concatenate(clips) if clips else np.zeros((0, h, w), np.uint8),
        "shapes": np.concatenate(shapes) if shapes else np.zeros((0, 20, 2), np.float32),
        "lengths": np.array([len(c) for c in clips], np.int64),
        "transcripts": np.array([" ".join(s.sentence.upper().split()) for s in specs], dtype=str),
        "keys": np.array([s.key for s in specs], dtype=str),
        "crop": np.array(json.dumps(crop.mouth())),
    })
    by_identity = {i: sum(s.identity == i for s in specs) for i in sorted({s.identity for s in specs})}
    return {"clips": len(specs), "frames": int(sum(len(c) for c in clips)), "identities": by_identity,
            "seconds": round(time.perf_counter() - start, 1)}


def read_lipreading_corpus(path: str | Path, mouth: dict, inputs: str = "pixels") -> tuple[list[str], list[np.ndarray], list[str]]:
    """Keys, crops ((T, h, w) float32 in [0, 1]; with ``inputs="landmarks"`` the mouth shapes
    (T, 20, 2)) and transcripts of a lip-reading corpus made with the mouth crop settings ``mouth``;
    crops made otherwise are refused, not silently mixed in."""
    path = Path(path)
    if not path.is_file():
        raise LipReadingCorpusError(f"lip-reading corpus not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            crops, lengths = data["shapes" if inputs == "landmarks" else "crops"], data["lengths"]
            transcripts, keys = [str(t) for t in data["transcripts"]], [str(k) for k in data["keys"]]
            made_with = json.loads(str(data["crop"]))
    except (OSError, ValueError, KeyError) as err:
        raise LipReadingCorpusError(f"cannot read the lip-reading corpus {path}: {err}") from None
    if made_with != mouth:
        raise LipReadingCorpusError(f"{path} holds crops made with {made_with}, not {mouth}: rebuild it")
    if int(lengths.sum()) != len(crops) or len(lengths) != len(transcripts) or len(keys) != len(lengths):
        raise LipReadingCorpusError(f"{path} is inconsistent: {len(crops)} frames for lengths summing to "
                                    f"{int(lengths.sum())}, {len(transcripts)} transcripts, {len(keys)} keys")
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    scale = np.float32(1.0) if inputs == "landmarks" else np.float32(255.0)
    clips = [crops[a:b].astype(np.float32) / scale for a, b in zip(bounds[:-1], bounds[1:])]
    return keys, clips, transcripts
