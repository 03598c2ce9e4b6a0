"""End-point error and the training losses of the flow networks.

Flows are (B, 2, H, W) tensors in pixels, (dx, dy) on the channel axis; validity masks are
(B, H, W), boolean or 0/1.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

__all__ = ["end_point_error", "sequence_loss", "multiscale_epe_loss", "FLOWNET_WEIGHTS"]

# flownet2-pytorch's MultiScale loss: 0.32 / 2**level for flow2 (1/4 size) ... flow6 (1/64).
FLOWNET_WEIGHTS = (0.32, 0.16, 0.08, 0.04, 0.02)


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() < 3 or pred.shape[-3] != 2:
        raise ValueError(f"expected prediction and target flows (..., 2, H, W) of one shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")


def end_point_error(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean Euclidean distance between predicted and true flow vectors over the valid pixels
    (all pixels without ``valid``); NaN when no pixel is valid."""
    _check(pred, target)
    epe = torch.linalg.vector_norm(pred - target, dim=-3)
    if valid is None:
        return epe.mean()
    valid = valid.to(epe.dtype).expand_as(epe)
    return (epe * valid).sum() / valid.sum()


def sequence_loss(predictions: Sequence[torch.Tensor], target: torch.Tensor, valid: torch.Tensor,
                  gamma: float = 0.8, max_flow: float = 400.0) -> torch.Tensor:
    """RAFT's training loss: the L1 error of each of the N iterations' flows, weighted gamma**(N-1-i)
    so that later iterations count most.

    As in RAFT, pixels with a ground truth longer than ``max_flow`` are ignored, and each
    iteration's error is a mean over all pixels with invalid ones counting zero.
    """
    if not predictions:
        raise ValueError("sequence_loss needs at least one prediction")
    keep = (valid >= 0.5) & (torch.linalg.vector_norm(target, dim=-3) < max_flow)
    keep = keep.unsqueeze(-3).to(target.dtype)
    n = len(predictions)
    loss = target.new_zeros(())
    for i, pred in enumerate(predictions):
        _check(pred, target)
        loss = loss + gamma ** (n - 1 - i) * (keep * (pred - target).abs()).mean()
    return loss


def multiscale_epe_loss(predictions: Sequence[torch.Tensor], target: torch.Tensor, valid: torch.Tensor | None = None,
                        weights: Sequence[float] = FLOWNET_WEIGHTS, div_flow: float = 20.0) -> torch.Tensor:
    """FlowNet's multi-scale loss: the weighted sum over scales of the EPE between each raw prediction
    and the ground truth divided by ``div_flow`` and average-pooled to the prediction's size.

    ``predictions`` are :class:`~opflowtalker.flow.flownet.FlowNet2S`'s training outputs, finest
    first; each size must divide the target's. With ``valid``, pooling averages the valid pixels of
    each cell only, and a cell counts when at least half of its pixels are valid.
    """
    if len(predictions) != len(weights):
        raise ValueError(f"{len(predictions)} predictions but {len(weights)} weights")
    target = target / div_flow
    h, w = target.shape[-2:]
    if valid is None:
        valid = torch.ones(target.shape[:-3] + (h, w), dtype=target.dtype, device=target.device)
    valid = valid.to(target.dtype).unsqueeze(-3)
    loss = target.new_zeros(())
    for pred, weight in zip(predictions, weights):
        ph, pw = pred.shape[-2:]
        if h % ph or w % pw or h // ph != w // pw:
            raise ValueError(f"a prediction of size {ph}x{pw} does not evenly divide the target's {h}x{w}")
        k = h // ph
        share = F.avg_pool2d(valid, k)
        pooled = F.avg_pool2d(target * valid, k) / share.clamp_min(1e-6)
        _check(pred, pooled)
        counted = (share.squeeze(-3) >= 0.5).to(target.dtype)
        # A scale with no valid cell adds nothing rather than NaN.
        epe = torch.linalg.vector_norm(pred - pooled, dim=-3)
        loss = loss + weight * (epe * counted).sum() / counted.sum().clamp_min(1.0)
    return loss
