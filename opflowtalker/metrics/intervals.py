"""95% intervals for the tables: bootstrap over test clips, and paired over the same clips.

Every metric of a row except the distribution distances (FD-face, FID) is a mean of per-clip values
(a clip's PSNR, its LSE-C, its sentence WER, ...). Its interval resamples the clips with replacement
(percentile bootstrap). A difference between two rows scored on the same clips resamples the clips
once for both, so that a hard clip is hard for both and cancels: the paired interval. A difference
counts as a win only when its paired interval excludes zero.

The resampling draws from a fixed seed, so the same rows always give the same intervals.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LEVEL", "RESAMPLES", "bootstrap_indices", "mean_interval", "paired_interval", "verdict"]

LEVEL = 0.95
RESAMPLES = 2000
NO_DIFFERENCE = "no difference measured"


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) clip indices drawn with replacement."""
    if n < 1:
        raise ValueError("a bootstrap needs at least one clip")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _finite(values: Sequence[float]) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"expected one value per clip, got shape {values.shape}")
    return values


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.nanpercentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def mean_interval(values: Sequence[float], level: float = LEVEL, resamples: int = RESAMPLES,
                  seed: int = 0) -> tuple[float, float]:
    """Interval of the mean of per-clip ``values`` (clips whose value is NaN are left out)."""
    values = _finite(values)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    return _percentiles(values[bootstrap_indices(len(values), resamples, seed)].mean(axis=1), level)


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL, resamples: int = RESAMPLES,
                    seed: int = 0) -> tuple[float, float, float]:
    """(mean of a - mean of b, low, high) over the same clips, resampled together.

    Clips where either value is NaN (a metric that failed on that clip) are left out of both.
    """
    a, b = _finite(a), _finite(b)
    if a.shape != b.shape:
        raise ValueError(f"a paired interval needs the same clips in both rows, got {len(a)} and {len(b)} values")
    keep = np.isfinite(a) & np.isfinite(b)
    diff = a[keep] - b[keep]
    if len(diff) == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = _percentiles(diff[bootstrap_indices(len(diff), resamples, seed)].mean(axis=1), level)
    return float(diff.mean()), lo, hi


def verdict(low: float, high: float, higher_is_better: bool, a: str, b: str) -> str:
    """Which of ``a`` and ``b`` is better by a paired interval of (a - b), or "no difference measured"."""
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high:
        return NO_DIFFERENCE
    a_higher = low > 0
    return a if a_higher == higher_is_better else b
