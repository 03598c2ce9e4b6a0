"""LPIPS (Zhang, Isola, Efros, Shechtman and Wang 2018): a learned perceptual distance between images.

Both images (values in [-1, 1]) pass through lpips's scaling layer, (x - shift) / scale with the
constants below, and an ImageNet AlexNet; at the five taps after conv1..conv5's ReLUs the feature
maps are unit-normalised along channels, their squared difference is weighted per channel by a
learned 1x1 layer, averaged over positions, and the five layers summed:

    d(x, y) = sum_l mean_{h,w} w_l . (f_l(x)[h, w] / |f_l(x)[h, w]| - f_l(y)[h, w] / |f_l(y)[h, w]|)^2.

The paper [58] uses lpips's default: AlexNet and the v0.1 linear layers. Two weight files are
needed and are never downloaded here:

* the AlexNet trunk: torchvision's ``alexnet-owt-7be5be79.pth`` (keys ``features.0.weight`` ...;
  its ``classifier.*`` tensors are ignored), loaded into our own :class:`AlexNetFeatures`;
* the linear layers: lpips's ``weights/v0.1/alex.pth`` (keys ``lin0.model.1.weight`` ...
  ``lin4.model.1.weight``, shapes (1, C, 1, 1)); the lpips package ships this file.

Both are read with weights-only unpickling. Without them :func:`lpips_distance` raises
:class:`MetricUnavailable`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.checkpoints import load_reference_state_dict, load_state_dict_strict
from .image import MetricError, MetricUnavailable, as_image_batch

__all__ = [
    "ALEXNET_WEIGHTS_FILE",
    "LINEAR_WEIGHTS_FILE",
    "LPIPS_SHIFT",
    "LPIPS_SCALE",
    "ALEXNET_CHANNELS",
    "ScalingLayer",
    "AlexNetFeatures",
    "NetLinLayer",
    "LPIPS",
    "normalize_tensor",
    "lpips_distance",
]

ALEXNET_WEIGHTS_FILE = "alexnet-owt-7be5be79.pth"
LINEAR_WEIGHTS_FILE = "weights/v0.1/alex.pth"
# lpips v0.1's ScalingLayer: ImageNet's channel means and deviations expressed for [-1, 1] input.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
ALEXNET_CHANNELS = (64, 192, 384, 256, 256)
# Indices in torchvision's ``alexnet().features`` of the ReLUs after conv1..conv5.
_TAPS = (1, 4, 7, 9, 11)


class ScalingLayer(nn.Module):
    """(x - shift) / scale per channel; the constants are fixed, so they are not in the state dict."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class AlexNetFeatures(nn.Module):
    """torchvision's AlexNet ``features`` (the layout of its weight file), returning the activations
    after the five ReLUs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            # The final max pool is never reached: conv5's ReLU is the last tap.
            nn.MaxPool2d(kernel_size=3, stride=2),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index, layer in enumerate(self.features[: _TAPS[-1] + 1]):
            x = layer(x)
            if index in _TAPS:
                taps.append(x)
        return taps


class NetLinLayer(nn.Module):
    """A 1x1 convolution to one channel without bias; the dropout in front of it (lpips trains with
    one) is what puts the weight at ``model.1``, and does nothing in eval mode."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def normalize_tensor(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Each position's channel vector divided by its length (+ eps, as lpips, so zeros stay zero)."""
    return x / (torch.sqrt((x * x).sum(dim=1, keepdim=True)) + eps)


def _check_file(path: str | os.PathLike | None, what: str) -> Path:
    if path is None:
        raise MetricUnavailable(f"LPIPS needs {what}, and no path to it was given")
    if not Path(path).is_file():
        raise MetricUnavailable(f"LPIPS needs {what}, which is not at {path}")
    return Path(path)


class LPIPS(nn.Module):
    """LPIPS with the AlexNet trunk. ``forward(x, y)`` takes (N, 3, H, W) in [-1, 1] and returns (N,)."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = AlexNetFeatures()
        self.lin0 = NetLinLayer(ALEXNET_CHANNELS[0])
        self.lin1 = NetLinLayer(ALEXNET_CHANNELS[1])
        self.lin2 = NetLinLayer(ALEXNET_CHANNELS[2])
        self.lin3 = NetLinLayer(ALEXNET_CHANNELS[3])
        self.lin4 = NetLinLayer(ALEXNET_CHANNELS[4])

    def linear_layers(self) -> nn.Module:
        """lin0..lin4 under the names of lpips's weight file (shared with this module, not copies)."""
        holder = nn.Module()
        for i in range(len(ALEXNET_CHANNELS)):
            holder.add_module(f"lin{i}", getattr(self, f"lin{i}"))
        return holder

    @classmethod
    def from_files(cls, backbone_path: str | os.PathLike | None, linear_path: str | os.PathLike | None) -> LPIPS:
        """LPIPS with torchvision's AlexNet weights and lpips's linear layers, in eval mode.

        A missing file raises :class:`MetricUnavailable`, a wrong one a ``CheckpointError`` (a
        ``ValueError``) naming what does not match.
        """
        backbone_path = _check_file(backbone_path, f"torchvision's AlexNet weights ({ALEXNET_WEIGHTS_FILE})")
        linear_path = _check_file(linear_path, f"lpips's linear layers ({LINEAR_WEIGHTS_FILE})")
        model = cls()
        backbone = load_reference_state_dict(backbone_path)
        # torchvision's file also holds the classifier, which LPIPS does not use.
        features = {k: v for k, v in backbone.items() if not k.startswith("classifier.")}
        load_state_dict_strict(model.net, features, "torchvision AlexNet", backbone_path)
        load_state_dict_strict(model.linear_layers(), load_reference_state_dict(linear_path),
                               "lpips AlexNet linear-layer", linear_path)
        return model.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        taps_x, taps_y = self.net(self.scaling_layer(x)), self.net(self.scaling_layer(y))
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i, (fx, fy) in enumerate(zip(taps_x, taps_y)):
            diff = (normalize_tensor(fx) - normalize_tensor(fy)) ** 2
            total = total + getattr(self, f"lin{i}")(diff).mean(dim=(1, 2, 3))
        return total


def lpips_distance(pred, target, backbone_path: str | os.PathLike | None = None,
                   linear_path: str | os.PathLike | None = None, batch_size: int = 32,
                   data_range: float = 255.0, model: LPIPS | None = None) -> float:
    """Mean LPIPS between predicted and target images, (H, W, 3) or (N, H, W, 3) each with values in
    [0, data_range]; the weights come from ``model`` or else from the two files."""
    if model is None:
        model = LPIPS.from_files(backbone_path, linear_path)
    x, y = as_image_batch(pred, "predicted images"), as_image_batch(target, "target images")
    if x.shape != y.shape:
        raise MetricError(f"predicted images {x.shape} and target images {y.shape} differ in shape")
    if x.shape[-1] != 3:
        raise MetricError(f"LPIPS compares RGB images, not images with {x.shape[-1]} channel")
    if not data_range > 0:
        raise MetricError(f"the data range must be positive, not {data_range}")
    if min(x.shape[1:3]) < 31:
        # Smaller images leave conv1 fewer than 7 positions, and the second max pool none.
        raise MetricError(f"LPIPS needs images of at least 31x31 pixels, not {x.shape[1]}x{x.shape[2]}")

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2) * (2.0 / data_range) - 1.0,
                                                     dtype=np.float32))

    distances = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            distances.append(model(tensor(x[start : start + batch_size]), tensor(y[start : start + batch_size])))
    return float(torch.cat(distances).double().mean())
