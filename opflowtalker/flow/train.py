"""Training the flow networks on the corpus's exact flow, and scoring every estimator by EPE.

No flow weights can be downloaded here, so GMA, RAFT and the FlowNet variant learn from the
embedded corpus, whose flow between consecutive face crops is exact: supervised training with
RAFT's sequence loss (FlowNet: its multi-scale loss) on pairs of 96-px crops from the training
split, through the study's one training loop (``training.loop.fit``: a killed run resumes). They
are scored, with the classical DIS and Farneback and the zero flow, by end-point error
on pairs from the held-out test split (an unseen face saying unseen sentences), over valid pixels
and over the mouth.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..landmarks import mouth_mask
from ..params import require
from ..progress import progress
from .checkpoints import NETWORKS, build_network, load_trained_network
from .epe import end_point_error, multiscale_epe_loss, sequence_loss

__all__ = ["FlowTrainParams", "FlowPairs", "load_pairs", "train_flow_network", "evaluate_estimators"]

@dataclass(frozen=True)
class FlowTrainParams:
    """params.yaml's ``train_flow`` group; ``steps`` holds each network's own number of steps."""

    steps: dict[str, int]
    batch_size: int
    lr: float
    warmup: float  # the share of each network's steps over which the rate rises to lr; it
    # then falls along a half cosine to the end (the one loop's schedule, close to RAFT's one-cycle)
    iters: int  # refinement iterations while training (RAFT/GMA); 12 when scoring
    eval_iters: int
    gamma: float  # sequence-loss decay, as RAFT
    clip: float
    train_pairs: int  # pairs drawn from the training split, held in memory
    eval_pairs: int  # pairs drawn from the test split
    pairs_per_clip: int
    seed: int
    threads: int
    flownet_width: float  # FlowNet2-S at full width (38.7M) does not train on a laptop CPU
    checkpoint_every: int  # steps between resume checkpoints (a GMA step takes seconds here)
    log_every: int

    def __post_init__(self) -> None:
        require(self, above_zero=("batch_size", "lr", "iters", "eval_iters", "train_pairs", "eval_pairs",
                                  "pairs_per_clip", "threads", "flownet_width", "checkpoint_every", "log_every"),
                at_least_zero=("clip", "seed"), shares=("warmup", "gamma"))
        for name, steps in self.steps.items():
            if name not in NETWORKS:
                raise ValueError(f"steps names {name!r}, which is not a flow network ({', '.join(NETWORKS)})")
            if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
                raise ValueError(f"steps of {name} must be a whole number above 0, got {steps!r}")

    def loop(self, name: str):
        """The one training loop's parameters for network ``name``."""
        from ..training.loop import LoopParams

        steps = self.steps[name]
        warmup = min(steps, round(self.warmup * steps))
        return LoopParams(steps=steps, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                          checkpoint_every=self.checkpoint_every, log_every=self.log_every, threads=self.threads,
                          precision="fp32", clip=self.clip, warmup_steps=warmup, decay_steps=steps - warmup)


@dataclass
class FlowPairs:
    """Consecutive face crops with their exact flow: image1, image2 (N, 3, S, S) uint8,
    flow (N, 2, S, S) float32, valid and mouth (N, S, S) bool."""

    image1: np.ndarray
    image2: np.ndarray
    flow: np.ndarray
    valid: np.ndarray
    mouth: np.ndarray

    def __len__(self) -> int:
        return len(self.image1)


