"""The training loop's state on disk: the resume checkpoint a killed run continues from, and the
state file another run starts from (a warm start), each the model, Adam's moments, the step, the
log and the learning-rate schedule it was trained under, in safetensors."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..models.checkpoints import CheckpointError, load_safetensors, save_safetensors

if TYPE_CHECKING:
    from .loop import LoopParams

__all__ = ["schedule_allows", "save_resume", "read_state", "load_warm_start", "load_resume"]

log = logging.getLogger(__name__)


def schedule_allows(step: int, written_under: int | None, params: LoopParams) -> bool:
    """Whether a checkpoint of ``step`` steps, written by a run whose rate fell from step
    ``written_under`` (None: never), continues a run of ``params``: every step it took ran at the
    rate ``params`` gives that step."""
    def constant_until(start: int | None) -> float:
        return math.inf if start is None else start

    if step <= min(constant_until(written_under), constant_until(params.decay_from)):
        return True  # every step so far ran at the constant rate under both schedules
    return written_under == params.decay_from  # the same decay, begun at the same step


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    state = optimizer.state_dict()
    tensors = {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            tensors[f"optimizer.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, state["param_groups"]


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_resume(path: Path, model: nn.Module, optimizer, scaler, step: int, history: dict, seconds: float,
                 fingerprint: str, pending: dict, decay_from: int | None, metadata: dict | None = None,
                 warm_start: dict | None = None) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim_tensors, groups = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    meta = {"step": step, "history": history, "seconds": seconds, "fingerprint": fingerprint,
            "decay_from": decay_from, "param_groups": groups,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "pending": pending, "warm_start": warm_start}
    if metadata is not None:
        meta["metadata"] = metadata
    save_safetensors(tensors, path, metadata=meta)


def read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata of a loop state file (a resume checkpoint or a ``save_state`` output)."""
    tensors, meta = load_safetensors(path)
    if "step" not in meta or "param_groups" not in meta:
        raise CheckpointError(f"{path} is not a training state (no step or optimizer groups in it)")
    return tensors, meta


def _restore(tensors: dict[str, torch.Tensor], meta: dict, model: nn.Module, optimizer, scaler
             ) -> tuple[int, dict, float, dict, dict | None]:
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    _restore_optimizer(optimizer, {k: v for k, v in tensors.items() if k.startswith("optimizer.")},
                       meta["param_groups"])
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    # The loss sums of the steps since the last log point, so the next logged mean is unchanged.
    pending = meta.get("pending") or {"sums": {}, "count": 0}
    # Where the run's first steps came from, if another run's state (kept across its own resumes).
    return int(meta["step"]), meta["history"], float(meta["seconds"]), pending, meta.get("warm_start")


def load_warm_start(path: Path, model: nn.Module, optimizer, scaler, params: LoopParams
                     ) -> tuple[int, dict, float, dict, dict]:
    tensors, meta = read_state(path)
    step = int(meta["step"])
    if step >= params.steps:
        raise ValueError(f"the warm start {path} holds {step} steps, not fewer than the {params.steps} to train")
    if not schedule_allows(step, meta.get("decay_from"), params):
        raise ValueError(f"the warm start {path} was trained under another learning-rate schedule")
    start, history, seconds, pending, _ = _restore(tensors, meta, model, optimizer, scaler)
    return start, history, seconds, pending, {"file": str(path), "steps": start, "seconds": seconds}


def load_resume(path: Path, model: nn.Module, optimizer, scaler, fingerprint: str, params: LoopParams
                 ) -> tuple[int, dict, float, dict, dict | None] | None:
    steps = params.steps
    if not path.is_file():
        return None
    try:
        tensors, meta = load_safetensors(path)
    except CheckpointError as error:
        log.warning("ignoring the unreadable resume checkpoint %s (%s)", path, error)
        return None
    if meta.get("fingerprint") != fingerprint:
        log.warning("%s belongs to another configuration; starting afresh", path)
        return None
    if int(meta["step"]) > steps:
        log.warning("%s holds %d steps, more than the %d asked for; starting afresh", path, meta["step"], steps)
        return None
    if not schedule_allows(int(meta["step"]), meta.get("decay_from"), params):
        log.warning("%s was trained under another learning-rate schedule; starting afresh", path)
        return None
    return _restore(tensors, meta, model, optimizer, scaler)
