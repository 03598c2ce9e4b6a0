"""The one interface every generator keeps: what goes in, what comes out, how it is rebuilt.

A generator takes one window: mel windows ``audio`` (B, T, 1, 80, 16) and ``faces`` (B, 6, T, H, W)
in [0, 1] in Wav2Lip's layout (channels 0-2 the target frames with their lower half zeroed,
channels 3-5 the reference frames), and :meth:`Generator.generate` gives a :class:`GeneratorOutput`.
It also says the window length ``window`` and face size ``image_size`` it was built for, and its
``config`` (a dataclass) is what its checkpoint stores to rebuild it
(:func:`opflowtalker.models.registry.load_model_checkpoint`). Training, evaluation, inference and
the cost tables call these alone, so none of them asks which model it holds.

``forward`` stays each model's own: Wav2Lip's is the public code's (one tensor), so its published
weights and their callers behave as they always did.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch

__all__ = ["GeneratorOutput", "Generator", "is_generator", "generate"]


class GeneratorOutput(NamedTuple):
    frames: torch.Tensor  # (B, 3, T, H, W) in [0, 1]
    kl: torch.Tensor  # the audio augmentation's KL term, a scalar (0 for a model without one)
    motion: torch.Tensor | None  # (B, 2, T, H, W) motion field in pixels, for a model that predicts one


@runtime_checkable
class Generator(Protocol):
    window: int
    image_size: int

    def output(self, raw) -> GeneratorOutput:
        """The :class:`GeneratorOutput` of what this model's ``forward`` returned."""
        ...

    def generate(self, audio: torch.Tensor, faces: torch.Tensor) -> GeneratorOutput: ...


def is_generator(model: object) -> bool:
    """Whether ``model`` keeps the generator interface (a lip-sync expert or a flow network does not)."""
    return isinstance(model, Generator)


def generate(model: torch.nn.Module, audio: torch.Tensor, faces: torch.Tensor) -> GeneratorOutput:
    """One window through ``model``: a generator, or one wrapped in DistributedDataParallel, which is
    called through its own ``forward`` so that the ranks' gradients are averaged."""
    inner = getattr(model, "module", model)
    return inner.output(model(audio, faces))
