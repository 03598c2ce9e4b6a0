"""The recurrent update operator (RAFT, section 3.3) and GMA's aggregated variant.

Each iteration encodes the current flow and the correlation features around it (motion encoder),
feeds them with the context features to a convolutional GRU, and reads a flow increment (flow
head) and the convex upsampling weights (mask head) off the hidden state. GMA adds the motion
features aggregated over the whole frame by its attention (``Aggregate``) to the GRU's input.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FlowHead", "ConvGRU", "SepConvGRU", "SmallMotionEncoder", "BasicMotionEncoder",
           "SmallUpdateBlock", "BasicUpdateBlock", "Aggregate", "GMAUpdateBlock"]


def correlation_planes(corr_levels: int, corr_radius: int) -> int:
    return corr_levels * (2 * corr_radius + 1) ** 2


class FlowHead(nn.Module):
    def __init__(self, input_dim: int = 128, hidden_dim: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(input_dim, hidden_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_dim, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(x)))


def _gru_step(h: torch.Tensor, x: torch.Tensor, convz: nn.Conv2d, convr: nn.Conv2d, convq: nn.Conv2d) -> torch.Tensor:
    hx = torch.cat([h, x], dim=1)
    z = torch.sigmoid(convz(hx))
    r = torch.sigmoid(convr(hx))
    q = torch.tanh(convq(torch.cat([r * h, x], dim=1)))
    return (1 - z) * h + z * q


class ConvGRU(nn.Module):
    """A GRU whose gates are 3x3 convolutions over the hidden state and the input."""

    def __init__(self, hidden_dim: int = 128, input_dim: int = 192 + 128):
        super().__init__()
        self.convz = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convr = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convq = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _gru_step(h, x, self.convz, self.convr, self.convq)


class SepConvGRU(nn.Module):
    """Two GRU steps, a horizontal (1x5) then a vertical (5x1) one: a larger receptive field than
    one 3x3 step for little more computation."""

    def __init__(self, hidden_dim: int = 128, input_dim: int = 192 + 128):
        super().__init__()
        channels = hidden_dim + input_dim
        self.convz1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convr1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convq1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convz2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))
        self.convr2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))
        self.convq2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = _gru_step(h, x, self.convz1, self.convr1, self.convq1)
        return _gru_step(h, x, self.convz2, self.convr2, self.convq2)


class SmallMotionEncoder(nn.Module):
    """Correlation and flow features for RAFT-small: 80 channels plus the flow itself (82)."""

    def __init__(self, corr_levels: int = 4, corr_radius: int = 3):
        super().__init__()
        self.convc1 = nn.Conv2d(correlation_planes(corr_levels, corr_radius), 96, 1, padding=0)
        self.convf1 = nn.Conv2d(2, 64, 7, padding=3)
        self.convf2 = nn.Conv2d(64, 32, 3, padding=1)
        self.conv = nn.Conv2d(128, 80, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc1(corr))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat([cor, flo], dim=1)))
        return torch.cat([out, flow], dim=1)


class BasicMotionEncoder(nn.Module):
    """Correlation and flow features: 126 channels plus the flow itself (128)."""

    def __init__(self, corr_levels: int = 4, corr_radius: int = 4):
        super().__init__()
        self.convc1 = nn.Conv2d(correlation_planes(corr_levels, corr_radius), 256, 1, padding=0)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(64 + 192, 128 - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(corr))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat([cor, flo], dim=1)))
        return torch.cat([out, flow], dim=1)


def _mask_head(hidden_dim: int) -> nn.Sequential:
    """Convex-upsampling weights: 9 neighbours for each of the 8x8 pixels of a coarse cell."""
    return nn.Sequential(nn.Conv2d(hidden_dim, 256, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(256, 64 * 9, 1, padding=0))


# The mask logits are scaled down so that their gradients do not swamp the flow head's.
MASK_SCALE = 0.25


class SmallUpdateBlock(nn.Module):
    """RAFT-small's update: a 3x3 ConvGRU and no mask head (its flow is upsampled bilinearly)."""

    def __init__(self, hidden_dim: int = 96, corr_levels: int = 4, corr_radius: int = 3):
        super().__init__()
        self.encoder = SmallMotionEncoder(corr_levels, corr_radius)
        self.gru = ConvGRU(hidden_dim=hidden_dim, input_dim=82 + 64)
        self.flow_head = FlowHead(hidden_dim, hidden_dim=128)

    def forward(self, net, inp, corr, flow):
        """(hidden state, None, flow increment)."""
        motion = self.encoder(flow, corr)
        net = self.gru(net, torch.cat([inp, motion], dim=1))
        return net, None, self.flow_head(net)


class BasicUpdateBlock(nn.Module):
    """RAFT's update: a separable ConvGRU, a flow head and a mask head."""

    def __init__(self, hidden_dim: int = 128, corr_levels: int = 4, corr_radius: int = 4):
        super().__init__()
        self.encoder = BasicMotionEncoder(corr_levels, corr_radius)
        self.gru = SepConvGRU(hidden_dim=hidden_dim, input_dim=128 + hidden_dim)
        self.flow_head = FlowHead(hidden_dim, hidden_dim=256)
        self.mask = _mask_head(hidden_dim)

    def forward(self, net, inp, corr, flow):
        """(hidden state, upsampling mask logits, flow increment)."""
        motion = self.encoder(flow, corr)
        net = self.gru(net, torch.cat([inp, motion], dim=1))
        return net, MASK_SCALE * self.mask(net), self.flow_head(net)


class Aggregate(nn.Module):
    """Global motion aggregation: the motion features of all positions, weighted by
    the attention computed once from the context features, added back with a learnt scale
    ``gamma`` that starts at zero, so training begins from plain RAFT."""

    def __init__(self, dim: int = 128, heads: int = 1, dim_head: int = 128):
        super().__init__()
        self.heads = heads
        inner_dim = heads * dim_head
        self.to_v = nn.Conv2d(dim, inner_dim, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.project = nn.Conv2d(inner_dim, dim, 1, bias=False) if dim != inner_dim else None

    def forward(self, attention: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
        """``attention`` (B, heads, HW, HW) rows summing to one; ``fmap`` (B, dim, H, W)."""
        b, _, h, w = fmap.shape
        v = self.to_v(fmap).view(b, self.heads, -1, h * w).transpose(-2, -1)  # (b, heads, HW, d)
        out = torch.matmul(attention, v).transpose(-2, -1).reshape(b, -1, h, w)
        if self.project is not None:
            out = self.project(out)
        return fmap + self.gamma * out


class GMAUpdateBlock(nn.Module):
    """RAFT's update with the globally aggregated motion features as a further GRU input."""

    def __init__(self, hidden_dim: int = 128, heads: int = 1, corr_levels: int = 4, corr_radius: int = 4):
        super().__init__()
        self.encoder = BasicMotionEncoder(corr_levels, corr_radius)
        self.gru = SepConvGRU(hidden_dim=hidden_dim, input_dim=128 + hidden_dim + hidden_dim)
        self.flow_head = FlowHead(hidden_dim, hidden_dim=256)
        self.mask = _mask_head(hidden_dim)
        self.aggregator = Aggregate(dim=128, dim_head=128, heads=heads)

    def forward(self, net, inp, corr, flow, attention):
        """(hidden state, upsampling mask logits, flow increment)."""
        motion = self.encoder(flow, corr)
        motion_global = self.aggregator(attention, motion)
        net = self.gru(net, torch.cat([inp, motion, motion_global], dim=1))
        return net, MASK_SCALE * self.mask(net), self.flow_head(net)
