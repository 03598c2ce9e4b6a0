"""FlowNet2-S: the FlowNet-family estimator of Table 3a's "FlowNet2" row.

The paper compares FlowNet2, RAFT and GMA as the frozen network inside the OFS loss. The full
FlowNet2 stacks FlowNetC, two FlowNetS, FlowNetSD and a fusion network (162.5M parameters) and
needs custom CUDA layers (correlation, resampling, channel norm), so it neither runs here nor
trains on two CPU cores. We use its smallest member, **FlowNet2-S**: FlowNetS (Dosovitskiy et al.
2015) as retrained in FlowNet 2.0 (Ilg et al. 2017), which

* is plain convolutions, so it runs on the CPU with nothing compiled;
* is the cheapest member per pair: its first convolution already has stride 2, where FlowNet2-SD
  spends a 3x3 convolution at full resolution and another at half resolution (45.4M parameters,
  about 1.5x the multiply-adds at 128 px);
* has a public checkpoint, ``FlowNet2-S_checkpoint.pth.tar``, which loads into this module strictly.

The module tree and parameter names are those of NVIDIA/flownet2-pytorch's ``FlowNet2S`` (its
``FlowNetS`` with six input channels and no batch norm): 38,676,506 parameters by the
reference's layer shapes (the comment in its ``FlowNetS.py``, inherited from FlowNetPytorch, says
38,676,504; the two missing parameters match no layer). ``width`` narrows every layer
(the names stay) to give a network that trains on a laptop CPU; only ``width=1`` loads the public
checkpoint.

Conventions follow the reference. The two images are normalised together: each channel minus
its mean over both images, divided by ``rgb_max``. The network predicts flow at 1/4, 1/8, ...,
1/64 of the input size in units of ``div_flow`` pixels (the training target is the flow divided by
20 and average-pooled to each size); at inference the finest prediction is multiplied by
``div_flow`` and upsampled bilinearly by 4, giving flow in pixels.
"""
from __future__ import annotations

import math
import os

import torch
from torch import nn
from torch.nn import functional as F

from ..models.checkpoints import load_reference_state_dict, load_state_dict_strict

__all__ = ["FlowNet2S", "load_flownet_checkpoint", "REFERENCE_PARAMETERS"]

# FlowNet2-S at width 1, counted from the reference's layer shapes.
REFERENCE_PARAMETERS = 38_676_506
# Six stride-2 stages: sizes must divide by 2**6 for the decoder's skips to line up.
STRIDE = 64


def conv(batch_norm: bool, cin: int, cout: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Convolution + (batch norm) + LeakyReLU(0.1); the reference's ``submodules.conv``."""
    layers = [nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.1, inplace=True))
    return nn.Sequential(*layers)


