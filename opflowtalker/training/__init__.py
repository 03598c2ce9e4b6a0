"""Training of every network of the study on one loop (:mod:`.loop`): the SyncNet expert, the lip
reader that VTCS needs, and the generators (the Wav2Lip baseline, OpFlowTalker and its ablations)."""
