"""Claims about the OpFlowTalker generator: causal sequential fusion, the ablation switches, the audio
augmentation and the explicit motion field."""

import dataclasses

import pytest
import torch

from opflowtalker.models.opflowtalker import (
    AudioAugmentation, OpFlowTalker, OpFlowTalkerConfig, count_parameters, flops_per_frame, kl_divergence, warp,
)

TINY = dict(width=0.125)
# The study's "motion field (ours)" variant: the paper's model with our four additions.
OURS = {part: True for part in OpFlowTalkerConfig.OUR_PARTS}


def _window(config, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, t = config.image_size, config.window
    audio = torch.randn(batch, t, 1, 80, 16, generator=g)
    faces = torch.rand(batch, 6, t, s, s, generator=g)
    faces[:, :3, :, s // 2:] = 0  # the masked lower half, as the data loader gives it
    return audio, faces


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return OpFlowTalker(OpFlowTalkerConfig(**{**TINY, **kw}))


def _calibrated(model, audio, faces):
    """The model in eval mode with batch-norm statistics of one batch, as after training.

    Fresh running statistics (mean 0, variance 1) leave the encoder's skip features unnormalised in
    eval mode, and they drown the audio path (its effect on the output is ~1e-7), which would make
    the audio-driven claims below vacuous. Likewise a fresh residual output layer is zero (the frame
    is the reference whatever the inputs), so it gets weights here as it would in training.
    """
    if model.config.residual_output:
        torch.nn.init.normal_(model.face_decoder.output_block[1].weight, std=0.1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(audio, faces, sample=False)
    return model.eval()


@pytest.mark.parametrize("ours", [False, True], ids=["paper", "ours"])
def test_the_fusion_is_causal(ours):
    model = _model(**(OURS if ours else {}))
    audio, faces = _window(model.config, batch=1)
    _calibrated(model, audio, faces)
    k = 2
    audio2, faces2 = audio.clone(), faces.clone()
    audio2[:, k:] = torch.randn_like(audio2[:, k:])
    faces2[:, :, k:] = torch.rand_like(faces2[:, :, k:])
    with torch.no_grad():
        out, aux = model(audio, faces)
        out2, aux2 = model(audio2, faces2)
    torch.testing.assert_close(out2[:, :, :k], out[:, :, :k], atol=1e-6, rtol=0)
    assert (aux["motion"] is not None) == ours
    if ours:
        torch.testing.assert_close(aux2["motion"][:, :, :k], aux["motion"][:, :, :k], atol=1e-6, rtol=0)
    assert (out2[:, :, k] - out[:, :, k]).abs().max() > 1e-4


@pytest.mark.parametrize("sequential", [True, False])
def test_later_frames_see_earlier_ones_only_with_sequential_fusion(sequential):
    model = _model(sequential_fusion=sequential)
    audio, faces = _window(model.config, batch=1)
    _calibrated(model, audio, faces)
    audio2 = audio.clone()
    audio2[:, 0] = torch.randn_like(audio2[:, 0])
    with torch.no_grad():
        last = model(audio, faces)[0][:, :, -1]
        last2 = model(audio2, faces)[0][:, :, -1]
    changed = (last2 - last).abs().max().item()
    assert (changed > 1e-4) if sequential else (changed == 0)


ABLATIONS = {
    "the paper's model": {},
    "w/o audio augmentation": {"audio_aug": False},
    "w/o optical flow predictor": {"flow_predictor": False},
    "w/o sequential fusion": {"sequential_fusion": False},
    "+ motion field (ours)": OURS,
    "ours w/o appended reference": {**OURS, "append_reference": False},
    "ours w/o optical flow predictor": {**OURS, "flow_predictor": False},
}


def test_the_default_config_is_the_papers_model():
    config = OpFlowTalkerConfig()
    assert all(getattr(config, part) for part in OpFlowTalkerConfig.PAPER_PARTS)
    assert not any(getattr(config, part) for part in OpFlowTalkerConfig.OUR_PARTS)
    assert not config.motion_field
    paper = dataclasses.fields(OpFlowTalkerConfig)
    assert {f.name for f in paper} >= set(OpFlowTalkerConfig.PAPER_PARTS + OpFlowTalkerConfig.OUR_PARTS)


@pytest.mark.parametrize("switches", ABLATIONS.values(), ids=ABLATIONS.keys())
def test_every_ablation_builds_and_trains(switches):
    model = _model(**switches).train()
    audio, faces = _window(model.config, batch=1)
    target = torch.rand(1, 3, *faces.shape[2:])
    # Two steps: a residual output layer starts at zero, so the first step's gradient stops there;
    # from the second step on it reaches every part.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        out, aux = model(audio, faces)
        loss = (out - target).abs().mean() + 0.01 * aux["kl"]
        loss.backward()
        optimizer.step()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    for part in (model.audio_encoder, model.face_encoder):
        first = next(part.parameters())
        assert first.grad is not None and first.grad.abs().sum() > 0
    assert (aux["motion"] is not None) == model.config.motion_field
    assert (aux["kl"] > 0) == model.config.audio_aug


@pytest.mark.parametrize("size, width", [(96, 1.0), (256, 0.125)])
def test_output_shapes_and_range(size, width):
    torch.manual_seed(0)
    config = OpFlowTalkerConfig(image_size=size, width=width, **OURS)
    model = OpFlowTalker(config).eval()
    audio, faces = _window(config, batch=1)
    with torch.no_grad():
        out, aux = model(audio, faces)
    t = config.window
    assert out.shape == (1, 3, t, size, size)
    assert out.min() >= 0 and out.max() <= 1
    assert aux["motion"].shape == (1, 2, t, size, size)
    assert aux["flow_features"].shape == (1, t, config.ch(config.flow_dim))
    if width == 1.0:
        # Wav2Lip-sized convolutions plus a 512-wide, 6-layer Transformer: tens of millions.
        assert 40e6 < count_parameters(model) < 80e6


def test_kl_is_zero_for_the_standard_normal_and_positive_otherwise():
    zeros = torch.zeros(4, 8)
    assert kl_divergence(zeros, zeros).item() == 0
    assert kl_divergence(zeros + 0.5, zeros).item() > 0
    assert kl_divergence(zeros, zeros - 1.0).item() > 0

    aug = AudioAugmentation(16, 8, 4)
    f_audio = torch.randn(3, 16)
    assert aug(f_audio, sample=False)[1].item() > 0
    for p in aug.parameters():
        torch.nn.init.zeros_(p)  # mu = 0, log-variance = 0
    assert aug(f_audio, sample=True)[1].item() == 0


def test_augmentation_uses_the_mean_unless_sampling():
    torch.manual_seed(0)
    aug = AudioAugmentation(16, 8, 4)
    f_audio = torch.randn(3, 16)
    mean, _ = aug(f_audio, sample=False)
    torch.testing.assert_close(mean[:, :8], aug.mu(f_audio))
    assert (mean[:, 8:] == 0).all()
    assert not torch.allclose(aug(f_audio, sample=True)[0], mean)


def test_eval_mode_is_deterministic_and_sampling_diversifies():
    model = _model()
    audio, faces = _window(model.config)
    _calibrated(model, audio, faces)
    with torch.no_grad():
        a, b = model(audio, faces)[0], model(audio, faces)[0]
        c = model(audio, faces, sample=True)[0]
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_warping_with_zero_motion_is_the_identity():
    x = torch.rand(2, 5, 24, 24)
    torch.testing.assert_close(warp(x, torch.zeros(2, 2, 96, 96)), x, atol=1e-6, rtol=0)


def test_motion_is_in_image_pixels_at_every_scale():
    # 8 image pixels to the right is 2 pixels of a quarter-resolution feature map.
    x = torch.rand(1, 3, 24, 24)
    motion = torch.zeros(1, 2, 96, 96)
    motion[:, 0] = 8.0
    torch.testing.assert_close(warp(x, motion)[..., :-2], x[..., 2:], atol=1e-5, rtol=0)


def test_flops_are_per_frame():
    config = OpFlowTalkerConfig(**TINY)
    per_frame = flops_per_frame(config)
    one_frame = flops_per_frame(dataclasses.replace(config, window=1))
    assert per_frame > 0
    assert abs(per_frame / one_frame - 1) < 0.05


def test_config_rejects_unsupported_sizes():
    with pytest.raises(ValueError):
        OpFlowTalkerConfig(image_size=128)
    with pytest.raises(ValueError):
        OpFlowTalker(OpFlowTalkerConfig(**TINY))(torch.zeros(1, 5, 1, 80, 16), torch.zeros(1, 6, 5, 64, 64))


def test_a_safetensors_checkpoint_rebuilds_the_same_opflowtalker(tmp_path):
    from opflowtalker.models.checkpoints import save_safetensors
    from opflowtalker.models.registry import load_model_checkpoint

    config = OpFlowTalkerConfig(width=0.125, sequential_fusion=False)
    torch.manual_seed(0)
    model = OpFlowTalker(config).eval()
    path = tmp_path / "generator.safetensors"
    save_safetensors(model, path)
    loaded = load_model_checkpoint(path)
    assert isinstance(loaded, OpFlowTalker) and loaded.config == config
    audio, faces = torch.randn(1, 5, 1, 80, 16), torch.rand(1, 6, 5, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(audio, faces)[0], loaded.eval()(audio, faces)[0])


def test_sampling_noise_starts_small_so_the_audio_is_heard_first():
    torch.manual_seed(0)
    aug = AudioAugmentation(16, 8, 4, init_sigma=0.1)
    f_audio = torch.randn(1, 16).expand(20000, 16)
    sampled, _ = aug(f_audio, sample=True)
    mean, _ = aug(f_audio, sample=False)
    spread = (sampled[:, :8] - mean[:, :8]).std(dim=0)
    torch.testing.assert_close(spread, torch.full((8,), 0.1), atol=0.005, rtol=0)
    # The concatenated noise z is standard normal whatever sigma is.
    torch.testing.assert_close(sampled[:, 8:].std(dim=0), torch.ones(4), atol=0.03, rtol=0)


@pytest.mark.parametrize("flow_skip", [True, False])
def test_flow_skip_carries_the_audio_to_the_decoder_past_the_fusion(flow_skip):
    # With the fusion's output fixed (its last projection zeroed), only the skip can bring the audio
    # to the frames (the motion field, another audio path, is switched off here).
    model = _model(flow_skip=flow_skip, explicit_motion=False)
    audio, faces = _window(model.config)
    torch.nn.init.zeros_(model.sequential_fusion.out_proj.weight)
    _calibrated(model, audio, faces)
    other = torch.randn_like(audio)
    with torch.no_grad():
        change = (model(audio, faces)[0] - model(other, faces)[0]).abs().max()
    if flow_skip:
        assert change > 1e-4
    else:
        assert change == 0


def test_an_untrained_residual_generator_returns_its_reference_frames():
    model = _model(**OURS).eval()
    audio, faces = _window(model.config)
    with torch.no_grad():
        frames, aux = model(audio, faces)
    # The motion field starts at zero, so the warped reference is the reference itself.
    assert aux["motion"].abs().max() == 0
    torch.testing.assert_close(frames, faces[:, 3:], atol=1e-5, rtol=0)  # grid_sample rounding
    plain = _model(**{**OURS, "residual_output": False}).eval()
    with torch.no_grad():
        assert (plain(audio, faces)[0] - faces[:, 3:]).abs().mean() > 0.05
