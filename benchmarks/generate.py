"""Speed and memory of `opflowtalker generate` on this machine's CPU.

    python benchmarks/generate.py [--checkpoint models/generators/full.safetensors] [--seconds 10]
                                  [--memory-seconds 4] [--threads 2] [--batch-size 16] [--json out.json]
                                  [--glibc-default] [--memory-only]

1. Frames per second, end to end (photo + speech -> mp4, the face detected once), for the
   Wav2Lip-architecture generator in fp32, the paper-size OpFlowTalker (width 1) and the embedded one
   (width 0.25, or the trained --checkpoint), each in fp32 and bf16, all in this one run; plus the
   model alone (crops in, crops out) so the share of reading, blending and encoding shows.
2. What bf16 changes: PSNR between the fp32 and the bf16 videos of the same model.
3. Peak memory (max RSS of a child process) for a face video of --memory-seconds and of ten times
   that (the photo at half size, detected in every frame), the audio as long as the video.

Every model runs as `opflowtalker generate` runs it: batch norms folded into the convolutions
(:func:`opflowtalker.models.conv.fold_batchnorm`, the Wav2Lip baseline's too) and glibc's mmap threshold fixed
(:func:`opflowtalker.generate.fixed_mmap_threshold`); ``--glibc-default`` leaves malloc as it is,
to see what that setting changes.

Random weights time the same as trained ones; the sizes are what matter.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from opflowtalker.audio import load_wav
from opflowtalker.generate import GenerateOptions, Generator, fixed_mmap_threshold, generate
from opflowtalker.metrics.image import psnr
from opflowtalker.models.checkpoints import save_safetensors
from opflowtalker.models.opflowtalker import OpFlowTalker, OpFlowTalkerConfig
from opflowtalker.models.wav2lip import Wav2Lip
from opflowtalker.video import VideoWriter, read_image, read_video

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "data/external/faces/hopper.png"
SPEECH = ROOT / "data/external/speech"


def speech_of(seconds: float, path: Path) -> Path:
    """Real recordings (alsa-utils' channel tests) one after another for ``seconds``."""
    parts = [load_wav(p) for p in sorted(SPEECH.glob("*.wav"))]
    wav = np.concatenate(parts * int(np.ceil(seconds * 16000 / sum(map(len, parts)))))[: int(seconds * 16000)]
    soundfile.write(path, wav, 16000)
    return path


def model_fps(generator: Generator, batch: int, n: int = 200) -> float:
    crops = np.random.default_rng(0).integers(0, 256, (n, generator.size, generator.size, 3), dtype=np.uint8)
    mels = np.random.default_rng(1).normal(size=(n, 80, 16)).astype(np.float32)
    generator(crops[:20], mels[:20], batch)  # warm-up
    start = time.perf_counter()
    generator(crops, mels, batch)
    return n / (time.perf_counter() - start)


def peak_rss_mb(script: str) -> float:
    """Peak resident memory of a fresh interpreter running ``script``: its VmHWM, which starts
    afresh at exec (getrusage's ru_maxrss would carry over the forking parent's peak)."""
    code = script + ("\nimport re; print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())"
                     ".group(1))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, default=None, help="a trained generator to time as 'embedded'")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--memory-seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=GenerateOptions().batch_size, help="windows per forward pass")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--memory-only", action="store_true", help="measure peak memory only")
    ap.add_argument("--glibc-default", action="store_true", help="leave glibc's mmap threshold dynamic")
    args = ap.parse_args()
    if not args.glibc_default:
        fixed_mmap_threshold()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    speech = speech_of(args.seconds, tmp / "speech.wav")
    torch.manual_seed(0)
    checkpoints = {"wav2lip": tmp / "wav2lip.pth", "paper": tmp / "paper.safetensors"}
    torch.save({"state_dict": Wav2Lip().state_dict()}, checkpoints["wav2lip"])
    paper = OpFlowTalker(OpFlowTalkerConfig(width=1.0))
    # A fresh residual output layer is zero, so the frame would be the reference whatever the
    # arithmetic; weights there make the bf16-against-fp32 comparison mean something.
    torch.nn.init.normal_(paper.face_decoder.output_block[1].weight, std=0.05)
    save_safetensors(paper, checkpoints["paper"])
    if args.checkpoint is not None:
        checkpoints["embedded"] = args.checkpoint
    else:
        checkpoints["embedded"] = tmp / "embedded.safetensors"
        save_safetensors(OpFlowTalker(OpFlowTalkerConfig(width=0.25)), checkpoints["embedded"])

    rows = []
    videos = {}
    for name, path in ({} if args.memory_only else checkpoints).items():
        for precision in (("fp32",) if name == "wav2lip" else ("fp32", "bf16")):
            out = tmp / f"{name}-{precision}.mp4"
            options = GenerateOptions(precision=precision, batch_size=args.batch_size, progress=False)
            summary = generate(PHOTO, speech, path, out, options)
            videos[name, precision] = out
            rows.append({"model": name, "precision": precision, "end_to_end_fps": summary["frames_per_second"],
                         "model_fps": model_fps(Generator(path, precision), args.batch_size), "frames": summary["frames"]})
            print(f"{name:>9} {precision}: {rows[-1]['end_to_end_fps']:5.1f} frames/s end to end, "
                  f"{rows[-1]['model_fps']:5.1f} frames/s the model alone", flush=True)
    baseline = next((r["end_to_end_fps"] for r in rows if r["model"] == "wav2lip"), None)
    for row in rows:
        row["vs_wav2lip_fp32"] = row["end_to_end_fps"] / baseline
    bf16_psnr = {}
    for name in (() if args.memory_only else ("paper", "embedded")):
        a, _ = read_video(videos[name, "fp32"])
        b, _ = read_video(videos[name, "bf16"])
        bf16_psnr[name] = psnr(b, a)
        print(f"{name:>9}: PSNR of the bf16 video against the fp32 one {bf16_psnr[name]:.2f} dB")

    # Memory: a face video of `seconds` and of ten times that, the audio as long as the video.
    photo = read_image(PHOTO)[::2, ::2]
    memory = {}
    for factor in (1, 10):
        seconds = args.memory_seconds * factor
        face = tmp / f"face-{factor}.mp4"
        with VideoWriter(face, 25) as writer:
            for _ in range(int(seconds)):
                writer.write(np.repeat(photo[None], 25, axis=0))
        audio = speech_of(seconds, tmp / f"speech-{factor}.wav")
        script = (f"import torch; torch.set_num_threads({args.threads})\n"
                  f"from opflowtalker.generate import generate, GenerateOptions, fixed_mmap_threshold\n"
                  + ("" if args.glibc_default else "fixed_mmap_threshold()\n") +
                  f"generate({str(face)!r}, {str(audio)!r}, {str(checkpoints['embedded'])!r}, "
                  f"{str(tmp / f'mem-{factor}.mp4')!r}, GenerateOptions(batch_size={args.batch_size}, progress=False))")
        memory[f"{seconds:g} s"] = peak_rss_mb(script)
        print(f"peak memory, {seconds:g} s video: {memory[f'{seconds:g} s']:.0f} MB", flush=True)
    result = {"command": " ".join([sys.executable] + sys.argv), "threads": args.threads, "seconds": args.seconds,
              "batch_size": args.batch_size,
              "fixed_mmap_threshold": not args.glibc_default,
              "torch": torch.__version__, "rows": rows, "bf16_psnr_db": bf16_psnr, "peak_rss_mb": memory}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