def deconv(cin: int, cout: int) -> nn.Sequential:
    """x2 transposed convolution + LeakyReLU(0.1); the reference's ``submodules.deconv``."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=True), nn.LeakyReLU(0.1, inplace=True))


def predict_flow(cin: int) -> nn.Conv2d:
    return nn.Conv2d(cin, 2, 3, 1, 1, bias=True)


def upsample_flow() -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False)


class FlowNet2S(nn.Module):
    """``model(image1, image2)``: images (B, 3, H, W) in 0..255 -> flow (B, 2, H, W) in pixels, image1 to image2.

    In training mode the result is instead the reference's tuple of raw predictions
    ``(flow2, flow3, flow4, flow5, flow6)`` at 1/4 ... 1/64 of the input size, in units of
    ``div_flow`` pixels, for :func:`opflowtalker.flow.epe.multiscale_epe_loss`; training inputs must
    then have sides that are multiples of 64. At inference any size works: the pair is resized
    bilinearly up to the next multiple of 64 and the flow resized back and rescaled to pixels of
    the input (resizing rather than padding keeps the pair's mean, which the normalisation uses,
    and the network's 64-pixel receptive grid, on the image content).
    """

    def __init__(self, width: float = 1.0, batch_norm: bool = False, div_flow: float = 20.0, rgb_max: float = 255.0):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, not {width}")
        self.width, self.batch_norm, self.div_flow, self.rgb_max = width, batch_norm, div_flow, rgb_max
        c1, c2, c3, c4, c6 = (max(1, round(n * width)) for n in (64, 128, 256, 512, 1024))
        d5, d4, d3, d2 = (max(1, round(n * width)) for n in (512, 256, 128, 64))
        bn = batch_norm

        self.conv1 = conv(bn, 6, c1, kernel_size=7, stride=2)
        self.conv2 = conv(bn, c1, c2, kernel_size=5, stride=2)
        self.conv3 = conv(bn, c2, c3, kernel_size=5, stride=2)
        self.conv3_1 = conv(bn, c3, c3)
        self.conv4 = conv(bn, c3, c4, stride=2)
        self.conv4_1 = conv(bn, c4, c4)
        self.conv5 = conv(bn, c4, c4, stride=2)
        self.conv5_1 = conv(bn, c4, c4)
        self.conv6 = conv(bn, c4, c6, stride=2)
        self.conv6_1 = conv(bn, c6, c6)

        # Each decoder level sees the encoder's skip, the upsampled features and the upsampled flow.
        in5, in4, in3, in2 = c4 + d5 + 2, c4 + d4 + 2, c3 + d3 + 2, c2 + d2 + 2
        self.deconv5 = deconv(c6, d5)
        self.deconv4 = deconv(in5, d4)
        self.deconv3 = deconv(in4, d3)
        self.deconv2 = deconv(in3, d2)

        self.predict_flow6 = predict_flow(c6)
        self.predict_flow5 = predict_flow(in5)
        self.predict_flow4 = predict_flow(in4)
        self.predict_flow3 = predict_flow(in3)
        self.predict_flow2 = predict_flow(in2)

        self.upsampled_flow6_to_5 = upsample_flow()
        self.upsampled_flow5_to_4 = upsample_flow()
        self.upsampled_flow4_to_3 = upsample_flow()
        self.upsampled_flow3_to_2 = upsample_flow()

        # The reference's initialisation (Xavier weights, biases uniform in [0, 1)), kept so that
        # training from scratch starts where FlowNet 2.0's did.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.uniform_(m.bias)

    def normalize(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        """(B, 6, H, W): both images minus their joint per-channel mean, over ``rgb_max``."""
        mean = 0.5 * (image1.mean(dim=(2, 3), keepdim=True) + image2.mean(dim=(2, 3), keepdim=True))
        return torch.cat([(image1 - mean) / self.rgb_max, (image2 - mean) / self.rgb_max], dim=1)

    def predictions(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The raw multi-scale predictions (flow2, ..., flow6) for normalised input ``x`` (B, 6, H, W)."""
        out_conv2 = self.conv2(self.conv1(x))
        out_conv3 = self.conv3_1(self.conv3(out_conv2))
        out_conv4 = self.conv4_1(self.conv4(out_conv3))
        out_conv5 = self.conv5_1(self.conv5(out_conv4))
        out_conv6 = self.conv6_1(self.conv6(out_conv5))

        flow6 = self.predict_flow6(out_conv6)
        concat5 = torch.cat([out_conv5, self.deconv5(out_conv6), self.upsampled_flow6_to_5(flow6)], dim=1)
        flow5 = self.predict_flow5(concat5)
        concat4 = torch.cat([out_conv4, self.deconv4(concat5), self.upsampled_flow5_to_4(flow5)], dim=1)
        flow4 = self.predict_flow4(concat4)
        concat3 = torch.cat([out_conv3, self.deconv3(concat4), self.upsampled_flow4_to_3(flow4)], dim=1)
        flow3 = self.predict_flow3(concat3)
        concat2 = torch.cat([out_conv2, self.deconv2(concat3), self.upsampled_flow3_to_2(flow3)], dim=1)
        flow2 = self.predict_flow2(concat2)
        return flow2, flow3, flow4, flow5, flow6

    def forward(self, image1: torch.Tensor, image2: torch.Tensor):
        if image1.shape != image2.shape or image1.dim() != 4 or image1.shape[1] != 3:
            raise ValueError(f"expected two images (B, 3, H, W) of one size, got {tuple(image1.shape)} "
                             f"and {tuple(image2.shape)}")
        h, w = image1.shape[-2:]
        if self.training:
            if h % STRIDE or w % STRIDE:
                raise ValueError(f"training inputs must have sides that are multiples of {STRIDE}, got {h}x{w}")
            return self.predictions(self.normalize(image1, image2))

        hp, wp = (max(STRIDE, math.ceil(s / STRIDE) * STRIDE) for s in (h, w))
        x = self.normalize(image1, image2)
        if (hp, wp) != (h, w):
            x = F.interpolate(x, size=(hp, wp), mode="bilinear", align_corners=False)
        flow = F.interpolate(self.predictions(x)[0] * self.div_flow, scale_factor=4, mode="bilinear",
                             align_corners=False)
        if (hp, wp) != (h, w):
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            flow = flow * flow.new_tensor([w / wp, h / hp]).view(1, 2, 1, 1)
        return flow


def load_flownet_checkpoint(path: str | os.PathLike) -> FlowNet2S:
    """FlowNet2-S in eval mode from a flownet2-pytorch checkpoint (``FlowNet2-S_checkpoint.pth.tar``,
    a ``{'state_dict': ...}`` pickle read with weights-only unpickling).

    A file that is not such a checkpoint raises
    :class:`~opflowtalker.models.checkpoints.CheckpointError` (a ``ValueError``) naming what is wrong.
    """
    return load_state_dict_strict(FlowNet2S(), load_reference_state_dict(path), "FlowNet2-S", path)
