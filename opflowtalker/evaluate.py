"""Evaluation on the held-out test clips: every metric of the paper's Tables 1-3, for every row.

Protocol (the same for every row: the generators and the four controls go through one function,
:func:`score_renditions`):

* **Clips.** The test split: held-out sentences spoken by the held-out identity. Each clip is
  regenerated from its own audio, window by window (``T`` frames; the last window is moved back to
  end at the last frame). The generator sees the frames' upper halves and a *reference* window from
  elsewhere in the same clip, half the clip away, so it can take the person from the reference but
  the mouth only from the audio (Wav2Lip's own inference passes the target frame itself as the
  reference, which would leak the mouth we score).
* **Controls**, scored exactly like a generator: the *ground truth* (the real clip), the *still
  reference* (the generator's first reference frame repeated for the whole clip: what ignoring the
  audio gets at best), *wrong audio* (the real clip judged against the next test clip's speech) and
  *shifted audio* (the real clip with its speech delayed by ``shift`` frames).
* **Image quality**: PSNR and SSIM against the real crops; FID with pytorch-fid's Inception weights
  when a weights file is configured (else the cell says why not); **FD-face**, the same Frechet
  distance on dlib's face descriptors (always available offline; not comparable to FID numbers);
  LPIPS when its AlexNet and linear-layer files are configured.
* **Sync**: LSE-C, LSE-D and the AV offset with syncnet_python's procedure on the *sync judge*
  (:mod:`opflowtalker.models.sync_judge`), a network apart from the expert that teaches the
  generators L_sync; M-LMD and F-LMD between dlib's landmarks on the generated and on the real
  crops (each set centred on its mean; a frame where either has no landmarks is left out).
* **Lip-readability** (Table 2): the lip reader reads the row's video (T_gen) and the real video
  (T_gt); the speech recogniser transcribes the audio the row is judged against (T_speech). BLEU,
  WER, CER and ROUGE-L of T_gen against T_speech, VTCS-B/W (Eq. 9), and the lip reader's WER
  against the script.
* **Temporal** (every table, :mod:`opflowtalker.metrics.temporal`): *jitter*, the warping error of
  consecutive frames against the real video's flow over the face; *motion in silence*, the
  same error inside the mouth over the silent stretches of the audio the row is judged against;
  and the *lip flow error* (Figure 6 as a number), DIS's flow of the video against the real flow
  inside the mouth.

Every metric but FD-face/FID/LPIPS is a mean of per-clip values; a row keeps them (``per_clip``)
with a 95% bootstrap interval over clips (``ci``), so that two rows can be compared paired over
the same clips (:mod:`opflowtalker.metrics.intervals`).

The real side of every comparison (real landmarks, descriptors, T_speech, T_gt) is computed once by
:func:`evaluate_reference`, which also scores the controls, and reused by every variant. What a row
shows for each clip (a generator's frames, or a control's) is :mod:`opflowtalker.renditions`'s.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .corpus.sentences import SLOTS
from .datasets import read_dataset
from .files import write_npz_atomic
from .metrics import fid as fid_metrics
from .metrics.image import MetricUnavailable, psnr, ssim
from .metrics.landmarks import detect_crop_landmarks, lmd
from .metrics.lpips import lpips_distance
from .metrics.intervals import mean_interval
from .metrics.sync import clip_sync_scores_judge, shifted_mel
from .metrics.temporal import lip_flow_error, silence_motion, silent_frames, temporal_jitter
from .metrics.text import SENTENCE_METRICS
from .models.registry import load_model_checkpoint
from .landmarks import mouth_masks
from .params import require
from .progress import progress
from .renditions import CONTROLS, control_renditions, expected_offset, generator_renditions, reference_windows
from .training.data import PreparedClip, load_split

__all__ = ["EvalParams", "Judges", "score_renditions", "evaluate_reference", "evaluate_generator", "load_reference",
           "load_judges", "strip_arrays"]

log = logging.getLogger(__name__)

MOUTH_GROW = 4  # px the real lips' hull is grown by for the mouth-motion-in-silence and lip-flow metrics


@dataclass(frozen=True)
class EvalParams:
    """params.yaml's ``evaluate`` group."""

    split: str
    max_clips: int  # 0: every clip of the split
    window: int
    batch_windows: int
    landmark_frame_step: int  # M/F-LMD on every k-th frame
    fd_frame_step: int  # FD-face on every k-th frame (dlib's descriptor takes ~75 ms a face)
    strip_frames: int  # frames of each kept clip for the book's strips (0: all of them)
    strip_clips: int  # test clips whose frames are kept (the first ones of the split)
    shift: int  # frames the shifted-audio control delays the speech by (5 frames = 16 mel steps)
    inception_weights: str  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth, if you have it
    lpips_backbone: str  # torchvision's alexnet weights, if you have them
    lpips_linear: str  # the lpips package's weights/v0.1/alex.pth
    threads: int

    def __post_init__(self) -> None:
        require(self, above_zero=("window", "batch_windows", "landmark_frame_step", "fd_frame_step", "strip_clips",
                                  "shift", "threads"),
                at_least_zero=("max_clips", "strip_frames"), choices={"split": ("train", "val", "test")})


