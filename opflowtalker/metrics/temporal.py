"""Temporal metrics: whether a video changes where the truth does, and only there.

Both compare each frame with the next one carried back by the real video's optical flow
(``I_t ~ warp(I_{t+1}, F_t)``, the stored exact flow for the corpus, an estimator's for real video),
so that the head's own motion is not counted:

* **Temporal jitter** (``jitter``): the mean absolute warping error over the face, in 8-bit grey
  levels. The real video scores what interpolation and encoding leave; a generator whose frames
  flicker or drift, or that does not move as the face moves, scores more.
* **Lip flow error** (``flow_error``, the paper's Figure 6 as a number): the flow that DIS finds
  between consecutive frames of the video against the real video's flow, as the mean end-point
  error in pixels inside the mouth. DIS is the estimator that comes closest to the exact flow on
  held-out pairs (the flow chapter), and it has no weights trained on the generators' data. The
  real video scores DIS's own error; a still video scores the real mouth's mean motion.
* **Mouth motion in silence** (``silence_motion``): the same error inside the mouth (the real
  lips' hull, grown) over the pairs of frames in silent stretches, where the truth holds the mouth
  at rest. It is what a lip-sync generator that keeps mumbling through pauses gets wrong.

A frame is silent when its audio and that of ``margin`` frames either side are quiet: a mouth
leaves and approaches speech over about 0.1 s (coarticulation), and those frames move in the truth.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["frame_levels", "silent_frames", "warp_errors", "temporal_jitter", "silence_motion", "lip_flow_error"]

MEL_STEPS_PER_SECOND = 80.0  # Wav2Lip's mel (hop 200 at 16 kHz)


def frame_levels(mel: np.ndarray, n_frames: int, fps: float = 25.0) -> np.ndarray:
    """The mean of the mel spectrogram (80, steps) over the steps under each of ``n_frames`` frames
    (the last step's value past the end of the audio)."""
    mel = np.asarray(mel, dtype=np.float32)
    per_frame = MEL_STEPS_PER_SECOND / fps
    levels = np.empty(n_frames, dtype=np.float32)
    for t in range(n_frames):
        a = min(int(round(t * per_frame)), mel.shape[1] - 1)
        b = max(a + 1, min(int(round((t + 1) * per_frame)), mel.shape[1]))
        levels[t] = mel[:, a:b].mean()
    return levels


def silent_frames(mel: np.ndarray, n_frames: int, fps: float = 25.0, quiet: float = 0.15, margin: int = 3
                  ) -> np.ndarray:
    """(n_frames,) bool: frames whose level, and that of ``margin`` frames either side, lies in the
    bottom ``quiet`` of the clip's range (its 5th to 95th percentile of levels)."""
    levels = frame_levels(mel, n_frames, fps)
    lo, hi = np.percentile(levels, [5, 95])
    quiet_frame = levels <= lo + quiet * (hi - lo) if hi > lo else np.zeros(n_frames, dtype=bool)
    padded = np.pad(quiet_frame, margin, constant_values=True)  # before and after the clip is silence
    return np.array([padded[t: t + 2 * margin + 1].all() for t in range(n_frames)], dtype=bool)


def warp_errors(frames: np.ndarray, flow: np.ndarray, valid: np.ndarray, region: np.ndarray | None = None
                ) -> np.ndarray:
    """(T-1,) mean absolute error, in grey levels, between frame t and frame t+1 warped back by the
    flow ``flow`` (T-1, H, W, 2), over the pixels where ``valid`` (T-1, H, W) holds and, if given,
    ``region`` ((T-1, H, W) or (H, W)); NaN for a pair with no such pixel."""
    from ..warp import warp

    frames = np.asarray(frames)
    t = len(frames)
    if frames.ndim != 4 or flow.shape[:1] != (t - 1,) or flow.shape[1:3] != frames.shape[1:3]:
        raise ValueError(f"need frames (T, H, W, C) and flow (T-1, H, W, 2), got {frames.shape} and {flow.shape}")
    grey = torch.from_numpy(np.asarray(frames, dtype=np.float32).mean(axis=-1))[:, None]  # (T, 1, H, W)
    motion = torch.from_numpy(np.asarray(flow, dtype=np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        carried = warp(grey[1:], motion)
    error = (grey[:-1] - carried).abs()[:, 0].numpy()
    keep = np.asarray(valid, dtype=bool)
    if region is not None:
        keep = keep & np.broadcast_to(np.asarray(region, dtype=bool), keep.shape)
    counts = keep.sum(axis=(1, 2))
    sums = np.where(keep, error, 0.0).sum(axis=(1, 2))
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def temporal_jitter(frames: np.ndarray, flow: np.ndarray, valid: np.ndarray) -> float:
    """The mean warping error over the face and every pair of consecutive frames."""
    return float(np.nanmean(warp_errors(frames, flow, valid)))


def silence_motion(frames: np.ndarray, flow: np.ndarray, valid: np.ndarray, mouth: np.ndarray,
                   silent: np.ndarray) -> float:
    """The mean warping error inside ``mouth`` ((T, H, W) or (H, W)) over the pairs of consecutive
    frames that are both ``silent`` (T,); NaN when the clip has no such pair."""
    silent = np.asarray(silent, dtype=bool)
    pairs = silent[:-1] & silent[1:]
    if not pairs.any():
        return float("nan")
    mouth = np.asarray(mouth, dtype=bool)
    region = mouth[:-1] if mouth.ndim == 3 else mouth
    errors = warp_errors(frames, flow, valid, region)
    return float(np.nanmean(errors[pairs])) if np.isfinite(errors[pairs]).any() else float("nan")


def lip_flow_error(frames: np.ndarray, flow: np.ndarray, valid: np.ndarray, mouth: np.ndarray) -> float:
    """The mean end-point error, in pixels, between DIS's flow of each pair of consecutive
    ``frames`` (T, H, W, 3 uint8) and the real flow ``flow`` (T-1, H, W, 2), over the pixels
    inside ``mouth`` ((T, H, W) or (H, W)) where ``valid`` (T-1, H, W) holds; NaN if there are none."""
    from ..flow.classical import dis_flow

    frames = np.asarray(frames)
    if frames.ndim != 4 or flow.shape[:1] != (len(frames) - 1,) or flow.shape[1:3] != frames.shape[1:3]:
        raise ValueError(f"need frames (T, H, W, 3) and flow (T-1, H, W, 2), got {frames.shape} and {flow.shape}")
    mouth = np.asarray(mouth, dtype=bool)
    region = np.asarray(valid, dtype=bool) & np.broadcast_to(mouth[:-1] if mouth.ndim == 3 else mouth, valid.shape)
    total, count = 0.0, 0
    for t in range(len(frames) - 1):
        if not region[t].any():
            continue
        estimate = dis_flow(frames[t], frames[t + 1])
        error = np.linalg.norm(estimate - np.asarray(flow[t], dtype=np.float32), axis=-1)
        total += float(error[region[t]].sum())
        count += int(region[t].sum())
    return total / count if count else float("nan")
