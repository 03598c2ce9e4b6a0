"""Face crops as Wav2Lip cuts them, and the coordinates of frame and crop.

The face box follows Wav2Lip's ``preprocess.py``: a box around the face, padded below the chin
(its ``--pads 0 10 0 0``, here scaled with the face), averaged over a 5-frame window
(``get_smoothened_boxes``), then cut and resized. Our boxes are also made square, so a crop is a
uniform scaling of the frame and flow converts between frame and crop exactly: crop t shows the
frame point x = u / s_t + o_t at crop pixel u, and the frame flow F_t carries it to crop t+1 at
u' = (x + F_t(x) - o_{t+1}) s_{t+1}. Preprocessing, generation and the lip-reading corpus cut
their faces here, so the crops a model sees are the same wherever they come from.
"""
from __future__ import annotations

import cv2
import numpy as np

from .errors import OpFlowTalkerError

__all__ = ["CropError", "face_boxes", "smooth_boxes", "crop_geometry", "crop_frame", "crop_landmarks", "crop_flow"]

# Wav2Lip's pads are pixels for faces of LRS2's size; a face this wide gets them unscaled.
REFERENCE_FACE_WIDTH = 96.0


class CropError(OpFlowTalkerError, ValueError):
    """Landmarks a face box cannot be made from; one sentence for the user."""


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Wav2Lip's ``get_smoothened_boxes``: each box is the mean of itself and the next
    ``window - 1`` boxes, the last few sharing the final full window.

    Unlike Wav2Lip, every mean is taken over the unsmoothed boxes (Wav2Lip smooths in place, so
    its last window mixes in boxes it has already averaged).
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    n = len(boxes)
    window = min(window, n)
    out = np.empty_like(boxes)
    for i in range(n):
        start = min(i, n - window)
        out[i] = boxes[start : start + window].mean(axis=0)
    return out


def face_boxes(landmarks: np.ndarray, frame_shape: tuple[int, int], pads: tuple[int, int, int, int],
               smooth: int) -> np.ndarray:
    """Square crop boxes (T, 4) as (x0, y0, x1, y1) for (T, 68, 2) frame landmarks.

    The face box is the landmarks' bounding box (brows to chin, jaw edge to jaw edge), padded
    as Wav2Lip pads its detector box (``pads``: top, bottom, left, right at a 96-px face), made
    square about its centre, smoothed over ``smooth`` frames, and moved (shrunk only if it is
    larger than the frame) to lie inside the frame.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise CropError(f"expected landmarks of shape (T, 68, 2), got {lm.shape}")
    height, width = frame_shape[:2]
    x0, y0 = lm[..., 0].min(axis=1), lm[..., 1].min(axis=1)
    x1, y1 = lm[..., 0].max(axis=1), lm[..., 1].max(axis=1)
    top, bottom, left, right = (p * (x1 - x0) / REFERENCE_FACE_WIDTH for p in pads)
    x0, x1, y0, y1 = x0 - left, x1 + right, y0 - top, y1 + bottom
    side = np.maximum(x1 - x0, y1 - y0)
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    square = np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)
    square = smooth_boxes(square, smooth)
    side = np.minimum(square[:, 2] - square[:, 0], min(height, width))
    x0 = np.clip(0.5 * (square[:, 0] + square[:, 2]) - side / 2, 0, width - side)
    y0 = np.clip(0.5 * (square[:, 1] + square[:, 3]) - side / 2, 0, height - side)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1).astype(np.float32)


def crop_geometry(box: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Origin o (x, y) and scale s of the crop of ``box``: crop pixel u shows frame point u / s + o."""
    box = np.asarray(box, dtype=np.float64)
    return box[:2].copy(), size / float(box[2] - box[0])


def crop_frame(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The (size, size, 3) crop of ``box``, low-passed first when it shrinks the face so that
    fine texture does not alias."""
    origin, scale = crop_geometry(box, size)
    if scale < 1.0:
        frame = cv2.GaussianBlur(frame, (0, 0), sigmaX=0.5 * (1.0 / scale - 1.0))
    matrix = np.array([[scale, 0.0, -origin[0] * scale], [0.0, scale, -origin[1] * scale]])
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def crop_landmarks(landmarks: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(T, 68, 2) frame landmarks in the coordinates of the (T, 4) boxes' ``size``-px crops."""
    boxes = np.asarray(boxes)
    origin, scale = boxes[:, None, :2], size / (boxes[:, 2] - boxes[:, 0])[:, None, None]
    return ((np.asarray(landmarks) - origin) * scale).astype(np.float32)


def _crop_grid(box: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    origin, scale = crop_geometry(box, size)
    u = np.arange(size, dtype=np.float64)
    gx, gy = np.meshgrid(u / scale + origin[0], u / scale + origin[1])
    return gx.astype(np.float32), gy.astype(np.float32)


def crop_flow(flow: np.ndarray, valid: np.ndarray, box: np.ndarray, next_box: np.ndarray,
              size: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame flow (H, W, 2) and its validity (H, W) seen from crop ``box`` into crop ``next_box``.

    Returns the crop flow (size, size, 2) float32 in crop pixels and its validity: the frame
    validity at the pixel's frame point, which must lie in the frame, and a target inside the
    next crop.
    """
    height, width = flow.shape[:2]
    gx, gy = _crop_grid(box, size)
    f = cv2.remap(np.ascontiguousarray(flow, dtype=np.float32), gx, gy, cv2.INTER_LINEAR,
                  borderMode=cv2.BORDER_REPLICATE)
    ok = cv2.remap(np.asarray(valid, dtype=np.uint8), gx, gy, cv2.INTER_NEAREST,
                   borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    ok &= (gx >= 0) & (gx <= width - 1) & (gy >= 0) & (gy <= height - 1)
    origin, scale = crop_geometry(next_box, size)
    u = np.arange(size, dtype=np.float64)
    tx = (gx + f[..., 0] - origin[0]) * scale
    ty = (gy + f[..., 1] - origin[1]) * scale
    out = np.stack([tx - u[None, :], ty - u[:, None]], axis=-1).astype(np.float32)
    ok &= (tx >= 0) & (tx <= size - 1) & (ty >= 0) & (ty <= size - 1)
    return out, ok