def _clips(prepared: str | Path, params: EvalParams) -> list[PreparedClip]:
    # The real video's flow is what the temporal metrics carry frames back by.
    clips = load_split(prepared, params.split, with_flow=True, min_frames=params.window)
    return clips[: params.max_clips] if params.max_clips else clips


@dataclass(frozen=True)
class Source:
    """Where a test clip came from: its video (with the audio), script and voice (when known)."""

    video: Path
    script: str
    voice: str


def _sources(dataset: dict, split: str) -> dict[str, Source]:
    out = {}
    for clip in read_dataset(dataset.get("kind", "corpus"), dataset.get("root", "data/corpus"), split):
        sidecar = Path(clip.video).with_suffix(".json")
        voice = json.loads(sidecar.read_text()).get("voice", "") if sidecar.is_file() else ""
        out[clip.key] = Source(Path(clip.video), clip.transcript or "", voice)
    return out


def _every(frames: np.ndarray, step: int) -> np.ndarray:
    return frames[::max(1, step)]


def _optional(compute, configured) -> float | None:
    """A metric that needs weight files: None when they are not configured or cannot be read (the
    row's ``unavailable`` says why)."""
    if not configured:
        return None
    try:
        return float(compute())
    except MetricUnavailable:
        return None


@dataclass
class Judges:
    """The networks that score a row: the sync judge and the lip reader."""

    sync: nn.Module
    reader: nn.Module


def load_judges(judge_path: str | Path, lipreader_path: str | Path) -> Judges:
    from .models.lipreader import load_lipreader
    from .models.sync_judge import load_sync_judge

    return Judges(load_sync_judge(judge_path), load_lipreader(lipreader_path))


def _text_per_clip(lips: list[str], speech: list[str], real_lips: list[str], scripts: list[str]) -> dict[str, list]:
    per_clip: dict[str, list] = {name: [metric(h, r) for h, r in zip(lips, speech)]
                                 for name, metric in SENTENCE_METRICS.items()}
    for key, name in (("vtcs_b", "bleu"), ("vtcs_w", "wer")):
        score = SENTENCE_METRICS[name]
        per_clip[key] = [abs(score(g, s) - score(t, s)) for g, t, s in zip(lips, real_lips, speech)]
    per_clip["wer_script"] = [SENTENCE_METRICS["wer"](h, s) for h, s in zip(lips, scripts)]
    return per_clip


