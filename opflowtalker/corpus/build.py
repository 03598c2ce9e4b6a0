"""Building the embedded talking-face corpus: sentences, voices and faces into LRS2-like clips.

Layout (readable by :func:`opflowtalker.datasets.read_lrs2`, like LRS2's ``main/``)::

    <root>/<identity>/<clip>.mp4    H.264, 25 fps, square face-centred frames, AAC speech
    <root>/<identity>/<clip>.txt    LRS2-style transcript ("Text:  BIN BLUE AT F TWO NOW")
    <root>/<identity>/<clip>.json   voice, seed, phone timings, sizes
    <root>/<identity>/<clip>.npz    exact landmarks (T, 68, 2), forward flow (T-1, S, S, 2) float16,
                                    its validity mask, rendered lip gap, viseme tracks
    <root>/{train,val,test}.txt     filelists of ``<identity>/<clip>``
    <root>/corpus.json              the parameters the corpus was built with

Train and validation clips use the training identities and sentences; test clips put held-out
sentences in the mouth of the held-out identity, so a test score is about an unseen face saying
unseen sentences. Everything is a function of ``CorpusParams``: the same parameters give the same
files, byte for byte.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..params import require
from ..progress import progress
from ..workers import worker_pool
from ..video import write_video
from .render import RenderConfig, RenderedClip, build_rig, load_portrait, render
from .sentences import Sentence, sample_sentences, split_of
from .speech import SAMPLE_RATE, get_voice, synthesize
from .viseme import viseme_tracks

__all__ = ["CorpusParams", "ClipSpec", "SpokenClip", "plan_corpus", "speak_and_render", "build_corpus",
           "render_corpus_clip", "portrait_file"]

@dataclass(frozen=True)
class CorpusParams:
    """params.yaml's ``corpus`` group; ``identities`` maps each face to the voices it may speak with."""

    n_sentences: int
    seed: int
    size: int
    identities: dict[str, list[str]]
    test_identity: str
    faces: str
    fps: float
    workers: int

    def __post_init__(self) -> None:
        require(self, above_zero=("n_sentences", "size", "fps", "workers"), at_least_zero=("seed",))
        if self.test_identity not in self.identities:
            raise ValueError(f"test identity {self.test_identity!r} is not among the identities")
        if len(self.identities) < 2:
            raise ValueError("the corpus needs at least one training identity besides the test identity")
        for voices in self.identities.values():
            if not voices:
                raise ValueError("every identity needs at least one voice")
            for voice in voices:
                get_voice(voice)


@dataclass(frozen=True)
class ClipSpec:
    identity: str
    name: str
    split: str
    sentence: str
    voice: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.identity}/{self.name}"


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def portrait_file(faces: str | Path, identity: str) -> Path:
    """``<faces>/<identity>.<png|jpg|...>``: any folder of closed-mouth portraits can be a corpus's faces."""
    for suffix in IMAGE_SUFFIXES:
        path = Path(faces) / f"{identity}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(2, "no portrait for this identity (run `opflowtalker assets`)",
                            str(Path(faces) / f"{identity}.png"))


def plan_corpus(params: CorpusParams) -> list[ClipSpec]:
    """Which sentence each clip says, in whose face and voice: a pure function of the parameters."""
    train_ids = sorted(i for i in params.identities if i != params.test_identity)
    rng = np.random.default_rng(params.seed)
    specs = []
    for k, sentence in enumerate(sample_sentences(params.n_sentences, seed=params.seed)):
        split = split_of(sentence)
        identity = params.test_identity if split == "test" else train_ids[rng.integers(len(train_ids))]
        voices = params.identities[identity]
        voice = voices[rng.integers(len(voices))]
        specs.append(ClipSpec(identity, f"{k:05d}", split, sentence.text, voice, int(rng.integers(2**31))))
    return specs


