"""Reading public PyTorch checkpoints safely, and writing and reading our own.

Public ``.pth`` files (Wav2Lip's ``wav2lip.pth``, ``lipsync_expert.pth``) are pickles, and
unpickling runs whatever code the file names. They are therefore only ever read with
``torch.load(..., weights_only=True)``, which accepts tensors and plain containers and refuses
anything else before executing it. Our own checkpoints are safetensors files, which hold tensors
and string metadata and nothing executable.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import OpFlowTalkerError

__all__ = [
    "CheckpointError",
    "load_reference_state_dict",
    "load_state_dict_strict",
    "state_dict_mismatch",
    "save_safetensors",
    "load_safetensors",
    "REFERENCE_SUFFIXES",
]

REFERENCE_SUFFIXES = (".pth", ".pt", ".tar")

class CheckpointError(OpFlowTalkerError, ValueError):
    """A checkpoint that cannot be loaded as asked; the message is one sentence for the user."""


def load_reference_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a public ``.pth`` checkpoint, unwrapped from ``{'state_dict': ...}`` and with
    the ``module.`` prefix of ``nn.DataParallel`` training removed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = re.search(r"WeightsUnpickler error: (.*?)(?: Please|\n|$)", str(error))
        detail = reason.group(1).rstrip(". ") if reason else "refused by weights-only unpickling"
        raise CheckpointError(f"{path} holds pickled objects other than tensors and was not unpickled "
                              f"({detail})") from error
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({error})") from error
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping from names to tensors)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def state_dict_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str:
    """What keeps ``state_dict`` from loading strictly into ``model``, or '' if nothing does."""
    expected = model.state_dict()
    # Files saved before PyTorch 0.4.1 lack batch-norm step counters; torch fills them in on loading
    # (they only matter for cumulative-average training), so their absence is no mismatch.
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [k for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    parts = []
    for keys, what in ((missing, "missing"), (unexpected, "unexpected"), (wrong_shape, "wrongly shaped")):
        if keys:
            parts.append(f"{len(keys)} {what} key{'s' if len(keys) > 1 else ''} such as {keys[0]!r}")
    return ", ".join(parts)


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str,
                           source: str | os.PathLike) -> nn.Module:
    """Load every tensor of ``model`` from ``state_dict`` or raise a one-sentence CheckpointError."""
    problem = state_dict_mismatch(model, state_dict)
    if problem:
        raise CheckpointError(f"{source} is not a {what} checkpoint: {problem}")
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _jsonable(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


def save_safetensors(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike,
                     metadata: Mapping[str, Any] | None = None) -> Path:
    """Write tensors and JSON metadata to ``path`` atomically (a reader never sees half a file).

    For a module, the metadata's ``model`` defaults to its class name and ``config`` to its
    ``config`` attribute (a dataclass or dict) if it has one; :func:`load_model_checkpoint` rebuilds
    the model from these two. Every metadata value is stored as a JSON string.
    """
    path = Path(path)
    meta = dict(metadata or {})
    if isinstance(model_or_state_dict, nn.Module):
        meta.setdefault("model", type(model_or_state_dict).__name__)
        meta.setdefault("config", getattr(model_or_state_dict, "config", None) or {})
        state_dict = model_or_state_dict.state_dict()
    else:
        state_dict = model_or_state_dict
    # RAFT's reference layout registers one norm under two names (normN and downsample.1), so
    # state dicts can alias storage, which safetensors refuses: each name gets its own copy, and
    # loading sets the one module through both names.
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in state_dict.items()}
    encoded = {k: json.dumps(_jsonable(v), sort_keys=True) for k, v in meta.items()}

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=encoded)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) of a file written by :func:`save_safetensors`, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = f.metadata() or {}
            state_dict = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as error:  # safetensors raises its own untyped errors for corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from error
    try:
        metadata = {k: json.loads(v) for k, v in raw.items()}
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} has metadata that is not JSON ({error})") from error
    return state_dict, metadata