def score_renditions(variant: str, label: str, clips: list[PreparedClip], renditions, ref: dict, judges: Judges,
                     params: EvalParams, frames_out: str | Path | None = None) -> dict:
    """One row of the tables: every metric of ``renditions`` (one per clip of ``clips``) against the
    real clips, scored by ``judges``. The same function scores the generators and the controls.

    A rendition whose frames are the real clip's own array reuses the real side's landmarks and
    face descriptors (the same detector on the same frames gives the same result). One function,
    longer than most, so that every metric of a row reads the clips' arrays in one pass and the
    control rows cannot be scored by other code than the generators.
    """
    from .models.lipreader import read_lips

    torch.set_num_threads(params.threads)
    start = time.perf_counter()
    keys = [c.key for c in clips]
    if keys != [str(k) for k in ref["keys"]]:
        raise ValueError("the reference evaluation was computed on other clips; rerun evaluate-reference")
    real_lips, scripts = [str(s) for s in ref["lip_gt"]], [str(s) for s in ref["truth"]]
    per: dict[str, list] = {k: [] for k in ("psnr", "ssim", "lse_c", "lse_d", "offset", "m_lmd", "f_lmd",
                                            "jitter", "silence_motion", "flow_error")}
    lips, speech, fake_embeddings, real_all, fake_all, strips = [], [], [], [], [], []
    for clip, shown in progress(zip(clips, renditions), total=len(clips), desc=f"evaluate {variant}", unit="clip"):
        frames = shown.frames
        if len(strips) < params.strip_clips:
            strips.append(frames[: params.strip_frames or None])
        per["psnr"].append(psnr(frames, clip.faces))
        per["ssim"].append(ssim(frames, clip.faces))
        per["jitter"].append(temporal_jitter(frames, clip.flow, clip.valid))
        # Silence is the silence of the audio the video is shown with (another clip's for the
        # wrong-audio control, the delayed speech for the shifted one).
        silent = silent_frames(shown.mel, len(clip), clip.fps)
        mouth = mouth_masks(clip.landmarks, frames.shape[1:3], dilate=MOUTH_GROW)
        per["silence_motion"].append(silence_motion(frames, clip.flow, clip.valid, mouth, silent))
        per["flow_error"].append(lip_flow_error(frames, clip.flow, clip.valid, mouth))
        sync = clip_sync_scores_judge(judges.sync, frames, clip.landmarks, shown.mel, clip.fps)
        per["lse_c"].append(sync.lse_c)
        per["lse_d"].append(sync.lse_d)
        per["offset"].append(sync.offset)
        if frames is clip.faces:
            fake_lm, embedded = ref["landmarks"][clip.key], ref["clip_embeddings"][clip.key]
        else:
            fake_lm = detect_crop_landmarks(_every(frames, params.landmark_frame_step))
            embedded = fid_metrics.face_embeddings(_every(frames, params.fd_frame_step))
        scores = lmd(fake_lm, ref["landmarks"][clip.key])
        per["m_lmd"].append(scores["m_lmd"])
        per["f_lmd"].append(scores["f_lmd"])
        fake_embeddings.append(embedded)
        lips.append(read_lips(judges.reader, frames, clip.landmarks))
        speech.append(shown.speech)
        if params.inception_weights or params.lpips_backbone:
            real_all.append(clip.faces)
            fake_all.append(frames)
    per.update(_text_per_clip(lips, speech, real_lips, scripts))
    target = expected_offset(variant, params.shift)
    per["offset_ok"] = [float(abs(o - target) <= 1) for o in per["offset"]]
    real_emb = [ref["clip_embeddings"][k] for k in keys]
    fd = _fd_with_interval(real_emb, fake_embeddings)
    fid_value = lpips_value = None
    if real_all:
        real_cat, fake_cat = np.concatenate(real_all), np.concatenate(fake_all)
        fid_value = _optional(lambda: fid_metrics.inception_fid(real_cat, fake_cat, params.inception_weights),
                              params.inception_weights)
        lpips_value = _optional(lambda: lpips_distance(fake_cat, real_cat, params.lpips_backbone, params.lpips_linear),
                                params.lpips_backbone and params.lpips_linear)
    row = {"variant": variant, "label": label, "kind": "control" if variant in CONTROLS else "generator",
           "clips": len(clips), "frames": int(sum(len(c) for c in clips)),
           **{k: float(np.nanmean(v)) for k, v in per.items() if k != "offset"},
           "fd_face": fd[0], "fid": fid_value, "lpips": lpips_value, "expected_offset": target,
           "ci": {k: list(mean_interval(v)) for k, v in per.items() if k != "offset"} | {"fd_face": [fd[1], fd[2]]},
           "per_clip": {"keys": keys, **{k: [float(x) for x in v] for k, v in per.items()},
                        "lips": lips, "speech": speech},
           "examples": [{"clip": k, "script": t, "speech": s, "lips_real": g, "lips": h}
                        for k, t, s, g, h in list(zip(keys, scripts, speech, real_lips, lips))[:5]],
           "unavailable": _unavailable(params), "params": asdict(params),
           "seconds": time.perf_counter() - start}
    if frames_out is not None:
        write_npz_atomic(frames_out, strip_arrays(clips, strips, params))
    return row


