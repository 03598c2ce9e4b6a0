"""The views of the explorer (``notebooks/explore.ipynb``): flow and lip dynamics of a clip, real
and generated, frame by frame.

Each view is a function of the pipeline's outputs (the prepared test clips, the corpus's videos,
the trained generators), so the notebook only wires widgets to them and the book shows the same
views in their static form:

* :func:`load_clip` and :func:`generate_on_clip`: a held-out clip with its exact landmarks and flow,
  and a generator's frames for it, with the flow of the generated video (DIS between consecutive
  frames, the estimator the lip flow error uses) and the motion field the model predicts where it
  predicts one.
* :func:`frame_view`: one frame of the real clip and of each generated version, with the mouth
  landmarks, and below each the motion into the next frame as a colour wheel with arrows.
* :func:`dynamics` and :func:`dynamics_view`: per frame the lip gap, the mouth's flow magnitude and
  the loudness, real and generated, with a cursor on the current frame and the silent stretches
  marked.
* :func:`say` and :func:`generated_from_video`: a GRID sentence typed, spoken by a corpus voice (or
  a speech file of one's own) and said by a generator on a photo or a video, through
  ``opflowtalker generate``.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .audio import load_wav
from .flow.classical import dis_flow
from .landmarks import MOUTH, mouth_mask
from .metrics.lip_dynamics import SILENCE, loudness_per_frame
from .viz import draw_landmarks, flow_to_color
from .errors import OpFlowTalkerError

__all__ = ["ExploreError", "Clip", "Generated", "test_keys", "load_clip", "find_generators", "generate_on_clip",
           "frame_view", "dynamics", "silent_stretches", "dynamics_view", "say", "generated_from_video"]

SAMPLE_RATE = 16000


class ExploreError(OpFlowTalkerError, ValueError):
    """A view that cannot be drawn as asked; the message is one sentence for the user."""


@dataclass(frozen=True)
class Clip:
    """A held-out clip as the explorer shows it: crops, exact landmarks and flow, and its speech."""

    key: str
    script: str
    voice: str
    faces: np.ndarray  # (T, S, S, 3) uint8
    landmarks: np.ndarray  # (T, 68, 2) crop pixels
    flow: np.ndarray | None  # (T-1, S, S, 2) from frame t to t+1, or None for real video without it
    mels: np.ndarray  # (T, 80, 16) the mel window of every frame
    fps: float
    wav: np.ndarray  # mono samples at SAMPLE_RATE

    def __len__(self) -> int:
        return len(self.faces)


@dataclass(frozen=True)
class Generated:
    """A generator's version of a clip (or of new speech): frames, the flow of those frames, and the
    motion field the model predicts (None for a model without one)."""

    label: str
    frames: np.ndarray  # (T, S, S, 3) uint8
    flow: np.ndarray  # (T-1, S, S, 2): DIS from generated frame t to t+1
    motion: np.ndarray | None = None  # (T, S, S, 2) px


def test_keys(prepared: str | Path, split: str = "test") -> list[str]:
    """The keys of the prepared clips of ``split``, in the order the evaluation scores them."""
    from .training.data import read_split_keys

    try:
        return read_split_keys(prepared, split)
    except Exception as error:  # DatasetError: the message says which stage to run
        raise ExploreError(str(error)) from None


def load_clip(prepared: str | Path, key: str, dataset_root: str | Path = "data/corpus", split: str = "test") -> Clip:
    """The prepared clip ``key`` with the speech and script of its source video in ``dataset_root``."""
    from .training.data import load_split

    clips = {c.key: c for c in load_split(prepared, split, with_flow=True)}
    if key not in clips:
        raise ExploreError(f"no clip {key!r} in the {split} split of {prepared}")
    clip = clips[key]
    video = Path(dataset_root) / f"{key}.mp4"
    if not video.is_file():
        raise ExploreError(f"the source video of {key} is not in {dataset_root}")
    sidecar = video.with_suffix(".json")
    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    flow = None if clip.flow is None else clip.flow.astype(np.float32)
    return Clip(key, meta.get("sentence", ""), meta.get("voice", ""), clip.faces, clip.landmarks, flow, clip.mels,
                float(clip.fps), load_wav(video, SAMPLE_RATE))


def find_generators(folder: str | Path = "models/generators") -> dict[str, Path]:
    """The trained generators in ``folder`` by variant name (the file's stem), sorted."""
    return {p.stem: p for p in sorted(Path(folder).glob("*.safetensors"))}


def _video_flow(frames: np.ndarray) -> np.ndarray:
    return np.stack([dis_flow(a, b) for a, b in zip(frames[:-1], frames[1:])]).astype(np.float32)


def generate_on_clip(checkpoint: str | Path, clip: Clip, label: str | None = None) -> Generated:
    """The generator in ``checkpoint`` regenerating ``clip`` from its audio, window by window, as the
    evaluation does (its reference window half the clip away)."""
    import torch

    from .renditions import generate_clip
    from .models.checkpoints import CheckpointError
    from .models.registry import load_model_checkpoint
    from .training.data import PreparedClip

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ExploreError(f"no generator at {checkpoint}")
    try:
        model = load_model_checkpoint(checkpoint).eval()
    except CheckpointError as error:
        raise ExploreError(str(error)) from None
    if not hasattr(model, "generate"):
        raise ExploreError(f"{checkpoint} holds a {type(model).__name__}, not a generator")
    if len(clip) < model.window:
        raise ExploreError(f"{clip.key} has {len(clip)} frames, fewer than the generator's window of {model.window}")
    prepared = PreparedClip(clip.key, clip.faces, clip.mels, clip.landmarks, clip.fps, mel=np.zeros((80, 0), np.float32))
    with torch.no_grad():
        frames, motion = generate_clip(model, prepared, model.window, with_motion=True)
    return Generated(label or checkpoint.stem, frames, _video_flow(frames), motion)


def _arrows(ax, flow: np.ndarray, step: int, color: str = "black") -> None:
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step]
    u, v = flow[ys, xs, 0], flow[ys, xs, 1]
    ax.quiver(xs, ys, u, v, color=color, angles="xy", scale_units="xy", scale=0.25, width=0.006)


