"""Pictures of faces and flow: the standard optical-flow colour wheel and contact sheets.

The colour coding is the one of the Middlebury benchmark (Baker et al., 2011) that RAFT, GMA and
the OpFlowTalker paper's figures use: hue is the direction of motion, saturation its magnitude
relative to the largest motion shown, white is still.
"""
from __future__ import annotations

import numpy as np

__all__ = ["color_wheel", "flow_to_color", "flow_legend", "contact_sheet", "draw_landmarks"]

# Number of hue steps between the six primary/secondary colours of the Middlebury wheel.
_SEGMENTS = (("RY", 15), ("YG", 6), ("GC", 4), ("CB", 11), ("BM", 13), ("MR", 6))


def color_wheel() -> np.ndarray:
    """(55, 3) float RGB colours in [0, 255] around the wheel, starting at red."""
    rows = []
    ramps = {
        "RY": lambda r: np.stack([np.full_like(r, 255), 255 * r, np.zeros_like(r)], 1),
        "YG": lambda r: np.stack([255 - 255 * r, np.full_like(r, 255), np.zeros_like(r)], 1),
        "GC": lambda r: np.stack([np.zeros_like(r), np.full_like(r, 255), 255 * r], 1),
        "CB": lambda r: np.stack([np.zeros_like(r), 255 - 255 * r, np.full_like(r, 255)], 1),
        "BM": lambda r: np.stack([255 * r, np.zeros_like(r), np.full_like(r, 255)], 1),
        "MR": lambda r: np.stack([np.full_like(r, 255), np.zeros_like(r), 255 - 255 * r], 1),
    }
    for name, n in _SEGMENTS:
        rows.append(ramps[name](np.arange(n) / n))
    return np.concatenate(rows).astype(np.float64)


def flow_to_color(flow: np.ndarray, max_norm: float | None = None, invalid: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 2) flow in pixels to an (H, W, 3) uint8 RGB image.

    ``max_norm`` sets the magnitude shown fully saturated (default: the largest in ``flow``), so
    several fields can share one scale. Pixels where ``invalid`` is True are drawn black.
    """
    flow = np.nan_to_num(np.asarray(flow, dtype=np.float64))
    u, v = flow[..., 0], flow[..., 1]
    norm = np.hypot(u, v)
    scale = max_norm if max_norm is not None else norm.max()
    scale = max(float(scale), 1e-9)
    u, v, rad = u / scale, v / scale, np.minimum(norm / scale, 1.0)
    wheel = color_wheel()
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    pos = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(pos).astype(int)
    k1 = (k0 + 1) % n
    frac = (pos - k0)[..., None]
    col = ((1 - frac) * wheel[k0] + frac * wheel[k1]) / 255.0
    col = 1 - rad[..., None] * (1 - col)  # saturation grows with magnitude; still is white
    image = np.round(255 * col).astype(np.uint8)
    if invalid is not None:
        image[np.asarray(invalid, dtype=bool)] = 0
    return image


def flow_legend(size: int = 65) -> np.ndarray:
    """(size, size, 3) uint8 key to :func:`flow_to_color`: each pixel of a disk coloured as a flow
    pointing from the centre to it (image axes, y down), fully saturated at the rim; white outside."""
    r = (size - 1) / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) - r
    image = flow_to_color(np.stack([xs, ys], axis=-1), max_norm=r)
    image[np.hypot(xs, ys) > r] = 255
    return image


def contact_sheet(tiles: list[list[np.ndarray]], pad: int = 2, background: int = 255) -> np.ndarray:
    """Rows of equally sized (H, W, 3) uint8 tiles as one image with ``pad`` pixels between them."""
    h, w = tiles[0][0].shape[:2]
    cols = max(len(row) for row in tiles)
    sheet = np.full((len(tiles) * (h + pad) - pad, cols * (w + pad) - pad, 3), background, np.uint8)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            sheet[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = tile
    return sheet


def draw_landmarks(image: np.ndarray, points: np.ndarray, color=(0, 255, 0), radius: int = 1) -> np.ndarray:
    """A copy of ``image`` with the 68 points drawn as dots."""
    import cv2

    out = np.ascontiguousarray(image).copy()
    for x, y in np.round(np.asarray(points)).astype(int):
        cv2.circle(out, (int(x), int(y)), radius, color, -1, lineType=cv2.LINE_AA)
    return out
