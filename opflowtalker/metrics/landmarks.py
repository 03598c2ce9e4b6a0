"""Landmark distances M-LMD and F-LMD (Chen et al., "Lip movements generation at a glance").

Both compare the 68 iBUG landmarks of a generated face with those of the real face, frame by
frame. To measure shape rather than where the head sits in the crop, each frame's two 68-point
sets are first centred on their own mean; the distance of a frame is then the mean Euclidean
distance between corresponding points, over the mouth (points 48-67) for **M-LMD** and over all
68 points for **F-LMD**, and the clip's score is the mean over frames. Frames for which either
set is missing (any NaN) are left out and counted. Values are in the pixels of the crops the
landmarks were taken from, so generated and real clips must be measured at the same size.

:func:`detect_crop_landmarks` finds the landmarks on face crops with the project's dlib detector
(:mod:`opflowtalker.landmarks`). dlib's shape predictor is unreliable on a 96-pixel face, so each
crop is upsampled twice before detection and the points are mapped back; when the HOG detector
finds no face in a tightly cropped frame, the predictor is fitted in a box covering the crop.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from ..landmarks import MOUTH, LandmarkDetector
from ..errors import OpFlowTalkerError

__all__ = ["LandmarkMetricError", "lmd", "detect_crop_landmarks", "UPSAMPLE"]

# Crops are enlarged this many times before dlib sees them.
UPSAMPLE = 2


class LandmarkMetricError(OpFlowTalkerError, ValueError):
    """Landmarks that cannot be compared; the message is one sentence for the user."""


def _check_landmarks(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[1:] != (68, 2):
        raise LandmarkMetricError(f"expected {name} landmarks of shape (T, 68, 2), got {points.shape}")
    return points


def lmd(pred: np.ndarray, gt: np.ndarray) -> dict[str, float | int]:
    """M-LMD and F-LMD of predicted against ground-truth landmarks, both (T, 68, 2).

    Returns ``m_lmd``, ``f_lmd`` (NaN when no frame has both sets), ``frames`` (frames scored)
    and ``skipped`` (frames left out because a set had a NaN).
    """
    pred, gt = _check_landmarks(pred, "predicted"), _check_landmarks(gt, "ground-truth")
    if pred.shape != gt.shape:
        raise LandmarkMetricError(f"predicted and ground-truth landmarks cover different frames: "
                                  f"{pred.shape} and {gt.shape}")
    present = ~(np.isnan(pred).any(axis=(1, 2)) | np.isnan(gt).any(axis=(1, 2)))
    pred, gt = pred[present], gt[present]
    frames = int(present.sum())
    if frames == 0:
        return {"m_lmd": float("nan"), "f_lmd": float("nan"), "frames": 0, "skipped": int(len(present))}
    # Centring on each set's own mean removes the head's position in the crop, not its pose.
    pred = pred - pred.mean(axis=1, keepdims=True)
    gt = gt - gt.mean(axis=1, keepdims=True)
    distance = np.linalg.norm(pred - gt, axis=-1)  # (frames, 68)
    return {
        "m_lmd": float(distance[:, MOUTH].mean(axis=1).mean()),
        "f_lmd": float(distance.mean(axis=1).mean()),
        "frames": frames,
        "skipped": int(len(present) - frames),
    }


@lru_cache(maxsize=1)
def _dlib_detector() -> LandmarkDetector:
    # Loading the 100 MB shape predictor takes about a second; do it once per process.
    return LandmarkDetector("dlib")


def detect_crop_landmarks(faces: np.ndarray, boxes_hint: np.ndarray | None = None) -> np.ndarray:
    """(T, 68, 2) float32 landmarks, in crop pixels, of face crops ``faces`` (T, S, S, 3) uint8 RGB.

    Each crop is enlarged ``UPSAMPLE`` times (bicubic); the largest face dlib's detector finds
    there is fitted, or, when it finds none, a box covering the whole crop. ``boxes_hint``
    ((4,) or (T, 4) as x0, y0, x1, y1 in crop pixels) skips the detector and fits those boxes.
    """
    faces = np.asarray(faces)
    if faces.ndim != 4 or faces.shape[3] != 3 or faces.dtype != np.uint8:
        raise LandmarkMetricError(f"expected face crops (T, H, W, 3) of uint8 RGB, got {faces.dtype} {faces.shape}")
    t, h, w = faces.shape[:3]
    if boxes_hint is not None:
        boxes_hint = np.broadcast_to(np.asarray(boxes_hint, dtype=np.float64), (t, 4)) if np.ndim(boxes_hint) == 1 \
            else np.asarray(boxes_hint, dtype=np.float64)
        if boxes_hint.shape != (t, 4):
            raise LandmarkMetricError(f"expected boxes_hint of shape (4,) or ({t}, 4), got {boxes_hint.shape}")
    detector = _dlib_detector()
    whole_crop = (0.0, 0.0, UPSAMPLE * w - 1.0, UPSAMPLE * h - 1.0)
    out = np.empty((t, 68, 2), dtype=np.float32)
    for i, crop in enumerate(faces):
        big = cv2.resize(crop, (UPSAMPLE * w, UPSAMPLE * h), interpolation=cv2.INTER_CUBIC)
        if boxes_hint is None:
            found = detector.detect(big) or detector.detect(big, boxes=[whole_crop])
        else:
            # Box corners are pixel centres; the same centre-aligned mapping as the points below.
            box = (boxes_hint[i] + 0.5) * UPSAMPLE - 0.5
            found = detector.detect(big, boxes=[tuple(box)])
        # cv2.resize aligns pixel centres: x_big = (x + 0.5) * UPSAMPLE - 0.5.
        out[i] = (found[0].landmarks + 0.5) / UPSAMPLE - 0.5
    return out
