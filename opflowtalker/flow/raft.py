"""RAFT: Recurrent All-Pairs Field Transforms (Teed and Deng, ECCV 2020), the model of Table 3a.

The module tree and state-dict keys are those of princeton-vl/RAFT, so the released
``raft-things.pth`` and ``raft-small.pth`` load strictly (see :mod:`opflowtalker.flow.checkpoints`).

Calling convention, shared with :class:`opflowtalker.flow.gma.GMA`: ``model(image1, image2, iters)``
with images (B, 3, H, W) in 0..255 gives the flow from image1 to image2 in pixels, (B, 2, H, W) with x
then y; in eval mode the final estimate, in train mode the list of all ``iters`` estimates (for the
sequence loss).

Input size. The network works at 1/8 resolution and its correlation pyramid halves that three
times; sampling a level that has shrunk to one pixel divides by zero, so images under 128 px on a
side (96x96 faces: 12x12 features, a 1x1 coarsest level) would give NaN. Such images are resized up
bilinearly so the shorter side is at least 128 px (aspect kept, sides rounded up to multiples of 8),
the flow is computed there and resized back with its vectors rescaled. Larger images whose sides are
not multiples of 8 are replicate-padded and the flow cropped. Images of at least 128 px with sides
divisible by 8 go through unchanged, with the reference's numerics.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .corr import CorrBlock
from .extractor import BasicEncoder, SmallEncoder
from .update import BasicUpdateBlock, SmallUpdateBlock
from .utils import InputPadder, convex_upsample, coords_grid, upflow8

__all__ = ["MIN_SIDE", "working_size", "RecurrentFlowNetwork", "RAFT"]

MIN_SIDE = 128


def working_size(height: int, width: int, min_side: int = MIN_SIDE) -> tuple[int, int]:
    """The size an image of ``height`` x ``width`` is resized to before estimating flow: itself when
    its shorter side is at least ``min_side``, else scaled up to it, each side a multiple of 8."""
    if min(height, width) >= min_side:
        return height, width
    scale = min_side / min(height, width)
    return 8 * math.ceil(height * scale / 8), 8 * math.ceil(width * scale / 8)


def _resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a flow field with its vectors rescaled to the new pixel size."""
    height, width = flow.shape[-2:]
    resized = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([size[1] / width, size[0] / height], dtype=flow.dtype, device=flow.device)
    return resized * scale.view(1, 2, 1, 1)


class RecurrentFlowNetwork(nn.Module):
    """Feature encoder, context encoder and an update block iterated over a correlation pyramid:
    the computation RAFT and GMA share."""

    def __init__(self, fnet: nn.Module, cnet: nn.Module, update_block: nn.Module, hidden_dim: int,
                 context_dim: int, corr_levels: int, corr_radius: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.context_dim = context_dim
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.fnet = fnet
        self.cnet = cnet
        self.update_block = update_block

    def freeze_bn(self) -> None:
        """Batch norm in eval mode (fixed statistics) while the rest trains, as in fine-tuning."""
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()

    def update_inputs(self, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Further inputs of the update block computed once from the context features."""
        return ()

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iters: int = 12,
                flow_init: torch.Tensor | None = None) -> torch.Tensor | list[torch.Tensor]:
        """Flow from ``image1`` to ``image2`` (see the module docstring); ``flow_init`` (B, 2, H, W),
        at the input's resolution, starts the iterations (warm start from the previous frame pair)."""
        if iters < 1:
            raise ValueError(f"iters must be at least 1, not {iters}")
        height, width = image1.shape[-2:]
        size = working_size(height, width)
        padder = None
        if size != (height, width):
            image1, image2 = (F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in (image1, image2))
            if flow_init is not None:
                flow_init = _resize_flow(flow_init, size)
        else:
            padder = InputPadder(image1.shape)
            if padder.needed:
                image1, image2 = padder.pad(image1, image2)
                if flow_init is not None:
                    flow_init, = padder.pad(flow_init)
            else:
                padder = None
        coarse_init = None if flow_init is None else F.avg_pool2d(flow_init, 8) / 8

        predictions = self.estimate(image1, image2, iters, coarse_init)
        if padder is not None:
            predictions = [padder.unpad(flow) for flow in predictions]
        elif size != (height, width):
            predictions = [_resize_flow(flow, (height, width)) for flow in predictions]
        return predictions if self.training else predictions[-1]

    def estimate(self, image1: torch.Tensor, image2: torch.Tensor, iters: int,
                 coarse_init: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The reference computation on images whose sides are multiples of 8 (and at least 128 px):
        full-resolution flow after every iteration in train mode, after the last one in eval mode.
        ``coarse_init`` is an initial flow at 1/8 resolution in 1/8-resolution pixels."""
        image1 = (2 * (image1 / 255.0) - 1.0).contiguous()
        image2 = (2 * (image2 / 255.0) - 1.0).contiguous()

        fmap1, fmap2 = self.fnet([image1, image2])
        corr_fn = CorrBlock(fmap1, fmap2, num_levels=self.corr_levels, radius=self.corr_radius)

        net, inp = torch.split(self.cnet(image1), [self.hidden_dim, self.context_dim], dim=1)
        net = torch.tanh(net)
        inp = torch.relu(inp)
        extra = self.update_inputs(inp)

        n, _, height, width = image1.shape
        coords0 = coords_grid(n, height // 8, width // 8, device=image1.device)
        coords1 = coords_grid(n, height // 8, width // 8, device=image1.device)
        if coarse_init is not None:
            coords1 = coords1 + coarse_init

        predictions = []
        for i in range(iters):
            # Each iteration is supervised on its own: no gradient flows back through earlier lookups.
            coords1 = coords1.detach()
            corr = corr_fn(coords1)
            net, up_mask, delta_flow = self.update_block(net, inp, corr, coords1 - coords0, *extra)
            coords1 = coords1 + delta_flow
            if self.training or i == iters - 1:
                flow = coords1 - coords0
                predictions.append(upflow8(flow) if up_mask is None else convex_upsample(flow, up_mask))
        return predictions


class RAFT(RecurrentFlowNetwork):
    """RAFT (5,257,536 parameters) or RAFT-small (``small=True``, 990,162 parameters)."""

    def __init__(self, small: bool = False, dropout: float = 0.0):
        if small:
            hdim, cdim, radius = 96, 64, 3
            fnet = SmallEncoder(output_dim=128, norm_fn="instance", dropout=dropout)
            cnet = SmallEncoder(output_dim=hdim + cdim, norm_fn="none", dropout=dropout)
            update_block = SmallUpdateBlock(hidden_dim=hdim, corr_levels=4, corr_radius=radius)
        else:
            hdim, cdim, radius = 128, 128, 4
            fnet = BasicEncoder(output_dim=256, norm_fn="instance", dropout=dropout)
            cnet = BasicEncoder(output_dim=hdim + cdim, norm_fn="batch", dropout=dropout)
            update_block = BasicUpdateBlock(hidden_dim=hdim, corr_levels=4, corr_radius=radius)
        super().__init__(fnet, cnet, update_block, hidden_dim=hdim, context_dim=cdim, corr_levels=4,
                         corr_radius=radius)
        self.small = small
