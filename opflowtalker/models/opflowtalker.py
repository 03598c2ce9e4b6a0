"""OpFlowTalker: the generator of the paper (Fig. 2a), built on Wav2Lip's encoder-decoder.

One window of T frames goes in: mel windows ``audio`` (B, T, 1, 80, 16) and ``faces`` (B, 6, T, H, W)
in Wav2Lip's layout, channels 0-2 the target frames with their lower half zeroed (the masked
sequence) and channels 3-5 the reference frames. One window of frames (B, 3, T, H, W) in [0, 1]
comes out, with an auxiliary dict (see :meth:`OpFlowTalker.forward`). The paper's parts, in order:

* Audio augmentation (Sec. 3.1): Wav2Lip's audio encoder gives f_audio per frame; linear layers give
  the mean and log-variance of a Gaussian, a reparameterised sample of it is concatenated with
  standard normal noise z to give f'_audio, and the KL divergence to N(0, I) is returned for the loss.
* Optical flow predictor (Eq. 2): MLPs turn f'_audio into per-frame flow features f_flow.
* Sequential Fusion (Eq. 3): one face encoder (shared weights) encodes the reference and the masked
  sequence into f_face and f_none; phi_1 (two linear layers) fuses them into f_ref; phi_2, a 6-layer
  causal Transformer over the T frames of the window, turns [f_ref, f_flow] into f_pre.
* Facial reconstruction: a U-Net decoder from f_pre with skip connections from the masked and the
  reference features at every scale.

That is the paper's model, and the default configuration. Four parts of ours, each off by default
and on together in the study's "motion field (ours)" variant, make the audio's effect explicit:

* ``explicit_motion``: the flow predictor also decodes a coarse dense motion field (1/8 of the image
  size, upsampled to pixels) that warps the reference features from 1/8 up and the reference image.
  The paper never shows its flow features as a flow; this field can be drawn and compared with the
  real optical flow (target frame -> reference frame).
* ``flow_skip``: f_flow also enters the decoder beside f_pre, as Wav2Lip's audio embedding enters
  its decoder beside the face embedding, so the audio does not reach the pixels only through the
  Transformer's residual stream, which starts as f_ref.
* ``append_reference``: the (warped) reference image is appended before the output convolution.
* ``residual_output``: the decoder predicts the change to the (warped) reference instead of the
  frame from nothing, so an untrained model starts as a copy of the reference, not as grey.

Each part can be switched off for the ablations of Table 3d; see :class:`OpFlowTalkerConfig`.

Size. The paper gives no parameter count; it keeps "the fundamental structure of the Wav2Lip
model" with a 512-wide, 6-layer Transformer. At ``width=1.0`` the convolutional parts therefore have
Wav2Lip's channels (16 ... 512; the 3-channel face encoder is shared by the two sequences, so it is
Wav2Lip's size), and the fusion Transformer is nanoGPT-shaped (d=512, MLP 4d), which adds about
19M parameters: about 60M at 96 px against Wav2Lip's 36.3M. ``width`` scales every feature size,
the Transformer's included, so that ``width=0.25`` (about 4M parameters) trains on a laptop CPU.

The whole generator is this one file, longer than most of the package, in the order of the paper's
Figure 2a, as nanoGPT keeps its model in one ``model.py``: a reader follows the paper down the page.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from .conv import Conv2d, Conv2dTranspose
from ..warp import warp
from .generator import GeneratorOutput

__all__ = [
    "OpFlowTalkerConfig", "AudioEncoder", "AudioAugmentation", "kl_divergence", "OpticalFlowPredictor",
    "MotionDecoder", "FaceEncoder", "SequentialFusion", "FaceDecoder", "FaceFeatures", "OpFlowTalker",
    "count_parameters", "flops_per_frame",
]

# Per resolution, finest level first: encoder (channels, residual blocks), decoder channels and
# residual blocks. 96 px is Wav2Lip's; 256 px adds a 4x4 level so that 256 halves down to 4 and a
# 4x4 convolution closes it to 1x1, as Wav2Lip's 3x3 convolution closes 3x3.
_ENCODER = {
    96: [(16, 0), (32, 2), (64, 3), (128, 2), (256, 2), (512, 1), (512, 0)],
    256: [(16, 0), (32, 2), (64, 3), (128, 2), (256, 2), (512, 1), (512, 1), (512, 0)],
}
_DECODER = {
    96: [(64, 2), (128, 2), (256, 2), (384, 2), (512, 2), (512, 1), (512, 0)],
    256: [(64, 2), (128, 2), (256, 2), (384, 2), (512, 2), (512, 2), (512, 1), (512, 0)],
}


@dataclass
class OpFlowTalkerConfig:
    """Sizes are those of ``width=1.0``; the model uses ``round(width * size)`` for every one of them."""

    image_size: int = 96  # 96 (LRS2, Wav2Lip) or 256 (HDTF)
    window: int = 5  # T frames per window, Wav2Lip's syncnet_T
    width: float = 1.0
    audio_dim: int = 512  # f_audio, Wav2Lip's audio embedding
    audio_latent_dim: int = 256  # the Gaussian of the audio augmentation
    noise_dim: int = 64  # z, concatenated with the audio sample
    flow_dim: int = 512  # f_flow
    fusion_layers: int = 6  # phi_2 depth (paper: 6)
    fusion_dim: int = 512  # phi_2 width (paper: 512)
    fusion_heads: int = 8
    fusion_mlp_ratio: int = 4
    dropout: float = 0.0
    motion_stride: int = 8  # the dense motion field is predicted at image_size / motion_stride
    # The paper's modules (Table 3d ablations), on: the paper's model.
    audio_aug: bool = True
    flow_predictor: bool = True
    sequential_fusion: bool = True
    # Our additions (see the module's text), off in the paper's model.
    explicit_motion: bool = False  # part of the flow predictor: off whenever flow_predictor is off
    flow_skip: bool = False  # f_flow also enters the decoder beside f_pre (see FaceDecoder)
    append_reference: bool = False
    residual_output: bool = False  # the frame is the (warped) reference plus a predicted change

    PAPER_PARTS = ("audio_aug", "flow_predictor", "sequential_fusion")
    OUR_PARTS = ("explicit_motion", "flow_skip", "append_reference", "residual_output")

    def __post_init__(self):
        if self.image_size not in _ENCODER:
            raise ValueError(f"image_size must be one of {sorted(_ENCODER)}, got {self.image_size}")
        if self.window < 1 or self.width <= 0:
            raise ValueError("window must be >= 1 and width > 0")
        if self.image_size // self.motion_stride not in self.level_sizes:
            raise ValueError(f"no decoder level at {self.image_size}/{self.motion_stride} px; "
                             f"levels are {self.level_sizes}")

    def ch(self, n: int) -> int:
        return max(1, round(n * self.width))

    @property
    def d_model(self) -> int:
        # Rounded to whole heads so that any width gives a valid attention.
        return self.fusion_heads * max(1, round(self.fusion_dim * self.width / self.fusion_heads))

    @property
    def level_sizes(self) -> list[int]:
        sizes = [self.image_size]
        for _ in _ENCODER[self.image_size][1:-1]:
            sizes.append(sizes[-1] // 2)
        return sizes + [1]

    @property
    def motion_field(self) -> bool:
        """Whether the model predicts a dense motion field (needs the optical flow predictor)."""
        return self.flow_predictor and self.explicit_motion

    @classmethod
    def small(cls, **overrides) -> "OpFlowTalkerConfig":
        """The size that trains on two CPU cores."""
        return cls(**{"width": 0.25, **overrides})


# --- Audio ---------------------------------------------------------------------------------------

class AudioEncoder(nn.Module):
    """Wav2Lip's audio encoder: one (1, 80, 16) mel window -> f_audio, one vector per frame."""

    def __init__(self, config: OpFlowTalkerConfig):
        super().__init__()
        c = config.ch
        # (out channels, stride, residual blocks after it): 80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1
        stages = [(c(32), 1, 2), (c(64), (3, 1), 2), (c(128), 3, 2), (c(256), (3, 2), 1)]
        layers, cin = [], 1
        for cout, stride, n_res in stages:
            layers.append(Conv2d(cin, cout, 3, stride, 1))
            layers += [Conv2d(cout, cout, 3, 1, 1, residual=True) for _ in range(n_res)]
            cin = cout
        layers += [Conv2d(cin, c(config.audio_dim), 3, 1, 0), Conv2d(c(config.audio_dim), c(config.audio_dim), 1, 1, 0)]
        self.audio_encoder = nn.Sequential(*layers)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.audio_encoder(mel).flatten(1)  # (N, 1, 80, 16) -> (N, audio_dim)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)), summed over the latent dimensions, averaged over the rest."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1).mean()


