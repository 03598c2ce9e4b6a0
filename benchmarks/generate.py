"""Speed and memory of `opflowtalker generate` on this machine's CPU, each speed a ratio against
what a user of Wav2Lip runs instead, measured in the same run.

    python benchmarks/generate.py [--checkpoint models/generators/full.safetensors] [--seconds 10]
                                  [--memory-seconds 4] [--threads 2] [--batch-size 16] [--json out.json]
                                  [--glibc-default] [--memory-only] [--end-to-end-only]

The baseline is Wav2Lip's generator in fp32 as its own ``inference.py`` runs it: the published
network in eval mode, batch norms as they are, frames in PyTorch's default (channels-first) layout.
Beside it, the same network through our pipeline (batch norms folded, channels-last), so the share
of the ratio that is the pipeline's and the share that is the model's both show.

1. The model alone (crops in, crops out), frames per second and the ratio to the baseline: Wav2Lip,
   the paper-size OpFlowTalker (width 1) and the embedded one (width 0.25, or the trained
   --checkpoint), in fp32 and bf16; for a video's crops (each different) and a photo's (all the
   same, so the faces' part of OpFlowTalker is computed once: :meth:`OpFlowTalker.encode_faces`).
2. Windows per forward pass: the model alone at 1 to 32 windows, the basis of ``--batch_size``'s default.
3. End to end (decoding, faces, generation, blending, encoding): a photo, and a 1280x720 video of a
   moving face with the face searched in every frame (Wav2Lip's way) and followed (ours), per model.
4. Following the face: milliseconds per frame, frames searched, and how far each way's box strays
   from the face's known slide across the video.
5. What bf16 changes: PSNR of the bf16 video against the fp32 one of the same model (the photo run).
6. Peak memory (max RSS of a child process) for a face video of --memory-seconds and of ten times
   that (the photo at half size, the face followed), the audio as long as the video.
7. Encoding the 720p video's frames: x264's default preset (medium) against ``generate``'s
   (:data:`opflowtalker.generate.ENCODER_PRESET`), both at CRF 18: milliseconds per frame of the
   whole ffmpeg process, PSNR of the decoded frames against the frames written, and the file's size.

``--end-to-end-only`` runs sections 3 and 7 alone (a few minutes).

Every model runs as `opflowtalker generate` runs it, glibc's mmap threshold fixed
(:func:`opflowtalker.generate.fixed_mmap_threshold`); ``--glibc-default`` leaves malloc as it is.
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

import cv2
import numpy as np
import soundfile
import torch

from opflowtalker.audio import load_wav
from opflowtalker.generate import (ENCODER_PRESET, GenerateOptions, Generator, _FaceTracker, fixed_mmap_threshold,
                                   generate)
from opflowtalker.metrics.image import psnr
from opflowtalker.models.checkpoints import save_safetensors
from opflowtalker.models.opflowtalker import OpFlowTalker, OpFlowTalkerConfig
from opflowtalker.models.wav2lip import Wav2Lip
from opflowtalker.video import VideoWriter, iter_frames, read_image, read_video

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "data/external/faces/hopper.png"
SPEECH = ROOT / "data/external/speech"
HD = (1280, 720)


def speech_of(seconds: float, path: Path) -> Path:
    """Real recordings (alsa-utils' channel tests) one after another for ``seconds``."""
    parts = [load_wav(p) for p in sorted(SPEECH.glob("*.wav"))]
    wav = np.concatenate(parts * int(np.ceil(seconds * 16000 / sum(map(len, parts)))))[: int(seconds * 16000)]
    soundfile.write(path, wav, 16000)
    return path


def slide(i: int) -> tuple[int, int]:
    """Where the photo's corner is in frame ``i`` of the moving-face video: a slow sway."""
    return 300 + int(80 * np.sin(i / 20)), 90 + int(20 * np.sin(i / 13))


def moving_face(seconds: float, path: Path) -> Path:
    """A 1280x720 video of the photo (540 px tall) swaying over a grey background."""
    photo = read_image(PHOTO)
    photo = cv2.resize(photo, None, fx=540 / photo.shape[0], fy=540 / photo.shape[0], interpolation=cv2.INTER_AREA)
    with VideoWriter(path, 25) as writer:
        for i in range(int(seconds * 25)):
            frame = np.full((HD[1], HD[0], 3), 90, np.uint8)
            x, y = slide(i)
            frame[y : y + photo.shape[0], x : x + photo.shape[1]] = photo[:, : HD[0] - x]
            writer.write(frame)
    return path


def timed(fn, repeats: int = 3) -> float:
    """The fastest of ``repeats`` calls of ``fn`` after a warm-up call, in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def crops_and_mels(n: int, size: int, still: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (1 if still else n, size, size, 3), dtype=np.uint8)
    return np.repeat(crops, n, 0) if still else crops, rng.normal(size=(n, 80, 16)).astype(np.float32)


def model_fps(generator: Generator, batch: int, still: bool = False, n: int = 160) -> float:
    crops, mels = crops_and_mels(n, generator.size, still)
    return n / timed(lambda: generator(crops, mels, batch))


@torch.no_grad()
def wav2lip_as_published_fps(batch: int, n: int = 160) -> float:
    """Wav2Lip's generator as its inference.py runs it: (N, 6, 96, 96) faces and (N, 1, 80, 16) mels
    in batches of ``batch`` windows of 5 frames, fp32, channels-first, batch norms unfolded."""
    model = Wav2Lip().eval()
    crops, mels = crops_and_mels(n, 96, still=False)
    faces = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    faces = torch.cat([faces * (torch.arange(96) < 48).view(1, 1, 96, 1), faces], dim=1).contiguous()
    mel = torch.from_numpy(mels).unsqueeze(1)
    step = 5 * batch

    def run():
        for i in range(0, n, step):
            model(mel[i : i + step], faces[i : i + step])
    return n / timed(run)


def tracking(video: Path) -> dict:
    """Milliseconds per frame and box error (px, against the face's known slide) of each way of finding the face."""
    frames = list(iter_frames(video))
    slides = np.array([slide(i) * 2 for i in range(len(frames))], np.float64)
    result = {}
    for name, track in (("searched every frame", False), ("followed", True)):
        tracker = _FaceTracker(GenerateOptions(progress=False), track)
        start = time.perf_counter()
        boxes = np.array([tracker.box(f) for f in frames], np.float64)
        ms = 1000 * (time.perf_counter() - start) / len(frames)
        steady = boxes - slides  # the face is one picture: its box, less the slide, should not move
        error = np.abs(steady - np.median(steady, axis=0)).max(axis=1)
        result[name] = {"ms_per_frame": ms, "searches": tracker.searches, "frames": len(frames),
                        "mean_error_px": float(error.mean()), "p95_error_px": float(np.percentile(error, 95)),
                        "max_error_px": float(error.max()), "face_px": float(np.median(boxes[:, 2] - boxes[:, 0]))}
    return result


def peak_rss_mb(script: str) -> float:
    """Peak resident memory of a fresh interpreter running ``script``: its VmHWM, which starts
    afresh at exec (getrusage's ru_maxrss would carry over the forking parent's peak)."""
    code = script + ("\nimport re; print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())"
                     ".group(1))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def checkpoints_in(tmp: Path, trained: Path | None) -> dict[str, Path]:
    torch.manual_seed(0)
    paths = {"wav2lip": tmp / "wav2lip.pth", "paper": tmp / "paper.safetensors"}
    torch.save({"state_dict": Wav2Lip().state_dict()}, paths["wav2lip"])
    paper = OpFlowTalker(OpFlowTalkerConfig(width=1.0))
    # Weights on the output layer make the bf16-against-fp32 comparison mean something.
    torch.nn.init.normal_(paper.face_decoder.output_block[1].weight, std=0.05)
    save_safetensors(paper, paths["paper"])
    if trained is not None:
        paths["embedded"] = trained
    else:
        paths["embedded"] = tmp / "embedded.safetensors"
        save_safetensors(OpFlowTalker(OpFlowTalkerConfig(width=0.25)), paths["embedded"])
    return paths


def runs(checkpoints: dict[str, Path]):
    for name, path in checkpoints.items():
        for precision in (("fp32",) if name == "wav2lip" else ("fp32", "bf16")):
            yield name, path, precision


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
    ap.add_argument("--end-to-end-only", action="store_true", help="sections 3 and 7 alone")
    args = ap.parse_args()
    if not args.glibc_default:
        fixed_mmap_threshold()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    checkpoints = checkpoints_in(tmp, args.checkpoint)
    result = {"command": " ".join([sys.executable] + sys.argv), "threads": args.threads, "seconds": args.seconds,
              "batch_size": args.batch_size, "fixed_mmap_threshold": not args.glibc_default, "torch": torch.__version__}
    if args.end_to_end_only:
        speech, video = speech_of(args.seconds, tmp / "speech.wav"), moving_face(args.seconds, tmp / "face720.mp4")
        result["end_to_end_rows"] = end_to_end(args, tmp, checkpoints, speech, video)[0]
        result["encoding"] = encoding(video, tmp)
    else:
        if not args.memory_only:
            result.update(speeds(args, tmp, checkpoints))
        result["peak_rss_mb"] = memory(args, tmp, checkpoints["embedded"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


def speeds(args, tmp: Path, checkpoints: dict[str, Path]) -> dict:
    batch = args.batch_size
    baseline = wav2lip_as_published_fps(batch)
    print(f"1. The model alone, {args.threads} threads, {batch} windows per pass; ratios against Wav2Lip's "
          f"generator as its inference.py runs it, fp32: {baseline:.1f} frames/s")
    model_rows = []
    for name, path, precision in runs(checkpoints):
        generator = Generator(path, precision)
        for crops in ("video", "photo"):
            fps = model_fps(generator, batch, still=crops == "photo")
            model_rows.append({"model": name, "precision": precision, "crops": crops, "fps": fps,
                               "vs_wav2lip_published_fp32": fps / baseline})
            print(f"   {name:>9} {precision} {crops:>5} crops: {fps:6.1f} frames/s  {fps / baseline:5.2f}x", flush=True)
    ours = next(r["fps"] for r in model_rows if r["model"] == "wav2lip" and r["crops"] == "video")
    for row in model_rows:
        row["vs_wav2lip_ours_fp32"] = row["fps"] / ours
    print(f"   against Wav2Lip through our pipeline ({ours:.1f} frames/s): " + ", ".join(
        f"{r['model']} {r['precision']} {r['crops']} {r['vs_wav2lip_ours_fp32']:.2f}x"
        for r in model_rows if r["model"] != "wav2lip"))

    print("2. Windows per forward pass, the model alone in fp32 (video crops), frames/s:")
    batches = {}
    for name in ("embedded", "paper"):
        generator = Generator(checkpoints[name])
        batches[name] = {b: model_fps(generator, b) for b in (1, 2, 4, 8, 16, 32)}
        print(f"   {name:>9}: " + "  ".join(f"{b}: {f:5.1f}" for b, f in batches[name].items()), flush=True)

    speech = speech_of(args.seconds, tmp / "speech.wav")
    video = moving_face(args.seconds, tmp / "face720.mp4")
    end_rows, videos = end_to_end(args, tmp, checkpoints, speech, video)

    print("4. Finding the face in the 720p video:")
    found = tracking(video)
    for name, row in found.items():
        print(f"   {name:<21} {row['ms_per_frame']:6.1f} ms/frame, {row['searches']} of {row['frames']} frames "
              f"searched; box off the face's slide by {row['mean_error_px']:.1f} px on average, "
              f"{row['p95_error_px']:.1f} px at the 95th percentile, {row['max_error_px']:.1f} px at most "
              f"(the box is {row['face_px']:.0f} px)")

    bf16_psnr = {}
    for name in ("paper", "embedded"):
        a, _ = read_video(videos[name, "fp32"])
        b, _ = read_video(videos[name, "bf16"])
        bf16_psnr[name] = psnr(b, a)
        print(f"5. {name}: PSNR of the bf16 video against the fp32 one {bf16_psnr[name]:.2f} dB")
    return {"wav2lip_published_fp32_fps": baseline, "model_rows": model_rows, "batches": batches,
            "end_to_end_rows": end_rows, "tracking": found, "bf16_psnr_db": bf16_psnr,
            "encoding": encoding(video, tmp)}


def end_to_end(args, tmp: Path, checkpoints: dict[str, Path], speech: Path, video: Path) -> tuple[list, dict]:
    """Section 3: each model through ``generate`` on the photo and the 720p video, both ways of
    finding the face; the rows, and the photo runs' videos by (model, precision)."""
    batch = args.batch_size
    print(f"3. End to end, {args.seconds:g} s of speech, frames/s (and the ratio to Wav2Lip's row of the same input):")
    end_rows, videos = [], {}
    inputs = (("photo", PHOTO, True), ("720p video, searched every frame", video, False),
              ("720p video, followed", video, True))
    for name, path, precision in runs(checkpoints):
        for face, source, track in inputs:
            out = tmp / f"{name}-{precision}-{len(end_rows)}.mp4"
            summary = generate(source, speech, path, out,
                               GenerateOptions(precision=precision, batch_size=batch, track=track, progress=False))
            if face == "photo":
                videos[name, precision] = out
            end_rows.append({"model": name, "precision": precision, "face": face, "fps": summary["frames_per_second"]})
    for row in end_rows:
        base = next(r["fps"] for r in end_rows if r["model"] == "wav2lip" and r["face"] == row["face"])
        row["vs_wav2lip_fp32"] = row["fps"] / base
        print(f"   {row['model']:>9} {row['precision']} {row['face']:<33} {row['fps']:6.1f}  {row['vs_wav2lip_fp32']:5.2f}x")

    return end_rows, videos


def encoding(video: Path, tmp: Path) -> dict:
    """Section 7: the 720p video's frames encoded at CRF 18 with x264's default preset and with generate's."""
    frames = list(iter_frames(video))
    rows = {}
    print(f"7. Encoding the {len(frames)} frames of the 720p video at CRF 18:")
    for preset in ("medium", ENCODER_PRESET):
        out = tmp / f"encoded-{preset}.mp4"
        start = time.perf_counter()
        with VideoWriter(out, 25, preset=preset) as writer:
            writer.write(frames)
        ms = 1000 * (time.perf_counter() - start) / len(frames)
        decoded, _ = read_video(out)
        rows[preset] = {"ms_per_frame": ms, "psnr_db": psnr(decoded, np.stack(frames)), "bytes": out.stat().st_size}
        print(f"   {preset:>9}: {ms:5.1f} ms/frame, PSNR {rows[preset]['psnr_db']:.2f} dB, "
              f"{rows[preset]['bytes'] / 1e6:.2f} MB", flush=True)
    return rows


def memory(args, tmp: Path, checkpoint: Path) -> dict:
    """Peak memory for a face video of ``--memory-seconds`` and of ten times that."""
    photo = read_image(PHOTO)[::2, ::2]
    peaks = {}
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
                  f"generate({str(face)!r}, {str(audio)!r}, {str(checkpoint)!r}, "
                  f"{str(tmp / f'mem-{factor}.mp4')!r}, GenerateOptions(batch_size={args.batch_size}, progress=False))")
        peaks[f"{seconds:g} s"] = peak_rss_mb(script)
        print(f"6. peak memory, {seconds:g} s video: {peaks[f'{seconds:g} s']:.0f} MB", flush=True)
    return peaks


if __name__ == "__main__":
    main()
