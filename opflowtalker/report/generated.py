"""Sentences about one generated clip (the generate chapter): does it keep the photo's detail, and does
its mouth open with the speech."""
from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from .comparisons import ReportError

__all__ = ["lip_sync_sentence", "sharpness", "AS_SHARP", "BLURRED", "sharpness_sentence"]


def _strength(r: float) -> str:
    if not np.isfinite(r):
        return "cannot be computed"
    if r >= 0.5:
        return f"is {r:.2f}, clearly positive: the mouth opens with the loud parts"
    if r >= 0.3:
        return f"is {r:.2f}, moderately positive"
    if r >= 0.1:
        return f"is {r:.2f}, weakly positive"
    if r > -0.1:
        return f"is {r:.2f}: no relation to speak of"
    return f"is {r:.2f}, negative: the mouth is more closed when the speech is louder, the opposite of speaking"


def lip_sync_sentence(label: str, row: Mapping[str, float], n_frames: int) -> str:
    """One Markdown sentence on a :func:`lip_sync_row`; a mouth that hardly moves (gap s.d. under
    0.5 px) is said to, whatever its correlation."""
    r, sd = row["r (lip gap, loudness)"], row["lip gap s.d. (px)"]
    if sd < 0.5:
        return (f"**{label}**: the mouth hardly moves (its lip gap varies by {sd:.2f} px, s.d.), so its "
                f"correlation with the loudness (r = {r:.2f}) says little.")
    opens = ("is more open in speech than in the pauses"
             if row["mean gap, speech (px)"] > row["mean gap, silence (px)"] + 0.5 * sd
             else "is not more open in speech than in the pauses")
    ahead = row["mouth ahead of sound (ms)"]
    lead = ("" if ahead == 0 else
            f" (the best match within ±0.2 s is r = {row['best r within ±0.2 s']:.2f}, with the mouth "
            f"{abs(ahead):.0f} ms {'ahead of' if ahead > 0 else 'behind'} the sound)")
    return (f"**{label}**: the correlation of lip gap and loudness over the {n_frames} frames "
            f"{_strength(r)}{lead}; the gap varies by {sd:.1f} px (s.d.) and the mouth {opens}.")


def sharpness(frames: np.ndarray, region: tuple[int, int, int, int]) -> float:
    """Mean over frames (T, H, W, 3) of the variance of the Laplacian of the grey image inside
    ``region`` (y0, y1, x0, x1): the usual focus measure, which blurring lowers."""
    y0, y1, x0, x1 = region
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    crops = frames[:, y0:y1, x0:x1]
    if crops.size == 0:
        raise ReportError(f"no pixels to measure sharpness on in the region {region}")
    values = [cv2.Laplacian(cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_RGB2GRAY).astype(np.float64),
                            cv2.CV_64F).var() for c in crops]
    return float(np.mean(values))


# Sharpness ratios (generated over photo) read as "as sharp" from here up, "blurred" under BLURRED.
AS_SHARP, BLURRED = 0.8, 0.5


def sharpness_sentence(label: str, ratio: float, region: str = "the lower face", reference: str = "the photo") -> str:
    """One Markdown sentence on a sharpness ratio (:func:`sharpness` of ``label``'s frames over that of
    ``reference``): as sharp from :data:`AS_SHARP` up, blurred under :data:`BLURRED`, softer between,
    and more high-frequency content than the reference (artefacts, not detail) above 1 / AS_SHARP."""
    if not np.isfinite(ratio):
        return f"**{label}**: the sharpness of {region} could not be measured."
    if ratio > 1 / AS_SHARP:
        verdict = (f"more high-frequency content than {reference} there, which is artefacts or noise rather "
                   "than detail")
    elif ratio >= AS_SHARP:
        verdict = f"as sharp as {reference} there"
    elif ratio >= BLURRED:
        verdict = f"softer than {reference} there"
    else:
        verdict = f"blurred: most of the fine detail of {reference} is gone there"
    return (f"**{label}** keeps {ratio:.0%} of the sharpness of {reference} in {region} (variance of the "
            f"Laplacian): {verdict}.")

