"""Generator training: the Wav2Lip baseline, OpFlowTalker and its ablations, with Eq. 8's loss.

    L_total = lambda_1 L_rec + lambda_2 L_sync + lambda_3 L_ofs,   lambda = (1, 0.1, 1)

* L_rec is the L1 distance between the generated and the real window (Wav2Lip's recon loss).
* L_sync is the frozen expert's -log cos(audio, lower half of the five generated frames)
  (:func:`opflowtalker.losses.sync_loss`). Wav2Lip switches it on late (its weight is 0
  until the expert agrees with the generator often enough); ``sync_start_step`` does that by step.
* L_ofs is Eq. 7 (:func:`opflowtalker.losses.ofs_loss`): a frozen flow network estimates the flow
  between generated frames t and t+k, compared with the ground-truth flow over the face and, with
  weight alpha, over the mouth; ``mouth_start_step`` brings the mouth term in later, as the
  paper introduces its two terms "at different stages of training".
* StackGAN's conditioning augmentation, which the paper cites for its audio augmentation, adds a
  KL term that keeps the sampled audio distribution close to N(0, I); ``kl_weight`` gives it. Eq. 8
  has no such term, and the study follows Eq. 8 (weight 0).
* ``mouth_weight`` adds, beyond Eq. 8, the L1 error over the mouth alone (the lips' hull of the
  target, grown by 3 px), so that the few pixels which depend on the audio weigh as much as the
  rest of the face.
* ``flip`` and ``color_jitter`` augment the training windows (:func:`.data.generator_batch`): with
  three training faces, a generator learns their colours instead of taking them from the reference.

The embedded profile trains a few hundred steps of 4 windows, where the paper trains for days, and
its weights (``params.yaml``: ``generators.defaults``) apply to every variant alike, Wav2Lip
included, so that rows differ only in what the row names; the ``paper`` profile keeps Eq. 8's
lambda = (1, 0.1, 1) with the sync term from step 20,000. The study chapter prints the weights of
the run it reports.

A *variant* is a named set of overrides of :class:`GeneratorTrainParams` (``params.yaml``:
``generators.variants``, trained from scratch: the baseline, the full model, each module of Table 3d
switched off, and the six-frame reference of Table 3b). Every variant trains on the same windows in
the same order with the same number of steps (the seed fixes them), so the rows of a table differ
only in what the row names.

A *loss variant* (``generators.loss_variants``) changes only the loss of the variant it names as
``warm_start``: the flow network of Table 3a, the interval of Table 3b, the area of Table 3c, the
distance of Table 6, the pooling of Table 7. It continues that variant's state after its first
``generators.warm_up.steps`` steps (stage ``warm_up@NAME``) with its own loss: those steps are the
ones the variant itself took, so the rows share them and differ in what came after. Which fields a
loss variant may change is :data:`LOSS_SWITCHES`; anything else (the architecture, the data, the
optimiser) would make the shared part another model's and is refused.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..flow.checkpoints import NETWORKS, load_trained_network
from ..losses import DISTANCES, OFS_AREAS, REDUCTIONS, OFSSchedule, freeze, l1_loss, mouth_l1_loss, ofs_loss, sync_loss
from ..models.registry import load_model_checkpoint
from ..models.generator import generate
from ..models.opflowtalker import OpFlowTalker, OpFlowTalkerConfig
from ..models.syncnet import lower_half_window
from ..models.wav2lip import Wav2Lip
from ..params import ParamsError, from_mapping, require
from .data import GeneratorBatch, generator_batch, load_split
from .loop import LoopParams, distributed, fit

__all__ = ["GeneratorTrainParams", "variant_params", "all_variants", "warm_start_of", "warm_up_params",
           "build_generator", "GeneratorLoss", "train_generator", "LOSS_SWITCHES"]

log = logging.getLogger(__name__)

# What a loss variant may change from the variant it warm-starts from: terms of Eq. 7 and Eq. 8.
LOSS_SWITCHES = ("flow_network", "ofs_interval", "ofs_area", "ofs_distance", "ofs_reduction", "ofs_weight",
                 "sync_weight", "l1_weight", "mouth_weight", "kl_weight", "flow_iters", "flow_size", "ofs_windows")
# Fields that say how long and how often, not what is trained (a warm-up is shorter).
_CADENCE = ("steps", "checkpoint_every", "log_every", "eval_windows", "threads")

@dataclass(frozen=True)
class GeneratorTrainParams:
    """One variant of params.yaml's ``generators`` group: its ``defaults`` with the variant's own values."""

    model: str  # "opflowtalker" or "wav2lip"
    width: float  # channel scale (1.0: the paper's sizes)
    image_size: int
    window: int
    # OpFlowTalker's modules (Table 3d): False removes one
    audio_aug: bool
    flow_predictor: bool
    sequential_fusion: bool
    # our additions, beyond the paper (models/opflowtalker.py): True adds one
    explicit_motion: bool
    flow_skip: bool
    append_reference: bool
    residual_output: bool
    # Eq. 8
    l1_weight: float
    mouth_weight: float  # an L1 term over the mouth alone (beyond Eq. 8; see the module's text)
    sync_weight: float
    ofs_weight: float
    kl_weight: float
    sync_start_step: int
    # Eq. 7
    flow_network: str  # a trained network of models/flow (Table 3a)
    ofs_interval: int  # Table 3b
    ofs_area: str  # Table 3c
    ofs_distance: str  # Table 6
    ofs_reduction: str  # Table 7
    mouth_start_step: int
    ofs_windows: int  # windows of each batch the OFS loss scores (0: all; the batch is random,
    # so its first n windows are a random sample and the loss stays an unbiased estimate of Eq. 7)
    flow_size: int  # side the frame pairs are resized to for the flow network (0: as they are;
    # RAFT and GMA resize anything under 128 px themselves)
    flow_iters: int
    # augmentation of the training windows (see generator_batch)
    flip: float
    color_jitter: float
    # the loop
    steps: int
    batch_size: int
    lr: float
    seed: int
    checkpoint_every: int
    log_every: int
    eval_windows: int
    threads: int
    precision: str

    def __post_init__(self):
        require(self, above_zero=("width", "image_size", "window", "ofs_interval", "flow_iters", "steps", "batch_size",
                                  "lr", "checkpoint_every", "log_every", "eval_windows", "threads"),
                at_least_zero=("l1_weight", "mouth_weight", "sync_weight", "ofs_weight", "kl_weight", "sync_start_step",
                               "mouth_start_step", "ofs_windows", "flow_size", "seed"),
                shares=("flip", "color_jitter"),
                choices={"model": ("opflowtalker", "wav2lip"), "flow_network": NETWORKS, "ofs_area": tuple(OFS_AREAS),
                         "ofs_distance": DISTANCES, "ofs_reduction": REDUCTIONS})
        self.loop()
        if self.ofs_weight > 0 and self.window <= self.ofs_interval:
            raise ParamsError(f"an OFS interval of {self.ofs_interval} needs windows of more than "
                              f"{self.ofs_interval} frames, got window {self.window}")

    @property
    def uses_ofs(self) -> bool:
        return self.ofs_weight > 0

    def loop(self) -> LoopParams:
        return LoopParams.of(self)


def all_variants(group: dict) -> dict[str, dict]:
    """Every variant of the ``generators`` group, those trained from scratch first, then the loss
    variants, each in the file's order: ``{name: its overrides}``."""
    scratch, loss = group.get("variants") or {}, group.get("loss_variants") or {}
    both = set(scratch) & set(loss)
    if both:
        raise ParamsError(f"generator variants defined twice (variants and loss_variants): {', '.join(sorted(both))}")
    return {**scratch, **loss}


