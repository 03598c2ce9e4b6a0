"""Audio-visual synchronisation: LSE-D and LSE-C, the SyncNet offset search of syncnet_python.

A SyncNet embeds every 5-frame window of a face video (frames t..t+4) and the 0.2 s of audio
that starts with frame t into one space in which in-sync pairs lie close. syncnet_python
(Chung & Zisserman, "Out of time", ``SyncNetInstance.evaluate``) then shifts the audio features
against the video features by every offset in -vshift..vshift frames (vshift = 15) and, per
offset, averages the Euclidean distance between video feature t and audio feature t+offset over
the clip; audio features shifted past either end are zero vectors, exactly as the reference pads
them. Of the 2*vshift+1 mean distances,

* **LSE-D** (lip-sync error, distance) is the smallest: how close the best-aligned pairs are;
* **LSE-C** (lip-sync error, confidence) is their median minus that smallest one: how clearly
  the best offset stands out from the wrong ones;
* the **AV offset** is ``vshift - argmin``: -k means that video frame t matches audio frame t+k
  (the audio lags the picture by k frames).

Like the reference, a clip of L frames (the shorter of video and audio) gives L-5 windows.
Absolute values depend on the network and on the input pipeline, so generated and real videos
must always be scored with the same one. Two networks are supported:

* our :class:`~opflowtalker.models.syncnet.SyncNet` (Wav2Lip's ``SyncNet_color``) on Wav2Lip's
  inputs: 96x96 crops whose lower halves are stacked, BGR in [0,1], and the 80x16 mel window of
  frame t (:func:`clip_sync_scores`);
* syncnet_python's released ``syncnet_v2.model``, the network the paper's LSE-C comes from
  (:class:`SyncNetV2`, :func:`load_syncnet_v2`, :func:`clip_sync_scores_v2`): 224x224 BGR crops
  in 0..255 through a 3-D convolution over 5 frames, and 20 steps (0.2 s) of 13 MFCCs at 100 Hz
  computed as python_speech_features does (:func:`speech_features_mfcc`).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import librosa
import numpy as np
import torch
from scipy.fft import dct
from torch import nn

from ..audio import mel_window, num_video_frames
from ..models.checkpoints import load_reference_state_dict, load_state_dict_strict
from ..models.syncnet import SYNC_FRAMES, lower_half_window
from ..video import resize_frames
from ..errors import OpFlowTalkerError

__all__ = [
    "SyncError",
    "SyncScores",
    "VSHIFT",
    "offset_distances",
    "sync_scores",
    "syncnet_features",
    "clip_sync_scores",
    "SyncNetV2",
    "load_syncnet_v2",
    "speech_features_mfcc",
    "syncnet_v2_features",
    "clip_sync_scores_v2",
    "clip_sync_scores_judge",
    "shifted_mel",
    "mel_of_length",
]

# syncnet_python's default search range (run_syncnet.py --vshift 15): +-0.6 s at 25 fps.
VSHIFT = 15
# Wav2Lip's expert was trained on 96x96 crops.
WAV2LIP_FACE_SIZE = 96
# syncnet_python's crops and audio: 224x224 frames at 25 fps, 16 kHz audio, MFCCs at 100 Hz.
V2_FACE_SIZE = 224
V2_SAMPLE_RATE = 16000
V2_FPS = 25
V2_MFCC_PER_FRAME = 4
V2_MFCC_WINDOW = 20
# torch.nn.functional.pairwise_distance adds this to the difference before taking the norm; the
# reference's distances include it, so ours do too.
PAIRWISE_EPS = 1e-6


class SyncError(OpFlowTalkerError, ValueError):
    """A clip that cannot be scored for lip sync; the message is one sentence for the user."""


@dataclass(frozen=True)
class SyncScores:
    """LSE-C, LSE-D, the best AV offset (frames) and the mean distance at every offset.

    ``dists[k]`` is the mean distance with the audio moved by ``k - vshift`` frames (video frame t
    against audio frame t + k - vshift).
    """

    lse_c: float
    lse_d: float
    offset: int
    dists: np.ndarray


def offset_distances(video_features: np.ndarray, audio_features: np.ndarray, vshift: int = VSHIFT) -> np.ndarray:
    """(N, 2*vshift+1) distances between video feature t and audio feature t + k - vshift.

    syncnet_python's ``calc_pdist``: the audio features are padded with ``vshift`` zero vectors at
    both ends, so a shift past the clip compares the video feature with zero.
    """
    video = np.asarray(video_features, dtype=np.float64)
    audio = np.asarray(audio_features, dtype=np.float64)
    if video.ndim != 2 or audio.shape != video.shape or len(video) == 0:
        raise SyncError(f"expected video and audio features of one shape (N, D) with N > 0, got "
                        f"{video.shape} and {audio.shape}")
    if not isinstance(vshift, (int, np.integer)) or vshift < 0:
        raise SyncError(f"vshift must be a non-negative number of frames, got {vshift!r}")
    n, width = len(video), 2 * vshift + 1
    padded = np.concatenate([np.zeros((vshift, video.shape[1])), audio, np.zeros((vshift, video.shape[1]))])
    # windows[t, k] = padded[t + k]: every shifted audio feature that video frame t is compared with.
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=0)[:n].transpose(0, 2, 1)
    return np.linalg.norm(video[:, None, :] - windows + PAIRWISE_EPS, axis=-1)


def sync_scores(video_features: np.ndarray, audio_features: np.ndarray, vshift: int = VSHIFT) -> SyncScores:
    """LSE-C, LSE-D and the AV offset of per-frame SyncNet features (N, D) of a clip."""
    dists = offset_distances(video_features, audio_features, vshift).mean(axis=0)
    best = int(np.argmin(dists))
    lse_d = float(dists[best])
    # 2*vshift+1 values: the median is the middle one, as torch.median gives.
    return SyncScores(lse_c=float(np.median(dists)) - lse_d, lse_d=lse_d, offset=vshift - best, dists=dists)


def _scored_frames(n_video: int, n_audio: int) -> int:
    """How many windows syncnet_python scores: its ``lastframe = min_length - 5``."""
    n = min(n_video, n_audio) - SYNC_FRAMES
    if n < 1:
        raise SyncError(f"clip too short for lip-sync scoring: {min(n_video, n_audio)} frames of video and "
                        f"audio, at least {SYNC_FRAMES + 1} are needed")
    return n


def _check_faces(faces: np.ndarray) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.ndim != 4 or faces.shape[3] != 3 or faces.dtype != np.uint8:
        raise SyncError(f"expected face crops (T, H, W, 3) of uint8 RGB, got {faces.dtype} {faces.shape}")
    return faces


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[torch.device]:
    """Eval mode (batch-norm statistics) and no gradients for the duration, then the model's own mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield next(model.parameters()).device
    finally:
        model.train(was_training)


