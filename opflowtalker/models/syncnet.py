"""The lip-sync expert: Wav2Lip's ``SyncNet_color``.

The expert embeds a 0.2 s mel window and the lower halves of the five frames it covers into the
same 512-d space; in-sync pairs point the same way. It is trained once and then frozen, so it
must be the very network of Wav2Lip's public ``lipsync_expert.pth``: the module tree below
reproduces ``SyncNet_color`` layer for layer, including the positions inside each
``nn.Sequential`` (they are part of the state-dict keys).

The paper's sync loss (Eq. 5) on its two embeddings is :func:`opflowtalker.losses.sync_loss`.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .conv import Conv2d

__all__ = ["SyncNet", "lower_half_window", "SYNC_FRAMES"]

# Five video frames (0.2 s at 25 fps) per sample, matching the 16-step mel window.
SYNC_FRAMES = 5


def residual_stage(cin: int, cout: int, kernel_size, stride, padding, n_residual: int) -> list[nn.Module]:
    """A (possibly strided) convolution that changes the width, then 3x3 identity-shortcut blocks.

    Every encoder in the Wav2Lip family is a chain of such stages; building them in one place
    keeps the flat ``nn.Sequential`` indices (and so the checkpoint keys) in the reference order.
    """
    blocks: list[nn.Module] = [Conv2d(cin, cout, kernel_size, stride, padding)]
    blocks += [Conv2d(cout, cout, 3, 1, 1, residual=True) for _ in range(n_residual)]
    return blocks


def _scaled(width: float):
    return lambda n: max(1, round(n * width))


def syncnet_audio_encoder(width: float = 1.0) -> nn.Sequential:
    """80x16 mel window -> 512x1x1 (at width 1): frequency is reduced 81-fold, time 16-fold."""
    c = _scaled(width)
    return nn.Sequential(
        *residual_stage(1, c(32), 3, 1, 1, n_residual=2),
        *residual_stage(c(32), c(64), 3, (3, 1), 1, n_residual=2),
        *residual_stage(c(64), c(128), 3, 3, 1, n_residual=2),
        *residual_stage(c(128), c(256), 3, (3, 2), 1, n_residual=2),
        Conv2d(c(256), c(512), 3, 1, 0),
        Conv2d(c(512), c(512), 1, 1, 0),
    )


def syncnet_face_encoder(width: float = 1.0) -> nn.Sequential:
    """15x48x96 (five RGB lower halves) -> 512x1x1 (at width 1)."""
    c = _scaled(width)
    return nn.Sequential(
        Conv2d(3 * SYNC_FRAMES, c(32), 7, 1, 3),
        # The (1, 2) stride squares the 48x96 half-face up into 46x47.
        *residual_stage(c(32), c(64), 5, (1, 2), 1, n_residual=2),
        *residual_stage(c(64), c(128), 3, 2, 1, n_residual=3),
        *residual_stage(c(128), c(256), 3, 2, 1, n_residual=2),
        *residual_stage(c(256), c(512), 3, 2, 1, n_residual=2),
        Conv2d(c(512), c(512), 3, 2, 1),
        Conv2d(c(512), c(512), 3, 1, 0),
        Conv2d(c(512), c(512), 1, 1, 0),
    )


def _flat_embedding(features: torch.Tensor, name: str) -> torch.Tensor:
    # Any input size other than the trained one leaves a spatial map whose flattening would
    # silently give a longer, meaningless "embedding".
    if features.shape[2:] != (1, 1):
        raise ValueError(f"the {name} encoder produced a {tuple(features.shape[2:])} map instead of 1x1; "
                         "SyncNet takes (B,1,80,16) mel windows and (B,15,48,96) lower-half faces")
    return F.normalize(features.flatten(1), p=2, dim=1)


class SyncNet(nn.Module):
    """Wav2Lip's lip-sync expert (``SyncNet_color``, 16,435,072 parameters).

    ``width`` scales the channel counts (1.0 is the published layout, whose checkpoint loads key for
    key); a narrower expert is what trains in minutes on a CPU.
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.config = {"width": float(width)}
        self.face_encoder = syncnet_face_encoder(width)
        self.audio_encoder = syncnet_audio_encoder(width)

    def forward(self, audio: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``audio`` (B,1,80,16) mel windows and ``faces`` (B,15,48,96) from
        :func:`lower_half_window` -> (audio embedding, face embedding), each (B,512) of unit norm."""
        audio_embedding = _flat_embedding(self.audio_encoder(audio), "audio")
        face_embedding = _flat_embedding(self.face_encoder(faces), "face")
        return audio_embedding, face_embedding


def lower_half_window(frames: torch.Tensor, layout: str | None = None) -> torch.Tensor:
    """Stack the lower halves of a window of faces on the channel axis, as SyncNet expects.

    ``frames`` is (B,T,3,H,W) (``layout="BTCHW"``) or (B,3,T,H,W) (``"BCTHW"``, the generator's
    output layout); the layout is inferred when only one axis has size 3. The result is
    (B,3T,H//2,W) with the channels frame by frame (frame 0's three channels first), rows H//2 to
    H-1. Wav2Lip feeds its expert BGR frames in [0,1], so the channel order inside each frame
    must be whatever the expert was trained on.
    """
    if frames.ndim != 5:
        raise ValueError(f"expected a window of frames (B,T,3,H,W) or (B,3,T,H,W), got shape {tuple(frames.shape)}")
    if layout is None:
        if frames.shape[1] == 3 and frames.shape[2] != 3:
            layout = "BCTHW"
        elif frames.shape[2] == 3 and frames.shape[1] != 3:
            layout = "BTCHW"
        else:
            raise ValueError(f"cannot tell time from channels in shape {tuple(frames.shape)}; pass layout=")
    if layout == "BCTHW":
        frames = frames.transpose(1, 2)
    elif layout != "BTCHW":
        raise ValueError(f"layout must be 'BTCHW' or 'BCTHW', not {layout!r}")
    b, t, c, h, w = frames.shape
    return frames[..., h // 2 :, :].reshape(b, t * c, h - h // 2, w)
