"""Losses of the generator's training: reconstruction, the expert sync loss, and the paper's
Optical Flow Synchronization (OFS) loss (Sec. 3.2, Eq. 7).

OFS loss. A frozen flow network (GMA in the paper; RAFT or FlowNet2 in Table 3a) estimates the flow
between frames t and t+k of each generated window; it is compared with the flow between the same
ground-truth frames, which is not recomputed but read from preprocessing (exact flow for the corpus,
DIS for real video) together with its validity mask. The comparison is made twice, over the whole
face crop and over the mouth, and mixed as

    L_ofs = (1 - alpha) L_ofs-f + alpha L_ofs-m,    alpha = 0.1,

with the mouth term brought in later in training (:class:`OFSSchedule`). Options cover the paper's
ablations: the frame interval k (Table 3b; for k > 1 the stored consecutive flows are composed),
the distance (Table 6: MSE or MAE) and how the pairs of a window are pooled (Table 7: mean or max).

Layouts: frames (B, 3, T, H, W) in [0, 1], the generator's output; ground-truth flow
(B, T-1, 2, H, W) in pixels, channels first like the networks' output (preprocessing stores
(T-1, H, W, 2) per clip: ``torch.from_numpy(flow).permute(0, 3, 1, 2)``); validity (B, T-1, H, W);
mouth masks (B, T, H, W) (:func:`opflowtalker.landmarks.mouth_masks`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .landmarks import mouth_masks
from .warp import pixel_grid, sample

__all__ = [
    "OFS_ALPHA", "DISTANCES", "REDUCTIONS", "l1_loss", "sync_loss", "compose_flows", "interval_flows",
    "mouth_l1_loss", "freeze", "OFS_AREAS", "OFSSchedule", "ofs_terms", "ofs_loss",
    "WRONG_MOTIONS", "busiest_window", "motion_candidates", "ofs_of_motions",
]

OFS_ALPHA = 0.1
# "l2" and "l1" are Table 6's MSE and MAE; "epe" reads Eq. 7's ||O - O^||_2 literally (the vector length).
DISTANCES = ("l2", "l1", "epe")
REDUCTIONS = ("mean", "max")


def l1_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Reconstruction loss: mean absolute difference between generated and ground-truth frames."""
    if pred.shape != gt.shape:
        raise ValueError(f"generated frames {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    return F.l1_loss(pred, gt)


def sync_loss(audio_embedding: torch.Tensor, face_embedding: torch.Tensor, target=1.0) -> torch.Tensor:
    """Binary cross-entropy of the pairs' cosine similarity against ``target`` (1 in sync, 0 off).

    With ``target`` 1 this is the paper's L_sync, the mean of -log cos(v, s). SyncNet's embeddings
    come after a ReLU, so their cosine lies in [0, 1] and is a valid probability (a negative cosine
    of other embeddings counts as 0). As in ``nn.BCELoss``, each log is floored at -100, so a
    perpendicular pair costs 100 rather than inf.
    """
    # Rounding can push the cosine of near-identical embeddings just past 1, which BCE rejects.
    similarity = F.cosine_similarity(audio_embedding, face_embedding, dim=1).clamp(0.0, 1.0)
    target = torch.as_tensor(target, dtype=similarity.dtype, device=similarity.device)
    return F.binary_cross_entropy(similarity, target.reshape(-1).expand_as(similarity))


def mouth_l1_loss(pred: torch.Tensor, gt: torch.Tensor, mouth: torch.Tensor) -> torch.Tensor:
    """The reconstruction loss over the mouth alone: mean absolute difference of frames (B, 3, T, H, W)
    over the pixels of the mouth masks (B, T, H, W) (:func:`opflowtalker.landmarks.mouth_masks`); 0 where
    no mask has any."""
    if pred.shape != gt.shape or mouth.shape != (pred.shape[0], *pred.shape[2:]):
        raise ValueError(f"frames {tuple(pred.shape)}, {tuple(gt.shape)} and mouth masks {tuple(mouth.shape)} "
                         "do not fit together")
    weight = mouth[:, None].to(pred.dtype)
    return ((pred - gt).abs() * weight).sum() / (3 * weight.sum()).clamp_min(1)


# --- Flow fields -------------------------------------------------------------------------------

def _sample(field: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``field`` (N, C, H, W) read at p + flow(p), bilinearly, and whether p + flow(p) lies in the image."""
    _, _, h, w = flow.shape
    target = pixel_grid(h, w, flow) + flow.permute(0, 2, 3, 1)
    tx, ty = target.unbind(-1)
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return sample(field, target, padding="border"), inside


def compose_flows(f_a: torch.Tensor, f_b: torch.Tensor, valid_a: torch.Tensor | None = None,
                  valid_b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The flow of two steps, f_a (frame s -> s+1) then f_b (s+1 -> s+2): f_a(p) + f_b(p + f_a(p)).

    Flows are (N, 2, H, W), masks (N, H, W). The result is valid where f_a is, where p + f_a(p) lies
    in the image, and where every pixel of f_b it interpolates from is valid.
    """
    if f_a.shape != f_b.shape or f_a.dim() != 4 or f_a.shape[1] != 2:
        raise ValueError(f"expected two flows (N, 2, H, W) of one shape, got {tuple(f_a.shape)} and {tuple(f_b.shape)}")
    ones = torch.ones_like(f_a[:, 0], dtype=torch.bool)
    valid_a = ones if valid_a is None else valid_a.bool()
    valid_b = ones if valid_b is None else valid_b.bool()
    sampled, inside = _sample(torch.cat([f_b, valid_b.unsqueeze(1).to(f_b.dtype)], dim=1), f_a)
    # Bilinear weights sum to one, so the sampled mask is 1 only if every contributing pixel is valid.
    valid = valid_a & inside & (sampled[:, 2] > 1 - 1e-4)
    return f_a + sampled[:, :2], valid


def interval_flows(flow: torch.Tensor, valid: torch.Tensor, interval: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flows (B, T-k, 2, H, W) from frame t to t+k, and their validity, composed from the T-1
    consecutive flows (B, T-1, 2, H, W) and masks (B, T-1, H, W)."""
    b, n, _, h, w = flow.shape
    pairs = n + 1 - interval
    if interval < 1 or pairs < 1:
        raise ValueError(f"a frame interval of {interval} needs windows of more than {interval} frames; "
                         f"these have {n + 1}")
    total = flow[:, :pairs].reshape(-1, 2, h, w)
    ok = valid[:, :pairs].reshape(-1, h, w).bool()
    for j in range(1, interval):
        total, ok = compose_flows(total, flow[:, j : j + pairs].reshape(-1, 2, h, w), ok,
                                  valid[:, j : j + pairs].reshape(-1, h, w))
    return total.reshape(b, pairs, 2, h, w), ok.reshape(b, pairs, h, w)


# --- OFS loss --------------------------------------------------------------------------------------

def freeze(flow_net: nn.Module) -> nn.Module:
    """The flow network in eval mode with its parameters out of autograd (in place; returned).

    Keep it outside the generator's module tree: a ``generator.train()`` would otherwise switch it
    back to training mode, where RAFT and FlowNet return their training outputs.
    """
    return flow_net.eval().requires_grad_(False)


# Table 3c: which region the OFS loss watches -> alpha of Eq. 7 (0: face only, 1: mouth only).
OFS_AREAS = {"face": 0.0, "mouth": 1.0, "face+mouth": OFS_ALPHA}


@dataclass(frozen=True)
class OFSSchedule:
    """alpha of Eq. 7 at each training step: the ``area``'s alpha (:data:`OFS_AREAS`), except that
    with both terms the face term runs alone (alpha = 0) before ``mouth_start_step``, as the paper
    brings its two terms in "at different stages of training". A mouth-only loss has no face term
    to start with, so its alpha is 1 from the first step."""

    mouth_start_step: int = 0
    area: str = "face+mouth"

    def __post_init__(self):
        if self.area not in OFS_AREAS:
            raise ValueError(f"the OFS area must be one of {', '.join(OFS_AREAS)}, got {self.area!r}")
        if self.mouth_start_step < 0:
            raise ValueError(f"mouth_start_step must be >= 0, got {self.mouth_start_step}")

    def alpha_at(self, step: int) -> float:
        if step >= self.mouth_start_step or self.area == "mouth":
            return OFS_AREAS[self.area]
        return 0.0

    __call__ = alpha_at


def _estimate(flow_net: nn.Module, image1: torch.Tensor, image2: torch.Tensor, flow_size: int | None,
              flow_kwargs: Mapping[str, Any]) -> torch.Tensor:
    """Flow (N, 2, H, W) in pixels through the network's weights held constant."""
    h, w = image1.shape[-2:]
    if flow_size is not None and (h, w) != (flow_size, flow_size):
        image1, image2 = (F.interpolate(x, size=(flow_size, flow_size), mode="bilinear", align_corners=False)
                          for x in (image1, image2))
    # Detached copies of the weights: the frames get gradients, the network gets none, whatever its
    # requires_grad flags say, and nothing about the module changes.
    weights = {name: p.detach() for name, p in flow_net.named_parameters()}
    out = torch.func.functional_call(flow_net, weights, (image1, image2), dict(flow_kwargs), strict=False)
    if isinstance(out, (list, tuple)):
        out = out[-1]  # RAFT's convention: the last of its iterates (or of (low, full)) is the final flow
    if not torch.is_tensor(out) or out.dim() != 4 or out.shape[1] != 2 or out.shape[0] != image1.shape[0]:
        raise ValueError(f"the flow network should give flow (N, 2, H, W); got {getattr(out, 'shape', type(out))}")
    if out.shape[-2:] != (h, w):
        sh, sw = out.shape[-2:]
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        out = out * out.new_tensor([w / sw, h / sh]).view(1, 2, 1, 1)
    return out


def _distance(pred: torch.Tensor, target: torch.Tensor, distance: str) -> torch.Tensor:
    diff = pred - target
    if distance == "l2":
        return diff.square().mean(dim=-3)
    if distance == "l1":
        return diff.abs().mean(dim=-3)
    return torch.linalg.vector_norm(diff, dim=-3)


def _pool(per_pixel: torch.Tensor, region: torch.Tensor, reduction: str) -> torch.Tensor:
    """Mean over each pair's region, then mean or max over the pairs of a window, then mean over the
    batch. Pairs whose region is empty (a mouth wholly invalid) are left out."""
    region = region.to(per_pixel.dtype)
    count = region.sum(dim=(-2, -1))
    per_pair = (per_pixel * region).sum(dim=(-2, -1)) / count.clamp_min(1.0)
    present = (count > 0).to(per_pixel.dtype)
    if reduction == "mean":
        per_window = (per_pair * present).sum(dim=1) / present.sum(dim=1).clamp_min(1.0)
    else:
        per_window = (per_pair * present).amax(dim=1)  # distances are >= 0, so absent pairs never win
    return per_window.mean()


def ofs_terms(frames: torch.Tensor, gt_flow: torch.Tensor, gt_valid: torch.Tensor, mouth: torch.Tensor,
              flow_net: nn.Module, *, interval: int = 1, distance: str = "l2", reduction: str = "mean",
              flow_size: int | None = None, flow_kwargs: Mapping[str, Any] | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The face and mouth terms (L_ofs-f, L_ofs-m) of Eq. 7; see :func:`ofs_loss` for the arguments."""
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; choose one of {', '.join(DISTANCES)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    if frames.dim() != 5 or frames.shape[1] != 3:
        raise ValueError(f"expected generated frames (B, 3, T, H, W), got {tuple(frames.shape)}")
    b, _, t, h, w = frames.shape
    if gt_flow.shape != (b, t - 1, 2, h, w):
        raise ValueError(f"expected ground-truth flow (B, T-1, 2, H, W) = {(b, t - 1, 2, h, w)}, got "
                         f"{tuple(gt_flow.shape)} (stored (T-1, H, W, 2) flow needs .permute(0, 3, 1, 2))")
    if gt_valid.shape != (b, t - 1, h, w) or mouth.shape != (b, t, h, w):
        raise ValueError(f"expected validity (B, T-1, H, W) = {(b, t - 1, h, w)} and mouth masks (B, T, H, W) = "
                         f"{(b, t, h, w)}, got {tuple(gt_valid.shape)} and {tuple(mouth.shape)}")
    if flow_net.training:
        raise ValueError("the OFS loss's flow network must be in eval mode (see opflowtalker.losses.freeze)")

    with torch.no_grad():
        target, valid = interval_flows(gt_flow.to(frames.dtype), gt_valid, interval)
    pairs = target.shape[1]

    def pair_frames(start: int) -> torch.Tensor:
        return frames[:, :, start : start + pairs].transpose(1, 2).reshape(b * pairs, 3, h, w) * 255.0

    pred = _estimate(flow_net, pair_frames(0), pair_frames(interval), flow_size, flow_kwargs or {})
    if frames.requires_grad and torch.is_grad_enabled() and not pred.requires_grad:
        raise ValueError("the flow network passes no gradient to the frames (a classical estimator?); "
                         "the OFS loss needs a differentiable one")
    per_pixel = _distance(pred.reshape(b, pairs, 2, h, w), target, distance)
    # A pair's mouth is where it starts: the flow at p describes the point at p in frame t.
    mouth_region = valid & mouth[:, :pairs].bool()
    return _pool(per_pixel, valid, reduction), _pool(per_pixel, mouth_region, reduction)


def ofs_loss(frames: torch.Tensor, gt_flow: torch.Tensor, gt_valid: torch.Tensor, mouth: torch.Tensor,
             flow_net: nn.Module, *, alpha: float = OFS_ALPHA, interval: int = 1, distance: str = "l2",
             reduction: str = "mean", flow_size: int | None = None,
             flow_kwargs: Mapping[str, Any] | None = None) -> torch.Tensor:
    """The Optical Flow Synchronization loss, Eq. 7: (1 - alpha) L_ofs-f + alpha L_ofs-m.

    frames: generated window (B, 3, T, H, W) in [0, 1] (scaled to 0..255 for the network).
    gt_flow, gt_valid: stored consecutive ground-truth flows (B, T-1, 2, H, W) and masks (B, T-1, H, W).
    mouth: mouth masks (B, T, H, W) of the ground-truth frames (:func:`opflowtalker.landmarks.mouth_masks`).
    flow_net: a differentiable flow network in eval mode, ``flow_net(image1, image2, **flow_kwargs)``
    on (N, 3, H, W) images in 0..255 giving (N, 2, H, W) flow in pixels, or a sequence ending in it.
    Gradients reach the frames, never the network's weights.
    alpha: the mouth term's weight (0.1 in the paper; :class:`OFSSchedule` gives it per step).
    interval: k, comparing frames t and t+k (Table 3b); the window needs more than k frames.
    distance: "l2" (MSE of the flow components, the paper's default), "l1" (MAE) or "epe".
    reduction: how a window's pairs are pooled, "mean" (Eq. 7's 1/N sum) or "max" (Table 7).
    flow_size: if given, the pair is resized to this side for the network and the flow resized back
    (RAFT and GMA need at least 128 px; at 96 px their coarsest correlation level is 1x1).
    """
    face, mouth_term = ofs_terms(frames, gt_flow, gt_valid, mouth, flow_net, interval=interval, distance=distance,
                                 reduction=reduction, flow_size=flow_size, flow_kwargs=flow_kwargs)
    return (1.0 - alpha) * face + alpha * mouth_term


# --- what the OFS loss can tell apart ---------------------------------------------------------------

WRONG_MOTIONS = ("one frame late", "mouth frozen", "played backwards")


def busiest_window(flow: np.ndarray, length: int = 6) -> int:
    """The first frame of the ``length``-frame window, one frame in from either end, whose first
    pair moves most (mean flow magnitude of the stored (T-1, H, W, 2) flow): where the lips work."""
    magnitude = np.linalg.norm(np.asarray(flow, dtype=np.float32), axis=-1).mean(axis=(1, 2))
    if len(magnitude) < length + 2:
        raise ValueError(f"a clip of {len(magnitude) + 1} frames has no {length}-frame window one frame in")
    return 1 + int(np.argmax(magnitude[1:-length]))


def motion_candidates(clip: Mapping[str, np.ndarray], start: int, length: int = 6, dilate: int = 3
                      ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """The real window of a prepared clip (its ``faces``, ``flow``, ``valid``, ``landmarks``) from
    frame ``start``, and the same window with the wrong motions of :data:`WRONG_MOTIONS`: one frame
    late, the lower half frozen at its first frame, played backwards. Returns (windows
    (1, 3, T, H, W) in [0, 1] by name, flow (1, T-1, 2, H, W), validity, mouth masks (1, T, H, W))."""
    faces = np.asarray(clip["faces"])
    if start < 1 or start + length > len(faces):
        raise ValueError(f"a window of {length} frames from {start} (and one before) does not fit {len(faces)} frames")
    size = faces.shape[1]

    def window(first: int) -> torch.Tensor:
        return torch.from_numpy(faces[first:first + length]).permute(3, 0, 1, 2)[None].float() / 255

    real = window(start)
    frozen = real.clone()
    frozen[:, :, :, size // 2:] = real[:, :, :1, size // 2:]
    windows = {"real frames": real, "one frame late": window(start - 1), "mouth frozen": frozen,
               "played backwards": real.flip(2)}
    flow = torch.from_numpy(np.asarray(clip["flow"][start:start + length - 1], np.float32)).permute(0, 3, 1, 2)[None]
    valid = torch.from_numpy(np.asarray(clip["valid"][start:start + length - 1]))[None]
    mouth = torch.from_numpy(mouth_masks(clip["landmarks"][start:start + length], size, dilate=dilate))[None]
    return windows, flow, valid, mouth


@torch.no_grad()
def ofs_of_motions(flow_net: nn.Module, clip: Mapping[str, np.ndarray], *, alpha: float = OFS_ALPHA,
                   flow_size: int | None = None, flow_kwargs: Mapping[str, Any] | None = None,
                   length: int = 6, dilate: int = 3) -> dict[str, float]:
    """Eq. 7 on the real frames of a clip's busiest window and on its wrong motions, by name.

    A flow network teaches motion only if it scores the real frames lowest; run with the settings a
    generator trains with (``flow_size``, iterations in ``flow_kwargs``) it says whether cheaper
    settings still tell right from wrong motion."""
    windows, flow, valid, mouth = motion_candidates(clip, busiest_window(clip["flow"], length), length, dilate)
    return {name: float(ofs_loss(frames, flow, valid, mouth, flow_net, alpha=alpha, flow_size=flow_size,
                                 flow_kwargs=flow_kwargs))
            for name, frames in windows.items()}
