"""Syllables in the corpus, and how alike their lip flow is across faces and across syllables.

The paper's Figure 1 rests on two observations: the lips of different people saying the same
syllable move alike, so their optical flow is nearly the same; and one person saying different
things changes the image less than it changes the flow. Both can be measured on the corpus, whose
clips carry their phone timings, exact flow and landmarks.

A *syllable* here is one of the GRID words below, found as its run of phones inside a clip (every
voice of the corpus says each of them). Each spoken occurrence becomes two descriptors on the
same grid over the mouth, in units of the face (the clip's median eye-to-mouth distance), so faces
of different sizes are comparable:

* its **lip flow**: the exact flow over the syllable's frames, minus the head's own motion (the flow
  at the nose), sampled on the mouth grid and resampled to a fixed number of steps;
* its **image**: the grey frames at the same steps on the same grid, each standardised.

Similarity is the cosine of two descriptors. :func:`syllable_similarity` compares pairs of the same
syllable said by different identities with pairs of different syllables said by one identity, and
counts how often an occurrence's nearest neighbour among the other identities' occurrences is the
same syllable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import map_coordinates

from ..landmarks import MOUTH, NOSE, eye_to_mouth_distance
from ..metrics.intervals import mean_interval, paired_interval

__all__ = ["SYLLABLES", "Occurrence", "find_syllables", "lip_motion", "mouth_grid", "syllable_descriptors",
           "syllable_pictures", "syllable_similarity"]

SYLLABLES: dict[str, tuple[str, ...]] = {
    "bin": ("b", "ih", "n"),
    "blue": ("b", "l", "uw"),
    "green": ("g", "r", "iy", "n"),
    "place": ("p", "l", "ey", "s"),
    "please": ("p", "l", "iy", "z"),
    "red": ("r", "eh", "d"),
    "set": ("s", "eh", "t"),
    "soon": ("s", "uw", "n"),
    "white": ("w", "ay", "t"),
    "with": ("w", "ih", "dh"),
}
"""GRID words of one syllable that every voice of the corpus says, as the phones it says them with."""

@dataclass(frozen=True)
class Occurrence:
    key: str        # identity/name of the clip
    identity: str
    syllable: str
    start: int      # first frame of the syllable
    stop: int       # one past its last frame


def find_syllables(root: str | Path, syllables: dict[str, tuple[str, ...]] = SYLLABLES,
                   per_identity: int = 6) -> list[Occurrence]:
    """Up to ``per_identity`` occurrences of each syllable for each identity of the corpus at
    ``root`` (clips in name order, at most one occurrence of a syllable per clip)."""
    root = Path(root)
    found: dict[tuple[str, str], list[Occurrence]] = {}
    for path in sorted(root.glob("*/*.json")):
        meta = json.loads(path.read_text())
        phones = [(str(p), float(a), float(b)) for p, a, b in meta["phones"]]
        names = [p for p, _, _ in phones]
        fps, n_frames = float(meta["fps"]), int(meta["n_frames"])
        for syllable, run in syllables.items():
            bucket = found.setdefault((meta["identity"], syllable), [])
            if len(bucket) >= per_identity:
                continue
            for i in range(len(names) - len(run) + 1):
                if tuple(names[i:i + len(run)]) == run:
                    start = int(np.floor(phones[i][1] * fps))
                    stop = min(int(np.ceil(phones[i + len(run) - 1][2] * fps)) + 1, n_frames)
                    if stop - start >= 3:
                        bucket.append(Occurrence(f"{meta['identity']}/{meta['name']}", meta["identity"], syllable,
                                                 start, stop))
                    break
    return [o for (_, _), bucket in sorted(found.items()) for o in bucket]


def mouth_grid(landmarks: np.ndarray, grid: tuple[int, int] = (8, 12)) -> tuple[np.ndarray, float]:
    """Sample points (H, W, 2) as (x, y) over the mouth of a clip's landmarks (T, 68, 2): a box
    1.6 eye-to-mouth distances wide and 1.2 high around the mouth's median centre, and that
    distance (the unit of the descriptors)."""
    unit = eye_to_mouth_distance(landmarks)
    centre = np.median(landmarks[:, MOUTH].mean(axis=1), axis=0)
    ys = centre[1] + unit * np.linspace(-0.6, 0.6, grid[0])
    xs = centre[0] + unit * np.linspace(-0.8, 0.8, grid[1])
    return np.stack(np.meshgrid(xs, ys), axis=-1), unit


def _sample(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``field`` (H, W[, C]) at points (..., 2) given as (x, y)."""
    coords = [points[..., 1].ravel(), points[..., 0].ravel()]
    if field.ndim == 2:
        return map_coordinates(field, coords, order=1, mode="nearest").reshape(points.shape[:-1])
    return np.stack([map_coordinates(field[..., c], coords, order=1, mode="nearest")
                     for c in range(field.shape[-1])], axis=-1).reshape(*points.shape[:-1], field.shape[-1])


def _steps(start: int, stop: int, n: int) -> np.ndarray:
    return np.linspace(start, stop - 1, n)


def _at_times(series: np.ndarray, times: np.ndarray) -> np.ndarray:
    """``series`` (T, ...) linearly interpolated at fractional ``times``."""
    low = np.clip(np.floor(times).astype(int), 0, len(series) - 1)
    high = np.clip(low + 1, 0, len(series) - 1)
    w = (times - low).reshape(-1, *[1] * (series.ndim - 1))
    return (1 - w) * series[low] + w * series[high]


