"""Evaluation on the held-out test clips: every metric of the paper's Tables 1-3 for one generator.

Protocol (the same for every row, ground truth included):

* **Clips.** The test split: held-out sentences spoken by the held-out identity. Each clip is
  regenerated from its own audio, window by window (``T`` frames; the last window is moved back to
  end at the last frame). The generator sees the frames' upper halves and a *reference* window from
  elsewhere in the same clip, half the clip away, so it can take the person from the reference but
  the mouth only from the audio (Wav2Lip's own inference passes the target frame itself as the
  reference, which would leak the mouth we score).
* **Image quality**: PSNR and SSIM against the real crops; FID with pytorch-fid's Inception weights
  when a weights file is configured (else the cell says why not); **FD-face**, the same Frechet
  distance on dlib's face descriptors (always available offline; not comparable to FID numbers);
  LPIPS when its AlexNet and linear-layer files are configured.
* **Sync**: LSE-C and LSE-D with syncnet_python's procedure on our SyncNet expert; M-LMD and F-LMD
  between dlib's landmarks on the generated and on the real crops (the same detector on both, so
  the ground-truth row is 0/0 by construction and the detector's own noise cancels in neither).
* **Lip-readability** (Table 2): our lip reader reads the generated video (T_gen) and the real
  video (T_gt); Whisper transcribes the clip's audio (T_speech). BLEU, WER, CER and ROUGE-L of
  T_gen against T_speech, and VTCS-B/W, Eq. 9.

The reference side (real landmarks, descriptors, T_speech, T_gt) is computed once by
:func:`evaluate_reference` and reused by every variant.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .datasets import read_dataset
from .files import write_npz_atomic
from .metrics import fid as fid_metrics
from .metrics.image import MetricUnavailable, psnr, ssim
from .metrics.landmarks import detect_crop_landmarks, lmd
from .metrics.lpips import lpips_distance
from .metrics.sync import clip_sync_scores
from .metrics.text import text_scores, vtcs
from .models.checkpoints import load_model_checkpoint
from .training.data import PreparedClip, load_split, lower_half_masked

__all__ = ["EvalParams", "generate_clip", "reference_windows", "evaluate_reference", "evaluate_generator",
           "load_reference"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalParams:
    split: str = "test"
    max_clips: int = 0  # 0: every clip of the split
    window: int = 5
    batch_windows: int = 8
    landmark_frame_step: int = 2  # M/F-LMD on every k-th frame
    fd_frame_step: int = 4  # FD-face on every k-th frame (dlib's descriptor takes ~75 ms a face)
    strip_frames: int = 8  # frames of the first test clip kept for the book's strips
    inception_weights: str = ""  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth, if you have it
    lpips_backbone: str = ""  # torchvision's alexnet weights, if you have them
    lpips_linear: str = ""  # the lpips package's weights/v0.1/alex.pth
    threads: int = 2


def reference_windows(n_frames: int, window: int) -> list[tuple[int, int]]:
    """(target start, reference start) of the windows covering ``n_frames`` frames: windows laid
    end to end, the last moved back to end at the last frame; each reference half the clip (and at
    least one window) later, or as far earlier where that would run past the end."""
    if n_frames < window:
        raise ValueError(f"a clip of {n_frames} frames is shorter than one window of {window}")
    starts = list(range(0, n_frames - window + 1, window))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    gap = max(window, n_frames // 2)
    last = n_frames - window
    return [(s, s + gap if s + gap <= last else max(0, s - gap)) for s in starts]


@torch.no_grad()
def generate_clip(model: nn.Module, clip: PreparedClip, window: int, batch_windows: int = 8) -> np.ndarray:
    """Every frame of ``clip`` regenerated from its audio: (T, S, S, 3) uint8."""
    device = next(model.parameters()).device
    n = len(clip)
    pairs = reference_windows(n, window)
    out = np.zeros_like(clip.faces)
    for i in range(0, len(pairs), batch_windows):
        chunk = pairs[i : i + batch_windows]
        target = np.stack([clip.faces[s : s + window] for s, _ in chunk])
        ref = np.stack([clip.faces[r : r + window] for _, r in chunk])
        faces = np.concatenate([lower_half_masked(target), ref], axis=-1)  # (B, T, H, W, 6)
        faces = torch.from_numpy(faces).permute(0, 4, 1, 2, 3).float().div_(255.0)
        audio = torch.from_numpy(np.stack([clip.mels[s : s + window] for s, _ in chunk])).unsqueeze(2)
        frames = model(audio.to(device), faces.to(device))
        frames = frames[0] if isinstance(frames, tuple) else frames
        frames = (frames.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 4, 1).cpu().numpy()
        for (s, _), generated in zip(chunk, frames):
            out[s : s + window] = generated  # a moved-back last window overwrites with the same audio
    return out


def _clips(prepared: str | Path, params: EvalParams) -> list[PreparedClip]:
    clips = load_split(prepared, params.split, with_flow=False, min_frames=params.window)
    return clips[: params.max_clips] if params.max_clips else clips


def _transcripts(dataset: dict, split: str) -> dict[str, tuple[Path, str | None]]:
    return {clip.key: (clip.video, clip.transcript)
            for clip in read_dataset(dataset.get("kind", "corpus"), dataset.get("root", "data/corpus"), split)}


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


def evaluate_reference(prepared: str | Path, dataset: dict, expert_path: str | Path, lipreader_path: str | Path,
                       out_npz: str | Path, params: EvalParams) -> dict:
    """The ground-truth row, and the real side of every comparison, saved to ``out_npz``."""
    from .metrics.speech import transcribe
    from .models.lipreader import load_lipreader, read_lips

    torch.set_num_threads(params.threads)
    start = time.perf_counter()
    clips = _clips(prepared, params)
    sources = _transcripts(dataset, params.split)
    expert = load_model_checkpoint(expert_path)
    reader = load_lipreader(lipreader_path)
    landmarks, embeddings, speech, lip_gt, truth, sync = {}, [], [], [], [], []
    for clip in clips:
        video, transcript = sources[clip.key]
        speech.append(transcribe(video))
        truth.append(transcript or "")
        lip_gt.append(read_lips(reader, clip.faces, clip.landmarks))
        landmarks[clip.key] = detect_crop_landmarks(_every(clip.faces, params.landmark_frame_step))
        embeddings.append(fid_metrics.face_embeddings(_every(clip.faces, params.fd_frame_step)))
        sync.append(clip_sync_scores(expert, clip.faces, clip.mel, clip.fps, bgr=False))
    keys = [c.key for c in clips]
    write_npz_atomic(out_npz, {"keys": np.array(keys), "embeddings": np.concatenate(embeddings),
                               "speech": np.array(speech), "lip_gt": np.array(lip_gt), "truth": np.array(truth),
                               **{f"landmarks/{k}": v for k, v in landmarks.items()}}, compressed=False)
    text = text_scores(lip_gt, speech)
    row = {"variant": "ground_truth", "label": "Ground Truth", "clips": len(clips),
           "frames": int(sum(len(c) for c in clips)), "psnr": 100.0, "ssim": 1.0, "fd_face": 0.0,
           "fid": 0.0 if params.inception_weights else None, "lpips": 0.0 if params.lpips_backbone else None,
           "lse_c": float(np.mean([s.lse_c for s in sync])), "lse_d": float(np.mean([s.lse_d for s in sync])),
           "m_lmd": 0.0, "f_lmd": 0.0, **text, "vtcs_b": 0.0, "vtcs_w": 0.0,
           "speech_wer_vs_script": text_scores(speech, truth)["wer"],
           "lipreader_wer_vs_script": text_scores(lip_gt, truth)["wer"],
           "examples": [{"clip": k, "script": t, "speech": s, "lips": g}
                        for k, t, s, g in list(zip(keys, truth, speech, lip_gt))[:5]],
           "unavailable": _unavailable(params), "params": asdict(params),
           "seconds": time.perf_counter() - start}
    return row


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
    return ref


def evaluate_generator(variant: str, label: str, checkpoint: str | Path, prepared: str | Path,
                       reference_npz: str | Path, expert_path: str | Path, lipreader_path: str | Path,
                       params: EvalParams, frames_out: str | Path | None = None) -> dict:
    """One row of the tables for the generator in ``checkpoint``."""
    from .models.lipreader import load_lipreader, read_lips

    torch.set_num_threads(params.threads)
    start = time.perf_counter()
    ref = load_reference(reference_npz)
    clips = _clips(prepared, params)
    keys = [c.key for c in clips]
    if keys != [str(k) for k in ref["keys"]]:
        raise ValueError(f"{reference_npz} was computed on other clips; rerun the reference evaluation")
    model = load_model_checkpoint(checkpoint)
    expert = load_model_checkpoint(expert_path)
    reader = load_lipreader(lipreader_path)
    real, fake, real_lm, fake_lm, embeddings, sync, lip_gen = [], [], [], [], [], [], []
    strip = None
    for clip in clips:
        generated = generate_clip(model, clip, params.window, params.batch_windows)
        if strip is None:
            strip = generated[: params.strip_frames]
        real.append(clip.faces)
        fake.append(generated)
        fake_lm.append(detect_crop_landmarks(_every(generated, params.landmark_frame_step)))
        real_lm.append(ref["landmarks"][clip.key])
        embeddings.append(fid_metrics.face_embeddings(_every(generated, params.fd_frame_step)))
        sync.append(clip_sync_scores(expert, generated, clip.mel, clip.fps, bgr=False))
        lip_gen.append(read_lips(reader, generated, clip.landmarks))
    real_all, fake_all = np.concatenate(real), np.concatenate(fake)
    speech, lip_gt = [str(s) for s in ref["speech"]], [str(s) for s in ref["lip_gt"]]
    landmark_scores = lmd(np.concatenate(fake_lm), np.concatenate(real_lm))
    fid_value = _optional(lambda: fid_metrics.inception_fid(real_all, fake_all, params.inception_weights),
                          params.inception_weights)
    lpips_value = _optional(lambda: lpips_distance(fake_all, real_all, params.lpips_backbone, params.lpips_linear),
                            params.lpips_backbone and params.lpips_linear)
    row = {"variant": variant, "label": label, "clips": len(clips), "frames": int(len(real_all)),
           "psnr": psnr(fake_all, real_all), "ssim": ssim(fake_all, real_all),
           "fd_face": fid_metrics.frechet_distance_from_features(ref["embeddings"], np.concatenate(embeddings)),
           "fid": fid_value, "lpips": lpips_value,
           "lse_c": float(np.mean([s.lse_c for s in sync])), "lse_d": float(np.mean([s.lse_d for s in sync])),
           "m_lmd": float(landmark_scores["m_lmd"]), "f_lmd": float(landmark_scores["f_lmd"]),
           **text_scores(lip_gen, speech),
           "vtcs_b": vtcs(lip_gen, lip_gt, speech, "bleu"), "vtcs_w": vtcs(lip_gen, lip_gt, speech, "wer"),
           "examples": [{"clip": k, "speech": s, "lips_real": g, "lips_generated": h}
                        for k, s, g, h in list(zip(keys, speech, lip_gt, lip_gen))[:5]],
           "unavailable": _unavailable(params), "params": asdict(params),
           "seconds": time.perf_counter() - start}
    if frames_out is not None:
        write_npz_atomic(frames_out, {"generated": strip, "real": clips[0].faces[: params.strip_frames],
                                      "clip": np.array(clips[0].key)})
    return row

