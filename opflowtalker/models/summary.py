"""Looking inside the generators: parameters and FLOPs per part, tensor shapes, and which frames each
output frame depends on."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .opflowtalker import OpFlowTalker, count_parameters

__all__ = ["parameters_by_part", "flops_by_part", "output_shapes", "calibrate_batch_norm", "frame_influence"]


def parameters_by_part(model: nn.Module) -> dict[str, int]:
    """Trainable parameters of each top-level part of ``model``."""
    return {name: count_parameters(part) for name, part in model.named_children()}


@torch.no_grad()
def flops_by_part(model: nn.Module, *inputs) -> dict[str, int]:
    """FLOPs of one forward pass of ``model`` on ``inputs`` in each of its top-level parts, as torch's
    FlopCounterMode counts them (a multiply-add is 2 FLOPs). A part called from inside another (the
    motion decoder from the face decoder) is counted once, as itself; what runs outside every part is
    under ``"(outside the parts)"``, so the values add up to the whole pass."""
    parts = dict(model.named_children())
    active: list[str] = []
    nested: dict[str, set[str]] = {name: set() for name in parts}

    def enter(name):
        def hook(module, args):
            if active:
                nested[active[-1]].add(name)
            active.append(name)
        return hook

    def leave(module, args, output):
        active.pop()

    hooks = [h for name, part in parts.items()
             for h in (part.register_forward_pre_hook(enter(name)), part.register_forward_hook(leave))]
    try:
        with FlopCounterMode(display=False) as counter:
            model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    counts = counter.get_flop_counts()
    prefix = type(model).__name__ + "."
    inclusive = {name: int(sum(counts.get(prefix + name, {}).values())) for name in parts}
    flops = {name: inclusive[name] - sum(inclusive[inner] for inner in nested[name]) for name in parts}
    flops["(outside the parts)"] = int(counter.get_total_flops()) - sum(flops.values())
    return flops


def output_shapes(model: nn.Module, *inputs, names: list[str] | None = None) -> list[tuple[str, str]]:
    """(module name, output shape) for the named submodules (default: the top-level parts), in the
    order they run on ``inputs``."""
    wanted = dict(model.named_modules())
    names = names or [name for name, _ in model.named_children()]
    seen: list[tuple[str, str]] = []

    def shape_of(out) -> str:
        if isinstance(out, torch.Tensor):
            return str(tuple(out.shape))
        if isinstance(out, (tuple, list)):
            return ", ".join(shape_of(o) for o in out if o is not None)
        return type(out).__name__

    hooks = [wanted[n].register_forward_hook(lambda m, i, o, n=n: seen.append((n, shape_of(o)))) for n in names]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@torch.no_grad()
def calibrate_batch_norm(model: nn.Module, *inputs, steps: int = 3) -> None:
    """Give fresh batch norms running statistics from ``inputs`` (train-mode passes), so that an
    untrained model in eval mode behaves like a trained one rather than normalising with (0, 1)."""
    model.train()
    for _ in range(steps):
        model(*inputs)
    model.eval()


@torch.no_grad()
def frame_influence(model: OpFlowTalker, audio: torch.Tensor, faces: torch.Tensor, eps: float = 0.5) -> torch.Tensor:
    """(T, T) matrix: how much output frame t changes (mean absolute) when the inputs of frame s
    (its audio, masked frame and reference) are perturbed. Causal fusion makes it lower-triangular."""
    model.eval()
    base = model(audio, faces)[0]
    t = faces.shape[2]
    influence = torch.zeros(t, t)
    generator = torch.Generator().manual_seed(0)
    for s in range(t):
        a, f = audio.clone(), faces.clone()
        a[:, s] += eps * torch.randn(a[:, s].shape, generator=generator)
        f[:, :, s] = (f[:, :, s] + eps * torch.randn(f[:, :, s].shape, generator=generator)).clamp(0, 1)
        out = model(a, f)[0]
        influence[:, s] = (out - base).abs().mean(dim=(0, 1, 3, 4))
    return influence
