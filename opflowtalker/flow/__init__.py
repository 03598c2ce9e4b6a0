"""Optical flow: GMA and RAFT (public-checkpoint compatible), FlowNet2-S, classical DIS and
Farneback, end-point error, and training on the corpus's exact flow."""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, __file__)
