"""The lip-sync expert: Wav2Lip's SyncNet trained on the corpus, then frozen for L_sync and LSE.

As in Wav2Lip's ``color_syncnet_train.py``: the lower halves of five consecutive face crops and the
mel window of the first frame are embedded; the cosine similarity of the two embeddings is read as
the probability that they are in sync, and trained with binary cross-entropy against pairs that
are (label 1) or are not (label 0, audio from elsewhere in the same clip).  Our expert sees RGB
frames (Wav2Lip's sees OpenCV's BGR); every consumer of this checkpoint feeds it RGB.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..losses import sync_loss
from ..models.syncnet import SyncNet
from ..params import require
from .data import load_split, syncnet_batch
from .loop import LoopParams, fit

__all__ = ["SyncNetTrainParams", "train_syncnet", "syncnet_accuracy"]


@dataclass(frozen=True)
class SyncNetTrainParams:
    """params.yaml's ``train_syncnet`` group."""

    steps: int
    batch_size: int
    lr: float
    width: float  # channel scale of the expert (1.0: Wav2Lip's SyncNet_color)
    window: int
    min_shift: int  # frames between an off-sync audio window and the video's
    eval_pairs: int
    seed: int
    checkpoint_every: int
    log_every: int
    threads: int
    precision: str

    def __post_init__(self) -> None:
        require(self, above_zero=("steps", "batch_size", "lr", "width", "window", "eval_pairs", "checkpoint_every",
                                  "log_every", "threads"), at_least_zero=("min_shift", "seed"))
        self.loop()

    def loop(self) -> LoopParams:
        return LoopParams.of(self)


def syncnet_accuracy(model: SyncNet, mels: torch.Tensor, faces: torch.Tensor, labels: torch.Tensor,
                     batch: int = 64) -> dict[str, float]:
    """BCE and accuracy (cosine > 0.5 means "in sync") of the expert on fixed pairs."""
    device = next(model.parameters()).device
    sims = []
    with torch.no_grad():
        for i in range(0, len(labels), batch):
            a, v = model(mels[i : i + batch].to(device), faces[i : i + batch].to(device))
            sims.append(torch.nn.functional.cosine_similarity(a, v).clamp(0, 1).cpu())
    sim = torch.cat(sims)
    bce = torch.nn.functional.binary_cross_entropy(sim, labels.float())
    return {"bce": float(bce), "accuracy": float(((sim > 0.5).float() == labels).float().mean())}


def train_syncnet(prepared: str | Path, out: str | Path, params: SyncNetTrainParams, run_dir: str | Path) -> dict:
    train = load_split(prepared, "train", with_flow=False, min_frames=params.window)
    val = load_split(prepared, "val", with_flow=False, min_frames=params.window)
    # Fixed validation pairs: the same for every evaluation and every run.
    val_pairs = syncnet_batch(val, np.random.default_rng([params.seed, 10**6]), params.eval_pairs, params.window,
                              params.min_shift)

    def loss_fn(model, batch, step):
        mel, faces, labels = batch
        audio_embedding, face_embedding = model(mel, faces)
        loss = sync_loss(audio_embedding.float(), face_embedding.float(), labels)
        return {"loss": loss}

    def sample(rng, size):
        return syncnet_batch(train, rng, size, params.window, params.min_shift)

    torch.manual_seed(params.seed)
    return fit("syncnet", SyncNet(params.width), loss_fn, sample, out, run_dir, params.loop(),
               evaluate=lambda model: syncnet_accuracy(model, *val_pairs),
               metadata={"train_params": asdict(params)})
