"""Optical flow: GMA and RAFT (public-checkpoint compatible), FlowNet2-S, classical DIS and
Farneback, end-point error, and training on the corpus's exact flow."""
