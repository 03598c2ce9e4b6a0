"""A portrait for the renderer: a photo's 68 landmarks (dlib), the photo trimmed to its face, and the
face cropped to a square with its landmarks moved along."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["JAW", "LEFT_EYE", "RIGHT_EYE", "UPPER_INNER", "LOWER_INNER", "Portrait", "detect_landmarks",
           "load_portrait", "crop_face"]

# iBUG 68-point layout
JAW = np.arange(0, 17)
LEFT_EYE = np.arange(36, 42)
RIGHT_EYE = np.arange(42, 48)
UPPER_INNER = (61, 62, 63)
LOWER_INNER = (67, 66, 65)


@dataclass
class Portrait:
    image: np.ndarray
    """(H, W, 3) uint8 RGB with a closed mouth."""
    landmarks: np.ndarray
    """(68, 2) float, x and y in pixels of ``image``."""


@functools.lru_cache(maxsize=1)
def _detector():
    from opflowtalker.landmarks import LandmarkDetector

    return LandmarkDetector("dlib")


def detect_landmarks(rgb: np.ndarray, pick: str = "left") -> np.ndarray | None:
    """68 dlib landmarks of one face in ``rgb``, or None if no face is found.

    ``pick`` chooses among several faces: "left" (multi-panel figures show the source in
    the left panel) or "largest".
    """
    faces = _detector().detect(rgb)
    if not faces:
        return None
    face = min(faces, key=lambda f: f.box[0]) if pick == "left" else faces[0]
    return face.landmarks.astype(np.float64)


def load_portrait(path: str, pick: str = "left") -> Portrait:
    """A photo and its landmarks.  In a figure with several faces side by side, the image is
    cut halfway to the neighbouring faces so the crop cannot reach into another panel."""
    from opflowtalker.video import read_image

    rgb = read_image(path)
    faces = _detector().detect(rgb)
    lm = detect_landmarks(rgb, pick=pick)
    if lm is None:
        raise ValueError(f"no face found in {path}")
    x_lo, x_hi = lm[:, 0].min(), lm[:, 0].max()
    left, right = 0, rgb.shape[1]
    for face in faces:
        l, r = face.box[0], face.box[2]
        if r < x_lo:
            left = max(left, int(0.5 * (r + x_lo)))
        if l > x_hi:
            right = min(right, int(0.5 * (l + x_hi)))
    lm = lm - np.array([left, 0.0])
    return Portrait(np.ascontiguousarray(rgb[:, left:right]), lm)


def _crop_box(lm: np.ndarray, face_scale: float) -> tuple[np.ndarray, float]:
    jaw_w = np.linalg.norm(lm[16] - lm[0])
    brow = lm[17:27, 1].min()
    chin = lm[8, 1]
    top = brow - 0.3 * (chin - brow)
    centre = np.array([lm[JAW, 0].mean(), 0.5 * (top + chin)])
    side = max(face_scale * jaw_w, 1.35 * (chin - top))
    return centre, side


def _clean_bounds(image: np.ndarray, lm: np.ndarray, box: tuple[float, float, float, float]) -> list[float]:
    """The region around the face free of figure panel borders and the photo's edge.

    Scans outward from the face for a row or column that is flat (a panel gap, a black
    bar): replicated or foreign pixels in the crop would be smeared by the warp.
    """
    gray = image.astype(np.float32).mean(axis=2)
    H, W = gray.shape
    fx0, fy0 = lm[:, 0].min(), lm[:, 1].min()
    fx1, fy1 = lm[:, 0].max(), lm[:, 1].max()
    x0, y0, x1, y1 = box
    # Flatness is judged along the face's own extent: a panel gap crosses it, while a row
    # reaching past the panel would mix in the next panel and never look flat.
    col_std = gray[int(max(fy0, 0)) : int(min(fy1, H))].std(axis=0)
    row_std = gray[:, int(max(fx0, 0)) : int(min(fx1, W))].std(axis=1)
    flat = 1.0  # panel gaps are flat to JPEG noise; dark hair or caps are not quite

    def scan(stds, start, stop, step, limit):
        for i in range(int(start), int(stop), step):
            if 0 <= i < limit and stds[i] < flat:
                return float(i - 3 * step)  # JPEG ringing spreads a border by a pixel or two
        return float(np.clip(stop - step, 0, limit - 1))

    left = scan(col_std, fx0, x0 - 1, -1, W)
    right = scan(col_std, fx1, x1 + 1, 1, W)
    top = scan(row_std, fy0, y0 - 1, -1, H)
    bottom = scan(row_std, fy1, y1 + 1, 1, H)
    return [max(left, 0.0), max(top, 0.0), min(right, W - 1.0), min(bottom, H - 1.0)]


def crop_face(image: np.ndarray, lm: np.ndarray, size: int, face_scale: float) -> tuple[np.ndarray, np.ndarray]:
    centre, side = _crop_box(lm, face_scale)
    box = (centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2)
    left, top, right, bottom = _clean_bounds(image, lm, box)
    # Shrink towards the face (never below a tight face box) and shift to fit the clean region.
    jaw_w = np.linalg.norm(lm[16] - lm[0])
    side = max(min(side, right - left + 1, bottom - top + 1), 1.25 * jaw_w)
    centre = np.array([np.clip(centre[0], left + side / 2, max(right - side / 2, left + side / 2)),
                       np.clip(centre[1], top + side / 2, max(bottom - side / 2, top + side / 2))])
    side_i = int(round(side))
    x0, y0 = (np.round(centre - side_i / 2.0)).astype(int)
    pad = side_i
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = padded[y0 + pad : y0 + pad + side_i, x0 + pad : x0 + pad + side_i]
    interp = cv2.INTER_AREA if side_i >= size else cv2.INTER_CUBIC
    canvas = cv2.resize(crop, (size, size), interpolation=interp)
    scale = size / side_i
    lm_out = (lm - np.array([x0, y0]) + 0.5) * scale - 0.5
    return canvas, lm_out
