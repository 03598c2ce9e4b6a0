"""Reading a field at moved positions: the one bilinear sampler of the package.

Three parts of the method read an image or a feature map at ``p + d(p)``: the generator warps its
reference features by its motion field (:func:`warp`), the OFS loss composes flows over a frame
interval (:func:`opflowtalker.losses.compose_flows`) and RAFT and GMA look up their correlation
volume around the current flow (:func:`opflowtalker.flow.utils.bilinear_sampler`). All of them
go through :func:`sample`, so pixel coordinates mean the same thing everywhere: pixel ``(x, y)`` is
the centre of column ``x``, row ``y``, and whole-pixel coordinates read pixels exactly.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["sample", "pixel_grid", "warp"]


def pixel_grid(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(height, width, 2) pixel coordinates, x then y, in ``like``'s device and dtype."""
    ys, xs = torch.meshgrid(torch.arange(height, device=like.device, dtype=like.dtype),
                            torch.arange(width, device=like.device, dtype=like.dtype), indexing="ij")
    return torch.stack([xs, ys], dim=-1)


def sample(field: torch.Tensor, coords: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """``field`` (N, C, H, W) read bilinearly at pixel coordinates ``coords`` (N, h, w, 2; x then
    y) of its own grid. Outside the field a read takes the nearest border value (``"border"``) or
    0 (``"zeros"``)."""
    height, width = field.shape[-2:]
    x, y = coords.unbind(-1)
    # Pixel centres in grid_sample's normalised coordinates with align_corners=False: x -> (2x + 1) / W - 1.
    grid = torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1)
    return F.grid_sample(field, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def warp(features: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """Backward warp: out(p) = features(p + motion(p)).

    ``motion`` (N, 2, H, W) holds (dx, dy) in pixels of the image, H x W; ``features`` may be at any
    coarser size h x w: the field is resized to it and its pixels scaled by w / W and h / H, so one
    field serves every level of a decoder. Zero motion is the identity; reads beyond the border
    take the border's value.
    """
    h, w = features.shape[-2:]
    image_h, image_w = motion.shape[-2:]
    if (h, w) != (image_h, image_w):
        motion = F.interpolate(motion, size=(h, w), mode="bilinear", align_corners=False)
    shift = torch.stack([motion[:, 0] * (w / image_w), motion[:, 1] * (h / image_h)], dim=-1)
    return sample(features, pixel_grid(h, w, features) + shift, padding="border")