class AudioAugmentation(nn.Module):
    """f_audio -> f'_audio = [mu + sigma * eps, z] (StackGAN's conditioning augmentation, paper ref 57).

    With ``sample`` false (the default in eval mode) eps and z are replaced by their mean, zero,
    so that inference is deterministic; sampling in eval mode gives the paper's diverse outputs.

    The standard deviation starts at ``init_sigma`` (0.1), not at the 1 of a default-initialised
    log-variance layer: with sigma near 1 and a freshly initialised mean near 0, the first steps see
    only noise on the audio path, the decoder learns to ignore it, and the KL term then pulls the
    mean to 0 for good (a 150-step model trained that way gave the same frames for any audio).
    Starting small, the audio is heard first; the KL term then widens sigma as far as the
    reconstruction allows.
    """

    def __init__(self, in_dim: int, latent_dim: int, noise_dim: int, init_sigma: float = 0.1):
        super().__init__()
        self.mu = nn.Linear(in_dim, latent_dim)
        self.logvar = nn.Linear(in_dim, latent_dim)
        nn.init.zeros_(self.logvar.weight)
        nn.init.constant_(self.logvar.bias, 2.0 * math.log(init_sigma))
        self.noise_dim = noise_dim
        self.out_dim = latent_dim + noise_dim

    def forward(self, f_audio: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.mu(f_audio), self.logvar(f_audio)
        z = f_audio.new_zeros(*f_audio.shape[:-1], self.noise_dim)
        latent = mu
        if sample:
            latent = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            z = torch.randn_like(z)
        return torch.cat([latent, z], dim=-1), kl_divergence(mu, logvar)


# --- Optical flow predictor ----------------------------------------------------------------------

class OpticalFlowPredictor(nn.Module):
    """Eq. 2: f_flow = MLPs(AUG(f_audio), z), one flow feature vector per frame."""

    def __init__(self, in_dim: int, flow_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, flow_dim), nn.GELU(),
            nn.Linear(flow_dim, flow_dim), nn.GELU(),
            nn.Linear(flow_dim, flow_dim),
        )

    def forward(self, f_audio_aug: torch.Tensor) -> torch.Tensor:
        return self.mlp(f_audio_aug)