def _overrides(group: dict, variant: str) -> tuple[dict, str]:
    variants = all_variants(group)
    if variant not in variants:
        raise ParamsError(f"no generator variant {variant!r}; params.yaml defines {', '.join(variants) or 'none'}")
    where = "loss_variants" if variant in (group.get("loss_variants") or {}) else "variants"
    return dict(variants[variant] or {}), f"params.yaml: generators.{where}.{variant}"


def variant_params(group: dict, variant: str) -> GeneratorTrainParams:
    """The parameters of one variant: ``group['defaults']`` overridden by the variant's own."""
    overrides, where = _overrides(group, variant)
    values = {**(group.get("defaults") or {}), **overrides}
    for key in ("label", "warm_start"):
        values.pop(key, None)
    return from_mapping(GeneratorTrainParams, values, where)


def warm_start_of(group: dict, variant: str) -> str | None:
    """The variant whose first steps ``variant`` continues (None: it trains from scratch)."""
    overrides, where = _overrides(group, variant)
    source = overrides.get("warm_start")
    if source is None:
        if variant in (group.get("loss_variants") or {}):
            raise ParamsError(f"{where} names no warm_start (the variant whose loss it changes)")
        return None
    if source not in (group.get("variants") or {}):
        raise ParamsError(f"{where}: warm_start {source!r} is not a variant trained from scratch")
    if source not in ((group.get("warm_up") or {}).get("variants") or []):
        raise ParamsError(f"{where}: warm_start {source!r} is not in generators.warm_up.variants")
    changed = changed_fields(variant_params(group, source), variant_params(group, variant))
    foreign = [k for k in changed if k not in LOSS_SWITCHES]
    if foreign:
        raise ParamsError(f"{where} changes {', '.join(foreign)} from {source}; a loss variant may change only "
                          f"its loss ({', '.join(LOSS_SWITCHES)})")
    return source


