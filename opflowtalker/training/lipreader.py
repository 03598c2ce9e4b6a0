"""Training the VTCS lip reader with CTC on the mouths of the prepared clips.

Every clip of a split is reduced once to what the reader reads (:func:`~opflowtalker.models.lipreader.lip_inputs`:
mouth crops or mouth shapes, a few kB per clip) and held in memory with its transcript. A batch is a handful of whole clips
(CTC needs the whole sentence), padded to the longest, each augmented the way LipNet augments
GRID: mirrored left to right (a mouth is nearly symmetric, and the mirror image is another
plausible speaker), shifted by a pixel or two (landmark and crop placement error), and, if asked, played a
little faster or slower (speaking rate). Mouth shapes get the same changes in geometry (mirror, zoom,
stretch, tilt, speed) and the detector's own scatter (``jitter``). The model is trained by the study's one loop
(:func:`~opflowtalker.training.loop.fit`), scored on the validation split while it trains, and
at the end by the word and character error rates (WER, CER) of its readings of the held-out test
split: an identity the reader never saw, speaking sentences it never heard.

Reading is decoded through the corpus's GRID grammar (one word of each slot, in order) when the
training sentences follow it, as a recogniser with a task grammar reads GRID; the augmentations
(zoom, stretch, tilt, speed) stand in for the faces a three-identity corpus does not have. What the
trained reader scores, on the real videos and on the controls, is in the study chapter.
"""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import jiwer
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..corpus.sentences import SLOTS
from ..datasets import DatasetError, read_dataset
from ..files import write_json_atomic
from ..params import require
from ..models.ctc import BLANK, decode
from ..models.lipreader import LipReader, LipReaderConfig, lip_inputs, load_lipreader
from ..models.mouths import mirror_shapes
from .data import read_split_keys
from .loop import LoopParams, distributed, fit, run_identity

__all__ = [
    "LipReaderTrainParams", "LipReadingClips", "load_lipreading_clips", "sample_lipreader_batch",
    "lipreader_loss", "evaluate_lipreader", "chance_level", "train_lipreader", "load_lipreader",
]


@dataclass(frozen=True)
class LipReaderTrainParams:
    """params.yaml's ``train_lipreader`` group."""

    steps: int
    batch_size: int
    lr: float
    seed: int
    tokens: str  # "words" (the corpus's GRID vocabulary) or "characters"
    inputs: str  # "pixels" (mouth crops) or "landmarks" (mouth shapes)
    crop_height: int
    crop_width: int
    crop_scale: float
    crop_sigma: float | None  # None: one crop window per clip (a still video gives still crops)
    grammar: bool  # read the corpus's GRID grammar (word tokens on the GRID vocabulary)
    front_channels: int
    channels: tuple[int, ...]
    hidden: int
    layers: int
    dropout: float
    motion: bool  # read the frames' differences from the clip's mean frame
    flip: float  # probability of mirroring a clip left to right
    shift: int  # largest random translation of a clip, in crop pixels
    scale: float  # zoom a clip by a random factor in [1 - scale, 1 + scale] (mouth size)
    speed: float  # replay at a random rate in [1 - speed, 1 + speed] (speaking rate)
    stretch: float  # scale a clip's height apart from its width by up to +-stretch (lip shape)
    rotate: float  # turn a clip by up to +-rotate degrees (head tilt)
    jitter: float  # mouth shapes: Gaussian scatter of every point, in face units (detector noise)
    clip: float  # gradient-norm clipping (CTC's early gradients are spiky)
    decay_steps: int  # the last steps, over which the rate falls along a half cosine (0: constant)
    checkpoint_every: int
    log_every: int
    eval_every: int
    threads: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        require(self, above_zero=("steps", "batch_size", "lr", "crop_height", "crop_width", "crop_scale",
                                  "front_channels", "hidden", "layers", "checkpoint_every", "log_every", "eval_every",
                                  "threads"),
                at_least_zero=("seed", "shift", "rotate", "jitter", "clip", "decay_steps"),
                shares=("flip", "dropout"), choices={"tokens": ("words", "characters"), "inputs": ("pixels", "landmarks")})
        if not (0.0 <= self.speed < 1.0 and 0.0 <= self.scale < 1.0 and 0.0 <= self.stretch < 1.0):
            raise ValueError("need 0 <= speed < 1, 0 <= scale < 1 and 0 <= stretch < 1")
        self.loop_params()

    def model_config(self, vocabulary: tuple[str, ...] | None = None) -> LipReaderConfig:
        """The lip reader these parameters train (words: ``vocabulary``, or GRID's by default)."""
        extra = {"vocabulary": tuple(vocabulary)} if vocabulary is not None else {}
        # The grammar is the corpus's: a dataset with its own vocabulary is read freely.
        if self.grammar and self.tokens == "words" and vocabulary is None:
            extra["grammar"] = tuple(tuple(w.upper() for w in slot) for slot in SLOTS)
        return LipReaderConfig(tokens=self.tokens, inputs=self.inputs, crop_height=self.crop_height, crop_width=self.crop_width,
                               crop_scale=self.crop_scale, crop_sigma=self.crop_sigma,
                               front_channels=self.front_channels,
                               channels=self.channels, hidden=self.hidden, layers=self.layers,
                               dropout=self.dropout, motion=self.motion, **extra)

    def loop_params(self) -> LoopParams:
        return LoopParams.of(self)