def syncnet_features(syncnet: nn.Module, faces: np.ndarray, mel: np.ndarray, fps: float = 25.0,
                     batch: int = 64, bgr: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (video, audio) embeddings (N, 512) of a clip from our Wav2Lip-layout SyncNet.

    ``faces`` (T, S, S, 3) uint8 RGB crops (resized to 96 when S differs), ``mel`` (80, M) the
    clip's Wav2Lip mel spectrogram. Window t holds frames t..t+4 and the mel window of frame t.
    ``bgr`` swaps the channels to BGR, the order Wav2Lip's expert was trained on (cv2 images);
    pass False for an expert trained on RGB crops.
    """
    faces = resize_frames(_check_faces(faces), WAV2LIP_FACE_SIZE, cv2.INTER_LINEAR)
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 2 or mel.shape[0] != 80:
        raise SyncError(f"expected an (80, M) mel spectrogram, got shape {mel.shape}")
    n = _scored_frames(len(faces), num_video_frames(mel, fps))
    frames = faces[..., ::-1] if bgr else faces
    frames = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T, 3, S, S) uint8
    video_out, audio_out = [], []
    with _evaluating(syncnet) as device:
        for start in range(0, n, batch):
            ts = range(start, min(n, start + batch))
            window = torch.stack([frames[t : t + SYNC_FRAMES] for t in ts]).float().div_(255.0)
            mels = torch.from_numpy(np.stack([mel_window(mel, t, fps) for t in ts]))[:, None]
            audio_embedding, face_embedding = syncnet(mels.to(device), lower_half_window(window, "BTCHW").to(device))
            video_out.append(face_embedding.cpu())
            audio_out.append(audio_embedding.cpu())
    return torch.cat(video_out).numpy(), torch.cat(audio_out).numpy()


def clip_sync_scores(syncnet: nn.Module, faces: np.ndarray, mel: np.ndarray, fps: float = 25.0,
                     batch: int = 64, vshift: int = VSHIFT, bgr: bool = True) -> SyncScores:
    """LSE-C/LSE-D of one clip with our SyncNet (see :func:`syncnet_features` for the inputs)."""
    return sync_scores(*syncnet_features(syncnet, faces, mel, fps, batch, bgr), vshift=vshift)


# ---------------------------------------------------------------------------------------------
# syncnet_python's released network (``S`` in SyncNetModel.py) and its input pipeline
# ---------------------------------------------------------------------------------------------

def _conv_bn_relu(conv: nn.Module) -> list[nn.Module]:
    norm = nn.BatchNorm3d if isinstance(conv, nn.Conv3d) else nn.BatchNorm2d
    return [conv, norm(conv.out_channels), nn.ReLU(inplace=True)]


def _audio_cnn() -> nn.Sequential:
    """(B,1,13,20) MFCC window -> (B,512,1,1). The list order fixes the ``netcnnaud.<i>`` keys."""
    return nn.Sequential(
        *_conv_bn_relu(nn.Conv2d(1, 64, 3, 1, 1)),
        nn.MaxPool2d(1, 1),  # an identity pool, kept because it holds index 3 of the reference
        *_conv_bn_relu(nn.Conv2d(64, 192, 3, 1, 1)),
        nn.MaxPool2d(3, (1, 2)),
        *_conv_bn_relu(nn.Conv2d(192, 384, 3, padding=1)),
        *_conv_bn_relu(nn.Conv2d(384, 256, 3, padding=1)),
        *_conv_bn_relu(nn.Conv2d(256, 256, 3, padding=1)),
        nn.MaxPool2d(3, 2),
        *_conv_bn_relu(nn.Conv2d(256, 512, (5, 4), padding=0)),
    )


def _lip_cnn() -> nn.Sequential:
    """(B,3,5,224,224) BGR clip in 0..255 -> (B,512,1,1,1); only the first layer sees time."""
    return nn.Sequential(
        *_conv_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0)),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *_conv_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1))),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1))),
        *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1))),
        *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1))),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *_conv_bn_relu(nn.Conv3d(256, 512, (1, 6, 6), padding=0)),
    )


def _fc_head(out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, out_features))


class SyncNetV2(nn.Module):
    """syncnet_python's two-stream SyncNet (``S``), with the key layout of ``syncnet_v2.model``.

    Its features are not normalised: the offset search measures plain Euclidean distances
    between the 1024-d outputs.
    """

    def __init__(self, embedding_dim: int = 1024):
        super().__init__()
        self.netcnnaud = _audio_cnn()
        self.netfcaud = _fc_head(embedding_dim)
        self.netfclip = _fc_head(embedding_dim)
        self.netcnnlip = _lip_cnn()

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B,1,13,20) MFCC windows -> (B, embedding_dim)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, clips: torch.Tensor) -> torch.Tensor:
        """(B,3,5,224,224) BGR 0..255 clips -> (B, embedding_dim)."""
        return self.netfclip(self.netcnnlip(clips).flatten(1))

    def forward(self, mfcc: torch.Tensor, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_aud(mfcc), self.forward_lip(clips)


def load_syncnet_v2(path: str | os.PathLike) -> SyncNetV2:
    """syncnet_python's ``syncnet_v2.model`` (a bare state dict), read weights-only and strictly."""
    return load_state_dict_strict(SyncNetV2(), load_reference_state_dict(path),
                                  "syncnet_python SyncNet (syncnet_v2.model)", path)


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def speech_features_filterbank(n_filters: int = 26, n_fft: int = 512, sample_rate: int = 16000) -> np.ndarray:
    """(n_filters, n_fft//2+1) triangular mel filters as python_speech_features builds them:
    edges evenly spaced in mel from 0 Hz to Nyquist, snapped down to FFT bins of (n_fft+1)/rate."""
    points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_filters + 2)
    edges = np.floor((n_fft + 1) * _mel_to_hz(points) / sample_rate)
    bank = np.zeros((n_filters, n_fft // 2 + 1))
    for j in range(n_filters):
        lo, mid, hi = edges[j : j + 3]
        rising = np.arange(int(lo), int(mid))
        falling = np.arange(int(mid), int(hi))
        bank[j, rising] = (rising - lo) / (mid - lo)
        bank[j, falling] = (hi - falling) / (hi - mid)
    return bank


def speech_features_mfcc(signal: np.ndarray, sample_rate: int = 16000, n_ceps: int = 13) -> np.ndarray:
    """(frames, 13) MFCCs at 100 Hz, python_speech_features' ``mfcc`` with its defaults.

    25 ms rectangular frames every 10 ms (the last zero-padded), pre-emphasis 0.97, a 512-point
    power spectrum, 26 mel filters, log, orthonormal DCT-II, a sine lifter of 22, and coefficient 0
    replaced by the log frame energy. ``signal`` is on the scale the reference reads it, 16-bit
    integers; the log energies (and so the coefficients) shift with that scale.
    """
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 1 or signal.size == 0:
        raise SyncError(f"expected a mono waveform, got shape {signal.shape}")
    emphasised = np.append(signal[0], signal[1:] - 0.97 * signal[:-1])
    frame_len = int(np.floor(0.025 * sample_rate + 0.5))  # the reference rounds half up
    step = int(np.floor(0.01 * sample_rate + 0.5))
    n_frames = 1 if len(emphasised) <= frame_len else 1 + int(np.ceil((len(emphasised) - frame_len) / step))
    padded = np.concatenate([emphasised, np.zeros((n_frames - 1) * step + frame_len - len(emphasised))])
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_len)[::step][:n_frames]
    n_fft = 1 << int(np.ceil(np.log2(frame_len)))  # the smallest power of two holding a frame
    power = np.abs(np.fft.rfft(frames, n_fft)) ** 2 / n_fft
    tiny = np.finfo(float).eps  # stands in for zeros before the logs
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, tiny, energy)
    bands = power @ speech_features_filterbank(26, n_fft, sample_rate).T
    bands = np.where(bands == 0, tiny, bands)
    ceps = dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :n_ceps]
    ceps *= 1.0 + 11.0 * np.sin(np.pi * np.arange(n_ceps) / 22.0)
    ceps[:, 0] = np.log(energy)
    return ceps