@dataclass
class SpokenClip:
    """One clip in memory: the speech, its phones, the viseme tracks and the rendered video."""

    wav: np.ndarray
    phones: list
    tracks: dict[str, np.ndarray]
    video: RenderedClip


def speak_and_render(spec: ClipSpec, params: CorpusParams) -> SpokenClip:
    """Synthesise and animate one clip, deterministically from its spec (nothing is written)."""
    sentence = Sentence.from_text(spec.sentence)
    wav, phones = synthesize(sentence.spoken, get_voice(spec.voice), seed=spec.seed)
    n_frames = max(2, int(round(len(wav) / SAMPLE_RATE * params.fps)))
    tracks = viseme_tracks([tuple(p) for p in phones], n_frames, fps=params.fps)
    portrait = load_portrait(str(portrait_file(params.faces, spec.identity)), pick="largest")
    rig = build_rig(portrait, RenderConfig(size=params.size, fps=params.fps))
    return SpokenClip(wav, phones, tracks, render(rig, tracks, seed=spec.seed))


def render_corpus_clip(spec: ClipSpec, params: CorpusParams, out_dir: Path) -> dict:
    """Synthesise, animate and write one clip's four files into ``out_dir``; returns its summary."""
    spoken = speak_and_render(spec, params)
    clip, n_frames = spoken.video, len(spoken.video.frames)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / spec.name
    write_video(stem.with_suffix(".mp4"), clip.frames, params.fps, audio=(spoken.wav, SAMPLE_RATE))
    stem.with_suffix(".txt").write_text(f"Text:  {spec.sentence.upper()}\n")
    meta = {**dataclasses.asdict(spec), "fps": params.fps, "size": params.size, "n_frames": n_frames,
            "sample_rate": SAMPLE_RATE,
            "phones": [[p.phone, round(p.start, 4), round(p.end, 4)] for p in spoken.phones]}
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    # Flow rounded to 1/64 px is exact in float16 and compresses far better than raw float16.
    flow = (np.round(clip.flow * 64) / 64).astype(np.float16)
    with open(stem.with_suffix(".npz"), "wb") as fh:
        np.savez_compressed(fh, landmarks=clip.landmarks.astype(np.float32), flow=flow, valid=clip.valid,
                            mouth_open=clip.mouth_open.astype(np.float32),
                            **{f"track_{k}": v.astype(np.float32) for k, v in spoken.tracks.items()})
    return {"key": spec.key, "split": spec.split, "frames": n_frames}


def _render_into(args):
    spec, params, staging = args
    return render_corpus_clip(spec, params, Path(staging) / spec.identity)


def build_corpus(root: str | Path, params: CorpusParams) -> dict:
    """Render the whole corpus into ``root`` (replacing it atomically); returns a summary."""
    root = Path(root)
    specs = plan_corpus(params)
    for identity in params.identities:
        portrait_file(params.faces, identity)
    root.parent.mkdir(parents=True, exist_ok=True)
    for stale in root.parent.glob(f".{root.name}-*"):  # the staging folder of a build that was killed
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        jobs = [(spec, params, str(staging)) for spec in specs]
        if params.workers > 1:
            with worker_pool(params.workers) as pool:
                results = list(progress(pool.map(_render_into, jobs, chunksize=4), total=len(jobs), desc="corpus",
                                        unit="clip"))
        else:
            results = [_render_into(job) for job in progress(jobs, desc="corpus", unit="clip")]
        for split in ("train", "val", "test"):
            keys = [s.key for s in specs if s.split == split]
            (staging / f"{split}.txt").write_text("".join(k + "\n" for k in keys))
        summary = {
            "clips": {split: sum(r["split"] == split for r in results) for split in ("train", "val", "test")},
            "frames": sum(r["frames"] for r in results),
            "identities": sorted(params.identities), "test_identity": params.test_identity,
        }
        (staging / "corpus.json").write_text(json.dumps({"params": dataclasses.asdict(params), **summary},
                                                        indent=1) + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary
