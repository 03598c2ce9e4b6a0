"""Measures of how faithful the corpus is: does the stored flow explain the frames, does an
independent landmark detector see the mouth that was rendered, does the mouth follow the speech,
and how does each photograph frame its face? :func:`corpus_quality` measures a built corpus (the
``corpus_quality`` stage); the corpus chapter shows what it wrote."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np

__all__ = ["warp_residuals", "dlib_lip_gaps", "clip_quality", "identity_framing", "corpus_quality", "MIN_MOTION"]

# Pixels that move at least this far between frames count as "moving" for the first warp ratio.
MIN_MOTION = 0.25


def warp_residuals(frames: np.ndarray, flow: np.ndarray, valid: np.ndarray, min_motion: float = 0.25
                   ) -> tuple[float, float, float]:
    """Warp frame t+1 back onto frame t with the flow, over a whole clip.

    Returns ``(ratio_moving, ratio_valid, grey)``: the warped photometric residual over the
    unwarped one on valid pixels moving at least ``min_motion`` px, the same ratio on all valid
    pixels, and the mean warped residual on valid pixels in grey levels. On pixels that barely move
    both residuals sit at the floor set by uint8 rounding and bilinear resampling, which is why
    the first ratio is the measure of the flow itself.
    """
    size_y, size_x = frames.shape[1:3]
    gx, gy = np.meshgrid(np.arange(size_x, dtype=np.float32), np.arange(size_y, dtype=np.float32))
    warped_m = plain_m = warped_v = plain_v = 0.0
    count = 0
    for t in range(len(flow)):
        a = frames[t].astype(np.float32)
        b = frames[t + 1]
        f = flow[t].astype(np.float32)
        back = cv2.remap(b, gx + f[..., 0], gy + f[..., 1], cv2.INTER_LINEAR).astype(np.float32)
        err = np.abs(a - back)
        plain = np.abs(a - b.astype(np.float32))
        m = valid[t]
        moving = m & (np.linalg.norm(f, axis=-1) >= min_motion)
        warped_m += err[moving].sum()
        plain_m += plain[moving].sum()
        warped_v += err[m].sum()
        plain_v += plain[m].sum()
        count += 3 * int(m.sum())
    return warped_m / max(plain_m, 1e-9), warped_v / max(plain_v, 1e-9), warped_v / max(count, 1)


def dlib_lip_gaps(frames: np.ndarray) -> np.ndarray:
    """dlib's inner-lip gap (landmark 66.y - 62.y) per frame; NaN where it finds no face."""
    from ..landmarks import LandmarkDetector

    detector = LandmarkDetector("dlib")
    gaps = np.full(len(frames), np.nan, dtype=np.float32)
    for i, frame in enumerate(frames):
        points = detector.landmarks(frame)
        if points is not None:
            gaps[i] = points[66, 1] - points[62, 1]
    return gaps


def clip_quality(spec, params, video_path: str | Path, meta: dict, min_motion: float = MIN_MOTION) -> dict:
    """One clip's measures: the clip rendered again from its spec (the corpus stores only the
    H.264 frames, and the renderer is deterministic) gives the lossless frames, the flow and the
    landmarks; the stored video gives what a reader of the corpus sees. Warp ratios on moving and
    on all valid pixels, rendered and decoded; the valid share and how much of it barely moves;
    how often dlib finds the face, and how its lip gap follows the rendered one; how the lip gap
    follows the loudness; the mean motion and its share below the nose."""
    from ..metrics.lip_dynamics import loudness_per_frame
    from ..video import read_video
    from .build import speak_and_render

    rendered = speak_and_render(spec, params)
    video = rendered.video
    decoded, _ = read_video(video_path)
    ratio_moving, ratio_valid, _ = warp_residuals(video.frames, video.flow, video.valid, min_motion)
    ratio_decoded, _, _ = warp_residuals(decoded, video.flow, video.valid, min_motion)
    gaps = dlib_lip_gaps(decoded)
    found = ~np.isnan(gaps)
    loudness = loudness_per_frame(rendered.wav, meta["sample_rate"], meta["fps"], len(decoded))
    speed = np.linalg.norm(video.flow, axis=-1)
    below_nose = np.arange(video.flow.shape[1])[None, :, None] > video.landmarks[:-1, 33, 1][:, None, None]
    return {"key": spec.key, "identity": spec.identity,
            "warp ratio, moving px": float(ratio_moving), "warp ratio, all valid px": float(ratio_valid),
            "warp ratio, moving px, H.264": float(ratio_decoded),
            "valid fraction": float(video.valid.mean()),
            "valid px barely moving": float((speed[video.valid] < min_motion).mean()),
            "dlib finds face": float(found.mean()),
            "dlib gap vs rendered (r)": float(np.corrcoef(gaps[found], video.mouth_open[found])[0, 1]),
            "dlib gap vs rendered (slope)": float(np.polyfit(video.mouth_open[found], gaps[found], 1)[0]),
            "lip gap vs loudness (r)": float(np.corrcoef(loudness, video.mouth_open)[0, 1]),
            "mean flow, valid px (px/frame)": float(speed[video.valid].mean()),
            "share of the motion below the nose": float(speed[video.valid & below_nose].sum() / speed[video.valid].sum())}