def syncnet_v2_features(model: SyncNetV2, faces: np.ndarray, wav: np.ndarray, sample_rate: int = V2_SAMPLE_RATE,
                        batch: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (video, audio) features (N, 1024) with syncnet_python's pipeline.

    ``faces`` (T, H, W, 3) uint8 RGB face crops at 25 fps, resized to 224x224 and turned to BGR
    0..255 (syncnet_python reads its 224x224 crop videos with cv2 and does not rescale);
    ``wav`` mono float in [-1, 1] (resampled to 16 kHz if needed and scaled to 16-bit integers,
    as the reference's ffmpeg + wavfile.read give). Window t: frames t..t+4 and MFCC steps
    4t..4t+19.
    """
    faces = resize_frames(_check_faces(faces), V2_FACE_SIZE, cv2.INTER_LINEAR)
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or wav.size == 0:
        raise SyncError(f"expected a mono waveform, got shape {wav.shape}")
    if sample_rate != V2_SAMPLE_RATE:
        wav = librosa.resample(wav, orig_sr=sample_rate, target_sr=V2_SAMPLE_RATE)
    pcm = np.clip(np.round(wav.astype(np.float64) * 32768.0), -32768, 32767)
    mfcc = torch.from_numpy(speech_features_mfcc(pcm, V2_SAMPLE_RATE).T.astype(np.float32))  # (13, M)
    n = _scored_frames(len(faces), len(pcm) // (V2_SAMPLE_RATE // V2_FPS))
    video = torch.from_numpy(np.ascontiguousarray(faces[..., ::-1])).permute(3, 0, 1, 2)  # (3, T, 224, 224)
    video_out, audio_out = [], []
    with _evaluating(model) as device:
        for start in range(0, n, batch):
            ts = range(start, min(n, start + batch))
            clips = torch.stack([video[:, t : t + SYNC_FRAMES] for t in ts]).float()
            windows = torch.stack([mfcc[:, V2_MFCC_PER_FRAME * t : V2_MFCC_PER_FRAME * t + V2_MFCC_WINDOW]
                                   for t in ts])[:, None]
            video_out.append(model.forward_lip(clips.to(device)).cpu())
            audio_out.append(model.forward_aud(windows.to(device)).cpu())
    return torch.cat(video_out).numpy(), torch.cat(audio_out).numpy()


def clip_sync_scores_v2(model: SyncNetV2, faces: np.ndarray, wav: np.ndarray, sample_rate: int = V2_SAMPLE_RATE,
                        batch: int = 20, vshift: int = VSHIFT) -> SyncScores:
    """LSE-C/LSE-D of one clip with syncnet_python's network (see :func:`syncnet_v2_features`)."""
    return sync_scores(*syncnet_v2_features(model, faces, wav, sample_rate, batch), vshift=vshift)


def clip_sync_scores_judge(judge: nn.Module, faces: np.ndarray, landmarks: np.ndarray, mel: np.ndarray,
                           fps: float = 25.0, vshift: int = VSHIFT) -> SyncScores:
    """LSE-C/LSE-D and AV offset of one clip with the sync judge
    (:mod:`opflowtalker.models.sync_judge`; see its ``judge_features`` for the inputs)."""
    from ..models.sync_judge import judge_features

    try:
        features = judge_features(judge, _check_faces(faces), landmarks, mel, fps)
    except ValueError as error:
        raise SyncError(str(error)) from error
    return sync_scores(*features, vshift=vshift)


def shifted_mel(mel: np.ndarray, frames: int, fps: float = 25.0) -> np.ndarray:
    """The mel spectrogram of the same audio delayed by ``frames`` video frames (advanced if
    negative): silence (the spectrogram's minimum) enters at one end, the same length is kept.

    Wav2Lip's mel has 80 steps a second, so a delay of 5 frames at 25 fps is exactly 16 steps; other
    delays are rounded to the nearest step. With the audio delayed by k frames, the true AV offset
    of the result is -k (video frame t matches audio frame t + k).
    """
    mel = np.asarray(mel, dtype=np.float32)
    steps = int(round(frames * 80.0 / fps))
    if abs(steps) >= mel.shape[1]:
        raise SyncError(f"a shift of {frames} frames is longer than the clip's audio")
    if steps == 0:
        return mel.copy()
    silence = np.full((mel.shape[0], abs(steps)), mel.min(), dtype=np.float32)
    if steps > 0:
        return np.concatenate([silence, mel[:, :-steps]], axis=1)
    return np.concatenate([mel[:, -steps:], silence], axis=1)


def mel_of_length(mel: np.ndarray, steps: int) -> np.ndarray:
    """``mel`` cut to ``steps`` mel steps, or padded at the end with silence (its minimum): another
    clip's speech laid under a video of a given length (the wrong-audio control)."""
    mel = np.asarray(mel, dtype=np.float32)
    if mel.shape[1] >= steps:
        return mel[:, :steps]
    return np.pad(mel, ((0, 0), (0, steps - mel.shape[1])), constant_values=float(mel.min()))
