"""Training the sync judge with multi-way matching over audio offsets (Chung et al., 2019).

A sample is one five-frame mouth window of a training clip. Its candidates are the mel windows of
the same clip moved by every offset in -K..K frames (``max_offset``) that stays inside the clip,
and the mel windows of the other clips of the batch at the same frame (another sentence, often
another voice).
The loss is the cross-entropy of a softmax over the candidates' cosine similarities divided by a
temperature, with the unmoved audio as the answer: exactly what syncnet_python's offset search and
LSE-C later ask of the network. Offsets of one frame are allowed to look alike (40 ms of
coarticulation); the judge is scored on finding the true offset within one frame.

While it trains, and at the end, the judge is scored on the validation clips (seen faces, unseen
sentences) the way the tables use it: the share of clips whose best offset is within one frame
of 0, the share whose best offset is within one frame of a known shift of the audio, and LSE-C.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..files import write_json_atomic
from ..metrics.sync import clip_sync_scores_judge, mel_of_length, shifted_mel
from ..params import require
from ..models.sync_judge import JUDGE_FRAMES, SyncJudge, SyncJudgeConfig, judge_crops, load_sync_judge
from .data import PreparedClip, load_split
from .loop import LoopParams, distributed, fit

__all__ = ["SyncJudgeTrainParams", "JudgeClips", "judge_batch", "judge_loss", "judge_calibration",
           "train_sync_judge"]


@dataclass(frozen=True)
class SyncJudgeTrainParams:
    """params.yaml's ``train_sync_judge`` group."""

    steps: int
    batch_size: int
    lr: float
    max_offset: int  # K: candidate audio offsets -K..K frames of the same clip
    temperature: float
    crop_height: int
    crop_width: int
    crop_scale: float
    channels: tuple[int, ...]
    embedding_dim: int
    windows_per_clip: int  # windows drawn from each clip of a batch (its audio is encoded once)
    flip: float  # mirror a clip's windows left to right
    shift: int  # random translation of a window, crop pixels
    eval_shift: int  # frames the audio is delayed by in the shifted-audio check
    eval_clips: int  # validation clips scored (0: all)
    seed: int
    checkpoint_every: int
    log_every: int
    eval_every: int
    threads: int
    precision: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        require(self, above_zero=("steps", "batch_size", "lr", "max_offset", "temperature", "crop_height", "crop_width",
                                  "crop_scale", "embedding_dim", "windows_per_clip", "eval_shift", "checkpoint_every",
                                  "log_every", "eval_every", "threads"),
                at_least_zero=("shift", "eval_clips", "seed"), shares=("flip",))
        self.loop()

    def model_config(self) -> SyncJudgeConfig:
        return SyncJudgeConfig(crop_height=self.crop_height, crop_width=self.crop_width, crop_scale=self.crop_scale,
                               channels=self.channels, embedding_dim=self.embedding_dim)

    def loop(self) -> LoopParams:
        return LoopParams.of(self)


@dataclass
class JudgeClips:
    """Each clip's standardised mouth crops (T, h, w) and mel windows (T, 80, 16)."""

    crops: list[np.ndarray]
    mels: list[np.ndarray]


def _judge_clips(clips: list[PreparedClip], config: SyncJudgeConfig) -> JudgeClips:
    return JudgeClips([judge_crops(c.faces, c.landmarks, config).astype(np.float32) for c in clips],
                      [c.mels for c in clips])


