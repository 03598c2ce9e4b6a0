"""Convolution blocks shared by the Wav2Lip-family networks.

Their parameter names (``conv_block.0`` for the convolution, ``conv_block.1`` for the batch norm)
are those of Wav2Lip's released checkpoints, so that SyncNet, the Wav2Lip generator and the parts
of OpFlowTalker built from them load the public weights key for key.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["Conv2d", "NoNormConv2d", "Conv2dTranspose"]


class Conv2d(nn.Module):
    """Convolution, batch norm, optional identity shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class NoNormConv2d(nn.Module):
    """Convolution and leaky ReLU without normalisation (Wav2Lip's visual quality discriminator)."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding))
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


class Conv2dTranspose(nn.Module):
    """Transposed convolution (upsampling), batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding, output_padding=0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))
