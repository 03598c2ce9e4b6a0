"""Reconstruction metrics of generated frames against ground truth: PSNR and SSIM.

Both compare a generated frame with the real frame it should reproduce, image by image, and report
the mean over the images given (the paper's Tables 1, 3-6 average over all test frames).

* PSNR = 10 log10(R^2 / MSE) with R the data range (255 for uint8) and MSE over all pixels and
  channels. Identical images have MSE 0 and an infinite PSNR; the paper's "Ground Truth" rows
  report 100, so every per-image PSNR is capped at :data:`PSNR_CAP` = 100 dB (an MSE below
  R^2 * 1e-10, i.e. far below one grey level).
* SSIM (Wang, Bovik, Sheikh and Simoncelli 2004): local means, variances and covariance under an
  11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma), combined as

      SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
      C1 = (K1 R)^2, C2 = (K2 R)^2, K1 = 0.01, K2 = 0.03,

  with population (not sample) variances, averaged over the pixels whose window lies inside the
  image (a 5-pixel border is dropped) and then over the colour channels. This is scikit-image's
  ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  channel_axis=-1)``, computed here with scipy alone.

The module also holds the two errors that every image metric raises: :class:`MetricError` for
inputs a metric cannot score and :class:`MetricUnavailable` for a metric whose pretrained network
is not on this machine.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import OpFlowTalkerError

__all__ = [
    "MetricError",
    "MetricUnavailable",
    "PSNR_CAP",
    "SSIM_SIGMA",
    "SSIM_TRUNCATE",
    "SSIM_K1",
    "SSIM_K2",
    "as_image_batch",
    "psnr",
    "ssim",
    "psnr_per_image",
    "ssim_per_image",
]

PSNR_CAP = 100.0
SSIM_SIGMA = 1.5
# scipy's Gaussian filter reaches truncate * sigma pixels to each side: 3.5 * 1.5 -> radius 5,
# the 11x11 window of Wang et al.
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


class MetricError(OpFlowTalkerError, ValueError):
    """Images (or features) that a metric cannot score; the message is one sentence for the user."""


class MetricUnavailable(MetricError):
    """A metric whose pretrained network is not on this machine; one sentence saying which file."""


def as_image_batch(images, name: str = "images") -> np.ndarray:
    """``images`` as a float64 batch (N, H, W, C): a single (H, W, C) image becomes a batch of one."""
    array = np.asarray(images)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise MetricError(f"{name} must be a numeric array, not {array.dtype}")
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[0] == 0 or array.shape[-1] not in (1, 3):
        raise MetricError(f"{name} must be an image (H, W, 3) or a non-empty batch (N, H, W, 3), "
                          f"not an array of shape {np.shape(images)}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise MetricError(f"{name} contain NaN or infinite values")
    return array


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred, target = as_image_batch(pred, "predicted images"), as_image_batch(target, "target images")
    if pred.shape != target.shape:
        raise MetricError(f"predicted images {pred.shape[1:] if len(pred) == 1 else pred.shape} and target "
                          f"images {target.shape[1:] if len(target) == 1 else target.shape} differ in shape")
    return pred, target


def _check_range(data_range: float) -> float:
    if not data_range > 0:
        raise MetricError(f"the data range must be positive, not {data_range}")
    return float(data_range)


def psnr_per_image(pred, target, data_range: float = 255.0) -> np.ndarray:
    """PSNR in dB of each image pair, (N,), each capped at :data:`PSNR_CAP`."""
    pred, target = _pair(pred, target)
    data_range = _check_range(data_range)
    mse = ((pred - target) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        value = 10.0 * np.log10(data_range**2 / mse)
    return np.minimum(value, PSNR_CAP)


def psnr(pred, target, data_range: float = 255.0) -> float:
    """Mean PSNR (dB) of predicted images against targets, (H, W, 3) or (N, H, W, 3) each; 100 for
    identical images."""
    return float(psnr_per_image(pred, target, data_range).mean())


def ssim_per_image(pred, target, data_range: float = 255.0) -> np.ndarray:
    """SSIM of each image pair, (N,): the Gaussian-window SSIM map's mean inside the border, averaged
    over channels."""
    x, y = _pair(pred, target)
    data_range = _check_range(data_range)
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    if min(x.shape[1:3]) < 2 * pad + 1:
        raise MetricError(f"SSIM needs images of at least {2 * pad + 1}x{2 * pad + 1} pixels, "
                          f"not {x.shape[1]}x{x.shape[2]}")

    def blur(a: np.ndarray) -> np.ndarray:
        # Filter height and width only; 'reflect' is scikit-image's border mode. The border the
        # mode affects is cropped below, so it only matters through pixels near the crop.
        return ndimage.gaussian_filter(a, sigma=(0, SSIM_SIGMA, SSIM_SIGMA, 0), truncate=SSIM_TRUNCATE,
                                       mode="reflect")

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    inner = ssim_map[:, pad:-pad, pad:-pad, :]
    # Mean over pixels per channel, then over channels: with equal pixel counts this is the plain
    # mean over both, as scikit-image's per-channel average is.
    return inner.mean(axis=(1, 2, 3))


def ssim(pred, target, data_range: float = 255.0) -> float:
    """Mean SSIM of predicted images against targets, (H, W, 3) or (N, H, W, 3) each; 1 for
    identical images."""
    return float(ssim_per_image(pred, target, data_range).mean())
