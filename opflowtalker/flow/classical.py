"""Classical optical flow (OpenCV's DIS and Farneback): a baseline for the flow table and the
ground truth for real videos, which come with no flow of their own.

The functions take uint8 RGB (H, W, 3) or grey (H, W) images and return float32 (H, W, 2) forward
flow in pixels: pixel (x, y) of ``image1`` moves to (x + u, y + v) in ``image2``.
:class:`ClassicalFlow` wraps them in the networks' call convention so that an evaluation can treat
every estimator alike.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

__all__ = ["DIS_PRESETS", "METHODS", "dis_flow", "farneback_flow", "forward_backward_valid", "ClassicalFlow"]

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
METHODS = ("dis", "farneback")


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 2:
        return image
    raise ValueError(f"expected an RGB (H, W, 3) or grey (H, W) image, got shape {image.shape}")


def _pair(image1: np.ndarray, image2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _grey(image1), _grey(image2)
    if a.shape != b.shape:
        raise ValueError(f"the two images differ in size: {a.shape} and {b.shape}")
    return a, b


def dis_flow(image1: np.ndarray, image2: np.ndarray, preset: str = "medium") -> np.ndarray:
    """DIS flow (Kroeger et al. 2016) from ``image1`` to ``image2`` with one of OpenCV's presets."""
    if preset not in DIS_PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; choose one of {', '.join(DIS_PRESETS)}")
    a, b = _pair(image1, image2)
    return cv2.DISOpticalFlow_create(DIS_PRESETS[preset]).calc(a, b, None)


def farneback_flow(image1: np.ndarray, image2: np.ndarray) -> np.ndarray:
    """Farneback's polynomial-expansion flow from ``image1`` to ``image2``, with the settings of
    OpenCV's tutorial (3 pyramid levels, 15-pixel window, 5-pixel polynomial neighbourhood); on a
    smooth texture moved by a known sub-pixel shift they are within 0.02 px of it on average."""
    a, b = _pair(image1, image2)
    return cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=3, winsize=15, iterations=3,
                                        poly_n=5, poly_sigma=1.2, flags=0)


def forward_backward_valid(fw: np.ndarray, bw: np.ndarray, tol: float = 0.5) -> np.ndarray:
    """Boolean (H, W) mask of forward vectors the backward flow undoes to within ``tol`` pixels.

    ``fw`` is the flow image1 -> image2 and ``bw`` image2 -> image1, both (H, W, 2). Where a pixel
    is occluded or mismatched, the backward flow at its target does not lead back to it. Targets
    outside the image are invalid too: nothing there can confirm them.
    """
    fw, bw = np.asarray(fw, dtype=np.float32), np.asarray(bw, dtype=np.float32)
    if fw.shape != bw.shape or fw.ndim != 3 or fw.shape[2] != 2:
        raise ValueError(f"expected two flows (H, W, 2) of one size, got {fw.shape} and {bw.shape}")
    h, w = fw.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    tx, ty = gx + fw[..., 0], gy + fw[..., 1]
    back = cv2.remap(bw, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ok = np.linalg.norm(fw + back, axis=-1) < tol
    return ok & (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)


class ClassicalFlow(nn.Module):
    """A classical method in the networks' convention: ``model(image1, image2)`` with images
    (B, 3, H, W) in 0..255 gives flow (B, 2, H, W) in pixels.

    The images are rounded to uint8 and the flow is computed pair by pair on the CPU, so no
    gradient flows through it: it can score flow, not supervise a generator.
    """

    def __init__(self, method: str = "dis", preset: str = "medium"):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown classical flow method {method!r}; choose one of {', '.join(METHODS)}")
        if method == "dis" and preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose one of {', '.join(DIS_PRESETS)}")
        self.method, self.preset = method, preset

    def extra_repr(self) -> str:
        return f"method={self.method!r}" + (f", preset={self.preset!r}" if self.method == "dis" else "")

    def _one(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return dis_flow(a, b, self.preset) if self.method == "dis" else farneback_flow(a, b)

    @torch.no_grad()
    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        if image1.shape != image2.shape or image1.dim() != 4 or image1.shape[1] != 3:
            raise ValueError(f"expected two images (B, 3, H, W) of one size, got {tuple(image1.shape)} "
                             f"and {tuple(image2.shape)}")

        def to_uint8(images: torch.Tensor) -> np.ndarray:
            return images.detach().round().clamp(0, 255).to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()

        flows = [self._one(a, b) for a, b in zip(to_uint8(image1), to_uint8(image2))]
        return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(image1.device, image1.dtype)
