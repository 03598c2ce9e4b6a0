"""Frechet distances between sets of images: FID (Inception) and FD-face (dlib face descriptors).

The Frechet distance between two Gaussians N(mu1, S1) and N(mu2, S2) fitted to feature sets is

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

**FID** (Heusel et al. 2017; the paper computes it with pytorch-fid [35]) takes the features from
the 2048-d final average pool ("pool3") of the TensorFlow Inception-v3 graph of 2015-12-05, whose
weights pytorch-fid republishes as ``pt_inception-2015-12-05-6726825d.pth``.
:class:`~opflowtalker.metrics.inception.InceptionV3` is that network, written with the same module
names as torchvision's ``Inception3`` patched
by pytorch-fid (``FIDInceptionA/C/E``: average pools that ignore padding, a max pool in the last
block), so the file loads key for key. Images are resized to 299x299 (bilinear) and scaled from
[0, 1] to [-1, 1]. No package ships these weights; :func:`inception_fid` runs only with the file.

**FD-face** is the offline stand-in, named distinctly because its numbers are not FID: the same
distance over dlib's 128-d face descriptors (``dlib_face_recognition_resnet_model_v1.dat``, a
ResNet trained for face verification, shipped by ``face-recognition-models``). It measures how far
the generated faces' identity statistics drift from the real ones. Each 96x96 crop is upsampled
to the descriptor's 150-px chip size, dlib's 5-point predictor places eyes and nose inside a
rectangle covering the whole crop, and the descriptor is computed from the aligned chip. About
75 ms per face on one CPU core.

``tr((S1 S2)^(1/2))`` is the sum of the square roots of the eigenvalues of S1 S2. pytorch-fid
takes it from ``scipy.linalg.sqrtm``, as :func:`frechet_distance` does; for 2048-d features that
takes 25-60 s on our 2-core CPUs. :func:`frechet_distance_from_features` gets the same number from
the features themselves: with centred feature matrices X1 (n1 x d) and X2, the non-zero
eigenvalues of S1 S2 are the squared singular values of X1 X2^T / sqrt((n1-1)(n2-1)), an n1 x n2
matrix (7 ms for 50 and 60 samples of 2048-d features, agreeing with sqrtm to 1e-7 relative); with
more samples than dimensions it uses the eigenvalues of S1^(1/2) S2 S1^(1/2) instead (about 6 s
at 2048-d on one core).
"""
from __future__ import annotations

import functools
import os
import warnings

import cv2
import numpy as np
from scipy import linalg

from ..landmarks import LandmarkError, dlib_model_path
from .image import MetricError, MetricUnavailable, as_image_batch
from .inception import InceptionV3, inception_features, load_inception

__all__ = [
    "FACE_DESCRIPTOR_FILE",
    "FACE_SHAPE_FILE",
    "FACE_CHIP_SIZE",
    "FACE_DESCRIPTOR_DIMS",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "inception_fid",
    "FaceEmbedder",
    "face_embeddings",
    "face_embedding_fd",
]

FACE_DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
FACE_SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"
# dlib's descriptor network reads 150x150 aligned chips and gives 128 numbers.
FACE_CHIP_SIZE = 150
FACE_DESCRIPTOR_DIMS = 128


# ---------------------------------------------------------------- the Frechet distance


