"""Viseme model: phone timings -> smooth articulation tracks sampled at the video rate.

Each phone gives a target for every articulation parameter and a dominance (how strongly
it insists on that target).  Tracks are the dominance-weighted average of the targets
(Cohen & Massaro style coarticulation).  Dominance kernels have compact support, so once
a silence is far enough from speech only the silence dominates and the mouth is exactly at
rest -- lips must not keep drifting after the audio stops.

Bilabial closure (p, b, m) is not left to the averaging, which would only approach it:
a separate closure track is exactly 1 in the core of every bilabial; it gates the jaw and
upper-lip tracks here, and the renderer gates the small opening that rounding makes.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

PARAMS = ("jaw", "lift", "spread", "round", "tuck")
"""jaw: lower lip / jaw drop (0 closed .. 1 wide open); lift: upper lip raise (shows upper
teeth); spread: lip width (+ wide smile-like, - narrow); round: protrusion and a small round
opening; tuck: lower lip drawn up under the upper teeth (f, v).  A sixth track, ``closure``,
is 1 where the lips are pressed shut."""

TRACKS = PARAMS + ("closure",)

_V, _C, _W = 1.0, 0.4, 0.15  # dominance of vowels, ordinary consonants, weak (h)

# phone: (jaw, lift, spread, round, tuck, dominance)
_TARGETS: dict[str, tuple[float, float, float, float, float, float]] = {
    "aa": (0.95, 0.30, 0.10, 0.00, 0.0, _V),
    "ae": (0.80, 0.45, 0.35, 0.00, 0.0, _V),
    "ah": (0.65, 0.25, 0.10, 0.00, 0.0, _V),
    "ao": (0.80, 0.20, -0.10, 0.45, 0.0, _V),
    "aw": (0.80, 0.25, -0.05, 0.30, 0.0, _V),
    "ay": (0.85, 0.35, 0.25, 0.00, 0.0, _V),
    "eh": (0.55, 0.35, 0.35, 0.00, 0.0, _V),
    "er": (0.35, 0.20, -0.10, 0.40, 0.0, _V),
    "ey": (0.45, 0.35, 0.45, 0.00, 0.0, _V),
    "ih": (0.35, 0.35, 0.45, 0.00, 0.0, _V),
    "iy": (0.25, 0.40, 0.65, 0.00, 0.0, _V),
    "ow": (0.45, 0.15, -0.20, 0.80, 0.0, _V),
    "oy": (0.50, 0.15, -0.10, 0.60, 0.0, _V),
    "uh": (0.35, 0.15, -0.15, 0.60, 0.0, _V),
    "uw": (0.20, 0.10, -0.30, 1.00, 0.0, _V),
    "b": (0.00, 0.00, 0.00, 0.00, 0.0, 0.8),
    "p": (0.00, 0.00, 0.00, 0.00, 0.0, 0.8),
    "m": (0.00, 0.00, 0.00, 0.00, 0.0, 0.8),
    "f": (0.12, 0.55, 0.10, 0.00, 1.0, 1.2),
    "v": (0.12, 0.55, 0.10, 0.00, 1.0, 1.2),
    "th": (0.22, 0.35, 0.20, 0.00, 0.0, 0.8),
    "dh": (0.22, 0.35, 0.20, 0.00, 0.0, 0.6),
    "s": (0.10, 0.45, 0.40, 0.00, 0.0, 0.8),
    "z": (0.10, 0.45, 0.40, 0.00, 0.0, 0.8),
    "sh": (0.15, 0.45, -0.20, 0.65, 0.0, 0.9),
    "zh": (0.15, 0.45, -0.20, 0.65, 0.0, 0.9),
    "ch": (0.15, 0.45, -0.20, 0.65, 0.0, 0.9),
    "jh": (0.15, 0.45, -0.20, 0.65, 0.0, 0.9),
    "t": (0.20, 0.30, 0.25, 0.00, 0.0, _C),
    "d": (0.20, 0.30, 0.25, 0.00, 0.0, _C),
    "n": (0.20, 0.30, 0.25, 0.00, 0.0, _C),
    "l": (0.30, 0.30, 0.20, 0.00, 0.0, _C),
    "k": (0.35, 0.20, 0.10, 0.00, 0.0, _C),
    "g": (0.35, 0.20, 0.10, 0.00, 0.0, _C),
    "ng": (0.30, 0.20, 0.10, 0.00, 0.0, _C),
    "r": (0.25, 0.20, -0.15, 0.50, 0.0, 0.7),
    "w": (0.15, 0.05, -0.35, 1.00, 0.0, 1.3),
    "y": (0.20, 0.30, 0.45, 0.00, 0.0, 0.6),
    "hh": (0.40, 0.20, 0.10, 0.00, 0.0, _W),
    "sil": (0.00, 0.00, 0.00, 0.00, 0.0, 1.0),
}
BILABIALS = frozenset({"p", "b", "m"})
PHONES = frozenset(_TARGETS)

_CORE = 0.5  # fraction of a speech phone around its centre where its dominance is full
_REACH = 0.09  # s: how far a phone's influence extends beyond its core
_CLOSE_RAMP = 0.05  # s: lips close/open this long around a bilabial's core


def frame_times(n_frames: int, fps: float = 25.0) -> np.ndarray:
    """Times at which frames are sampled: the centre of each frame's interval."""
    return (np.arange(n_frames) + 0.5) / fps


