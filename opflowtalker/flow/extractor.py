"""Feature and context encoders (RAFT, section 3.1): images to 1/8-resolution feature maps.

The same encoder serves as the feature network (instance norm, applied to both frames) and the
context network (batch norm, or none in the small model, applied to frame 1 only).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResidualBlock", "BottleneckBlock", "BasicEncoder", "SmallEncoder"]

NORMS = ("group", "batch", "instance", "none")


def make_norm(norm_fn: str, channels: int, groups: int) -> nn.Module:
    if norm_fn == "group":
        return nn.GroupNorm(num_groups=groups, num_channels=channels)
    if norm_fn == "batch":
        return nn.BatchNorm2d(channels)
    if norm_fn == "instance":
        return nn.InstanceNorm2d(channels)
    if norm_fn == "none":
        return nn.Sequential()
    raise ValueError(f"normalisation {norm_fn!r} is none of {NORMS}")


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (a strided 1x1 convolution when the block downsamples)."""

    def __init__(self, in_planes: int, planes: int, norm_fn: str = "group", stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        groups = planes // 8
        self.norm1 = make_norm(norm_fn, planes, groups)
        self.norm2 = make_norm(norm_fn, planes, groups)
        self.downsample = None
        if stride != 1:
            # Registered under its own name as well as inside the shortcut, as in the released
            # checkpoints, whose keys hold the batch-norm statistics under both names.
            self.norm3 = make_norm(norm_fn, planes, groups)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


class BottleneckBlock(nn.Module):
    """1x1 - 3x3 - 1x1 convolutions at a quarter of the width, with a shortcut."""

    def __init__(self, in_planes: int, planes: int, norm_fn: str = "group", stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes // 4, kernel_size=1, padding=0)
        self.conv2 = nn.Conv2d(planes // 4, planes // 4, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(planes // 4, planes, kernel_size=1, padding=0)
        self.relu = nn.ReLU(inplace=True)
        groups = planes // 8
        self.norm1 = make_norm(norm_fn, planes // 4, groups)
        self.norm2 = make_norm(norm_fn, planes // 4, groups)
        self.norm3 = make_norm(norm_fn, planes, groups)
        self.downsample = None
        if stride != 1:
            self.norm4 = make_norm(norm_fn, planes, groups)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        y = self.relu(self.norm3(self.conv3(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


class _Encoder(nn.Module):
    """A 7x7 stride-2 stem, three stages of two blocks (strides 1, 2, 2) and a 1x1 projection."""

    block: type[nn.Module]
    widths: tuple[int, int, int, int]  # stem, stage 1, stage 2, stage 3

    def __init__(self, output_dim: int = 128, norm_fn: str = "batch", dropout: float = 0.0):
        super().__init__()
        self.norm_fn = norm_fn
        stem, *stages = self.widths
        self.norm1 = make_norm(norm_fn, stem, 8)
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3)
        self.relu1 = nn.ReLU(inplace=True)
        self.in_planes = stem
        self.layer1 = self._make_layer(stages[0], stride=1)
        self.layer2 = self._make_layer(stages[1], stride=2)
        self.layer3 = self._make_layer(stages[2], stride=2)
        self.conv2 = nn.Conv2d(stages[2], output_dim, kernel_size=1)
        self.dropout = nn.Dropout2d(p=dropout) if dropout > 0 else None

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)):
                if m.weight is not None:
                    nn.init.constant_(m.weight, 1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def _make_layer(self, dim: int, stride: int) -> nn.Sequential:
        layers = (self.block(self.in_planes, dim, self.norm_fn, stride=stride),
                  self.block(dim, dim, self.norm_fn, stride=1))
        self.in_planes = dim
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...]):
        """Features of one batch of images, or of a list of two batches (encoded as one batch, so
        instance norm sees each image alone but batch norm would see both), returned as a tuple."""
        pair = isinstance(x, (list, tuple))
        if pair:
            batch = x[0].shape[0]
            x = torch.cat(x, dim=0)
        x = self.relu1(self.norm1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.conv2(x)
        if self.training and self.dropout is not None:
            x = self.dropout(x)
        if pair:
            return torch.split(x, [batch, batch], dim=0)
        return x


class BasicEncoder(_Encoder):
    """RAFT's encoder: residual blocks, widths 64-64-96-128."""

    block = ResidualBlock
    widths = (64, 64, 96, 128)


class SmallEncoder(_Encoder):
    """RAFT-small's encoder: bottleneck blocks, widths 32-32-64-96."""

    block = BottleneckBlock
    widths = (32, 32, 64, 96)
