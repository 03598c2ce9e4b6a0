"""The sync judge: the network that scores lip sync (LSE-C, LSE-D, AV offset) in the tables.

The paper's LSE-C/D come from syncnet_python (Chung & Zisserman), a network other than the expert
that Wav2Lip trains its generator against: the judge and the teacher are kept apart so that a
generator cannot score well merely by fooling the network it was trained to please. No weights of
syncnet_python ship offline, so this is our own network in its role, trained for what the offset
search asks of it:

* it sees what a lip reader sees: grayscale **mouth crops** framed by the clip's landmarks
  (:func:`~opflowtalker.models.mouths.mouth_crops` with one fixed frame for the whole clip, so a
  still video stays still), five frames (0.2 s), each clip standardised to zero mean and unit
  variance so that skin and lighting do not matter; and the 80 x 16 mel window of the first frame,
  as every SyncNet does;
* it is trained with the **multi-way matching** loss of Chung et al. ("Perfect match", 2019): one
  video window against the audio of the same clip at every offset in -K..K frames and the audio of
  the other clips of the batch, a softmax over cosine similarities whose answer is offset 0. That is
  the offset search of syncnet_python turned into a training objective, so the true offset stands
  out from the shifted ones and from another sentence.

Scores use syncnet_python's procedure unchanged (:func:`~opflowtalker.metrics.sync.sync_scores`):
Euclidean distances between the unit-norm embeddings, averaged per offset in -15..15.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..audio import mel_windows, num_video_frames
from .mouths import mouth_crops

__all__ = ["SyncJudgeConfig", "SyncJudge", "judge_crops", "judge_features", "load_sync_judge", "JUDGE_FRAMES"]

JUDGE_FRAMES = 5  # 0.2 s at 25 fps, the span of the 16-step mel window


@dataclass(frozen=True)
class SyncJudgeConfig:
    crop_height: int = 32
    crop_width: int = 48
    crop_scale: float = 1.1  # crop width / eye-to-mouth distance, as the lip reader's
    channels: tuple[int, ...] = (32, 64, 96)
    embedding_dim: int = 128

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if len(self.channels) != 3:
            raise ValueError(f"the sync judge has three convolution stages per stream, not {len(self.channels)}")


def _block3d(cin: int, cout: int, kernel, stride, padding) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]


def _block2d(cin: int, cout: int, stride) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SyncJudge(nn.Module):
    """(mel windows (B,1,80,16), mouth windows (B,1,5,h,w)) -> unit-norm embeddings (B,D) each."""

    def __init__(self, config: SyncJudgeConfig | None = None):
        super().__init__()
        self.config = config = config or SyncJudgeConfig()
        c1, c2, c3 = config.channels
        self.lip_encoder = nn.Sequential(
            *_block3d(1, c1, (3, 5, 5), (1, 2, 2), (1, 2, 2)),
            *_block3d(c1, c2, (3, 3, 3), (1, 2, 2), (1, 1, 1)),
            # The last stage spans the five frames: its output is one vector per window.
            *_block3d(c2, c3, (JUDGE_FRAMES, 3, 3), (1, 2, 2), (0, 1, 1)),
            nn.Flatten(),
        )
        h, w = -(-config.crop_height // 8), -(-config.crop_width // 8)
        self.lip_head = nn.Sequential(nn.Linear(c3 * h * w, 256), nn.ReLU(inplace=True), nn.Linear(256, config.embedding_dim))
        self.audio_encoder = nn.Sequential(
            *_block2d(1, c1, (2, 1)), *_block2d(c1, c2, 2), *_block2d(c2, c3, 2), *_block2d(c3, c3, 2), nn.Flatten())
        self.audio_head = nn.Sequential(nn.Linear(c3 * 5 * 2, 256), nn.ReLU(inplace=True),
                                        nn.Linear(256, config.embedding_dim))

    def forward_audio(self, mels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio_head(self.audio_encoder(mels)), dim=1)

    def forward_lips(self, windows: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.lip_head(self.lip_encoder(windows)), dim=1)

    def forward(self, mels: torch.Tensor, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_audio(mels), self.forward_lips(windows)


def judge_crops(faces: np.ndarray, landmarks: np.ndarray, config: SyncJudgeConfig) -> np.ndarray:
    """(T, h, w) float32 mouth crops of a clip, standardised over the clip, in one fixed frame."""
    crops = mouth_crops(faces, landmarks, size=(config.crop_height, config.crop_width),
                        width_scale=config.crop_scale, sigma=None)
    return (crops - crops.mean()) / (crops.std() + 1e-6)


@torch.no_grad()
def judge_features(judge: SyncJudge, faces: np.ndarray, landmarks: np.ndarray, mel: np.ndarray,
                   fps: float = 25.0, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (video, audio) embeddings (N, D) of a clip, N = frames - 5 as syncnet_python scores.

    ``faces`` (T, S, S, 3) uint8 RGB, ``landmarks`` (T, 68, 2) of the real clip (they place the
    crop; a generated clip is framed like the real one it replaces), ``mel`` (80, M): the audio the
    video is judged against. Window t: frames t..t+4 and the mel window of frame t.
    """
    n = min(len(faces), num_video_frames(mel, fps)) - JUDGE_FRAMES
    if n < 1:
        raise ValueError(f"a clip of {min(len(faces), num_video_frames(mel, fps))} frames is too short for lip-sync "
                         f"scoring: at least {JUDGE_FRAMES + 1} are needed")
    crops = torch.from_numpy(judge_crops(faces, landmarks, judge.config))
    mels = torch.from_numpy(mel_windows(np.asarray(mel, dtype=np.float32), fps, n_frames=n))[:, None]
    was_training = judge.training
    judge.eval()
    device = next(judge.parameters()).device
    video, audio = [], []
    try:
        for start in range(0, n, batch):
            ts = range(start, min(n, start + batch))
            windows = torch.stack([crops[t: t + JUDGE_FRAMES] for t in ts])[:, None]
            video.append(judge.forward_lips(windows.to(device)).cpu())
            audio.append(judge.forward_audio(mels[start: start + len(ts)].to(device)).cpu())
    finally:
        judge.train(was_training)
    return torch.cat(video).numpy(), torch.cat(audio).numpy()


def load_sync_judge(path: str | os.PathLike) -> SyncJudge:
    """An eval-mode sync judge from a safetensors checkpoint written with its config as metadata."""
    from .checkpoints import CheckpointError, load_safetensors, load_state_dict_strict

    state_dict, metadata = load_safetensors(path)
    if metadata.get("model") != "SyncJudge":
        raise CheckpointError(f"{path} holds a model named {metadata.get('model')!r}, not a SyncJudge")
    config = metadata.get("config") or {}
    unknown = sorted(set(config) - set(SyncJudgeConfig.__dataclass_fields__))
    if unknown:
        raise CheckpointError(f"{path} has sync-judge settings this version does not know: {', '.join(unknown)}")
    return load_state_dict_strict(SyncJudge(SyncJudgeConfig(**config)), state_dict, "sync judge", Path(path))