def _features(features, name: str) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise MetricError(f"{name} must be a (N, D) feature matrix with N >= 2 to have a covariance, "
                          f"not an array of shape {array.shape}")
    if not np.isfinite(array).all():
        raise MetricError(f"{name} contain NaN or infinite values")
    return array


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (N, D) features, the covariance with N - 1 as pytorch-fid's
    ``np.cov(..., rowvar=False)``."""
    features = _features(features, "features")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), as pytorch-fid computes it.

    ``scipy.linalg.sqrtm`` of the product; when that is not finite (a singular product, e.g. fewer
    samples than dimensions), eps is added to both diagonals and the root taken again. The root of
    a product of two covariances has real eigenvalues, so any imaginary part is rounding error and
    is discarded (pytorch-fid raises instead when it exceeds 1e-3 on the diagonal).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise MetricError(f"means {mu1.shape}, {mu2.shape} and covariances {sigma1.shape}, {sigma2.shape} "
                          f"do not describe two Gaussians of one dimension")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # sqrtm warns on singular input; the retry below is the answer to that.
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(d) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _trace_sqrt_product(x1: np.ndarray, x2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) for the sample covariances of centred features x1 (n1, d), x2 (n2, d)."""
    n1, n2 = len(x1), len(x2)
    if min(n1, n2) <= x1.shape[1]:
        # Few samples: the nuclear norm of the small cross-Gram matrix.
        cross = (x1 @ x2.T) / np.sqrt((n1 - 1) * (n2 - 1))
        return float(linalg.svdvals(cross).sum())
    # Many samples: S1^(1/2) S2 S1^(1/2) is symmetric with the eigenvalues of S1 S2.
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    w, v = linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    eig = linalg.eigvalsh(root @ s2 @ root)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance_from_features(features1, features2) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets (N1, D) and (N2, D): the
    value :func:`frechet_distance` gives on their statistics, without a D x D matrix square root."""
    x1, x2 = _features(features1, "first features"), _features(features2, "second features")
    if x1.shape[1] != x2.shape[1]:
        raise MetricError(f"the two feature sets have {x1.shape[1]} and {x2.shape[1]} dimensions")
    mu1, mu2 = x1.mean(axis=0), x2.mean(axis=0)
    x1, x2 = x1 - mu1, x2 - mu2
    trace1 = (x1 * x1).sum() / (len(x1) - 1)
    trace2 = (x2 * x2).sum() / (len(x2) - 1)
    diff = mu1 - mu2
    return float(diff @ diff + trace1 + trace2 - 2.0 * _trace_sqrt_product(x1, x2))


def _is_features(x, dims: int) -> bool:
    return np.ndim(x) == 2 and np.shape(x)[1] == dims


def inception_fid(real_images, fake_images, weights_path: str | os.PathLike, batch_size: int = 32,
                  data_range: float = 255.0) -> float:
    """FID between two image sets (N, H, W, 3), each N >= 2, with pytorch-fid's Inception weights.
    Either set may instead be given as its (N, 2048) :func:`inception_features`, e.g. cached real ones."""
    model = load_inception(weights_path)

    def features(x) -> np.ndarray:
        if _is_features(x, InceptionV3.FEATURES):
            return np.asarray(x, dtype=np.float64)
        return inception_features(x, model, batch_size, data_range)

    return frechet_distance_from_features(features(real_images), features(fake_images))


# ---------------------------------------------------------------- FD-face (dlib descriptors)


class FaceEmbedder:
    """dlib's 128-d face descriptor of face crops, with the 5-point predictor placing the face."""

    def __init__(self, chip_size: int = FACE_CHIP_SIZE) -> None:
        import dlib

        try:
            shape_path, model_path = dlib_model_path(FACE_SHAPE_FILE), dlib_model_path(FACE_DESCRIPTOR_FILE)
        except LandmarkError as error:
            raise MetricUnavailable(f"FD-face needs dlib's face descriptor files: {error}") from error
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(shape_path))
        self._model = dlib.face_recognition_model_v1(str(model_path))
        self.chip_size = chip_size

    def __call__(self, images, data_range: float = 255.0) -> np.ndarray:
        """Descriptors (N, 128) of face crops (N, H, W, 3) RGB, each crop showing one face."""
        batch = as_image_batch(images, "face images")
        if batch.shape[-1] == 1:
            batch = np.repeat(batch, 3, axis=-1)
        batch = np.clip(np.rint(batch * (255.0 / data_range)), 0, 255).astype(np.uint8)
        out = np.empty((len(batch), FACE_DESCRIPTOR_DIMS))
        size = self.chip_size
        # The 5-point predictor was trained on detector boxes; a Wav2Lip crop is such a box with
        # the chin padded, and the whole crop placed eyes and nose best of the rectangles tried.
        rect = self._dlib.rectangle(0, 0, size - 1, size - 1)
        for i, face in enumerate(batch):
            # Upsample to the chip size so that dlib's chip extraction samples about 1:1.
            face = np.ascontiguousarray(cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC))
            out[i] = np.asarray(self._model.compute_face_descriptor(face, self._shape(face, rect)))
        return out


@functools.lru_cache(maxsize=1)
def _default_embedder() -> FaceEmbedder:
    return FaceEmbedder()


def face_embeddings(images, embedder: FaceEmbedder | None = None, data_range: float = 255.0) -> np.ndarray:
    """dlib face descriptors (N, 128) of face crops (N, H, W, 3); cache a real set's once and pass
    them to :func:`face_embedding_fd`."""
    return (embedder or _default_embedder())(images, data_range)


def face_embedding_fd(real_faces, fake_faces, embedder: FaceEmbedder | None = None,
                      data_range: float = 255.0) -> float:
    """FD-face: the Frechet distance between dlib face descriptors of real and generated face
    crops (N, H, W, 3), N >= 2 each. Either argument may instead be its (N, 128) descriptors."""

    def descriptors(x) -> np.ndarray:
        if _is_features(x, FACE_DESCRIPTOR_DIMS):
            return np.asarray(x, dtype=np.float64)
        return face_embeddings(x, embedder, data_range)

    return frechet_distance_from_features(descriptors(real_faces), descriptors(fake_faces))