def changed_fields(a: GeneratorTrainParams, b: GeneratorTrainParams) -> list[str]:
    """The fields in which two variants' parameters differ, their length and cadence aside."""
    da, db = asdict(a), asdict(b)
    return [k for k in da if k not in _CADENCE and da[k] != db[k]]


def warm_up_params(group: dict, variant: str) -> GeneratorTrainParams:
    """The first ``generators.warm_up.steps`` steps of ``variant``: the part its loss variants share."""
    steps = int((group.get("warm_up") or {}).get("steps", 0))
    params = variant_params(group, variant)
    if not 0 < steps < params.steps:
        raise ParamsError(f"generators.warm_up.steps must lie between 0 and {variant}'s {params.steps} steps, got {steps}")
    values = asdict(params)
    values["steps"] = steps
    return GeneratorTrainParams(**values)


def build_generator(params: GeneratorTrainParams) -> nn.Module:
    if params.model == "wav2lip":
        if params.image_size != 96:
            raise ParamsError("the Wav2Lip generator is built for 96-px faces")
        return Wav2Lip(params.width)
    config = OpFlowTalkerConfig(image_size=params.image_size, window=params.window, width=params.width,
                                audio_aug=params.audio_aug, flow_predictor=params.flow_predictor,
                                sequential_fusion=params.sequential_fusion, explicit_motion=params.explicit_motion,
                                flow_skip=params.flow_skip, append_reference=params.append_reference,
                                residual_output=params.residual_output)
    return OpFlowTalker(config)


@dataclass
class GeneratorLoss:
    """Eq. 8 for one batch; the expert and the flow network are frozen and kept outside the
    generator's module tree (so ``generator.train()`` cannot switch them to training mode)."""

    params: GeneratorTrainParams
    expert: nn.Module | None
    flow_net: nn.Module | None
    terms: list[str] = field(default_factory=list)

    def __call__(self, model: nn.Module, batch: GeneratorBatch, step: int) -> dict[str, torch.Tensor]:
        p = self.params
        frames, kl, _ = generate(model, batch.audio, batch.faces)
        frames = frames.float()
        rec = l1_loss(frames, batch.target)
        total = p.l1_weight * rec + p.kl_weight * kl.float()
        terms = {"l1": rec.detach(), "kl": kl.detach().float()}
        if p.mouth_weight > 0:
            mouth_rec = mouth_l1_loss(frames, batch.target, batch.mouth)
            terms["mouth_l1"] = mouth_rec.detach()
            total = total + p.mouth_weight * mouth_rec
        if self.expert is not None:
            a, v = self.expert(batch.sync_mel, lower_half_window(frames, "BCTHW"))
            sync = sync_loss(a.float(), v.float())
            terms["sync"] = sync.detach()
            if step >= p.sync_start_step and p.sync_weight > 0:
                total = total + p.sync_weight * sync
        if self.flow_net is not None:
            alpha = OFSSchedule(p.mouth_start_step, p.ofs_area).alpha_at(step)
            n = p.ofs_windows or len(frames)
            ofs = ofs_loss(frames[:n], batch.flow[:n], batch.valid[:n], batch.mouth[:n], self.flow_net, alpha=alpha,
                           interval=p.ofs_interval, distance=p.ofs_distance, reduction=p.ofs_reduction,
                           flow_size=p.flow_size or None,
                           flow_kwargs={"iters": p.flow_iters} if _takes_iters(self.flow_net) else {})
            terms["ofs"] = ofs.detach()
            total = total + p.ofs_weight * ofs
        terms["loss"] = total
        return terms


