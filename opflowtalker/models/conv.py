"""Convolution blocks shared by the Wav2Lip-family networks.

Their parameter names (``conv_block.0`` for the convolution, ``conv_block.1`` for the batch norm)
are those of Wav2Lip's released checkpoints, so that SyncNet, the Wav2Lip generator and the parts
of OpFlowTalker built from them load the public weights key for key.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["Conv2d", "NoNormConv2d", "Conv2dTranspose", "fold_batchnorm"]


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


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` for inference with every batch norm of its blocks folded into the convolution before it.

    In eval mode a batch norm is a per-channel affine map, so it can be applied to the convolution's
    weights and bias once instead of to every output: the same function (to float rounding) with one
    pass over the activations less. The model must be in eval mode; its blocks are changed in place
    (the batch norm becomes an identity) and it is returned, so fold a copy, not a model you train.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (a training batch norm uses batch statistics)")
    for block in model.modules():
        if not isinstance(block, (Conv2d, Conv2dTranspose)):
            continue
        conv, bn = block.conv_block[0], block.conv_block[1]
        if not isinstance(bn, nn.BatchNorm2d):
            continue  # folded already
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)  # output channels
        conv.weight.mul_(scale.reshape(shape))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
        block.conv_block[1] = nn.Identity()
    return model
