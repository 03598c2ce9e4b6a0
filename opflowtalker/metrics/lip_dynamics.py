"""Lip dynamics against loudness: how a lip gap per frame follows the speech's loudness per frame,
and which audio each frame's mel window hears. Measurements the generate and audio chapters report."""
from __future__ import annotations

import numpy as np

from ..audio import MEL_WINDOW_STEPS, WAV2LIP, MelParams, mel_steps_per_second

__all__ = ["loudness_per_frame", "SILENCE", "lip_sync_row", "window_samples", "window_loudness"]


def loudness_per_frame(wav: np.ndarray, sample_rate: int, fps: float, n_frames: int) -> np.ndarray:
    """RMS of the samples under each video frame (0 past the end of the speech)."""
    hop = int(round(sample_rate / fps))
    return np.array([np.sqrt(np.mean(wav[i * hop:(i + 1) * hop] ** 2)) if i * hop < len(wav) else 0.0
                     for i in range(n_frames)])


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-6 and b.std() > 1e-6 else float("nan")


# A frame is silent when its loudness is under this fraction of the loudest frame's.
SILENCE = 0.1


def lip_sync_row(gap: np.ndarray, rms: np.ndarray, fps: float, silence: float = SILENCE) -> dict[str, float]:
    """How a lip gap per frame follows the loudness per frame: r, the best r with the mouth shifted up
    to 0.2 s either way (a mel window spans the next 0.2 s of speech) and that shift, the gap's
    spread, and the mean gap in speech and in silence (frames under ``silence`` of the loudest)."""
    n = min(len(gap), len(rms))
    gap, rms = np.asarray(gap[:n], float), np.asarray(rms[:n], float)
    max_shift = int(round(0.2 * fps))
    shifted = {s: _correlation(gap[max(0, -s):n - max(0, s)], rms[max(0, s):n - max(0, -s)])
               for s in range(-max_shift, max_shift + 1)}
    best = max(shifted, key=lambda s: shifted[s] if np.isfinite(shifted[s]) else -np.inf)
    silent = rms < silence * rms.max()
    return {"r (lip gap, loudness)": _correlation(gap, rms), "best r within ±0.2 s": shifted[best],
            "mouth ahead of sound (ms)": 1000 * best / fps, "lip gap s.d. (px)": gap.std(),
            "mean gap, speech (px)": gap[~silent].mean() if (~silent).any() else float("nan"),
            "mean gap, silence (px)": gap[silent].mean() if silent.any() else float("nan")}


def window_samples(frame: int, fps: float, n_samples: int, params: MelParams = WAV2LIP) -> tuple[int, int]:
    """First and one-past-last sample of the audio that frame ``frame``'s mel window is computed from.

    The window is :func:`opflowtalker.audio.mel_window`'s: steps s..s+15 with s = int(80 frame / fps),
    moved back to the last 16 steps at the end. Step k is a centred STFT frame, samples
    [k hop - n_fft/2, k hop + n_fft/2), so the window spans [s hop - n_fft/2, (s+15) hop + n_fft/2),
    clipped to the audio.
    """
    n_steps = 1 + n_samples // params.hop_size
    start = min(int(mel_steps_per_second(params) * (frame / float(fps))), n_steps - MEL_WINDOW_STEPS)
    first = start * params.hop_size - params.n_fft // 2
    last = (start + MEL_WINDOW_STEPS - 1) * params.hop_size + params.n_fft // 2
    return max(0, first), min(n_samples, last)


def window_loudness(wav: np.ndarray, fps: float, n_frames: int, params: MelParams = WAV2LIP) -> np.ndarray:
    """RMS of the samples under each of the first ``n_frames`` frames' mel windows (:func:`window_samples`)."""
    wav = np.asarray(wav, dtype=np.float64)
    spans = [window_samples(i, fps, len(wav), params) for i in range(n_frames)]
    return np.array([np.sqrt(np.mean(wav[a:b] ** 2)) for a, b in spans])

