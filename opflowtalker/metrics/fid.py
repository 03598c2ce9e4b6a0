"""Frechet distances between sets of images: FID (Inception) and FD-face (dlib face descriptors).

The Frechet distance between two Gaussians N(mu1, S1) and N(mu2, S2) fitted to feature sets is

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

**FID** (Heusel et al. 2017; the paper computes it with pytorch-fid [35]) takes the features from
the 2048-d final average pool ("pool3") of the TensorFlow Inception-v3 graph of 2015-12-05, whose
weights pytorch-fid republishes as ``pt_inception-2015-12-05-6726825d.pth``. :class:`InceptionV3`
is that network, written here with the same module names as torchvision's ``Inception3`` patched
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
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from ..landmarks import LandmarkError, dlib_model_path
from ..models.checkpoints import load_reference_state_dict, load_state_dict_strict
from .image import MetricError, MetricUnavailable, as_image_batch

__all__ = [
    "FID_WEIGHTS_FILE",
    "FACE_DESCRIPTOR_FILE",
    "FACE_SHAPE_FILE",
    "FACE_CHIP_SIZE",
    "FACE_DESCRIPTOR_DIMS",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "BasicConv2d",
    "FIDInceptionA",
    "InceptionB",
    "FIDInceptionC",
    "InceptionD",
    "FIDInceptionE",
    "InceptionV3",
    "load_inception",
    "inception_features",
    "inception_fid",
    "FaceEmbedder",
    "face_embeddings",
    "face_embedding_fd",
]

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
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


# ---------------------------------------------------------------- Inception-v3 (pytorch-fid's)


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, TensorFlow's), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's 3x3 average pool divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: strided 3x3, strided double 3x3, max pool."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 then 7x1)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: strided 3x3 after 1x1, strided 3x3 after a 7x7 pair, max pool."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 outputs. ``max_pool`` marks the last block (Mixed_7c), whose pool
    branch the TensorFlow graph takes with a max pool (pytorch-fid's ``FIDInceptionE_2``)."""

    def __init__(self, in_channels: int, max_pool: bool = False) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class InceptionV3(nn.Module):
    """The FID Inception-v3 up to its 2048-d pool3 features.

    Input (N, 3, H, W) in [0, 1]; output (N, 2048). The 1008-way classifier ``fc`` is part of the
    weight file and so of this module, but the features are taken before it.
    """

    INPUT_SIZE = 299
    FEATURES = 2048

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.INPUT_SIZE, self.INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))


def load_inception(weights_path: str | os.PathLike) -> InceptionV3:
    """pytorch-fid's Inception-v3 from ``pt_inception-2015-12-05-6726825d.pth``, in eval mode.

    Raises :class:`MetricUnavailable` when the file is not there and a ``CheckpointError`` (a
    ``ValueError``) when it holds other weights.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise MetricUnavailable(f"FID needs pytorch-fid's Inception weights {FID_WEIGHTS_FILE}, "
                                f"which are not at {path}")
    return load_state_dict_strict(InceptionV3(), load_reference_state_dict(path), "FID Inception-v3", path)


def _to_tensor(images: np.ndarray, data_range: float) -> torch.Tensor:
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2) / data_range, dtype=np.float32))


def inception_features(images, model: InceptionV3, batch_size: int = 32, data_range: float = 255.0) -> np.ndarray:
    """Pool3 features (N, 2048) of images (N, H, W, 3) with values in [0, data_range]."""
    batch = as_image_batch(images)
    out = []
    with torch.no_grad():
        for start in range(0, len(batch), batch_size):
            out.append(model(_to_tensor(batch[start : start + batch_size], data_range)).double().numpy())
    return np.concatenate(out)


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
