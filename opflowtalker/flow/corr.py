"""The all-pairs correlation volume and its multi-scale lookup (RAFT, section 3.2).

Every pixel of frame 1's feature map is correlated with every pixel of frame 2's; the last two
dimensions are average-pooled into a pyramid, and each iteration reads a (2r+1)^2 window around
the current correspondence at every level.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .utils import bilinear_sampler

__all__ = ["all_pairs_correlation", "CorrBlock"]


def all_pairs_correlation(fmap1: torch.Tensor, fmap2: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 1, H, W) dot products of feature vectors, divided by sqrt(channels)."""
    batch, dim, height, width = fmap1.shape
    corr = torch.matmul(fmap1.view(batch, dim, height * width).transpose(1, 2),
                        fmap2.view(batch, dim, height * width))
    return corr.view(batch, height, width, 1, height, width) / torch.sqrt(torch.tensor(dim).float())


class CorrBlock:
    """Correlation pyramid of two feature maps, looked up at flow-displaced coordinates.

    Calling it with coordinates (B, 2, H, W) in frame 2's feature pixels returns
    (B, levels * (2r+1)^2, H, W). Within a level, channel ``i * (2r+1) + j`` holds the correlation at
    offset (x + i - r, y + j - r): the released RAFT and GMA weights were trained with this order.
    """

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, num_levels: int = 4, radius: int = 4):
        self.num_levels = num_levels
        self.radius = radius
        corr = all_pairs_correlation(fmap1, fmap2)
        batch, height, width, _, height2, width2 = corr.shape
        corr = corr.reshape(batch * height * width, 1, height2, width2)
        self.pyramid = [corr]
        for _ in range(num_levels - 1):
            corr = F.avg_pool2d(corr, 2, stride=2)
            self.pyramid.append(corr)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        r = self.radius
        coords = coords.permute(0, 2, 3, 1)
        batch, height, width, _ = coords.shape
        offsets = torch.linspace(-r, r, 2 * r + 1, device=coords.device)
        # First window axis shifts x, second shifts y (see the class docstring).
        dx, dy = torch.meshgrid(offsets, offsets, indexing="ij")
        window = torch.stack([dx, dy], dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)

        levels = []
        for i, corr in enumerate(self.pyramid):
            centre = coords.reshape(batch * height * width, 1, 1, 2) / 2 ** i
            sampled = bilinear_sampler(corr, centre + window)
            levels.append(sampled.view(batch, height, width, -1))
        return torch.cat(levels, dim=-1).permute(0, 3, 1, 2).contiguous()
