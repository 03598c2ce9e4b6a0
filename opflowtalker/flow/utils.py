"""Coordinate grids, sampling and upsampling shared by the recurrent flow networks (RAFT, GMA).

Flow is carried as the difference of two pixel-coordinate grids, ``coords1 - coords0``, at 1/8 of
the image resolution; channel 0 is the horizontal (x) component, channel 1 the vertical (y).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from ..warp import sample

__all__ = ["coords_grid", "bilinear_sampler", "convex_upsample", "upflow8", "InputPadder"]


def coords_grid(batch: int, height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(batch, 2, height, width) pixel coordinates: channel 0 is x (the column), channel 1 is y."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([xs, ys], dim=0).float()[None].repeat(batch, 1, 1, 1)


def bilinear_sampler(image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """``image`` (N, C, H, W) read at pixel coordinates ``coords`` (N, h, w, 2; x then y), zero outside
    (:func:`opflowtalker.warp.sample`, as RAFT's correlation lookup reads it)."""
    return sample(image, coords, padding="zeros")


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Flow at 1/8 resolution (N, 2, H, W) to full resolution (N, 2, 8H, 8W).

    Each full-resolution pixel is a convex combination (softmax over ``mask``'s 9 weights) of the
    8x-scaled flow at the 3x3 coarse neighbours of its coarse cell; ``mask`` is (N, 9*8*8, H, W)
    ordered (neighbour, row within the cell, column within the cell).
    """
    n, _, height, width = flow.shape
    weights = torch.softmax(mask.view(n, 1, 9, 8, 8, height, width), dim=2)
    neighbours = F.unfold(8 * flow, [3, 3], padding=1).view(n, 2, 9, 1, 1, height, width)
    up = torch.sum(weights * neighbours, dim=2)  # (n, 2, 8 rows, 8 cols, H, W)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(n, 2, 8 * height, 8 * width)


def upflow8(flow: torch.Tensor) -> torch.Tensor:
    """Bilinear 8x upsampling of a flow field, vectors scaled to the new pixel size."""
    size = (8 * flow.shape[2], 8 * flow.shape[3])
    return 8 * F.interpolate(flow, size=size, mode="bilinear", align_corners=True)


class InputPadder:
    """Replicate-pads images so both sides are multiples of 8, and crops results back.

    ``mode="sintel"`` splits the padding evenly between both sides; ``"kitti"`` pads only the bottom
    (and both sides horizontally), as the KITTI benchmarks' evaluation does.
    """

    def __init__(self, dims: torch.Size | tuple[int, ...], mode: str = "sintel"):
        self.height, self.width = dims[-2:]
        pad_h = -self.height % 8
        pad_w = -self.width % 8
        if mode == "sintel":
            self._pad = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]
        elif mode == "kitti":
            self._pad = [pad_w // 2, pad_w - pad_w // 2, 0, pad_h]
        else:
            raise ValueError(f"padding mode {mode!r} is neither 'sintel' nor 'kitti'")

    @property
    def needed(self) -> bool:
        return any(self._pad)

    def pad(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        return [F.pad(x, self._pad, mode="replicate") for x in inputs]

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        left, right, top, bottom = self._pad
        return x[..., top:height - bottom, left:width - right]