def _kernel(dist: np.ndarray, reach: float) -> np.ndarray:
    """Compactly supported smooth fall-off, 1 at dist 0, exactly 0 beyond ``reach``."""
    u = np.clip(dist / reach, 0.0, 1.0)
    return (1.0 - u * u) ** 3


def _core(phone: str, start: float, end: float) -> tuple[float, float]:
    if phone == "sil":
        return start, end
    c, half = 0.5 * (start + end), 0.5 * _CORE * (end - start)
    return c - half, c + half


def _check(phones: list[tuple[str, float, float]]) -> None:
    if not phones:
        raise ValueError("empty phone list")
    for (p, s, e), nxt in zip(phones, phones[1:] + [None]):
        if p not in PHONES:
            raise ValueError(f"unknown phone {p!r}")
        if e < s:
            raise ValueError(f"phone {p!r} ends before it starts ({s}, {e})")
        if nxt is not None and abs(nxt[1] - e) > 1e-6:
            raise ValueError(f"phones are not contiguous at {e} -> {nxt[1]}")


def viseme_tracks(
    phones: Iterable[tuple[str, float, float]], n_frames: int, fps: float = 25.0
) -> dict[str, np.ndarray]:
    """Articulation tracks, one value per video frame.

    Returns float32 arrays of shape (n_frames,) under the names in ``TRACKS``.  Frames after
    the last phone are treated as silence.  At rest every track is exactly 0.
    """
    phones = [(str(p).lower(), float(s), float(e)) for p, s, e in phones]
    _check(phones)
    t = frame_times(n_frames, fps)
    end = phones[-1][2]
    if t.size and t[-1] > end:
        phones = phones + [("sil", end, float(t[-1]) + 1.0)]

    num = np.zeros((len(PARAMS), n_frames))
    den = np.zeros(n_frames)
    closure = np.zeros(n_frames)
    for p, s, e in phones:
        a, b = _core(p, s, e)
        dist = np.maximum(np.maximum(a - t, t - b), 0.0)
        reach = max(_REACH, 0.5 * (1.0 - _CORE) * (e - s) + 0.04)
        *target, dominance = _TARGETS[p]
        d = dominance * _kernel(dist, reach)
        num += d * np.asarray(target)[:, None]
        den += d
        if p in BILABIALS:
            # The frame nearest the phone's centre always closes, even for a phone shorter
            # than a frame interval: a plosive whose closure is never seen reads as a vowel.
            nearest = t[np.argmin(np.abs(t - 0.5 * (s + e)))] if t.size else a
            a, b = min(a, nearest), max(b, nearest)
            dist = np.maximum(np.maximum(a - t, t - b), 0.0)
            closure = np.maximum(closure, _kernel(dist, _CLOSE_RAMP))
    tracks = num / np.maximum(den, 1e-12)

    out = {name: tracks[i] for i, name in enumerate(PARAMS)}
    opening = 1.0 - closure
    for name in ("jaw", "lift"):
        out[name] = out[name] * opening
    out["closure"] = closure
    return {k: v.astype(np.float32) for k, v in out.items()}