def identity_framing(clips: list[tuple[dict, np.ndarray, np.ndarray]], fps: float) -> dict:
    """How one photograph frames its face over its clips ``(meta, landmarks, lip gap)``: the chin's
    closest approach to the frame's lower edge, the jaw's width over the frame's, the median lip gap
    over the frames of p, b and m (the frames each phone overlaps) and the median widest gap."""
    chin, jaw, closure, widest = [], [], [], []
    for meta, landmarks, gap in clips:
        for phone, start, end in meta["phones"]:
            if phone in ("p", "b", "m"):
                first = int(np.floor(start * fps))
                closure.append(float(gap[first:max(first + 1, int(np.ceil(end * fps)))].min()))
        chin.append(float(meta["size"] - 1 - landmarks[:, 8, 1].max()))  # landmark 8: the chin
        jaw.append(float(((landmarks[:, 16, 0] - landmarks[:, 0, 0]) / meta["size"]).mean()))
        widest.append(float(gap.max()))
    return {"closest chin to lower edge (px)": min(chin), "jaw width / frame width": float(np.mean(jaw)),
            "gap at p, b, m (median px)": float(np.median(closure)) if closure else float("nan"),
            "widest gap (median px)": float(np.median(widest))}


def corpus_quality(root: str | Path, min_motion: float = MIN_MOTION) -> dict:
    """The measures of a built corpus at ``root``: :func:`clip_quality` for each test clip and as
    many training clips (the first ones), :func:`identity_framing` for every identity over all its
    clips, and the renderer's settings the chapter names."""
    from ..datasets import read_dataset
    from ..params import from_mapping
    from .build import ClipSpec, CorpusParams
    from .render import RenderConfig

    root = Path(root)
    built = json.loads((root / "corpus.json").read_text())["params"]
    params = from_mapping(CorpusParams, built, f"{root / 'corpus.json'}: params")
    splits = {split: [(clip, json.loads(clip.video.with_suffix(".json").read_text()))
                      for clip in read_dataset("corpus", root, split)] for split in ("train", "val", "test")}
    fields = [f.name for f in dataclasses.fields(ClipSpec)]
    rows = [clip_quality(ClipSpec(**{k: meta[k] for k in fields}), params, clip.video, meta, min_motion)
            for clip, meta in splits["test"] + splits["train"][:len(splits["test"])]]
    by_identity: dict[str, list] = {}
    for clip, meta in splits["train"] + splits["val"] + splits["test"]:
        stored = np.load(clip.video.with_suffix(".npz"))
        by_identity.setdefault(meta["identity"], []).append((meta, stored["landmarks"], stored["mouth_open"]))
    framing = {who: identity_framing(clips, float(built["fps"])) for who, clips in sorted(by_identity.items())}
    return {"min_motion": min_motion, "size": int(built["size"]), "face_scale": RenderConfig().face_scale,
            "clips": rows, "framing": framing}
