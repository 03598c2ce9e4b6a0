"""Wav2Lip-compatible audio: 16 kHz mono waveforms and 80-band mel spectrograms.

OpFlowTalker, like Wav2Lip, conditions every generated frame on a 0.2 s window of an
80-band log-mel spectrogram (16 mel steps at 80 steps per second). The constants below are
Wav2Lip's ``hparams`` so that checkpoints trained on Wav2Lip's features (its SyncNet expert,
its generator) see exactly the features they were trained on.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import soundfile
from scipy import signal

from .errors import OpFlowTalkerError

__all__ = [
    "AudioError",
    "MelParams",
    "load_wav",
    "melspectrogram",
    "mel_window",
    "mel_windows",
    "mel_steps_per_second",
    "num_video_frames",
    "MEL_WINDOW_STEPS",
]

# A generator window spans 16 mel steps (0.2 s), as in Wav2Lip's `syncnet_mel_step_size`.
MEL_WINDOW_STEPS = 16


class AudioError(OpFlowTalkerError, ValueError):
    """Audio that cannot serve as a driving signal; the message is one sentence for the user."""


@dataclass(frozen=True)
class MelParams:
    """Wav2Lip's audio hyper-parameters (``hparams.py``)."""

    sample_rate: int = 16000
    n_fft: int = 800
    hop_size: int = 200
    win_size: int = 800
    num_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    ref_level_db: float = 20.0
    min_level_db: float = -100.0
    max_abs_value: float = 4.0


WAV2LIP = MelParams()


def mel_steps_per_second(params: MelParams = WAV2LIP) -> float:
    return params.sample_rate / params.hop_size


def _decode_with_ffmpeg(path: Path, sr: int) -> np.ndarray:
    """Audio track of any container ffmpeg reads (video files, odd codecs), as mono float32."""
    import imageio_ffmpeg

    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path),
        "-vn", "-ac", "1", "-ar", str(sr), "-f", "f32le", "-",
    ]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"cannot read audio from {path}: {reason[-1] if reason else 'ffmpeg failed'}")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def load_wav(path: str | Path, sr: int = 16000) -> np.ndarray:
    """Read wav/flac/mp3/ogg, or the audio track of a video, as mono float32 at ``sr`` Hz.

    Files libsndfile reads are decoded by it and resampled with librosa (soxr); anything else
    (mp4, mkv, webm, ...) goes through the ffmpeg that imageio-ffmpeg ships.
    Raises :class:`AudioError` for a missing, unreadable, empty or silent input.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        data, native_sr = soundfile.read(str(path), dtype="float32", always_2d=True)
        wav = data.mean(axis=1)
        if native_sr != sr and wav.size:
            wav = librosa.resample(wav, orig_sr=native_sr, target_sr=sr).astype(np.float32)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        wav = _decode_with_ffmpeg(path, sr)
    if wav.size == 0:
        raise AudioError(f"no audio samples in {path}")
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"audio in {path} contains NaN or infinite samples")
    if np.max(np.abs(wav)) < 1e-4:
        raise AudioError(f"audio in {path} is silent")
    return wav


def _mel_basis(params: MelParams) -> np.ndarray:
    return librosa.filters.mel(
        sr=params.sample_rate, n_fft=params.n_fft, n_mels=params.num_mels,
        fmin=params.fmin, fmax=params.fmax,
    )


def melspectrogram(wav: np.ndarray, params: MelParams = WAV2LIP) -> np.ndarray:
    """The (80, T) normalised log-mel spectrogram of Wav2Lip's ``audio.melspectrogram``.

    T = 1 + len(wav) // hop. Values lie in [-4, 4]. Wav2Lip pinned librosa 0.7, whose STFT padded
    the signal by reflection; current librosa pads with zeros by default, so the mode is explicit.
    """
    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim != 1:
        raise AudioError(f"expected a mono waveform, got shape {wav.shape}")
    if wav.size < params.n_fft // 2 + 1:
        raise AudioError(
            f"audio too short: {wav.size} samples, need at least {params.n_fft // 2 + 1}"
        )
    emphasised = signal.lfilter([1.0, -params.preemphasis], [1.0], wav)
    spec = librosa.stft(
        y=emphasised, n_fft=params.n_fft, hop_length=params.hop_size,
        win_length=params.win_size, pad_mode="reflect",
    )
    mel = _mel_basis(params) @ np.abs(spec)
    min_level = np.exp(params.min_level_db / 20 * np.log(10))
    db = 20 * np.log10(np.maximum(min_level, mel)) - params.ref_level_db
    scaled = 2 * params.max_abs_value * (db - params.min_level_db) / (-params.min_level_db)
    return np.clip(scaled - params.max_abs_value, -params.max_abs_value, params.max_abs_value).astype(
        np.float32
    )


def mel_window(mel: np.ndarray, frame: int, fps: float = 25.0, params: MelParams = WAV2LIP) -> np.ndarray:
    """The (80, 16) mel window that drives video frame ``frame``.

    It starts at ``int(80 * frame / fps)`` (80 mel steps per second), as in Wav2Lip's training
    and inference; a window that would run past the end is the last 16 steps instead.
    """
    n_steps = mel.shape[1]
    if n_steps < MEL_WINDOW_STEPS:
        raise AudioError(
            f"audio too short: {n_steps} mel steps, a window needs {MEL_WINDOW_STEPS} (0.2 s)"
        )
    if frame < 0:
        raise ValueError(f"frame index must be non-negative, got {frame}")
    start = int(mel_steps_per_second(params) * (frame / float(fps)))
    start = min(start, n_steps - MEL_WINDOW_STEPS)
    return mel[:, start : start + MEL_WINDOW_STEPS]


def num_video_frames(mel: np.ndarray, fps: float = 25.0, params: MelParams = WAV2LIP) -> int:
    """How many video frames at ``fps`` the audio behind ``mel`` lasts (at least one)."""
    duration = (mel.shape[1] - 1) / mel_steps_per_second(params)
    return max(1, int(np.ceil(duration * fps - 1e-9)))


def mel_windows(mel: np.ndarray, fps: float = 25.0, n_frames: int | None = None,
                params: MelParams = WAV2LIP) -> np.ndarray:
    """Stack of (N, 80, 16) windows, one per video frame, for the whole audio by default."""
    if n_frames is None:
        n_frames = num_video_frames(mel, fps, params)
    return np.stack([mel_window(mel, i, fps, params) for i in range(n_frames)])
