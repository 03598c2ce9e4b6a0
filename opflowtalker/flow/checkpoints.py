"""The flow networks by name, and their checkpoints: ours (safetensors written by
:func:`~opflowtalker.flow.train.train_flow_network`, the network's name and training parameters in
the metadata) and the public RAFT, GMA and FlowNet2-S ones (``raft-things.pth``, ``raft-small.pth``,
``gma-things.pth`` and their Chairs/Sintel/KITTI siblings, ``FlowNet2-S_checkpoint.pth.tar``).

The public files are state dicts saved from ``nn.DataParallel`` (keys prefixed ``module.``), read
with weights-only unpickling only.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..models.checkpoints import load_reference_state_dict, load_state_dict_strict
from .flownet import FlowNet2S
from .gma import GMA
from .raft import RAFT

__all__ = ["FLOW_NETWORKS", "NETWORKS", "build_flow_network", "build_network", "load_trained_network",
           "load_flow_checkpoint"]

# Architecture name -> (constructor, how the architecture is named in messages).
FLOW_NETWORKS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "raft": (lambda: RAFT(small=False), "RAFT"),
    "raft-small": (lambda: RAFT(small=True), "RAFT-small"),
    "gma": (lambda: GMA(), "GMA"),
    "flownet2-s": (lambda: FlowNet2S(), "FlowNet2-S"),
}

# The networks the study trains (the OFS loss's choices), by the names params.yaml uses.
NETWORKS = ("gma", "raft", "raft_small", "flownet")


def build_flow_network(arch: str) -> nn.Module:
    """A randomly initialised flow network of architecture ``arch`` (one of :data:`FLOW_NETWORKS`;
    ``raft_small`` is read as ``raft-small``)."""
    return FLOW_NETWORKS[_known(arch)][0]()


def _known(arch: str) -> str:
    name = arch.lower().replace("_", "-")
    if name not in FLOW_NETWORKS:
        raise ValueError(f"flow network {arch!r} is none of {sorted(FLOW_NETWORKS)}")
    return name


def load_flow_checkpoint(path: str | os.PathLike, arch: str) -> nn.Module:
    """The flow network ``arch`` with every tensor from ``path``, in eval mode.

    Raises :class:`~opflowtalker.models.checkpoints.CheckpointError` (a ``ValueError``) when the file
    is unreadable or holds another architecture's weights.
    """
    model = build_flow_network(arch)
    return load_state_dict_strict(model, load_reference_state_dict(path), FLOW_NETWORKS[_known(arch)][1], path)


def build_network(name: str, flownet_width: float = 0.25) -> nn.Module:
    """A randomly initialised network of the study, by its name in params.yaml (:data:`NETWORKS`);
    FlowNet2-S at ``flownet_width`` of its channels."""
    if name in ("gma", "raft", "raft_small"):
        return build_flow_network(name)
    if name == "flownet":
        return FlowNet2S(width=flownet_width)
    raise ValueError(f"unknown flow network {name!r}; choose one of {', '.join(NETWORKS)}")


def load_trained_network(path: str | Path) -> nn.Module:
    """A network written by :func:`~opflowtalker.flow.train.train_flow_network`, rebuilt from its
    metadata, in eval mode."""
    from ..models.checkpoints import CheckpointError, load_safetensors

    state, metadata = load_safetensors(path)
    try:
        model = build_network(metadata["network"], float(metadata["train_params"]["flownet_width"]))
    except (KeyError, TypeError):
        raise CheckpointError(f"{path} holds no flow network of the study (no network name and "
                              "training parameters in its metadata)") from None
    model.load_state_dict(state)
    return model.eval()