def _takes_iters(flow_net: nn.Module) -> bool:
    from ..flow.raft import RecurrentFlowNetwork

    return isinstance(flow_net, RecurrentFlowNetwork)


def _frozen(module: nn.Module, device: torch.device) -> nn.Module:
    return freeze(module).to(device)


def _val_windows(clips, params: GeneratorTrainParams) -> GeneratorBatch:
    return generator_batch(clips, np.random.default_rng([params.seed, 10**6]), params.eval_windows, params.window,
                           with_flow=False)


def _check_warm_start(path: Path, source: str, params: GeneratorTrainParams) -> dict:
    """What the loss variant's checkpoint records of its warm start, after checking that ``path``
    is the warm-up of ``source`` and differs from ``params`` only in :data:`LOSS_SWITCHES`."""
    from ..models.checkpoints import CheckpointError
    from .state import read_state

    try:
        _, meta = read_state(path)
    except (CheckpointError, OSError) as error:
        raise ParamsError(f"cannot read the warm start {path}: {error}") from None
    recorded = (meta.get("metadata") or {})
    if recorded.get("variant") != source or not isinstance(recorded.get("train_params"), dict):
        raise ParamsError(f"{path} is not the warm-up of {source} (it holds {recorded.get('variant')!r})")
    warm = from_mapping(GeneratorTrainParams, recorded["train_params"], str(path))
    foreign = [k for k in changed_fields(warm, params) if k not in LOSS_SWITCHES]
    if foreign:
        raise ParamsError(f"{path} was trained with other {', '.join(foreign)} than this variant; rerun warm_up@{source}")
    return {"variant": source, "steps": int(meta["step"])}


def train_generator(variant: str, prepared: str | Path, out: str | Path, params: GeneratorTrainParams,
                    run_dir: str | Path, expert_path: str | Path | None, flow_dir: str | Path = "models/flow",
                    warm_start: tuple[str, Path] | None = None, save_state: bool = False) -> dict:
    """Train one variant; the checkpoint records its parameters so evaluation can rebuild it.

    ``warm_start``: (the source variant, its warm-up state file) for a loss variant.
    ``save_state``: write the whole training state to ``out`` (the warm-up of a variant)."""
    warm = _check_warm_start(Path(warm_start[1]), warm_start[0], params) if warm_start else None
    device = distributed().device  # this rank's GPU under torchrun
    expert = None
    if params.sync_weight > 0:
        if expert_path is None:
            raise ParamsError("the sync loss needs the SyncNet expert (--expert)")
        expert = _frozen(load_model_checkpoint(expert_path), device)
    flow_net = None
    if params.uses_ofs:
        flow_net = _frozen(load_trained_network(Path(flow_dir) / f"{params.flow_network}.safetensors"), device)
    # Windows with room for the OFS interval; every variant draws from the same clips.
    train = load_split(prepared, "train", with_flow=params.uses_ofs, min_frames=max(params.window, 6))
    val = load_split(prepared, "val", with_flow=False, min_frames=max(params.window, 6))
    val_batch = _val_windows(val, params)
    loss = GeneratorLoss(params, expert, flow_net)

    def sample(rng, size):
        return generator_batch(train, rng, size, params.window, with_flow=params.uses_ofs, flip=params.flip,
                               color_jitter=params.color_jitter)

    def evaluate(model):
        batch = val_batch.to(next(model.parameters()).device)
        frames = model.generate(batch.audio, batch.faces).frames
        scores = {"val_l1": float(l1_loss(frames.float(), batch.target))}
        if expert is not None:
            a, v = expert(batch.sync_mel, lower_half_window(frames.float(), "BCTHW"))
            scores["val_sync"] = float(sync_loss(a, v))
        return scores

    torch.manual_seed(params.seed)
    model = build_generator(params)
    metadata = {"variant": variant, "train_params": asdict(params)}
    if warm is not None:
        metadata["warm_start"] = warm
    return fit(f"generator-{variant}", model, loss, sample, out, run_dir, params.loop(), evaluate=evaluate,
               metadata=metadata, warm_start=warm_start[1] if warm_start else None, save_state=save_state)