def load_pairs(prepared: str | Path, split: str, n_pairs: int, seed: int, per_clip: int = 12) -> FlowPairs:
    """``n_pairs`` (clip, t) pairs, ``per_clip`` from each of randomly chosen clips of ``split``."""
    prepared = Path(prepared)
    keys = [k for k in (prepared / f"{split}.txt").read_text().split() if k]
    if not keys:
        raise ValueError(f"no prepared clips in {prepared / f'{split}.txt'}")
    rng = np.random.default_rng(seed)
    n_clips = min(len(keys), -(-n_pairs // per_clip))
    keys = [keys[i] for i in np.sort(rng.choice(len(keys), size=n_clips, replace=False))]
    per_clip = max(1, -(-n_pairs // n_clips))
    out = {k: [] for k in ("image1", "image2", "flow", "valid", "mouth")}
    for key in keys:
        data = np.load(prepared / f"{key}.npz")
        if str(data["flow_source"]) != "exact":
            raise ValueError(f"{key} has no exact flow: flow networks train on the corpus only")
        faces, flow, valid, landmarks = data["faces"], data["flow"], data["valid"], data["landmarks"]
        for t in rng.choice(len(flow), size=min(per_clip, len(flow)), replace=False):
            out["image1"].append(faces[t].transpose(2, 0, 1))
            out["image2"].append(faces[t + 1].transpose(2, 0, 1))
            out["flow"].append(flow[t].astype(np.float32).transpose(2, 0, 1))
            out["valid"].append(valid[t])
            out["mouth"].append(mouth_mask(landmarks[t], faces.shape[1:3], dilate=3))
    pairs = FlowPairs(**{k: np.stack(v) for k, v in out.items()})
    if len(pairs) > n_pairs:
        keep = np.sort(rng.choice(len(pairs), size=n_pairs, replace=False))
        pairs = FlowPairs(**{k: getattr(pairs, k)[keep] for k in out})
    return pairs


def _batch(pairs: FlowPairs, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(pairs.image1[idx]).float(), torch.from_numpy(pairs.image2[idx]).float(),
            torch.from_numpy(pairs.flow[idx]), torch.from_numpy(pairs.valid[idx]))


def _to_multiple_of_64(image1, image2, flow, valid):
    """FlowNet trains on sides that are multiples of 64: resize the pair, scale the flow with it."""
    size = -(-image1.shape[-1] // 64) * 64
    if size == image1.shape[-1]:
        return image1, image2, flow, valid
    scale = size / image1.shape[-1]
    resize = lambda x: torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    valid = torch.nn.functional.interpolate(valid[:, None].float(), size=(size, size), mode="nearest")[:, 0] > 0.5
    return resize(image1), resize(image2), resize(flow) * scale, valid


def _loss(name: str, model: torch.nn.Module, image1, image2, flow, valid, params: FlowTrainParams):
    if name == "flownet":
        image1, image2, flow, valid = _to_multiple_of_64(image1, image2, flow, valid)
        return multiscale_epe_loss(model(image1, image2), flow, valid)
    return sequence_loss(model(image1, image2, iters=params.iters), flow, valid, gamma=params.gamma)


def train_flow_network(name: str, prepared: str | Path, out: str | Path, params: FlowTrainParams,
                       run_dir: str | Path | None = None) -> dict:
    """Train one network on the training split through the study's one loop (a killed run resumes
    from ``run_dir``, by default ``runs/flow/<name>``); write its safetensors checkpoint and its log."""
    from ..training.loop import fit

    if name not in params.steps:
        raise ValueError(f"train_flow.steps gives no number of steps for {name!r}")
    pairs = load_pairs(prepared, "train", params.train_pairs, params.seed, params.pairs_per_clip)

    def sample_batch(rng: np.random.Generator, n: int):
        return _batch(pairs, rng.choice(len(pairs), size=n, replace=False))

    def loss_fn(model, batch, step):
        return {"loss": _loss(name, model, *batch, params)}

    torch.manual_seed(params.seed)
    model = build_network(name, params.flownet_width)
    return fit(f"flow {name}", model, loss_fn, sample_batch, out, run_dir or Path("runs/flow") / name,
               params.loop(name), metadata={"model": type(model).__name__, "network": name,
                                            "train_params": asdict(params)})


@torch.no_grad()
def _predict(estimator, pairs: FlowPairs, batch: int, iters: int | None, desc: str = "flow") -> np.ndarray:
    preds = []
    for start in progress(range(0, len(pairs), batch), desc=desc, unit="batch"):
        idx = np.arange(start, min(start + batch, len(pairs)))
        image1, image2, _, _ = _batch(pairs, idx)
        pred = estimator(image1, image2, iters=iters) if iters is not None else estimator(image1, image2)
        preds.append(pred.float().numpy())
    return np.concatenate(preds)


def evaluate_estimators(prepared: str | Path, checkpoints: dict[str, str | Path], params: FlowTrainParams) -> dict:
    """EPE of every estimator on held-out test pairs, over valid pixels and over the mouth."""
    from .classical import ClassicalFlow

    torch.set_num_threads(params.threads)
    pairs = load_pairs(prepared, "test", params.eval_pairs, params.seed + 1, params.pairs_per_clip)
    target, valid = torch.from_numpy(pairs.flow), torch.from_numpy(pairs.valid)
    mouth = torch.from_numpy(pairs.mouth) & valid
    estimators: dict[str, tuple] = {
        "zero flow": (None, None), "DIS": (ClassicalFlow("dis"), None), "Farneback": (ClassicalFlow("farneback"), None),
    }
    for name, path in checkpoints.items():
        estimators[name] = (load_trained_network(path), None if name == "flownet" else params.eval_iters)
    rows = {}
    for label, (estimator, iters) in estimators.items():
        start = time.perf_counter()
        pred = (torch.zeros_like(target) if estimator is None
                else torch.from_numpy(_predict(estimator, pairs, 8, iters, f"eval-flow {label}")))
        ms = 1000 * (time.perf_counter() - start) / len(pairs)
        rows[label] = {"epe": float(end_point_error(pred, target, valid)),
                       "epe_mouth": float(end_point_error(pred, target, mouth)),
                       "ms_per_pair": ms if estimator is not None else 0.0}
    magnitude = torch.linalg.vector_norm(target, dim=1)
    return {"pairs": len(pairs), "split": "test", "size": int(pairs.image1.shape[-1]),
            "mean_flow_px": float(magnitude[valid].mean()), "mean_mouth_flow_px": float(magnitude[mouth].mean()),
            "estimators": rows}