class MotionDecoder(nn.Module):
    """The flow features, placed on the face, as a dense motion field in pixels.

    The flow features alone cannot say where the mouth is in this crop or how open it already is in
    the reference, so the field is decoded from them together with the decoder features and the masked
    target features at 1/``motion_stride`` of the image; it is then upsampled bilinearly (a coarse
    field is smooth by construction, as face motion between nearby frames is).
    """

    def __init__(self, flow_dim: int, decoder_channels: int, masked_channels: int, hidden: int, image_size: int):
        super().__init__()
        self.image_size = image_size
        self.flow_in = nn.Linear(flow_dim, hidden)
        self.head = nn.Sequential(
            Conv2d(decoder_channels + masked_channels + hidden, hidden, 3, 1, 1),
            Conv2d(hidden, hidden, 3, 1, 1, residual=True),
        )
        self.to_motion = nn.Conv2d(hidden, 2, 3, 1, 1)
        # Start from the identity warp: the reference features pass unchanged until the loss asks
        # for motion, instead of being scrambled by a random field.
        nn.init.zeros_(self.to_motion.weight)
        nn.init.zeros_(self.to_motion.bias)

    def forward(self, x: torch.Tensor, masked: torch.Tensor, f_flow: torch.Tensor) -> torch.Tensor:
        flow = self.flow_in(f_flow)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        coarse = self.to_motion(self.head(torch.cat([x, masked, flow], dim=1)))
        return F.interpolate(coarse, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)