def _load_clip(root: Path, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A corpus clip's exact flow (T-1, S, S, 2), landmarks (T, 68, 2) and frames (T, S, S, 3)."""
    from ..video import read_video

    with np.load(root / f"{key}.npz") as data:
        flow, landmarks = data["flow"].astype(np.float32), data["landmarks"].astype(np.float32)
    return flow, landmarks, read_video(root / f"{key}.mp4")[0]


def lip_motion(flow: np.ndarray, landmarks: np.ndarray, t: int, points: np.ndarray, unit: float) -> np.ndarray:
    """The flow from frame t to t+1 at ``points`` minus the head's own motion there (the flow at
    the nose), in eye-to-mouth distances."""
    nose = landmarks[t, NOSE].mean(axis=0)
    return (_sample(flow[t], points) - _sample(flow[t], nose[None])[0]) / unit


def _syllable_motion(flow: np.ndarray, landmarks: np.ndarray, occurrence: Occurrence, points: np.ndarray,
                     unit: float) -> np.ndarray:
    """The lip motion (frames, H, W, 2) of every frame pair of ``occurrence`` (see :func:`lip_motion`)."""
    return np.stack([lip_motion(flow, landmarks, t, points, unit)
                     for t in range(occurrence.start, min(occurrence.stop, len(flow)))])


def syllable_descriptors(root: str | Path, occurrences: list[Occurrence], grid: tuple[int, int] = (8, 12),
                         steps: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The lip-flow and image descriptors (N, D) of each occurrence (see the module docstring)."""
    root = Path(root)
    flows, images = [None] * len(occurrences), [None] * len(occurrences)
    by_clip: dict[str, list[int]] = {}
    for i, occ in enumerate(occurrences):
        by_clip.setdefault(occ.key, []).append(i)
    for key, indices in by_clip.items():
        flow, landmarks, frames = _load_clip(root, key)
        grey = frames.astype(np.float32).mean(axis=-1)
        points, unit = mouth_grid(landmarks, grid)
        for i in indices:
            occ = occurrences[i]
            motion = _syllable_motion(flow, landmarks, occ, points, unit)
            flows[i] = _at_times(motion, _steps(0, len(motion), steps)).ravel()
            picture = np.stack([_sample(frame, points) for frame in grey[occ.start:occ.stop]])
            picture = _at_times(picture, _steps(0, len(picture), steps))
            picture = picture - picture.mean(axis=(1, 2), keepdims=True)
            images[i] = (picture / (picture.std(axis=(1, 2), keepdims=True) + 1e-6)).ravel()
    return np.stack(flows), np.stack(images)


def syllable_pictures(root: str | Path, occurrence: Occurrence, size: tuple[int, int] = (48, 64), steps: int = 3
                      ) -> tuple[np.ndarray, np.ndarray]:
    """What Figure 1 shows of one occurrence: the mouth region of its middle frame (H, W, 3 uint8)
    and its lip flow (steps, H, W, 2, in eye-to-mouth distances) at ``steps`` times evenly inside the
    syllable, interpolated between frames as the descriptors are, so that every face is shown at
    the same moments of the syllable."""
    flow, landmarks, frames = _load_clip(Path(root), occurrence.key)
    points, unit = mouth_grid(landmarks, size)
    motion = _syllable_motion(flow, landmarks, occurrence, points, unit)
    times = _steps(0, len(motion) + 1, steps + 2)[1:-1]  # inside the syllable, not at its edges
    middle = frames[(occurrence.start + occurrence.stop - 1) // 2].astype(np.float32)
    picture = np.clip(_sample(middle, points), 0, 255).astype(np.uint8)
    return picture, _at_times(motion, times)


def _cosine(x: np.ndarray) -> np.ndarray:
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def syllable_similarity(descriptors: np.ndarray, occurrences: list[Occurrence]) -> dict:
    """How alike the descriptors are for the same syllable across identities and for different
    syllables within one identity.

    Each occurrence gives two numbers: its mean cosine similarity with the same syllable said by
    the other identities, and with the other syllables said by its own identity; the means over
    occurrences come with 95% bootstrap intervals, and so does their paired difference. Retrieval
    is how often the most similar occurrence among the other identities' is the same syllable
    (chance: one over the number of syllables)."""
    sim = _cosine(descriptors)
    ids = np.array([o.identity for o in occurrences])
    syl = np.array([o.syllable for o in occurrences])
    across, within, hits = [], [], []
    for i in range(len(occurrences)):
        same_syl_other_id = (syl == syl[i]) & (ids != ids[i])
        other_syl_same_id = (syl != syl[i]) & (ids == ids[i])
        if not same_syl_other_id.any() or not other_syl_same_id.any():
            continue
        across.append(sim[i, same_syl_other_id].mean())
        within.append(sim[i, other_syl_same_id].mean())
        others = np.flatnonzero(ids != ids[i])
        hits.append(float(syl[others[np.argmax(sim[i, others])]] == syl[i]))
    if not across:
        raise ValueError("no syllable is said by two identities: nothing to compare")

    def summary(values: list[float]) -> dict:
        return {"mean": float(np.mean(values)), "interval": mean_interval(values)}

    diff, low, high = paired_interval(across, within)
    return {
        "occurrences": len(across),
        "same_syllable_across_identities": summary(across),
        "other_syllables_same_identity": summary(within),
        "difference": {"mean": diff, "interval": (low, high)},
        "retrieval": summary(hits),
        "chance": 1.0 / len(set(syl)),
    }
