"""Loading the public RAFT, GMA and FlowNet2-S checkpoints (``raft-things.pth``, ``raft-small.pth``,
``gma-things.pth`` and their Chairs/Sintel/KITTI siblings, ``FlowNet2-S_checkpoint.pth.tar``).

They are state dicts saved from ``nn.DataParallel`` (keys prefixed ``module.``), read with
weights-only unpickling only.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from torch import nn

from ..models.checkpoints import load_reference_state_dict, load_state_dict_strict
from .flownet import FlowNet2S
from .gma import GMA
from .raft import RAFT

__all__ = ["FLOW_NETWORKS", "build_flow_network", "load_flow_checkpoint"]

# Architecture name -> (constructor, how the architecture is named in messages).
FLOW_NETWORKS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "raft": (lambda: RAFT(small=False), "RAFT"),
    "raft-small": (lambda: RAFT(small=True), "RAFT-small"),
    "gma": (lambda: GMA(), "GMA"),
    "flownet2-s": (lambda: FlowNet2S(), "FlowNet2-S"),
}


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
