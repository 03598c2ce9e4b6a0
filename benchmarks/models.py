"""Inference throughput of the Wav2Lip generator and the SyncNet expert on the CPU.

Usage: python benchmarks/models.py [threads] [batch] [repeats]
"""

import sys
import time

import torch

from opflowtalker.models.syncnet import SyncNet
from opflowtalker.models.wav2lip import Wav2Lip


def throughput(model, inputs, repeats: int) -> float:
    """Samples per second, after one warm-up batch (which pays for allocation and kernel choice)."""
    with torch.inference_mode():
        model(*inputs)
        start = time.perf_counter()
        for _ in range(repeats):
            model(*inputs)
    return repeats * len(inputs[0]) / (time.perf_counter() - start)


def main(threads: int = 2, batch: int = 16, repeats: int = 5) -> None:
    torch.set_num_threads(threads)
    generator = Wav2Lip().eval()
    expert = SyncNet().eval()
    w2l = throughput(generator, (torch.randn(batch, 1, 80, 16), torch.rand(batch, 6, 96, 96)), repeats)
    sync = throughput(expert, (torch.randn(batch, 1, 80, 16), torch.rand(batch, 15, 48, 96)), repeats)
    print(f"{threads} threads, batch {batch}")
    print(f"Wav2Lip generator: {w2l:8.1f} frames/s")
    print(f"SyncNet expert:    {sync:8.1f} windows/s (5 frames each)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