# --- Faces ---------------------------------------------------------------------------------------

class FaceEncoder(nn.Module):
    """Wav2Lip's face encoder on one 3-channel image; returns the features of every level, finest first."""

    def __init__(self, config: OpFlowTalkerConfig):
        super().__init__()
        c = config.ch
        levels = _ENCODER[config.image_size]
        blocks = [nn.Sequential(Conv2d(3, c(levels[0][0]), 7, 1, 3))]
        for (cprev, _), (cout, n_res) in zip(levels[:-2], levels[1:-1]):
            blocks.append(nn.Sequential(
                Conv2d(c(cprev), c(cout), 3, 2, 1),
                *[Conv2d(c(cout), c(cout), 3, 1, 1, residual=True) for _ in range(n_res)],
            ))
        last = c(levels[-1][0])
        closing = config.level_sizes[-2]  # 3 at 96 px, 4 at 256 px: a valid convolution down to 1x1
        blocks.append(nn.Sequential(Conv2d(c(levels[-2][0]), last, closing, 1, 0), Conv2d(last, last, 1, 1, 0)))
        self.face_encoder_blocks = nn.ModuleList(blocks)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for block in self.face_encoder_blocks:
            image = block(image)
            features.append(image)
        return features


# --- Sequential Fusion ---------------------------------------------------------------------------