@dataclass
class LipReadingClips:
    """What the reader reads of a split's clips, each (T, h, w) float32 mouth crops in [0, 1] or
    (T, 20, 2) mouth shapes (``config.inputs``), and their transcripts."""

    keys: list[str]
    crops: list[np.ndarray]
    transcripts: list[str]

    def __len__(self) -> int:
        return len(self.keys)


def load_lipreading_clips(prepared: str | Path, corpus_root: str | Path, split: str, config: LipReaderConfig,
                          kind: str = "corpus") -> LipReadingClips:
    """The reader's inputs of every prepared clip of ``split`` that has a transcript in the dataset."""
    transcripts = {clip.key: clip.transcript for clip in read_dataset(kind, corpus_root, split) if clip.transcript}
    keys, crops, texts = [], [], []
    for key in read_split_keys(prepared, split):
        if key not in transcripts:
            continue
        with np.load(Path(prepared) / f"{key}.npz") as data:
            faces, landmarks = data["faces"], data["landmarks"]
        if len(faces) == 0:
            continue
        keys.append(key)
        crops.append(lip_inputs(config, faces, landmarks))
        texts.append(" ".join(transcripts[key].upper().split()))
    if not keys:
        raise DatasetError(f"no prepared clip of the {split} split in {prepared} has a transcript in {corpus_root}")
    return LipReadingClips(keys, crops, texts)


def _random_linear(rng: np.random.Generator, scale: float, stretch: float, rotate: float) -> np.ndarray | None:
    """A random 2x2 map of (x, y): a zoom by up to +-``scale``, the height by up to +-``stretch``
    more and a turn by up to +-``rotate`` degrees; None when all three are off."""
    if not (scale > 0 or stretch > 0 or rotate > 0):
        return None
    factor = rng.uniform(1.0 - scale, 1.0 + scale) if scale > 0 else 1.0
    tall = rng.uniform(1.0 - stretch, 1.0 + stretch) if stretch > 0 else 1.0
    angle = np.deg2rad(rng.uniform(-rotate, rotate) if rotate > 0 else 0.0)
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.diag([factor, factor * tall])


