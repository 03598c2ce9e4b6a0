"""Which model a checkpoint holds, rebuilt: ours by the name and config in its metadata, a public
``.pth`` by which reference architecture its tensors fit (Wav2Lip's generator or its SyncNet).

The file formats themselves (safe reading of pickles, safetensors) are :mod:`.checkpoints`; this
module knows the models, so code that only saves and loads tensors (the training loop, the judges)
does not depend on every architecture.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch import nn

from .checkpoints import (REFERENCE_SUFFIXES, CheckpointError, load_reference_state_dict, load_safetensors,
                          load_state_dict_strict, state_dict_mismatch)
from .syncnet import SyncNet
from .wav2lip import Wav2Lip

__all__ = ["MODEL_FACTORIES", "load_wav2lip", "load_syncnet", "load_model_checkpoint"]


# Names stored in our checkpoints' metadata -> constructors taking the stored config (a dict).
def _opflowtalker(config: dict) -> nn.Module:
    from ..params import from_mapping
    from .opflowtalker import OpFlowTalker, OpFlowTalkerConfig

    return OpFlowTalker(from_mapping(OpFlowTalkerConfig, config, "checkpoint config", complete=False))


MODEL_FACTORIES: dict[str, Callable[[dict], nn.Module]] = {
    "SyncNet": lambda config: SyncNet(**config),
    "Wav2Lip": lambda config: Wav2Lip(**config),
    "OpFlowTalker": _opflowtalker,
}

# How each reference model is called in messages.
_DESCRIPTIONS = {"SyncNet": "SyncNet lip-sync expert", "Wav2Lip": "Wav2Lip generator",
                 "OpFlowTalker": "OpFlowTalker generator"}


def load_wav2lip(path: str | os.PathLike) -> Wav2Lip:
    """Wav2Lip's generator (``wav2lip.pth`` or ``wav2lip_gan.pth``) in eval mode."""
    return load_state_dict_strict(Wav2Lip(), load_reference_state_dict(path), _DESCRIPTIONS["Wav2Lip"], path)


def load_syncnet(path: str | os.PathLike) -> SyncNet:
    """Wav2Lip's lip-sync expert (``lipsync_expert.pth``) in eval mode."""
    return load_state_dict_strict(SyncNet(), load_reference_state_dict(path), _DESCRIPTIONS["SyncNet"], path)


def load_model_checkpoint(path: str | os.PathLike) -> nn.Module:
    """An eval-mode model from ours (``.safetensors``, rebuilt from its metadata) or from a public
    ``.pth``/``.pt``/``.tar`` checkpoint (recognised as Wav2Lip's generator or its SyncNet)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        state_dict, metadata = load_safetensors(path)
        name = metadata.get("model")
        if name not in MODEL_FACTORIES:
            raise CheckpointError(f"{path} holds a model named {name!r}, which is none of {sorted(MODEL_FACTORIES)}")
        model = MODEL_FACTORIES[name](metadata.get("config") or {})
        return load_state_dict_strict(model, state_dict, _DESCRIPTIONS.get(name, name), path)
    if suffix in REFERENCE_SUFFIXES:
        state_dict = load_reference_state_dict(path)
        candidates = {"Wav2Lip": Wav2Lip(), "SyncNet": SyncNet()}
        problems = {name: state_dict_mismatch(model, state_dict) for name, model in candidates.items()}
        for name, problem in problems.items():
            if not problem:
                return load_state_dict_strict(candidates[name], state_dict, _DESCRIPTIONS[name], path)
        raise CheckpointError(f"{path} is neither a Wav2Lip generator nor a SyncNet checkpoint: as the "
                              f"generator it has {problems['Wav2Lip']}; as SyncNet, {problems['SyncNet']}")
    raise CheckpointError(f"{path} has suffix {suffix!r}; expected .safetensors or one of {REFERENCE_SUFFIXES}")