class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.n_heads = n_heads
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (y.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for y in (q, k, v))
        # is_causal: the upper-triangular mask, frame t attends only to frames <= t.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, d: int, ratio: int, dropout: float):
        super().__init__()
        self.c_fc = nn.Linear(d, ratio * d)
        self.c_proj = nn.Linear(ratio * d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, d: int, n_heads: int, ratio: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, n_heads, dropout)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = MLP(d, ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class SequentialFusion(nn.Module):
    """Eq. 3: f_ref = phi_1([f_face, f_none]); f_pre = phi_2([f_ref, f_flow]) over the window's frames.

    Inputs and output are (B, T, dim), one token per frame. With ``sequential=False`` (the ablation)
    every frame is its own sequence of length one: the same layers, no context, as Wav2Lip's
    batch-folded frames.
    """

    def __init__(self, config: OpFlowTalkerConfig, face_dim: int, flow_dim: int, out_dim: int):
        super().__init__()
        d = config.d_model
        self.sequential = config.sequential_fusion
        self.phi_1 = nn.Sequential(nn.Linear(2 * face_dim, d), nn.GELU(), nn.Linear(d, d))
        self.in_proj = nn.Linear(d + flow_dim, d)
        self.wpe = nn.Embedding(config.window, d)
        self.drop = nn.Dropout(config.dropout)
        self.phi_2 = nn.ModuleList([
            Block(d, config.fusion_heads, config.fusion_mlp_ratio, config.dropout) for _ in range(config.fusion_layers)
        ])
        self.ln_f = nn.LayerNorm(d)
        self.out_proj = nn.Linear(d, out_dim)

    def forward(self, f_face: torch.Tensor, f_none: torch.Tensor, f_flow: torch.Tensor) -> torch.Tensor:
        b, t, _ = f_face.shape
        f_ref = self.phi_1(torch.cat([f_face, f_none], dim=-1))
        x = self.in_proj(torch.cat([f_ref, f_flow], dim=-1))
        if self.sequential:
            x = x + self.wpe(torch.arange(t, device=x.device))
        else:
            x = x.reshape(b * t, 1, -1) + self.wpe.weight[:1]
        x = self.drop(x)
        for block in self.phi_2:
            x = block(x)
        return self.out_proj(self.ln_f(x)).reshape(b, t, -1)


# --- Facial reconstruction -----------------------------------------------------------------------

class FaceDecoder(nn.Module):
    """Wav2Lip's U-Net decoder from f_pre (1x1) up to the image, one frame at a time.

    At every level the skip connection is a 1x1 fusion of the masked target features and the
    reference features, the latter warped by the motion field from its level upwards; the
    reference image (and its warp) is appended before the output convolution.
    """

    def __init__(self, config: OpFlowTalkerConfig, flow_dim: int = 0):
        super().__init__()
        c = config.ch
        enc = [c(ch) for ch, _ in _ENCODER[config.image_size]]
        dec = [(c(ch), n) for ch, n in _DECODER[config.image_size]]
        sizes = config.level_sizes
        self.sizes = sizes
        self.skip_fusion = nn.ModuleList([Conv2d(2 * e, e, 1, 1, 0) for e in enc])
        blocks = [nn.Sequential(Conv2d(enc[-1] + flow_dim, dec[-1][0], 1, 1, 0))]
        for i in range(len(sizes) - 2, -1, -1):
            cin, (cout, n_res) = dec[i + 1][0] + enc[i + 1], dec[i]
            if i == len(sizes) - 2:  # 1x1 -> 3x3 (4x4 at 256 px)
                up = Conv2dTranspose(cin, cout, sizes[i], 1, 0)
            else:
                up = Conv2dTranspose(cin, cout, 3, 2, 1, output_padding=1)
            blocks.append(nn.Sequential(up, *[Conv2d(cout, cout, 3, 1, 1, residual=True) for _ in range(n_res)]))
        self.face_decoder_blocks = nn.ModuleList(blocks)  # coarsest first
        n_ref = (6 if config.motion_field else 3) if config.append_reference else 0
        self.output_block = nn.Sequential(
            Conv2d(dec[0][0] + enc[0] + n_ref, c(32), 3, 1, 1), nn.Conv2d(c(32), 3, 1, 1, 0),
            *([] if config.residual_output else [nn.Sigmoid()]),
        )
        if config.residual_output:  # start as the reference itself
            nn.init.zeros_(self.output_block[1].weight)
            nn.init.zeros_(self.output_block[1].bias)
        self.append_reference = config.append_reference
        self.residual_output = config.residual_output
        self.motion_size = config.image_size // config.motion_stride

    def skips(self, masked_feats, ref_feats) -> list[torch.Tensor]:
        """The skip connection of every level, finest first, for reference features that are not warped."""
        return [fuse(torch.cat([m, r], dim=1)) for fuse, m, r in zip(self.skip_fusion, masked_feats, ref_feats)]

    def forward(self, f_pre, masked_feats, ref_feats, reference, motion_decoder=None, f_flow=None, skips=None):
        """f_pre (N, C); features finest first, (N, C_l, s_l, s_l); reference (N, 3, H, W);
        ``f_flow`` (N, D), concatenated to f_pre when the decoder was built with ``flow_dim`` D;
        ``skips``: :meth:`skips` computed already (only without a motion field, which warps them).

        ``motion_decoder(x, masked)`` maps decoder and masked features at the motion level to a field
        in pixels (N, 2, H, W); without it there is no warping. Returns the image and the field (or None).
        """
        if skips is not None and motion_decoder is not None:
            raise ValueError("skip connections cannot be computed ahead of a motion field that warps them")
        if f_flow is not None:
            f_pre = torch.cat([f_pre, f_flow], dim=1)
        x, motion = f_pre[:, :, None, None], None
        for block, level in zip(self.face_decoder_blocks, range(len(self.sizes) - 1, -1, -1)):
            x = block(x)
            ref = ref_feats[level]
            if motion_decoder is not None and self.sizes[level] == self.motion_size:
                motion = motion_decoder(x, masked_feats[level])
            if motion is not None:
                ref = warp(ref, motion)
            skip = skips[level] if skips is not None else self.skip_fusion[level](torch.cat([masked_feats[level], ref], dim=1))
            x = torch.cat([x, skip], dim=1)
        warped = warp(reference, motion) if motion is not None else None
        if self.append_reference:
            x = torch.cat([x, reference] + ([warped] if warped is not None else []), dim=1)
        out = self.output_block(x)
        if self.residual_output:
            out = (out + (warped if warped is not None else reference)).clamp(0, 1)
        return out, motion


# --- The generator -------------------------------------------------------------------------------

class FaceFeatures(NamedTuple):
    """What a window's output takes from its faces alone, frames folded into the batch (b-major).

    For a photo every window has the same faces, so inference encodes one window and reuses it
    (:meth:`repeat`) instead of running the face encoder and the skip fusions for every frame.
    """

    ref_feats: list[torch.Tensor]  # face encoder features of the references, finest first
    masked_feats: list[torch.Tensor]  # and of the masked targets
    reference: torch.Tensor  # (N, 3, H, W)
    skips: list[torch.Tensor] | None  # the decoder's skip connections; None when a motion field warps them

    def repeat(self, b: int) -> "FaceFeatures":
        """The features of ``b`` windows that all have this one window's faces."""
        def rep(x):  # cat keeps the tensors' memory format (channels-last at inference), repeat would not
            return torch.cat([x] * b)
        return FaceFeatures([rep(f) for f in self.ref_feats], [rep(f) for f in self.masked_feats], rep(self.reference),
                            None if self.skips is None else [rep(f) for f in self.skips])


class OpFlowTalker(nn.Module):
    def __init__(self, config: OpFlowTalkerConfig):
        super().__init__()
        self.config = config
        c = config.ch
        audio_dim, face_dim = c(config.audio_dim), c(_ENCODER[config.image_size][-1][0])
        self.audio_encoder = AudioEncoder(config)
        self.audio_augmentation = (
            AudioAugmentation(audio_dim, c(config.audio_latent_dim), c(config.noise_dim)) if config.audio_aug else None
        )
        aug_dim = self.audio_augmentation.out_dim if config.audio_aug else audio_dim
        # Without the predictor the (augmented) audio features enter the fusion directly, as in Wav2Lip.
        self.flow_predictor = OpticalFlowPredictor(aug_dim, c(config.flow_dim)) if config.flow_predictor else None
        flow_dim = c(config.flow_dim) if config.flow_predictor else aug_dim
        self.face_encoder = FaceEncoder(config)
        self.sequential_fusion = SequentialFusion(config, face_dim, flow_dim, face_dim)
        self.face_decoder = FaceDecoder(config, flow_dim if config.flow_skip else 0)
        self.motion_decoder = None
        if config.motion_field:
            level = config.level_sizes.index(config.image_size // config.motion_stride)
            self.motion_decoder = MotionDecoder(
                flow_dim, c(_DECODER[config.image_size][level][0]), c(_ENCODER[config.image_size][level][0]),
                c(64), config.image_size,
            )

    def forward(self, audio: torch.Tensor, faces: torch.Tensor, sample: bool | None = None,
                face_features: FaceFeatures | None = None):
        """Generate one window.

        audio: (B, T, 1, 80, 16) mel windows; faces: (B, 6, T, H, W) in [0, 1], channels 0-2 the
        masked targets, 3-5 the references (Wav2Lip's layout). ``sample`` (default: ``self.training``)
        draws the audio augmentation's eps and z; otherwise they are zero and the output deterministic.
        ``face_features``: :meth:`encode_faces` of ``faces``, computed already (inference on a photo).

        Returns ``frames`` (B, 3, T, H, W) in [0, 1] and a dict:
        ``kl`` (scalar, zero without the audio augmentation), ``flow_features`` (B, T, D): f_flow, or
        the audio features that replace it without the predictor, and ``motion``: (B, 2, T, H, W), the
        (dx, dy) in pixels with frame_t(p) ~ reference_t(p + motion_t(p)), i.e. the optical flow from
        frame t to its reference; None without the explicit motion field.
        """
        cfg = self.config
        if audio.dim() != 5 or faces.dim() != 5 or faces.shape[1] != 6:
            raise ValueError(f"expected audio (B, T, 1, 80, 16) and faces (B, 6, T, H, W), got "
                             f"{tuple(audio.shape)} and {tuple(faces.shape)}")
        b, _, t, h, w = faces.shape
        if (h, w) != (cfg.image_size, cfg.image_size) or audio.shape[:2] != (b, t) or t > cfg.window:
            raise ValueError(f"faces {tuple(faces.shape)} and audio {tuple(audio.shape)} do not fit "
                             f"image_size={cfg.image_size}, window={cfg.window}")
        sample = self.training if sample is None else sample

        # Frames are folded into the batch (b-major: index = b * T + t) except inside the fusion.
        f_audio = self.audio_encoder(audio.reshape(b * t, *audio.shape[2:]))
        kl = f_audio.new_zeros(())
        if self.audio_augmentation is not None:
            f_audio, kl = self.audio_augmentation(f_audio, sample)
        f_flow = self.flow_predictor(f_audio) if self.flow_predictor is not None else f_audio

        faced = face_features if face_features is not None else self.encode_faces(faces, skips=False)
        f_face, f_none = faced.ref_feats[-1].flatten(1), faced.masked_feats[-1].flatten(1)
        f_pre = self.sequential_fusion(f_face.reshape(b, t, -1), f_none.reshape(b, t, -1), f_flow.reshape(b, t, -1))

        motion_fn = partial(self.motion_decoder, f_flow=f_flow) if self.motion_decoder is not None else None
        out, motion = self.face_decoder(f_pre.reshape(b * t, -1), faced.masked_feats, faced.ref_feats, faced.reference,
                                        motion_fn, f_flow if cfg.flow_skip else None, faced.skips)

        out = out.reshape(b, t, 3, h, w).permute(0, 2, 1, 3, 4)
        if motion is not None:
            motion = motion.reshape(b, t, 2, h, w).permute(0, 2, 1, 3, 4)
        return out, {"kl": kl, "flow_features": f_flow.reshape(b, t, -1), "motion": motion}

    def encode_faces(self, faces: torch.Tensor, skips: bool = True) -> FaceFeatures:
        """The face encoder (one encoder, shared weights: the reference and masked sequences in one
        batch) on ``faces`` (B, 6, T, H, W); with ``skips``, the decoder's skip connections too
        (unless a motion field warps them)."""
        b, _, t, h, w = faces.shape
        frames = faces.permute(0, 2, 1, 3, 4).reshape(b * t, 6, h, w)
        masked, reference = frames[:, :3], frames[:, 3:]
        both = self.face_encoder(torch.cat([reference, masked], dim=0))
        ref_feats, masked_feats = [f[: b * t] for f in both], [f[b * t:] for f in both]
        fused = self.face_decoder.skips(masked_feats, ref_feats) if skips and self.motion_decoder is None else None
        return FaceFeatures(ref_feats, masked_feats, reference, fused)

    # The generator interface (models/generator.py).
    @property
    def window(self) -> int:
        return self.config.window

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @staticmethod
    def output(raw: tuple[torch.Tensor, dict]) -> GeneratorOutput:
        frames, aux = raw
        return GeneratorOutput(frames, aux["kl"], aux["motion"])

    def generate(self, audio: torch.Tensor, faces: torch.Tensor,
                 face_features: FaceFeatures | None = None) -> GeneratorOutput:
        return self.output(self(audio, faces, face_features=face_features))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_frame(config: OpFlowTalkerConfig) -> float:
    """Forward FLOPs (multiply-add = 2) of one frame, from one window of ``config.window`` frames in eval mode."""
    model = OpFlowTalker(config).eval()
    t, s = config.window, config.image_size
    audio, faces = torch.zeros(1, t, 1, 80, 16), torch.zeros(1, 6, t, s, s)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(audio, faces)
    return counter.get_total_flops() / t
