"""The one generator interface: Wav2Lip, the paper's OpFlowTalker and ours take the same inputs,
give the same structure, rebuild from their checkpoints, and are trained by Eq. 8 with the
expert's sync term."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from opflowtalker.losses import freeze
from opflowtalker.models.checkpoints import save_safetensors
from opflowtalker.models.registry import load_model_checkpoint
from opflowtalker.models.generator import GeneratorOutput, generate, is_generator
from opflowtalker.models.opflowtalker import OpFlowTalker, OpFlowTalkerConfig
from opflowtalker.models.syncnet import SyncNet, lower_half_window
from opflowtalker.models.wav2lip import Wav2Lip
from opflowtalker.training.data import generator_batch
from opflowtalker.training.generator import GeneratorLoss

from test_study import _clip, _params

torch.set_num_threads(1)

OURS = {part: True for part in OpFlowTalkerConfig.OUR_PARTS}
GENERATORS = {
    "wav2lip": lambda: Wav2Lip(0.0625),
    "paper": lambda: OpFlowTalker(OpFlowTalkerConfig(width=0.0625)),
    "ours": lambda: OpFlowTalker(OpFlowTalkerConfig(width=0.0625, **OURS)),
}


def _window(batch=2, t=5, size=96):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, t, 1, 80, 16, generator=g), torch.rand(batch, 6, t, size, size, generator=g)


@pytest.mark.parametrize("name", GENERATORS)
def test_every_generator_keeps_the_one_interface(name, tmp_path):
    torch.manual_seed(0)
    model = GENERATORS[name]().eval()
    assert is_generator(model) and model.window == 5 and model.image_size == 96
    audio, faces = _window()
    with torch.no_grad():
        out = model.generate(audio, faces)
    assert isinstance(out, GeneratorOutput)
    assert out.frames.shape == (2, 3, 5, 96, 96) and 0 <= out.frames.min() and out.frames.max() <= 1
    assert out.kl.ndim == 0
    assert (out.motion is not None) == (name == "ours")
    if out.motion is not None:
        assert out.motion.shape == (2, 2, 5, 96, 96)
    # The checkpoint alone rebuilds the same generator.
    path = save_safetensors(model, tmp_path / f"{name}.safetensors")
    loaded = load_model_checkpoint(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded.generate(audio, faces).frames, out.frames)


def test_a_wrapped_generator_is_called_through_its_wrapper():
    model = GENERATORS["wav2lip"]().eval()
    calls = []

    class Wrapper(torch.nn.Module):
        """What DistributedDataParallel looks like from outside: ``module`` and a forward."""

        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args):
            calls.append(len(args))
            return self.module(*args)

    audio, faces = _window(batch=1)
    with torch.no_grad():
        out = generate(Wrapper(model), audio, faces)
        torch.testing.assert_close(out.frames, model.generate(audio, faces).frames)
    assert calls == [2]


def test_experts_and_flow_networks_are_not_generators():
    assert not is_generator(SyncNet(0.0625)) and not is_generator(torch.nn.Conv2d(1, 1, 1))


def _calibrated_expert(batch) -> SyncNet:
    """A frozen expert whose batch-norm statistics are those of real frames, as after training: with
    fresh statistics an untrained expert embeds every face alike, and no gradient would reach the
    generator whatever the loss."""
    expert = SyncNet(0.0625)
    for m in expert.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        expert.train()(batch.sync_mel, lower_half_window(batch.target, "BCTHW"))
    return freeze(expert)


@pytest.mark.parametrize("model", ["opflowtalker", "wav2lip"])
def test_the_sync_term_of_eq8_starts_late_and_trains_the_generator(model):
    batch = generator_batch([_clip(), _clip(seed=1)], np.random.default_rng(0), 2, 5)
    params = _params(model=model, l1_weight=0.0, ofs_weight=0.0, sync_weight=0.5, sync_start_step=3)
    torch.manual_seed(0)
    expert = _calibrated_expert(batch)
    generator = {"opflowtalker": lambda: OpFlowTalker(OpFlowTalkerConfig(width=0.0625)),
                 "wav2lip": lambda: Wav2Lip(0.0625)}[model]().train()
    loss = GeneratorLoss(params, expert=expert, flow_net=None)
    early = loss(generator, batch, step=2)
    assert early["sync"] > 0
    torch.testing.assert_close(early["loss"].detach(), params.kl_weight * early["kl"])
    late = loss(generator, batch, step=3)
    torch.testing.assert_close(late["loss"], params.kl_weight * late["kl"] + 0.5 * late["sync"])
    late["loss"].backward()
    # The expert's gradient reaches the generator (the lower half it draws), and the expert stays frozen.
    grads = [p.grad for p in generator.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in expert.parameters())


def test_a_longer_windows_first_frames_are_those_of_a_shorter_window():
    # Table 3b trains on 6-frame windows and every row is scored on 5-frame ones: the sequential
    # fusion is causal and nothing else mixes frames, so the first 5 frames do not depend on the 6th.
    torch.manual_seed(0)
    model = OpFlowTalker(OpFlowTalkerConfig(window=6, width=0.0625))
    audio, faces = _window(t=6)
    with torch.no_grad():
        # Batch-norm statistics of these inputs (at initialisation the network's output ignores them).
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = None
        model.train()(audio, faces, sample=False)
        model.eval()
        six = model.generate(audio, faces).frames
        five = model.generate(audio[:, :5], faces[:, :, :5]).frames
        changed = faces.clone()
        changed[:, :, 5] = 1 - changed[:, :, 5]
        other_sixth = model.generate(audio, changed).frames
    # Up to float32 rounding: attention over 6 keys sums in another order than over 5.
    torch.testing.assert_close(six[:, :, :5], five, rtol=0, atol=1e-5)
    torch.testing.assert_close(other_sixth[:, :, :5], five, rtol=0, atol=1e-5)
    assert (other_sixth[:, :, 5] - six[:, :, 5]).abs().max() > 1e-3
