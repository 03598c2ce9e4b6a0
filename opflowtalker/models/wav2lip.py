"""The Wav2Lip generator, the baseline OpFlowTalker builds on.

A U-Net whose bottleneck is the audio: the face encoder takes the masked target frame and a
reference frame (6 channels, 96x96) down to 1x1 in seven stages, the audio encoder takes the
80x16 mel window to a 512-d vector, and the decoder upsamples that vector back to 96x96,
concatenating the matching face-encoder features at every scale. The module tree reproduces
Wav2Lip's ``Wav2Lip`` class layer for layer so that its public ``wav2lip.pth`` loads key for key.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .conv import Conv2d, Conv2dTranspose
from .generator import GeneratorOutput
from .syncnet import residual_stage

__all__ = ["Wav2Lip", "Wav2LipConfig"]


def _scaled(width: float):
    return lambda n: max(1, round(n * width))


def wav2lip_face_encoder(width: float = 1.0) -> nn.ModuleList:
    """6x96x96 -> features at 96, 48, 24, 12, 6, 3 and 1 pixels (16 to 512 channels at width 1)."""
    c = _scaled(width)
    return nn.ModuleList([
        nn.Sequential(Conv2d(6, c(16), 7, 1, 3)),
        nn.Sequential(*residual_stage(c(16), c(32), 3, 2, 1, n_residual=2)),
        nn.Sequential(*residual_stage(c(32), c(64), 3, 2, 1, n_residual=3)),
        nn.Sequential(*residual_stage(c(64), c(128), 3, 2, 1, n_residual=2)),
        nn.Sequential(*residual_stage(c(128), c(256), 3, 2, 1, n_residual=2)),
        nn.Sequential(*residual_stage(c(256), c(512), 3, 2, 1, n_residual=1)),
        nn.Sequential(Conv2d(c(512), c(512), 3, 1, 0), Conv2d(c(512), c(512), 1, 1, 0)),
    ])


def wav2lip_audio_encoder(width: float = 1.0) -> nn.Sequential:
    """80x16 mel window -> 512x1x1 (SyncNet's audio encoder with one residual block fewer)."""
    c = _scaled(width)
    return nn.Sequential(
        *residual_stage(1, c(32), 3, 1, 1, n_residual=2),
        *residual_stage(c(32), c(64), 3, (3, 1), 1, n_residual=2),
        *residual_stage(c(64), c(128), 3, 3, 1, n_residual=2),
        *residual_stage(c(128), c(256), 3, (3, 2), 1, n_residual=1),
        Conv2d(c(256), c(512), 3, 1, 0),
        Conv2d(c(512), c(512), 1, 1, 0),
    )


def upsampling_stage(cin: int, cout: int, stride: int, padding: int, output_padding: int,
                     n_residual: int) -> nn.Sequential:
    """A 3x3 transposed convolution, then 3x3 identity-shortcut blocks at the new scale."""
    blocks = [Conv2dTranspose(cin, cout, 3, stride, padding, output_padding)]
    blocks += [Conv2d(cout, cout, 3, 1, 1, residual=True) for _ in range(n_residual)]
    return nn.Sequential(*blocks)


def wav2lip_face_decoder(width: float = 1.0) -> nn.ModuleList:
    """Audio vector -> 64x96x96; each stage's input is the previous output concatenated with the
    face-encoder features of the same scale, hence the odd input widths (1024 = 512 + 512, ...)."""
    c = _scaled(width)
    return nn.ModuleList([
        nn.Sequential(Conv2d(c(512), c(512), 1, 1, 0)),
        upsampling_stage(c(512) + c(512), c(512), 1, 0, 0, n_residual=1),  # 1 -> 3
        upsampling_stage(c(512) + c(512), c(512), 2, 1, 1, n_residual=2),  # 3 -> 6
        upsampling_stage(c(512) + c(256), c(384), 2, 1, 1, n_residual=2),  # 6 -> 12
        upsampling_stage(c(384) + c(128), c(256), 2, 1, 1, n_residual=2),  # 12 -> 24
        upsampling_stage(c(256) + c(64), c(128), 2, 1, 1, n_residual=2),  # 24 -> 48
        upsampling_stage(c(128) + c(32), c(64), 2, 1, 1, n_residual=2),  # 48 -> 96
    ])


@dataclass(frozen=True)
class Wav2LipConfig:
    width: float = 1.0


class Wav2Lip(nn.Module):
    """Wav2Lip's generator (36,298,035 parameters): mel window + masked/reference faces -> face.

    ``width`` scales every channel count (1.0 is the published model, whose checkpoint loads key
    for key); a narrower one is the baseline trained with OpFlowTalker's CPU budget.
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.config = Wav2LipConfig(float(width))
        c = _scaled(width)
        self.face_encoder_blocks = wav2lip_face_encoder(width)
        self.audio_encoder = wav2lip_audio_encoder(width)
        self.face_decoder_blocks = wav2lip_face_decoder(width)
        self.output_block = nn.Sequential(Conv2d(c(64) + c(16), c(32), 3, 1, 1), nn.Conv2d(c(32), 3, 1, 1, 0),
                                          nn.Sigmoid())

    def forward(self, audio: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Single frames: ``audio`` (B,1,80,16), ``faces`` (B,6,96,96) -> (B,3,96,96).

        Windows: ``audio`` (B,T,1,80,16), ``faces`` (B,6,T,96,96) -> (B,3,T,96,96); the frames are
        generated independently (folded into the batch), as in Wav2Lip. ``faces`` holds the target
        frame with its lower half blanked, then a reference frame of the same person. Values in [0,1].
        """
        windowed = faces.ndim == 5
        if windowed:
            batch, steps = faces.shape[0], faces.shape[2]
            audio = audio.transpose(0, 1).reshape(batch * steps, *audio.shape[2:])
            faces = faces.permute(2, 0, 1, 3, 4).reshape(batch * steps, faces.shape[1], *faces.shape[3:])

        skips = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)

        x = self.audio_encoder(audio)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        x = self.output_block(x)

        if windowed:
            x = x.reshape(steps, batch, *x.shape[1:]).permute(1, 2, 0, 3, 4).contiguous()
        return x

    # The generator interface (models/generator.py). Wav2Lip sees five frames at a time through its
    # expert (syncnet_T) and generates 96-px faces.
    window = 5
    image_size = 96

    @staticmethod
    def output(frames: torch.Tensor) -> GeneratorOutput:
        return GeneratorOutput(frames, frames.new_zeros(()), None)

    def generate(self, audio: torch.Tensor, faces: torch.Tensor) -> GeneratorOutput:
        return self.output(self(audio, faces))