def strip_arrays(clips: list[PreparedClip], strips: list[np.ndarray], params: EvalParams) -> dict[str, np.ndarray]:
    """The frames the book's strips show, for the first ``len(strips)`` clips: clip ``i``'s
    generated frames, real frames, the frame the still reference holds and the clip's key, under
    the names ``generated_i``, ``real_i``, ``still_index_i`` and ``clip_i``
    (:func:`opflowtalker.report.strips_of_clip` reads them back)."""
    arrays: dict[str, np.ndarray] = {"n_clips": np.array(len(strips))}
    for i, (clip, generated) in enumerate(zip(clips, strips)):
        arrays[f"generated_{i}"] = generated
        arrays[f"real_{i}"] = clip.faces[: params.strip_frames or None]
        arrays[f"still_index_{i}"] = np.array(reference_windows(len(clip), params.window)[0][1])
        arrays[f"clip_{i}"] = np.array(clip.key)
    return arrays


def _fd_with_interval(real: list[np.ndarray], fake: list[np.ndarray], resamples: int = 200
                      ) -> tuple[float, float, float]:
    """FD-face of all frames, and a 95% interval from resampling the clips of both sides together."""
    value = fid_metrics.frechet_distance_from_features(np.concatenate(real), np.concatenate(fake))
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(resamples):
        pick = rng.integers(0, len(real), len(real))
        samples.append(fid_metrics.frechet_distance_from_features(np.concatenate([real[i] for i in pick]),
                                                                  np.concatenate([fake[i] for i in pick])))
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(value), float(lo), float(hi)


