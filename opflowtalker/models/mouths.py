"""What the lip reader and the sync judge see of a mouth: grayscale crops centred on the mouth
landmarks and sized from the eye-to-mouth distance, or the 20 lip landmarks themselves in units of
that distance, and their mirror images."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..errors import OpFlowTalkerError
from ..landmarks import EYES, MOUTH, eye_to_mouth_distance

__all__ = ["LipReaderError", "mouth_crops", "mouth_shapes", "mirror_shapes"]


class LipReaderError(OpFlowTalkerError, ValueError):
    """Input a lip reader cannot read, or a checkpoint that is not one; one sentence for the user."""

# The mouth points 48-67 mirrored left to right: outer lip 48-59 about 51 and 57, inner 60-67 about 62 and 66.
_MIRROR = np.array([6, 5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 16, 15, 14, 13, 12, 19, 18, 17])


def _fill_missing(centres: np.ndarray) -> np.ndarray:
    """Rows with non-finite values (frames without landmarks) interpolated from their neighbours."""
    ok = np.isfinite(centres).all(axis=1)
    if ok.all():
        return centres
    if not ok.any():
        raise LipReaderError("no frame of the clip has finite mouth landmarks")
    t = np.arange(len(centres))
    return np.stack([np.interp(t, t[ok], centres[ok, i]) for i in range(centres.shape[1])], axis=1)


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along time, edges extended, so a short clip is not pulled to zero."""
    if sigma <= 0 or len(values) < 2:
        return values
    radius = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, ((radius, radius), (0, 0)), mode="edge")
    return np.stack([np.convolve(padded[:, i], kernel, mode="valid") for i in range(values.shape[1])], axis=1)


def mouth_crops(faces: np.ndarray, landmarks: np.ndarray, size: tuple[int, int] = (32, 48),
                width_scale: float = 1.1, sigma: float | None = 2.0) -> np.ndarray:
    """(T, h, w) float32 grayscale mouth crops in [0, 1] from (T, S, S, 3) uint8 face crops.

    The crop is centred on the mean of the mouth landmarks 48-67, smoothed over time with a
    Gaussian of ``sigma`` frames so that the window does not jitter with the lips it frames
    (``sigma=None``: one window for the whole clip, at the median centre, so that a still video
    gives still crops and the window's own motion says nothing about the mouth). Its
    width is ``width_scale`` times the clip's median eye-to-mouth distance (a mouth is about 0.8
    of it wide, so it keeps a margin when the lips spread), the same for every frame, and its
    height follows the output's aspect ratio. For generated frames pass the landmarks of the
    real frames they replace: the crop then covers the same part of both.
    """
    faces = np.asarray(faces)
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if faces.ndim != 4 or faces.shape[-1] != 3 or faces.dtype != np.uint8:
        raise LipReaderError(f"faces must be (T, H, W, 3) uint8, not {faces.dtype} shaped {faces.shape}")
    if landmarks.shape != (len(faces), 68, 2):
        raise LipReaderError(f"landmarks must be shaped ({len(faces)}, 68, 2) for {len(faces)} frames, not {landmarks.shape}")
    if len(faces) == 0:
        raise LipReaderError("the clip has no frames")
    h, w = size
    mouth = _fill_missing(landmarks[:, MOUTH].mean(axis=1))
    eyes = _fill_missing(landmarks[:, EYES].mean(axis=1))
    if sigma is None:
        centres = np.broadcast_to(np.median(mouth, axis=0), mouth.shape)
    else:
        centres = _smooth(mouth, sigma)
    crop_w = width_scale * float(np.median(np.linalg.norm(mouth - eyes, axis=1)))
    if not crop_w > 0:
        raise LipReaderError("the mouth and eye landmarks coincide, so no crop size follows from them")
    scale = w / crop_w
    # Shrinking a large face (256 px) with bilinear sampling alone would alias; blur first.
    blur = 0.5 * np.sqrt(max(0.0, 1.0 / scale**2 - 1.0))
    out = np.empty((len(faces), h, w), dtype=np.float32)
    for i, (face, (cx, cy)) in enumerate(zip(faces, centres)):
        gray = cv2.cvtColor(np.ascontiguousarray(face), cv2.COLOR_RGB2GRAY)
        if blur > 0.3:
            gray = cv2.GaussianBlur(gray, (0, 0), blur)
        # Output pixel centre (w-1)/2 lands on the (smoothed) mouth centre.
        matrix = np.array([[scale, 0.0, (w - 1) / 2 - scale * cx], [0.0, scale, (h - 1) / 2 - scale * cy]])
        out[i] = cv2.warpAffine(gray, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out / np.float32(255.0)


def mouth_shapes(landmarks: np.ndarray) -> np.ndarray:
    """(T, 20, 2) float32 mouth shapes from (T, 68, 2) landmarks: the lip points 48-67 of each frame
    less their mean, divided by the clip's median eye-to-mouth distance, so that a shape says how
    the lips are set, not where the head is or how large the face is in the crop."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2) or len(landmarks) == 0:
        raise LipReaderError(f"landmarks must be shaped (T, 68, 2) with T > 0, not {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise LipReaderError("mouth shapes need landmarks in every frame")
    mouth = landmarks[:, MOUTH]
    scale = eye_to_mouth_distance(landmarks)
    if not scale > 0:
        raise LipReaderError("the mouth and eye landmarks coincide, so no face size follows from them")
    return ((mouth - mouth.mean(axis=1, keepdims=True)) / scale).astype(np.float32)


def mirror_shapes(shapes):
    """Mouth shapes (..., 20, 2) mirrored left to right: x negated, left and right points swapped."""
    sign = shapes.new_tensor([-1.0, 1.0]) if torch.is_tensor(shapes) else np.array([-1.0, 1.0], np.float32)
    return shapes[..., _MIRROR, :] * sign