def _zoom(crops: np.ndarray, linear: np.ndarray) -> np.ndarray:
    """Every frame mapped by ``linear`` about its centre (edges replicated where it shrinks)."""
    h, w = crops.shape[1:]
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    matrix = np.concatenate([linear, (centre - linear @ centre)[:, None]], axis=1)
    return np.stack([cv2.warpAffine(np.ascontiguousarray(frame), matrix, (w, h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE) for frame in crops])


def _augment(crops: np.ndarray, rng: np.random.Generator, flip: float, shift: int, speed: float,
             scale: float = 0.0, stretch: float = 0.0, rotate: float = 0.0, jitter: float = 0.0,
             shapes: bool = False) -> np.ndarray:
    """One clip of crops (T, h, w), or of mouth shapes (T, 20, 2) with ``shapes``, re-timed,
    mirrored and mapped alike; crops are then shifted, shapes scattered by ``jitter``."""
    if speed > 0:
        # Resampling the frame indices replays the clip faster or slower (frames dropped or repeated).
        rate = rng.uniform(1.0 - speed, 1.0 + speed)
        index = np.round(np.arange(0.0, len(crops), rate)).astype(int)
        crops = crops[np.clip(index, 0, len(crops) - 1)]
    mirror = flip > 0 and rng.random() < flip
    # Another face's mouth is another size in the crop, however the crop is normalised, another
    # shape (fuller or thinner lips: the height apart from the width) and sits at another tilt.
    linear = _random_linear(rng, scale, stretch, rotate)
    if shapes:
        if mirror:
            crops = mirror_shapes(crops)
        if linear is not None:
            crops = crops @ linear.T.astype(np.float32)  # points are (x, y) rows: p' = p @ linear^T
        if jitter > 0:
            crops = crops + rng.normal(0.0, jitter, crops.shape).astype(np.float32)
        return np.ascontiguousarray(crops, dtype=np.float32)
    if mirror:
        crops = crops[:, :, ::-1]
    if linear is not None:
        crops = _zoom(crops, linear)
    if shift > 0:
        dy, dx = rng.integers(-shift, shift + 1, size=2)
        h, w = crops.shape[1:]
        padded = np.pad(crops, ((0, 0), (shift, shift), (shift, shift)), mode="edge")
        crops = padded[:, shift + dy: shift + dy + h, shift + dx: shift + dx + w]
    return np.ascontiguousarray(crops)


def sample_lipreader_batch(data: LipReadingClips, rng: np.random.Generator, batch_size: int,
                           config: LipReaderConfig | None = None, flip: float = 0.5, shift: int = 2,
                           speed: float = 0.0, scale: float = 0.0, stretch: float = 0.0,
                           rotate: float = 0.0, jitter: float = 0.0) -> dict[str, torch.Tensor]:
    """``batch_size`` random clips, augmented and padded: crops (B, T, 1, h, w) or shapes
    (B, T, 20, 2), lengths (B,), targets (B, S) class indices (0-padded), target_lengths (B,)."""
    config = config or LipReaderConfig()
    shapes = config.inputs == "landmarks"
    chosen = rng.choice(len(data), size=batch_size, replace=len(data) < batch_size)
    clips = [_augment(data.crops[i], rng, flip, shift, speed, scale, stretch, rotate, jitter, shapes) for i in chosen]
    labels = [config.encode(data.transcripts[i]) for i in chosen]
    return _collate(clips, labels, pixels=not shapes)


def _collate(clips: list[np.ndarray], labels: list[list[int]], pixels: bool = True) -> dict[str, torch.Tensor]:
    lengths = [len(c) for c in clips]
    frame = clips[0].shape[1:]
    crops = np.zeros((len(clips), max(lengths), *((1,) if pixels else ()), *frame), dtype=np.float32)
    for i, c in enumerate(clips):
        crops[i, : len(c)] = c[:, None] if pixels else c
    targets = np.zeros((len(labels), max(1, max(len(l) for l in labels))), dtype=np.int64)
    for i, l in enumerate(labels):
        targets[i, : len(l)] = l
    return {"crops": torch.from_numpy(crops), "lengths": torch.tensor(lengths),
            "targets": torch.from_numpy(targets), "target_lengths": torch.tensor([len(l) for l in labels])}


def lipreader_loss(model: nn.Module, batch: dict[str, torch.Tensor], step: int = 0) -> dict[str, torch.Tensor]:
    """CTC loss per target token (``loss``), and the share of frames whose best class is the blank
    (near 1 early in training, when CTC first learns to say nothing; it falls as words appear)."""
    log_probs = model(batch["crops"], batch["lengths"])
    ctc = F.ctc_loss(log_probs.transpose(0, 1), batch["targets"], batch["lengths"].cpu(),
                     batch["target_lengths"].cpu(), blank=BLANK, reduction="mean", zero_infinity=True)
    valid = torch.arange(log_probs.shape[1], device=log_probs.device)[None] < batch["lengths"].to(log_probs.device)[:, None]
    blank = ((log_probs.argmax(-1) == BLANK) & valid).sum() / valid.sum()
    return {"loss": ctc, "blank_frames": blank.detach()}


@torch.no_grad()
def evaluate_lipreader(model: LipReader, clips: LipReadingClips, batch_size: int = 32) -> dict[str, float]:
    """WER and CER of the reader's readings (:meth:`LipReader.read`) of ``clips`` (errors summed
    over the split, as jiwer does), the share of sentences read exactly, and the number of clips."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    hypotheses: list[str] = []
    try:
        for start in range(0, len(clips), batch_size):
            chunk = clips.crops[start: start + batch_size]
            batch = _collate(list(chunk), [[1]] * len(chunk), pixels=model.config.inputs == "pixels")
            log_probs = model.read(batch["crops"].to(device), batch["lengths"])
            hypotheses += decode(log_probs, batch["lengths"], model.config)
    finally:
        model.train(was_training)
    return {**_error_rates(clips.transcripts, hypotheses), "n": len(clips)}


def _error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    return {"wer": float(jiwer.wer(references, hypotheses)), "cer": float(jiwer.cer(references, hypotheses)),
            "sentence_accuracy": float(np.mean([r == h for r, h in zip(references, hypotheses)]))}


def chance_level(train_transcripts: list[str], test_transcripts: list[str], seed: int = 0,
                 samples: int = 20) -> dict[str, float]:
    """What reading without looking scores on ``test_transcripts``.

    ``majority``: always answering the sentence of the most frequent training word at each
    position (for GRID: the commonest command, colour, ...). ``random``: sentences drawn word by
    word from the training words seen at each position, averaged over ``samples`` draws.
    """
    if not train_transcripts or not test_transcripts:
        raise ValueError("chance level needs training and test transcripts")
    split = [t.upper().split() for t in train_transcripts]
    length = Counter(len(words) for words in split).most_common(1)[0][0]
    positions = [Counter(words[i] for words in split if len(words) > i) for i in range(length)]
    majority = " ".join(p.most_common(1)[0][0] for p in positions)
    test = [" ".join(t.upper().split()) for t in test_transcripts]
    rng = np.random.default_rng(seed)
    vocab = [sorted(p) for p in positions]
    random_wer, random_cer = [], []
    for _ in range(samples):
        guesses = [" ".join(rng.choice(v) for v in vocab) for _ in test]
        rates = _error_rates(test, guesses)
        random_wer.append(rates["wer"])
        random_cer.append(rates["cer"])
    fixed = _error_rates(test, [majority] * len(test))
    return {"majority_sentence": majority, "majority_wer": fixed["wer"], "majority_cer": fixed["cer"],
            "random_wer": float(np.mean(random_wer)), "random_cer": float(np.mean(random_cer))}


def with_extra_clips(train: LipReadingClips, extra: str | Path, config: LipReaderConfig) -> LipReadingClips:
    """The training clips joined by those of a lip-reading corpus made with ``config``'s crops
    (its mouth crops or its mouth shapes, as ``config.inputs`` says)."""
    from ..corpus.lipreading import read_lipreading_corpus

    keys, crops, transcripts = read_lipreading_corpus(extra, config.mouth_crop(), config.inputs)
    return LipReadingClips(train.keys + keys, train.crops + crops, train.transcripts + transcripts)


def train_lipreader(prepared: str | Path, corpus_root: str | Path, out: str | Path,
                    params: LipReaderTrainParams, run_dir: str | Path | None = None,
                    kind: str = "corpus", extra: str | Path | None = None) -> dict:
    """Train a lip reader on the ``train`` split (joined by the clips of the lip-reading corpus
    ``extra``, when given), write it to ``out`` (safetensors) and its log and scores to ``out``
    with suffix ``.json``; return the log with ``val``, ``test`` and ``chance`` scores added."""
    out = Path(out)
    run_dir = Path(run_dir) if run_dir is not None else out.with_name(f"{out.stem}_run")
    config = params.model_config()
    clock = time.perf_counter()
    train = load_lipreading_clips(prepared, corpus_root, "train", config, kind)
    corpus_clips = len(train)
    if extra is not None:
        train = with_extra_clips(train, extra, config)
    if config.tokens == "words":
        # The corpus's words are GRID's; another dataset brings its own training vocabulary.
        words = sorted({w for t in train.transcripts for w in t.split()})
        if not set(words) <= set(config.vocabulary):
            config = params.model_config(tuple(words))
        elif config.grammar and not all(_fits(t, config.grammar) for t in train.transcripts):
            config = replace(config, grammar=())  # sentences the grammar does not make are read freely
    val = load_lipreading_clips(prepared, corpus_root, "val", config, kind)
    test = load_lipreading_clips(prepared, corpus_root, "test", config, kind)
    load_seconds = time.perf_counter() - clock

    torch.manual_seed(params.seed)
    model = LipReader(config)
    augment = {"flip": params.flip, "shift": params.shift, "speed": params.speed, "scale": params.scale,
               "stretch": params.stretch, "rotate": params.rotate, "jitter": params.jitter}
    log = fit("lipreader", model, lipreader_loss,
              lambda rng, n: sample_lipreader_batch(train, rng, n, config, **augment),
              out, run_dir, params.loop_params(),
              evaluate=lambda m: {k: v for k, v in evaluate_lipreader(m, val).items() if k != "n"},
              metadata={"model": "LipReader", "config": asdict(config), "train_params": run_identity(params),
                        "train_clips": _clips_digest(train)})
    if distributed().rank != 0:
        return log  # rank 0 scores and reports
    model = load_lipreader(out)
    log.update({"load_seconds": load_seconds, "train_clips": {"corpus": corpus_clips, "extra": len(train) - corpus_clips},
                "val": evaluate_lipreader(model, val),
                "test": evaluate_lipreader(model, test), "chance": chance_level(train.transcripts, test.transcripts),
                "examples": _examples(model, test)})
    write_json_atomic(out.with_suffix(".json"), log)
    return log


def _clips_digest(clips: LipReadingClips) -> str:
    # A run resumes only on the clips it started with (a rebuilt lip-reading corpus restarts it).
    text = "\n".join(f"{k}\t{t}\t{len(c)}" for k, t, c in zip(clips.keys, clips.transcripts, clips.crops))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fits(text: str, grammar: tuple[tuple[str, ...], ...]) -> bool:
    words = text.upper().split()
    return len(words) == len(grammar) and all(w in slot for w, slot in zip(words, grammar))


def _examples(model: LipReader, clips: LipReadingClips, n: int = 5) -> list[dict[str, str]]:
    """A few test clips with what was said and what was read, for the log and the book."""
    head = LipReadingClips(clips.keys[:n], clips.crops[:n], clips.transcripts[:n])
    with torch.no_grad():
        batch = _collate(head.crops, [[1]] * len(head), pixels=model.config.inputs == "pixels")
        read = decode(model.read(batch["crops"], batch["lengths"]), batch["lengths"], model.config)
    return [{"key": k, "said": s, "read": r} for k, s, r in zip(head.keys, head.transcripts, read)]
