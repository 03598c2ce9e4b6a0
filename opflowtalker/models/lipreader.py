"""The lip reader behind VTCS: mouth crops in, text out, trained with CTC.

The paper's Visual Text Consistency Score (Eq. 9) compares what a lip-reading model reads off a
generated video (T_gen) and off the real one (T_gt) with what was said (T_speech). No lip-reading
weights can be had offline, so this is our own visual-only reader in the manner of LipNet
(Assael et al.) and the sentence-level readers the paper cites ([25], Chung et al. [41]):

* what it reads (``inputs``): either mouth crops, grayscale, centred on the mouth landmarks 48-67
  smoothed over time, sized from the eye-to-mouth distance so that a crop covers the same part of
  every face (:func:`mouth_crops`), or the mouth's shape, the 20 lip landmarks that dlib finds on
  the face crop, centred and in units of the eye-to-mouth distance (:func:`mouth_shapes`; a
  geometric visual front end, as in the landmark-based readers of GRID). Crops carry the teeth and
  tongue; shapes carry no skin, lip colour or lighting of one face, so they are the same for an
  unseen face;
* a spatio-temporal front end that sees motion, not single frames: for crops one 3D convolution
  (temporal kernel 5, i.e. 0.2 s at 25 fps, the span of a viseme with its coarticulation) and a
  small per-frame 2D CNN that reduces each frame to one feature vector; for shapes a linear layer
  per frame and one temporal convolution of the same span;
* a bidirectional GRU over the frames (the words around a frame disambiguate it);
* a linear layer to the tokens plus the CTC blank, as per-frame log-probabilities;
* reading (:meth:`LipReader.read`) averages the clip with its mirror image.

Tokens are a configuration choice. ``"characters"`` (A-Z, space, apostrophe) reads any English
and is what LRS2 needs. ``"words"`` reads a closed vocabulary stored in the config (and so in the
checkpoint): by default the 51 words of the GRID grammar of the corpus. Words are the default:
a word is one CTC label spread over ~8 frames, while its spelling is 3-6 labels that the mouth
barely tells apart (visemes), so within a few CPU minutes character CTC would still be learning
to spell (only words are trained and scored by the study; the chapter shows what they read). One GRU layer is the default because it left the CTC plateau, where
only the word prior of each position is learnt, about twice as early as two layers did.

Each clip of crops is standardised (zero mean, unit variance over its frames) inside the model, so
the reader sees mouth shape and motion rather than the skin tone and lighting of one face, and a
generated video is read on the same footing as the real one. Shapes are read through the same
detector on real and generated frames alike (:func:`lip_inputs`). With a ``grammar`` in its config the
reader decodes through it (:func:`grammar_decode`: one word of each slot, in order), as a recogniser
with a task grammar reads GRID; without one it reads the best path freely (:func:`greedy_decode`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..corpus.sentences import SLOTS
from ..landmarks import MOUTH
from .ctc import BLANK, decode
from .mouths import LipReaderError, mirror_shapes, mouth_crops, mouth_shapes

__all__ = ["LipReaderConfig", "LipReader", "CHARACTERS", "GRID_WORDS", "lip_inputs", "read_lips",
           "load_lipreader"]

CHARACTERS = tuple(" 'ABCDEFGHIJKLMNOPQRSTUVWXYZ")
"""The character tokens (what LRS2 transcripts are written in)."""

GRID_WORDS = tuple(sorted({word.upper() for slot in SLOTS for word in slot}))
"""The 51 words of the GRID grammar the corpus speaks."""

INPUTS = ("pixels", "landmarks")


@dataclass(frozen=True)
class LipReaderConfig:
    tokens: str = "words"            # "words" or "characters"
    inputs: str = "pixels"           # "pixels" (mouth crops) or "landmarks" (mouth shapes)
    vocabulary: tuple[str, ...] = GRID_WORDS  # the word list when tokens == "words"
    crop_height: int = 32            # mouth crop size fed to the network
    crop_width: int = 48
    crop_scale: float = 1.1          # crop width / eye-to-mouth distance (see mouth_crops)
    front_channels: int = 16         # 3D front end
    channels: tuple[int, ...] = (32, 64)  # per-frame 2D CNN
    temporal_kernel: int = 5
    feature_dim: int = 256
    hidden: int = 128                # GRU units per direction
    layers: int = 1
    dropout: float = 0.1
    normalize: bool = True           # standardise each clip (see the module docstring)
    motion: bool = False             # read each frame's difference from the clip's mean frame
    crop_sigma: float | None = None  # None: one crop window per clip (see mouth_crops)
    grammar: tuple[tuple[str, ...], ...] = ()  # word slots a sentence must follow; () reads freely

    def __post_init__(self) -> None:
        if self.inputs not in INPUTS:
            raise LipReaderError(f"inputs must be one of {', '.join(INPUTS)}, not {self.inputs!r}")
        if self.tokens not in ("words", "characters"):
            raise LipReaderError(f"tokens must be 'words' or 'characters', not {self.tokens!r}")
        # JSON metadata gives lists back; the config stays hashable and comparable as tuples.
        object.__setattr__(self, "vocabulary", tuple(self.vocabulary))
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "grammar", tuple(tuple(str(w).upper() for w in slot) for slot in self.grammar))
        if self.grammar and (self.tokens != "words" or not all(self.grammar)
                             or not {w for slot in self.grammar for w in slot} <= set(self.vocabulary)):
            raise LipReaderError("a grammar needs word tokens and slots of words from the vocabulary")
        if self.tokens == "words" and (not self.vocabulary or len(set(self.vocabulary)) != len(self.vocabulary)):
            raise LipReaderError("a word lip reader needs a non-empty vocabulary without repeated words")
        if self.temporal_kernel % 2 == 0:
            raise LipReaderError(f"temporal_kernel must be odd to keep frames aligned, not {self.temporal_kernel}")
        if self.crop_height % 4 or self.crop_width % 4:
            raise LipReaderError(f"the crop size must be a multiple of 4, not {self.crop_height}x{self.crop_width}")

    def mouth_crop(self) -> dict:
        """The four settings that say how a face crop becomes this reader's mouth crop: what a
        lip-reading corpus is cut with, and what its file must match to be read by this reader."""
        return {"crop_height": self.crop_height, "crop_width": self.crop_width, "crop_scale": self.crop_scale,
                "crop_sigma": self.crop_sigma}

    @property
    def token_list(self) -> tuple[str, ...]:
        return self.vocabulary if self.tokens == "words" else CHARACTERS

    @property
    def n_classes(self) -> int:
        """Tokens plus the blank."""
        return len(self.token_list) + 1

    def encode(self, text: str) -> list[int]:
        """Class indices of ``text`` (upper-cased; words split on white space)."""
        text = " ".join(text.upper().split())
        units = text.split() if self.tokens == "words" else list(text)
        index = {token: i + 1 for i, token in enumerate(self.token_list)}
        unknown = sorted({u for u in units if u not in index})
        if unknown:
            kind = "word" if self.tokens == "words" else "character"
            raise LipReaderError(f"the {kind}(s) {', '.join(map(repr, unknown))} of {text!r} are not in the lip reader's tokens")
        return [index[u] for u in units]

    def decode(self, classes: list[int]) -> str:
        """Text of a label sequence (no blanks, repeats already collapsed)."""
        tokens = [self.token_list[c - 1] for c in classes if c != BLANK]
        return " ".join(tokens) if self.tokens == "words" else " ".join("".join(tokens).split())


class LipReader(nn.Module):
    """Mouth crops (B, T, 1, H, W) in [0, 1], or mouth shapes (B, T, 20, 2), -> per-frame CTC
    log-probabilities (B, T, V)."""

    def __init__(self, config: LipReaderConfig | None = None):
        super().__init__()
        self.config = config = config or LipReaderConfig()
        k = config.temporal_kernel
        if config.inputs == "landmarks":
            self.shape_in = nn.Sequential(nn.Linear(2 * (MOUTH.stop - MOUTH.start), config.feature_dim), nn.ReLU(inplace=True))
            self.shape_conv = nn.Conv1d(config.feature_dim, config.feature_dim, k, padding=k // 2)
            self._build_sequence(config)
            return
        c0 = config.front_channels
        self.front = nn.Sequential(
            nn.Conv3d(1, c0, (k, 5, 5), stride=(1, 2, 2), padding=(k // 2, 2, 2), bias=False),
            nn.BatchNorm3d(c0),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 2, 2)),
        )
        layers: list[nn.Module] = []
        cin = c0
        for i, cout in enumerate(config.channels):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            if i < len(config.channels) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.frame_cnn = nn.Sequential(*layers)
        # The front end quarters the crop and every pooling but the last halves it again.
        h = config.crop_height // 4 // 2 ** max(len(config.channels) - 1, 0)
        w = config.crop_width // 4 // 2 ** max(len(config.channels) - 1, 0)
        if h < 1 or w < 1:
            raise LipReaderError(f"a {config.crop_height}x{config.crop_width} crop is too small for {len(config.channels)} CNN stages")
        # Flattening keeps where in the mouth a feature is (lip corners vs. the centre), as LipNet.
        self.project = nn.Sequential(nn.Flatten(), nn.Dropout(config.dropout), nn.Linear(cin * h * w, config.feature_dim),
                                     nn.ReLU(inplace=True))
        self._build_sequence(config)

    def _build_sequence(self, config: LipReaderConfig) -> None:
        self.gru = nn.GRU(config.feature_dim, config.hidden, num_layers=config.layers, batch_first=True,
                          bidirectional=True, dropout=config.dropout if config.layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(2 * config.hidden, config.n_classes)

    def forward(self, crops: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        shapes = self.config.inputs == "landmarks"
        if shapes and (crops.ndim != 4 or crops.shape[2:] != (MOUTH.stop - MOUTH.start, 2)):
            raise LipReaderError(f"mouth shapes must be shaped (B, T, 20, 2), not {tuple(crops.shape)}")
        if not shapes and (crops.ndim != 5 or crops.shape[2] != 1):
            raise LipReaderError(f"mouth crops must be shaped (B, T, 1, H, W), not {tuple(crops.shape)}")
        b, t = crops.shape[:2]
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long)
        lengths = lengths.to("cpu", torch.long)
        valid = (torch.arange(t)[None, :] < lengths[:, None]).to(crops.device)  # (B, T)
        x = crops if not shapes else crops[:, :, None]  # shapes as (B, T, 1, 20, 2): one code path
        if self.config.motion:
            x = x - _clip_mean_frame(x, valid)
        if self.config.normalize and not shapes:  # shapes are in face units already
            x = _standardise(x, valid)
        x = x * valid[:, :, None, None, None]
        if shapes:
            # Padding goes back to zero after the bias of shape_in, so the temporal convolution
            # sees a shorter clip's end as it sees the end of that clip alone.
            x = self.shape_in(x.flatten(2)) * valid[:, :, None]                   # (B, T, F)
            x = F.relu(self.shape_conv(x.transpose(1, 2))).transpose(1, 2)
        else:
            x = self.front(x.transpose(1, 2))                        # (B, C, T, H/4, W/4)
            x = x.transpose(1, 2).flatten(0, 1)                      # (B*T, C, h, w)
            x = self.project(self.frame_cnn(x)).view(b, t, -1)       # (B, T, F)
        # Packing keeps the backward direction from starting in the padding of shorter clips.
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        x, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=t)
        logits = self.classifier(self.dropout(x))
        # CTC is computed in float32 whatever precision the rest runs in.
        return F.log_softmax(logits.float(), dim=-1)

    def read(self, crops: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """What the reader decodes: the mean of the frame probabilities it gives a clip and the
        clip's mirror image, as log-probabilities (B, T, V).

        Training mirrors half the clips (a mouth is nearly symmetric, and its mirror image is
        another plausible speaker), so both images are readings of the same speech; averaging them
        cancels what one side of one face adds. A reading is then the same for a clip and for its
        mirror image."""
        mirrored = mirror_shapes(crops) if self.config.inputs == "landmarks" else crops.flip(-1)
        both = torch.stack([self(crops, lengths), self(mirrored, lengths)])
        return torch.logsumexp(both, dim=0) - float(np.log(2.0))


def _clip_mean_frame(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each clip's mean frame over its valid frames (B, 1, 1, H, W). Taking it away leaves what
    moves: the still appearance of the face, which an unseen identity changes, drops out, and a
    still video reads as nothing at all."""
    weight = valid[:, :, None, None, None].to(x.dtype)
    return (x * weight).sum(dim=1, keepdim=True) / weight.sum(dim=1, keepdim=True).clamp(min=1)


