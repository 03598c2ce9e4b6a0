"""What the generators cost: parameters, FLOPs and CPU time per frame, measured side by side.

Both generators are timed in the same process on the same window (5 frames, batch 1): inference
(eval mode, no gradients) and a training step (train mode, forward and backward of an L1 loss),
each the median of ``repeats`` runs after a warm-up, divided by the window's frames. FLOPs are
counted by torch's FlopCounterMode (a multiply-add is 2 FLOPs).
"""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from .opflowtalker import OpFlowTalker, OpFlowTalkerConfig, count_parameters
from ..params import require
from .wav2lip import Wav2Lip

__all__ = ["ModelCostParams", "median_seconds", "measure_generator", "measure_costs"]


@dataclass(frozen=True)
class ModelCostParams:
    """params.yaml's ``model_cost``: the sizes and widths of OpFlowTalker timed beside Wav2Lip."""

    sizes: tuple[int, ...]
    widths: tuple[float, ...]
    threads: int
    repeats: int
    train_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        require(self, above_zero=("threads", "repeats"))
        for name in ("sizes", "widths", "train_sizes"):
            values = tuple(getattr(self, name))
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values):
                raise ValueError(f"{name} must list numbers above 0, got {list(values)}")
            object.__setattr__(self, name, values)
        if not self.sizes or not self.widths:
            raise ValueError("sizes and widths must each name at least one value")


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, kernels chosen on first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_generator(name: str, model: torch.nn.Module, size: int, window: int = 5, repeats: int = 3,
                      train_step: bool = True) -> dict:
    """One row: parameters, GFLOP and milliseconds per frame of ``model`` on a window at ``size``."""
    audio, faces = torch.randn(1, window, 1, 80, 16), torch.rand(1, 6, window, size, size)

    def forward():
        return model.generate(audio, faces).frames

    def infer():
        model.eval()
        with torch.no_grad():
            forward()

    def train():
        model.train().zero_grad(set_to_none=True)
        (forward() - faces[:, 3:]).abs().mean().backward()

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward()
    row = {
        "model": name, "size": size, "params": count_parameters(model),
        "gflop_per_frame": counter.get_total_flops() / window / 1e9,
        "infer_ms_per_frame": 1000 * median_seconds(infer, repeats) / window,
        "train_ms_per_frame": 1000 * median_seconds(train, repeats) / window if train_step else None,
    }
    return row


def measure_costs(sizes=(96, 256), widths=(1.0, 0.25), threads: int = 2, repeats: int = 3,
                  train_sizes=(96,)) -> dict:
    """Wav2Lip (96 px, as released) and OpFlowTalker at every size and width, in one run."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rows = [measure_generator("Wav2Lip", Wav2Lip(), 96, repeats=repeats)]
    for size in sizes:
        for width in widths:
            model = OpFlowTalker(OpFlowTalkerConfig(image_size=size, width=width))
            row = measure_generator("OpFlowTalker", model, size, repeats=repeats, train_step=size in train_sizes)
            rows.append({**row, "width": width})
    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "rows": rows}
