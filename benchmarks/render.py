"""Frames per second of the talking-face renderer on one core.

    python benchmarks/render.py [--frames N]

Builds the rig once per size (not timed), then times ``render`` over a synthetic sentence.
"""

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from opflowtalker.corpus.render import RenderConfig, build_rig, load_portrait, render
from opflowtalker.corpus.viseme import viseme_tracks

FACE = Path(__file__).resolve().parents[1] / "data" / "external" / "faces" / "hopper.png"
SENTENCE = [("sil", 0.2), ("b", 0.07), ("ih", 0.09), ("n", 0.07), ("b", 0.07), ("l", 0.06), ("uw", 0.16),
            ("ae", 0.11), ("t", 0.07), ("eh", 0.09), ("f", 0.10), ("t", 0.07), ("uw", 0.15), ("n", 0.07),
            ("aw", 0.22), ("sil", 0.3)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=250)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    phones, t = [], 0.0
    for _ in range(int(np.ceil(args.frames / 25 / 1.9))):
        for p, d in SENTENCE:
            phones.append((p, t, t + d))
            t += d
    tracks = viseme_tracks(phones, args.frames)
    portrait = load_portrait(str(FACE))
    print("command:", " ".join([sys.executable] + sys.argv))
    for size in (96, 128, 256, 336):
        rig = build_rig(portrait, RenderConfig(size=size))
        render(rig, {k: v[:5] for k, v in tracks.items()}, seed=0)  # warm-up
        t0 = time.perf_counter()
        render(rig, tracks, seed=0)
        dt = time.perf_counter() - t0
        print(f"size {size:4d}: {args.frames / dt:7.1f} frames/s  ({1000 * dt / args.frames:.2f} ms/frame, "
              f"frames + landmarks + flow + validity, 1 core)")


if __name__ == "__main__":
    main()
