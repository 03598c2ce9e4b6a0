"""Peak memory of `opflowtalker generate` on long speech and a 1080p video: it streams, so ten
minutes of speech should take no more memory than thirty seconds.

    python benchmarks/generate_memory.py [--minutes 10] [--short-seconds 30] [--video-seconds 4]
                                         [--checkpoint models/generators/full.safetensors] [--threads 2]
                                         [--json out.json]

A 1080p face video (the photo scaled onto a 1920x1080 frame, --video-seconds long; generate loops
it over the speech, detecting the face in every frame) is lip-synced to speech of --short-seconds
and of --minutes (the packaged recordings one after another). Each run is the command line itself,
`python -m opflowtalker.cli generate`, in its own process under GNU time (`/usr/bin/time -v`),
whose "Maximum resident set size" is the peak of that process alone. Printed: each run's peak RSS,
wall time and frames per second, and the ratio of the long run's peak to the short one's.

Random weights of the embedded size (width 0.25) unless --checkpoint gives a trained generator:
the memory depends on the sizes, not the values.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from opflowtalker.models.checkpoints import save_safetensors
from opflowtalker.models.opflowtalker import OpFlowTalker, OpFlowTalkerConfig
from opflowtalker.video import VideoWriter, probe, read_image

from generate import speech_of  # benchmarks/generate.py, beside this file: the same recordings

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "data/external/faces/hopper.png"
SIZE = (1920, 1080)


def face_video_1080p(seconds: float, path: Path, fps: float = 25.0) -> Path:
    """The photo scaled to the frame's height, centred on a grey 1920x1080 frame, for ``seconds``."""
    photo = read_image(PHOTO)
    width, height = SIZE
    scaled = cv2.resize(photo, (round(photo.shape[1] * height / photo.shape[0]), height),
                        interpolation=cv2.INTER_CUBIC)
    frame = np.full((height, width, 3), 128, np.uint8)
    left = (width - scaled.shape[1]) // 2
    frame[:, left : left + scaled.shape[1]] = scaled
    with VideoWriter(path, fps) as writer:
        for _ in range(int(round(seconds * fps))):
            writer.write(frame)
    return path


def run_generate(face: Path, speech: Path, checkpoint: Path, out: Path, threads: int) -> dict:
    """One `opflowtalker generate` under /usr/bin/time -v: its peak RSS (MB), wall seconds, frames."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "opflowtalker.cli", "generate", "--face", str(face),
               "--audio", str(speech), "--checkpoint", str(checkpoint), "--outfile", str(out), "--quiet"]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"generate failed:\n{result.stderr[-2000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    frames = int(re.search(r": (\d+) frames at", result.stdout).group(1))
    return {"peak_rss_mb": peak_kb / 1024, "seconds": wall, "frames": frames, "frames_per_second": frames / wall,
            "output_seconds": probe(out).duration}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0, help="the long speech")
    ap.add_argument("--short-seconds", type=float, default=30.0, help="the short speech")
    ap.add_argument("--video-seconds", type=float, default=4.0, help="the 1080p face video, looped")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a trained generator (default: random weights)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-memory-"))
    face = face_video_1080p(args.video_seconds, tmp / "face-1080p.mp4")
    checkpoint = args.checkpoint
    if checkpoint is None:
        torch.manual_seed(0)
        checkpoint = tmp / "embedded.safetensors"
        save_safetensors(OpFlowTalker(OpFlowTalkerConfig(width=0.25)), checkpoint)
    runs = {}
    for label, seconds in (("short", args.short_seconds), ("long", args.minutes * 60)):
        speech = speech_of(seconds, tmp / f"speech-{label}.wav")
        runs[label] = {"speech_seconds": seconds,
                       **run_generate(face, speech, checkpoint, tmp / f"out-{label}.mp4", args.threads)}
        row = runs[label]
        print(f"{seconds:6.0f} s of speech, {row['frames']} frames at 1080p: peak RSS {row['peak_rss_mb']:.0f} MB, "
              f"{row['seconds']:.0f} s ({row['frames_per_second']:.1f} frames/s)", flush=True)
    ratio = runs["long"]["peak_rss_mb"] / runs["short"]["peak_rss_mb"]
    print(f"peak RSS long / short: {ratio:.3f}")
    result = {"command": " ".join([sys.executable] + sys.argv), "threads": args.threads,
              "video": f"{SIZE[0]}x{SIZE[1]}, {args.video_seconds:g} s looped", "torch": torch.__version__,
              "runs": runs, "peak_ratio": ratio}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
