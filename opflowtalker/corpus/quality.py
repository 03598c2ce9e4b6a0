"""Measures of how faithful the corpus is: does the stored flow explain the frames, and does an
independent landmark detector see the mouth that was rendered?"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["warp_residuals", "dlib_lip_gaps"]


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