def evaluate_reference(prepared: str | Path, dataset: dict, judge_path: str | Path, lipreader_path: str | Path,
                       out_npz: str | Path, params: EvalParams, expert_path: str | Path | None = None
                       ) -> dict[str, dict]:
    """The real side of every comparison, saved to ``out_npz``, and the control rows scored by
    :func:`score_renditions`; with the judges' calibration (``calibration``: the recogniser per
    voice, the mean distance per offset of one clip under each control, and the training expert's
    offsets when ``expert_path`` is given)."""
    from .metrics.speech import transcribe
    from .metrics.sync import clip_sync_scores
    from .models.lipreader import read_lips

    torch.set_num_threads(params.threads)
    start = time.perf_counter()
    clips = _clips(prepared, params)
    sources = _sources(dataset, params.split)
    judges = load_judges(judge_path, lipreader_path)
    grammar = SLOTS if dataset.get("kind", "corpus") == "corpus" else None
    speech, truth, lip_gt, voices, landmarks, embeddings = [], [], [], [], {}, {}
    for clip in progress(clips, desc="evaluate reference", unit="clip"):
        source = sources[clip.key]
        speech.append(transcribe(source.video, grammar=grammar))
        truth.append(source.script)
        voices.append(source.voice)
        lip_gt.append(read_lips(judges.reader, clip.faces, clip.landmarks))
        landmarks[clip.key] = detect_crop_landmarks(_every(clip.faces, params.landmark_frame_step))
        embeddings[clip.key] = fid_metrics.face_embeddings(_every(clip.faces, params.fd_frame_step))
    keys = [c.key for c in clips]
    write_npz_atomic(out_npz, {"keys": np.array(keys), "speech": np.array(speech), "lip_gt": np.array(lip_gt),
                               "truth": np.array(truth), "voices": np.array(voices),
                               **{f"landmarks/{k}": v for k, v in landmarks.items()},
                               **{f"embeddings/{k}": v for k, v in embeddings.items()}}, compressed=False)
    ref = load_reference(out_npz)
    reference_seconds = time.perf_counter() - start
    rows, curves = {}, {}
    for control, label in CONTROLS.items():
        shown = control_renditions(control, clips, speech, params.window, params.shift)
        if control == "shifted_audio":
            label = f"{label} {params.shift} frames"
        rows[control] = score_renditions(control, label, clips, shown, ref, judges, params)
        first = shown[0]  # the mean distance per offset of the first clip, for the chapter's plot
        curves[control] = {"clip": keys[0], "dists": clip_sync_scores_judge(
            judges.sync, first.frames, clips[0].landmarks, first.mel, clips[0].fps).dists.tolist()}
    rows["ground_truth"]["seconds"] += reference_seconds
    rows["ground_truth"]["speech_wer_vs_script"] = float(np.mean([SENTENCE_METRICS["wer"](s, t)
                                                                  for s, t in zip(speech, truth)]))
    rows["ground_truth"]["speech_per_clip"] = {"voice": voices, "script": truth, "speech": speech}
    calibration = {"offset_curves": curves}
    if expert_path is not None:
        expert = load_model_checkpoint(expert_path)
        real = [clip_sync_scores(expert, c.faces, c.mel, c.fps, bgr=False) for c in clips]
        moved = [clip_sync_scores(expert, c.faces, shifted_mel(c.mel, params.shift, c.fps), c.fps, bgr=False)
                 for c in clips]
        calibration["expert"] = {"offset": [s.offset for s in real], "offset_shifted": [s.offset for s in moved],
                                 "lse_c": [s.lse_c for s in real], "shift": params.shift}
    rows["ground_truth"]["calibration"] = calibration
    return rows


def _unavailable(params: EvalParams) -> dict[str, str]:
    missing = {}
    if not params.inception_weights:
        missing["fid"] = ("needs pytorch-fid's Inception weights (evaluate.inception_weights); "
                          "none ship offline, see fd_face")
    if not (params.lpips_backbone and params.lpips_linear):
        missing["lpips"] = "needs AlexNet and LPIPS linear-layer weights (evaluate.lpips_backbone, lpips_linear)"
    return missing


def load_reference(path: str | Path) -> dict:
    with np.load(path) as data:
        ref = {k: data[k] for k in data.files}
    ref["landmarks"] = {k.split("/", 1)[1]: v for k, v in ref.items() if k.startswith("landmarks/")}
    ref["clip_embeddings"] = {k.split("/", 1)[1]: v for k, v in ref.items() if k.startswith("embeddings/")}
    return ref


def evaluate_generator(variant: str, label: str, checkpoint: str | Path, prepared: str | Path,
                       reference_npz: str | Path, judge_path: str | Path, lipreader_path: str | Path,
                       params: EvalParams, frames_out: str | Path | None = None) -> dict:
    """One row of the tables for the generator in ``checkpoint``."""
    torch.set_num_threads(params.threads)
    ref = load_reference(reference_npz)
    clips = _clips(prepared, params)
    model = load_model_checkpoint(checkpoint)
    judges = load_judges(judge_path, lipreader_path)
    shown = generator_renditions(model, clips, [str(s) for s in ref["speech"]], params.window, params.batch_windows)
    return score_renditions(variant, label, clips, shown, ref, judges, params, frames_out)