def _standardise(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each clip to zero mean and unit variance over its valid frames."""
    weight = valid[:, :, None, None, None].to(x.dtype)
    count = weight.sum(dim=(1, 2, 3, 4), keepdim=True) * x.shape[2] * x.shape[3] * x.shape[4]
    mean = (x * weight).sum(dim=(1, 2, 3, 4), keepdim=True) / count
    var = (((x - mean) * weight) ** 2).sum(dim=(1, 2, 3, 4), keepdim=True) / count
    return (x - mean) / (var + 1e-6).sqrt()


def lip_inputs(config: LipReaderConfig, faces: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """What a reader of ``config`` reads off one clip of (T, S, S, 3) uint8 face crops: its mouth
    crops (T, h, w), cut where ``landmarks`` put the mouth, or its mouth shapes (T, 20, 2) from
    the landmarks dlib finds on ``faces`` themselves (``landmarks`` unused), so that a generated
    clip is measured by what it shows, by the same detector as the real one."""
    if config.inputs == "landmarks":
        from ..metrics.landmarks import detect_crop_landmarks

        faces = np.asarray(faces)
        if faces.ndim != 4 or faces.shape[-1] != 3 or faces.dtype != np.uint8 or len(faces) == 0:
            raise LipReaderError(f"faces must be (T, H, W, 3) uint8 with T > 0, not {faces.dtype} shaped {faces.shape}")
        whole = np.array([0.0, 0.0, faces.shape[2] - 1.0, faces.shape[1] - 1.0])  # the crop is the face
        return mouth_shapes(detect_crop_landmarks(faces, whole))
    return mouth_crops(faces, landmarks, size=(config.crop_height, config.crop_width), width_scale=config.crop_scale,
                       sigma=config.crop_sigma)


@torch.no_grad()
def read_lips(model: LipReader, faces: np.ndarray, landmarks: np.ndarray) -> str:
    """What ``model`` reads off one clip of (T, S, S, 3) uint8 face crops with their landmarks."""
    config = model.config
    inputs = torch.from_numpy(lip_inputs(config, faces, landmarks))[None]
    if config.inputs == "pixels":
        inputs = inputs[:, :, None]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        log_probs = model.read(inputs.to(device))
    finally:
        model.train(was_training)
    return decode(log_probs, config=config)[0]


def load_lipreader(path: str | os.PathLike) -> LipReader:
    """An eval-mode lip reader from a safetensors checkpoint written with its config as metadata."""
    from .checkpoints import CheckpointError, load_safetensors, load_state_dict_strict

    state_dict, metadata = load_safetensors(path)
    if metadata.get("model") != "LipReader":
        raise CheckpointError(f"{path} holds a model named {metadata.get('model')!r}, not a LipReader")
    config = metadata.get("config") or {}
    known = LipReaderConfig.__dataclass_fields__
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise CheckpointError(f"{path} has lip-reader settings this version does not know: {', '.join(unknown)}")
    return load_state_dict_strict(LipReader(LipReaderConfig(**config)), state_dict, "lip reader", Path(path))

