"""Training windows cut from prepared clips, as Wav2Lip's data loader cuts them.

A window is ``T`` consecutive frames of one clip (``T`` = 5, Wav2Lip's ``syncnet_T``). The
generator sees them with their lower halves blanked, next to a *reference* window taken from
another place in the same clip (Wav2Lip's "wrong window": same person and pose, different mouth,
so the mouth can only come from the audio), and the mel window of each frame. The OFS loss also needs
the window's ground-truth flow between consecutive frames, its validity and the mouth masks.
SyncNet sees the lower halves of ``T`` frames next to the mel window of their first frame,
in sync or shifted.

All clips of a split are held in memory (the embedded corpus's training split is ~0.9 GB with its
flow); a batch is drawn by a ``numpy.random.Generator`` so that a step's batch is a function of
its seed alone (see :mod:`.loop`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import mel_windows
from ..datasets import DatasetError
from ..landmarks import mouth_masks

__all__ = ["PreparedClip", "load_split", "read_split_keys", "GeneratorBatch", "generator_batch",
           "syncnet_batch", "lower_half_masked"]


@dataclass
class PreparedClip:
    key: str
    faces: np.ndarray  # (T, S, S, 3) uint8
    mels: np.ndarray  # (T, 80, 16) float32: the mel window of every frame
    landmarks: np.ndarray  # (T, 68, 2) crop pixels
    fps: float
    mel: np.ndarray  # (80, M) the clip's whole mel spectrogram
    flow: np.ndarray | None = None  # (T-1, S, S, 2) float16
    valid: np.ndarray | None = None  # (T-1, S, S) bool

    def __len__(self) -> int:
        return len(self.faces)


def read_split_keys(prepared: str | Path, split: str) -> list[str]:
    listing = Path(prepared) / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"{listing} does not exist; run `opflowtalker preprocess` first")
    return [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]


def load_split(prepared: str | Path, split: str, with_flow: bool = True, min_frames: int = 1,
               limit: int | None = None) -> list[PreparedClip]:
    """Every clip of ``split`` with at least ``min_frames`` frames (the first ``limit`` if given)."""
    clips = []
    for key in read_split_keys(prepared, split)[:limit]:
        with np.load(Path(prepared) / f"{key}.npz") as data:
            faces = data["faces"]
            if len(faces) < min_frames:
                continue
            fps = float(data["fps"])
            mel = data["mel"].astype(np.float32)
            clip = PreparedClip(key, faces, mel_windows(mel, fps, n_frames=len(faces)),
                                data["landmarks"].astype(np.float32), fps, mel)
            if with_flow:
                clip.flow, clip.valid = data["flow"], data["valid"]
        clips.append(clip)
    if not clips:
        raise DatasetError(f"no clip of {min_frames} frames or more in the {split} split of {prepared}")
    return clips


def lower_half_masked(frames: np.ndarray) -> np.ndarray:
    """Frames (..., H, W, C) with rows H//2 and below set to 0, as Wav2Lip masks its targets."""
    masked = frames.copy()
    masked[..., frames.shape[-3] // 2 :, :, :] = 0
    return masked


def _pick(rng: np.random.Generator, clips: list[PreparedClip], window: int) -> tuple[PreparedClip, int]:
    clip = clips[int(rng.integers(len(clips)))]
    return clip, int(rng.integers(len(clip) - window + 1))


def _other_start(rng: np.random.Generator, n_frames: int, window: int, start: int) -> int:
    """A window start in the same clip away from ``start`` (the start itself for a clip of one window)."""
    choices = [s for s in range(n_frames - window + 1) if s != start]
    return int(rng.choice(choices)) if choices else start


@dataclass
class GeneratorBatch:
    """One batch of generator windows as tensors (B = batch, T = window)."""

    audio: torch.Tensor  # (B, T, 1, 80, 16)
    faces: torch.Tensor  # (B, 6, T, H, W) in [0, 1]: masked targets, then references
    target: torch.Tensor  # (B, 3, T, H, W) in [0, 1]
    sync_mel: torch.Tensor  # (B, 1, 80, 16): the mel window of each window's first frame
    flow: torch.Tensor | None  # (B, T-1, 2, H, W)
    valid: torch.Tensor | None  # (B, T-1, H, W)
    mouth: torch.Tensor  # (B, T, H, W)

    def to(self, device: torch.device) -> "GeneratorBatch":
        return GeneratorBatch(*(None if v is None else v.to(device) for v in vars(self).values()))


def _frames(faces: np.ndarray) -> torch.Tensor:
    """(N, T, H, W, 3) uint8 -> (N, 3, T, H, W) float in [0, 1]."""
    return torch.from_numpy(faces).permute(0, 4, 1, 2, 3).float().div_(255.0)


def generator_batch(clips: list[PreparedClip], rng: np.random.Generator, batch_size: int, window: int,
                    with_flow: bool = True, mouth_dilate: int = 3, flip: float = 0.0,
                    color_jitter: float = 0.0) -> GeneratorBatch:
    """``batch_size`` windows drawn by ``rng``. Two augmentations for faces the generator never saw,
    both off by default and drawn after the windows (so they change how a window looks, not which
    windows are drawn): ``flip``, the probability of mirroring a window left to right (its reference,
    mouth masks and flow too: a mirrored face is another plausible face); ``color_jitter``, each
    window's colour channels scaled by factors in [exp(-j), exp(j)], the target and its reference
    alike, so that skin and lighting must be taken from the reference instead of remembered."""
    targets, references, audio, sync, flows, valids, mouths = [], [], [], [], [], [], []
    for _ in range(batch_size):
        clip, start = _pick(rng, clips, window)
        ref = _other_start(rng, len(clip), window, start)
        span = slice(start, start + window)
        targets.append(clip.faces[span])
        references.append(clip.faces[ref : ref + window])
        audio.append(clip.mels[span])
        sync.append(clip.mels[start])
        mouths.append(mouth_masks(clip.landmarks[span], clip.faces.shape[1], dilate=mouth_dilate))
        if with_flow:
            flows.append(clip.flow[start : start + window - 1])
            valids.append(clip.valid[start : start + window - 1])
    target, reference, mouth = np.stack(targets), np.stack(references), np.stack(mouths)
    flow = valid = None
    if with_flow:
        flow, valid = np.stack(flows), np.stack(valids)  # (B, T-1, H, W, 2), (B, T-1, H, W)
    if flip > 0:
        mirror = rng.random(batch_size) < flip
        target[mirror], reference[mirror], mouth[mirror] = (
            target[mirror, :, :, ::-1], reference[mirror, :, :, ::-1], mouth[mirror, :, :, ::-1])
        if with_flow:
            flow[mirror] = flow[mirror, :, :, ::-1] * np.array([-1, 1], dtype=flow.dtype)
            valid[mirror] = valid[mirror, :, :, ::-1]
    faces = torch.cat([_frames(lower_half_masked(target)), _frames(reference)], dim=1)
    target = _frames(target)
    if color_jitter > 0:
        gain = torch.from_numpy(np.exp(rng.uniform(-color_jitter, color_jitter, (batch_size, 3)))).float()
        gain = gain[:, :, None, None, None]  # (B, 3, 1, 1, 1)
        target = (target * gain).clamp_(0, 1)
        faces = (faces * gain.repeat(1, 2, 1, 1, 1)).clamp_(0, 1)
    if with_flow:
        flow = torch.from_numpy(flow).float().permute(0, 1, 4, 2, 3).contiguous()
        valid = torch.from_numpy(valid)
    return GeneratorBatch(audio=torch.from_numpy(np.stack(audio)).unsqueeze(2), faces=faces, target=target,
                          sync_mel=torch.from_numpy(np.stack(sync)).unsqueeze(1), flow=flow, valid=valid,
                          mouth=torch.from_numpy(mouth).bool())


def syncnet_batch(clips: list[PreparedClip], rng: np.random.Generator, batch_size: int, window: int = 5,
                  min_shift: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mel (B,1,80,16), lower-half faces (B,3T,H/2,W), labels (B,)): half of the pairs in sync (1),
    half with the audio of a window at least ``min_shift`` frames away in the same clip (0)."""
    mels, faces, labels = [], [], []
    for _ in range(batch_size):
        clip, start = _pick(rng, clips, window)
        in_sync = bool(rng.integers(2))
        audio_start = start
        if not in_sync:
            far = [s for s in range(len(clip) - window + 1) if abs(s - start) >= min_shift]
            if far:
                audio_start = int(rng.choice(far))
            else:
                in_sync = True
        mels.append(clip.mels[audio_start])
        half = clip.faces[start : start + window, clip.faces.shape[1] // 2 :]  # (T, H/2, W, 3)
        faces.append(half.transpose(0, 3, 1, 2).reshape(window * 3, *half.shape[1:3]))
        labels.append(float(in_sync))
    return (torch.from_numpy(np.stack(mels)).unsqueeze(1), torch.from_numpy(np.stack(faces)).float().div_(255.0),
            torch.tensor(labels))