def frame_view(clip: Clip, generated: list[Generated] | tuple[Generated, ...], t: int, arrows: bool = True):
    """One frame: the real crop with its mouth landmarks and each generated crop (top row), and
    under each the motion from this frame to the next, true flow for the real clip and the
    generated video's own flow for the others, on one colour scale (the largest motion shown is
    fully saturated; arrows drawn 4 times longer than the motion). Generators that predict a
    motion field get a third row with it."""
    import matplotlib.pyplot as plt

    n = len(clip)
    if not 0 <= t < n:
        raise ExploreError(f"frame {t} is outside {clip.key}'s {n} frames")
    for g in generated:
        if len(g.frames) != n:
            raise ExploreError(f"{g.label} has {len(g.frames)} frames, the clip {n}")
    pair = min(t, n - 2)  # the last frame has no next frame: show the motion into it
    flows = [clip.flow[pair] if clip.flow is not None else _video_flow(clip.faces[pair:pair + 2])[0]]
    flows += [g.flow[pair] for g in generated]
    motions = [g for g in generated if g.motion is not None]
    scale = max(float(np.linalg.norm(f, axis=-1).max()) for f in flows) or 1.0
    rows = 3 if motions else 2
    columns = 1 + len(generated)
    fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.4 * rows), squeeze=False, layout="constrained")
    size = clip.faces.shape[1]
    step = max(4, size // 12)
    titles = ["real"] + [g.label for g in generated]
    images = [draw_landmarks(clip.faces[t], clip.landmarks[t][MOUTH])] + [g.frames[t] for g in generated]
    for k, (title, image, flow) in enumerate(zip(titles, images, flows)):
        axes[0, k].imshow(image)
        axes[0, k].set_title(title, fontsize=9)
        axes[1, k].imshow(flow_to_color(flow, max_norm=scale))
        if arrows:
            _arrows(axes[1, k], flow, step)
        axes[1, k].set_title("true flow" if k == 0 else "its video's flow", fontsize=8)
    if motions:
        axes[2, 0].set_visible(False)
        for k, g in enumerate(generated, start=1):
            if g.motion is None:
                axes[2, k].set_visible(False)
                continue
            axes[2, k].imshow(flow_to_color(g.motion[t]))
            if arrows:
                _arrows(axes[2, k], g.motion[t], step)
            axes[2, k].set_title("its predicted motion", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{clip.key}, frame {t} of {n} ({t / clip.fps:.2f} s); flow scale {scale:.2f} px = full colour",
                 fontsize=9)
    return fig


def _mouth_flow(flow: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Mean flow magnitude inside the mouth (the polygon of the real landmarks) for each frame pair."""
    shape = flow.shape[1:3]
    out = []
    for f, points in zip(flow, landmarks[:-1]):
        inside = mouth_mask(points, shape, dilate=2).astype(bool)
        out.append(float(np.linalg.norm(f, axis=-1)[inside].mean()) if inside.any() else np.nan)
    return np.asarray(out + [np.nan])  # the last frame has no next frame


def dynamics(clip: Clip, generated: list[Generated] | tuple[Generated, ...] = (), silence: float = SILENCE) -> pd.DataFrame:
    """Per frame: time, loudness (RMS of the samples under the frame), whether it is silent (under
    ``silence`` of the loudest frame), and the lip gap and mouth flow magnitude of the real clip
    (exact landmarks and flow) and of each generated version (dlib's landmarks on its crops, DIS's
    flow of its frames, both inside the real mouth)."""
    from .landmarks import lip_gap
    from .metrics.landmarks import detect_crop_landmarks

    n = len(clip)
    loudness = loudness_per_frame(clip.wav, SAMPLE_RATE, clip.fps, n)
    table = pd.DataFrame({"frame": np.arange(n), "time (s)": np.arange(n) / clip.fps, "loudness": loudness,
                          "silent": loudness < silence * max(loudness.max(), 1e-12),
                          "lip gap (px) real": lip_gap(clip.landmarks)})
    flow = clip.flow if clip.flow is not None else _video_flow(clip.faces)
    table["mouth flow (px) real"] = _mouth_flow(flow, clip.landmarks)
    for g in generated:
        table[f"lip gap (px) {g.label}"] = lip_gap(detect_crop_landmarks(g.frames))
        table[f"mouth flow (px) {g.label}"] = _mouth_flow(g.flow, clip.landmarks)
    return table


def silent_stretches(silent: np.ndarray) -> list[tuple[int, int]]:
    """(first, last + 1) frame of each run of silent frames."""
    silent = np.asarray(silent, bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(int), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def dynamics_view(table: pd.DataFrame, t: int | None = None, fps: float = 25.0):
    """Lip gap, mouth flow and loudness over the clip, real and generated, one panel each, with the
    silent stretches shaded and a cursor on frame ``t``."""
    import matplotlib.pyplot as plt

    if t is not None and not 0 <= t < len(table):
        raise ExploreError(f"frame {t} is outside the {len(table)} frames")
    fig, axes = plt.subplots(3, 1, figsize=(8, 5.5), sharex=True, layout="constrained")
    time = table["time (s)"].to_numpy()
    for ax, what in zip(axes[:2], ("lip gap (px)", "mouth flow (px)")):
        for column in [c for c in table.columns if c.startswith(what)]:
            who = column[len(what) + 1:]
            ax.plot(time, table[column], label=who, lw=2.2 if who == "real" else 1.4, color="black" if who == "real" else None)
        ax.set_ylabel(what)
    axes[0].legend(fontsize=8, loc="upper right", ncol=3)
    axes[2].plot(time, table["loudness"], color="tab:gray")
    axes[2].set_ylabel("loudness (RMS)")
    axes[2].set_xlabel("time (s)")
    for a, b in silent_stretches(table["silent"].to_numpy()):
        for ax in axes:
            ax.axvspan(a / fps, b / fps, color="tab:blue", alpha=0.08, lw=0)
    if t is not None:
        for ax in axes:
            ax.axvline(time[t], color="tab:red", lw=1)
    axes[0].set_title("shaded: silence (under a tenth of the loudest frame); red: the current frame", fontsize=9)
    return fig


def generated_from_video(video: str | Path, label: str, detect: bool = True) -> tuple[Generated, np.ndarray, np.ndarray]:
    """A generated mp4 (``opflowtalker generate``'s output) as frames with their flow, its
    soundtrack at SAMPLE_RATE, and the lip gap per frame (dlib on the whole frame; NaN where no face
    is found). Frames are full frames, not crops."""
    from .landmarks import LandmarkDetector, lip_gap
    from .video import read_video

    frames, _ = read_video(video)
    wav = load_wav(video, SAMPLE_RATE)
    gaps = np.full(len(frames), np.nan)
    if detect:
        detector = LandmarkDetector("dlib")
        for i, frame in enumerate(frames):
            points = detector.landmarks(frame)
            if points is not None:
                gaps[i] = float(lip_gap(points))
    return Generated(label, frames, _video_flow(frames)), wav, gaps


def say(text: str, voice: str, face: str | Path, checkpoint: str | Path, out: str | Path | None = None,
        speech: str | Path | None = None, seed: int = 0) -> dict:
    """``face`` (a photo or a video) saying ``text`` (a GRID sentence, spoken by the corpus voice
    ``voice``) or, when ``speech`` is given, that speech file instead, with the generator in
    ``checkpoint``; the mp4 goes to ``out`` (by default a temporary folder). Returns the paths of
    the video and the speech, the sentence as the grammar spells it (None for a speech file) and
    ``generate``'s summary."""
    import soundfile

    from .corpus.sentences import Sentence
    from .corpus.speech import list_voices, synthesize
    from .generate import GenerateOptions, generate

    folder = Path(tempfile.mkdtemp(prefix="opflowtalker-say-")) if out is None else Path(out).parent
    out = folder / "said.mp4" if out is None else Path(out)
    sentence = None
    if speech is None:
        names = [v.name for v in list_voices()]
        if voice not in names:
            raise ExploreError(f"unknown voice {voice!r}; the corpus's voices are {', '.join(names)}")
        try:
            sentence = Sentence.from_text(" ".join(text.lower().split()))
        except ValueError as error:
            raise ExploreError(f"not a GRID sentence: {error}") from None
        wav, _ = synthesize(sentence.spoken, voice, seed=seed)
        speech = folder / f"{out.stem}.wav"
        soundfile.write(speech, wav, SAMPLE_RATE)
    try:
        summary = generate(face, speech, checkpoint, out, GenerateOptions(progress=False))
    except OpFlowTalkerError as error:  # a face, speech or checkpoint that cannot be used
        raise ExploreError(str(error)) from None
    return {"video": out, "speech": Path(speech), "sentence": None if sentence is None else sentence.text,
            "summary": summary}