def judge_batch(data: JudgeClips, rng: np.random.Generator, batch_size: int, max_offset: int,
                windows_per_clip: int = 8, flip: float = 0.5, shift: int = 2) -> dict[str, torch.Tensor]:
    """``batch_size`` mouth windows (B,1,5,h,w) drawn ``windows_per_clip`` at a time from random
    clips, each clip's every mel window once (C, L, 1, 80, 16) with their validity (C, L), and for
    each window its clip (B,) and first frame (B,). A clip's audio is encoded once for all its
    windows, which is most of what makes a step cheap."""
    n_clips = -(-batch_size // windows_per_clip)
    chosen = rng.choice(len(data.crops), size=n_clips, replace=len(data.crops) < n_clips)
    length = max(len(data.mels[i]) for i in chosen)
    audio = np.zeros((n_clips, length, *data.mels[0].shape[1:]), dtype=np.float32)
    valid = np.zeros((n_clips, length), dtype=bool)
    windows, clip_of, starts = [], [], []
    for c, i in enumerate(chosen):
        crops, mels = data.crops[i], data.mels[i]
        audio[c, : len(mels)], valid[c, : len(mels)] = mels, True
        # Mirroring and moving a clip's windows together keeps them one face.
        mirror = flip > 0 and rng.random() < flip
        dy, dx = rng.integers(-shift, shift + 1, size=2) if shift > 0 else (0, 0)
        for t in rng.integers(0, len(crops) - JUDGE_FRAMES + 1, size=windows_per_clip):
            window = crops[t: t + JUDGE_FRAMES]
            window = window[:, :, ::-1] if mirror else window
            windows.append(np.ascontiguousarray(np.roll(window, (int(dy), int(dx)), axis=(1, 2))))
            clip_of.append(c)
            starts.append(int(t))
    keep = slice(0, batch_size)
    return {"windows": torch.from_numpy(np.stack(windows[keep]))[:, None],
            "audio": torch.from_numpy(audio)[:, :, None], "valid": torch.from_numpy(valid),
            "clip": torch.tensor(clip_of[keep]), "start": torch.tensor(starts[keep]),
            "max_offset": torch.tensor(max_offset)}


def judge_loss(model: SyncJudge, batch: dict[str, torch.Tensor], temperature: float) -> dict[str, torch.Tensor]:
    """Multi-way matching: each window's own audio among its clip's audio moved by -K..K frames
    and the other clips' audio at the same frame."""
    n_clips, length = batch["audio"].shape[:2]
    audio = model.forward_audio(batch["audio"].flatten(0, 1)).view(n_clips, length, -1)
    lips = model.forward_lips(batch["windows"])
    k = int(batch["max_offset"])
    clip, start = batch["clip"], batch["start"]
    positions = start[:, None] + torch.arange(-k, k + 1, device=start.device)[None]  # (B, 2K+1)
    inside = (positions >= 0) & (positions < length)
    positions = positions.clamp(0, length - 1)
    inside = inside & batch["valid"][clip[:, None], positions]
    same_clip = torch.einsum("bd,bkd->bk", lips, audio[clip[:, None], positions])
    same_clip = same_clip.masked_fill(~inside, float("-inf"))
    at_start = start.clamp(max=length - 1)
    others = torch.einsum("bd,cbd->bc", lips, audio[:, at_start])  # (B, C): every clip's audio at t
    others = others.masked_fill(~batch["valid"][:, at_start].T | (clip[:, None] == torch.arange(n_clips)[None]),
                                float("-inf"))
    logits = torch.cat([same_clip, others], dim=1) / temperature
    answer = torch.full_like(clip, k)
    loss = F.cross_entropy(logits.float(), answer)
    correct = (logits.argmax(dim=1) == answer).float().mean()
    return {"loss": loss, "top1": correct.detach()}


def judge_calibration(judge: SyncJudge, clips: list[PreparedClip], shift: int) -> dict[str, float]:
    """How the judge scores real clips: the share whose best offset is within one frame of 0 and,
    with the audio delayed by ``shift`` frames, within one frame of ``-shift``; LSE-C of both, and
    LSE-C of each video against the next clip's speech (the wrong-audio control)."""
    real, moved, wrong = [], [], []
    for i, clip in enumerate(clips):
        real.append(clip_sync_scores_judge(judge, clip.faces, clip.landmarks, clip.mel, clip.fps))
        moved.append(clip_sync_scores_judge(judge, clip.faces, clip.landmarks,
                                            shifted_mel(clip.mel, shift, clip.fps), clip.fps))
        other = clips[(i + 1) % len(clips)]
        if len(clips) > 1:
            wrong.append(clip_sync_scores_judge(judge, clip.faces, clip.landmarks,
                                                mel_of_length(other.mel, clip.mel.shape[1]), clip.fps))
    return {"offset_within_1": float(np.mean([abs(s.offset) <= 1 for s in real])),
            "shifted_offset_within_1": float(np.mean([abs(s.offset + shift) <= 1 for s in moved])),
            "lse_c": float(np.mean([s.lse_c for s in real])), "lse_d": float(np.mean([s.lse_d for s in real])),
            "lse_c_shifted_at_0": float(np.mean([np.median(s.dists) - s.dists[len(s.dists) // 2] for s in moved])),
            "lse_c_wrong_audio": float(np.mean([s.lse_c for s in wrong])) if wrong else float("nan"),
            "clips": len(clips)}


def train_sync_judge(prepared: str | Path, out: str | Path, params: SyncJudgeTrainParams,
                     run_dir: str | Path) -> dict:
    """Train the judge on the ``train`` split; write it to ``out`` and its log (with its
    calibration on the validation split) to ``out`` with suffix ``.json``."""
    out = Path(out)
    config = params.model_config()
    train = load_split(prepared, "train", with_flow=False, min_frames=JUDGE_FRAMES + 1)
    val = load_split(prepared, "val", with_flow=False, min_frames=JUDGE_FRAMES + 1)
    if params.eval_clips:
        val = val[: params.eval_clips]
    data = _judge_clips(train, config)

    torch.manual_seed(params.seed)
    log = fit("sync_judge", SyncJudge(config), lambda m, b, s: judge_loss(m, b, params.temperature),
              lambda rng, n: judge_batch(data, rng, n, params.max_offset, params.windows_per_clip, params.flip,
                                         params.shift),
              out, run_dir, params.loop(),
              evaluate=lambda m: judge_calibration(m, val, params.eval_shift),
              metadata={"model": "SyncJudge", "config": asdict(config), "train_params": asdict(params)})
    if distributed().rank != 0:
        return log
    log["val"] = judge_calibration(load_sync_judge(out), val, params.eval_shift)
    write_json_atomic(out.with_suffix(".json"), log)
    return log

