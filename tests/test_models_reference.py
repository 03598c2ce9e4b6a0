"""Wav2Lip's networks, reproduced: its checkpoints load key for key and give the same outputs.

The layer tables below are written from Wav2Lip's ``models/syncnet.py`` and ``models/wav2lip.py``
(one row per convolution block, in ``nn.Sequential`` order). The tests build a state dict in
Wav2Lip's key layout from these tables alone, and compute the forward pass from them with
``torch.nn.functional``, independently of the package's modules.
"""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from opflowtalker.models import checkpoints
from opflowtalker.models.checkpoints import (
    CheckpointError,
    load_reference_state_dict,
    load_safetensors,
    save_safetensors,
)
from opflowtalker.models.registry import load_model_checkpoint, load_syncnet, load_wav2lip
from opflowtalker.losses import sync_loss
from opflowtalker.models.syncnet import SyncNet, lower_half_window
from opflowtalker.models.wav2lip import Wav2Lip

from conftest import unpickle_unsafely, write_trojan

# (in channels, out channels, kernel, stride, padding, identity shortcut); "T" rows are transposed
# convolutions (in, out, kernel, stride, padding, output padding). Every row is a convolution,
# a batch norm and a ReLU, with the shortcut added before the ReLU.
SYNCNET_FACE = [
    (15, 32, 7, 1, 3, False),
    (32, 64, 5, (1, 2), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
    (64, 128, 3, 2, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
    (128, 256, 3, 2, 1, False), (256, 256, 3, 1, 1, True), (256, 256, 3, 1, 1, True),
    (256, 512, 3, 2, 1, False), (512, 512, 3, 1, 1, True), (512, 512, 3, 1, 1, True),
    (512, 512, 3, 2, 1, False), (512, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False),
]
SYNCNET_AUDIO = [
    (1, 32, 3, 1, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, True), (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False),
]
WAV2LIP_FACE = [
    [(6, 16, 7, 1, 3, False)],
    [(16, 32, 3, 2, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True)],
    [(32, 64, 3, 2, 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True)],
    [(64, 128, 3, 2, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True)],
    [(128, 256, 3, 2, 1, False), (256, 256, 3, 1, 1, True), (256, 256, 3, 1, 1, True)],
    [(256, 512, 3, 2, 1, False), (512, 512, 3, 1, 1, True)],
    [(512, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)],
]
WAV2LIP_AUDIO = [
    (1, 32, 3, 1, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False),
]
WAV2LIP_DECODER = [
    [(512, 512, 1, 1, 0, False)],
    [("T", 1024, 512, 3, 1, 0, 0), (512, 512, 3, 1, 1, True)],
    [("T", 1024, 512, 3, 2, 1, 1), (512, 512, 3, 1, 1, True), (512, 512, 3, 1, 1, True)],
    [("T", 768, 384, 3, 2, 1, 1), (384, 384, 3, 1, 1, True), (384, 384, 3, 1, 1, True)],
    [("T", 512, 256, 3, 2, 1, 1), (256, 256, 3, 1, 1, True), (256, 256, 3, 1, 1, True)],
    [("T", 320, 128, 3, 2, 1, 1), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True)],
    [("T", 160, 64, 3, 2, 1, 1), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True)],
]
# Wav2Lip's output block: a block row, then a bare 1x1 convolution to RGB and a sigmoid.
WAV2LIP_OUTPUT = (80, 32, 3, 1, 1, False)
WAV2LIP_RGB = (32, 3, 1)


def block_tensors(prefix, row):
    """(key, shape) of one convolution block in Wav2Lip's layout: conv_block.0 conv, .1 batch norm."""
    if row[0] == "T":
        _, cin, cout, k, *_ = row
        conv_shape = (cin, cout, k, k)
    else:
        cin, cout, k, *_ = row
        conv_shape = (cout, cin, k, k)
    yield f"{prefix}conv_block.0.weight", conv_shape
    yield f"{prefix}conv_block.0.bias", (cout,)
    for name in ("weight", "bias", "running_mean", "running_var"):
        yield f"{prefix}conv_block.1.{name}", (cout,)
    yield f"{prefix}conv_block.1.num_batches_tracked", ()


def syncnet_layout():
    for i, row in enumerate(SYNCNET_FACE):
        yield from block_tensors(f"face_encoder.{i}.", row)
    for i, row in enumerate(SYNCNET_AUDIO):
        yield from block_tensors(f"audio_encoder.{i}.", row)


def wav2lip_layout():
    for b, rows in enumerate(WAV2LIP_FACE):
        for i, row in enumerate(rows):
            yield from block_tensors(f"face_encoder_blocks.{b}.{i}.", row)
    for i, row in enumerate(WAV2LIP_AUDIO):
        yield from block_tensors(f"audio_encoder.{i}.", row)
    for b, rows in enumerate(WAV2LIP_DECODER):
        for i, row in enumerate(rows):
            yield from block_tensors(f"face_decoder_blocks.{b}.{i}.", row)
    yield from block_tensors("output_block.0.", WAV2LIP_OUTPUT)
    cin, cout, k = WAV2LIP_RGB
    yield "output_block.1.weight", (cout, cin, k, k)
    yield "output_block.1.bias", (cout,)


def n_parameters(layout, prefix=""):
    """Learned numbers in a layout (running statistics are buffers, not parameters)."""
    return sum(math.prod(shape) for key, shape in layout
               if key.startswith(prefix) and not key.endswith(("running_mean", "running_var", "num_batches_tracked")))


def random_state_dict(layout, seed):
    """Weights scaled so activations stay O(1) through the deep stacks, and non-trivial batch-norm
    statistics so that eval-mode normalisation is exercised."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("conv_block.1.weight"):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 4:
            state[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        else:
            state[key] = 0.1 * torch.randn(shape, generator=g)
    return state


# --- the forward pass, from the tables -------------------------------------------------------------

def batch_norm(x, sd, prefix):
    return F.batch_norm(x, sd[prefix + "running_mean"], sd[prefix + "running_var"], sd[prefix + "weight"],
                        sd[prefix + "bias"], training=False, eps=1e-5)


def block(x, sd, prefix, row):
    w, b = sd[prefix + "conv_block.0.weight"], sd[prefix + "conv_block.0.bias"]
    if row[0] == "T":
        _, _, _, _, stride, padding, output_padding = row
        y = F.conv_transpose2d(x, w, b, stride, padding, output_padding)
        residual = False
    else:
        _, _, _, stride, padding, residual = row
        y = F.conv2d(x, w, b, stride, padding)
    y = batch_norm(y, sd, prefix + "conv_block.1.")
    return F.relu(y + x) if residual else F.relu(y)


def stack(x, sd, prefix, rows):
    for i, row in enumerate(rows):
        x = block(x, sd, f"{prefix}{i}.", row)
    return x


def syncnet_reference(sd, audio, faces):
    a = stack(audio, sd, "audio_encoder.", SYNCNET_AUDIO).reshape(len(audio), -1)
    v = stack(faces, sd, "face_encoder.", SYNCNET_FACE).reshape(len(faces), -1)
    return a / a.norm(dim=1, keepdim=True), v / v.norm(dim=1, keepdim=True)


def wav2lip_frame_reference(sd, audio, faces):
    features = []
    x = faces
    for b, rows in enumerate(WAV2LIP_FACE):
        x = stack(x, sd, f"face_encoder_blocks.{b}.", rows)
        features.append(x)
    x = stack(audio, sd, "audio_encoder.", WAV2LIP_AUDIO)
    for b, rows in enumerate(WAV2LIP_DECODER):
        x = stack(x, sd, f"face_decoder_blocks.{b}.", rows)
        x = torch.cat([x, features[len(features) - 1 - b]], dim=1)
    x = block(x, sd, "output_block.0.", WAV2LIP_OUTPUT)
    return torch.sigmoid(F.conv2d(x, sd["output_block.1.weight"], sd["output_block.1.bias"]))


def wav2lip_window_reference(sd, audio, faces):
    """Wav2Lip generates each frame of a window on its own: (B,T,1,80,16), (B,6,T,96,96) -> (B,3,T,96,96)."""
    frames = [wav2lip_frame_reference(sd, audio[:, t], faces[:, :, t]) for t in range(faces.shape[2])]
    return torch.stack(frames, dim=2)


# --- fixtures ------------------------------------------------------------------------------------

def save_as_wav2lip_release(state_dict, path):
    """The layout of Wav2Lip's released files: {'state_dict': ...} saved from nn.DataParallel."""
    torch.save({"state_dict": {"module." + k: v for k, v in state_dict.items()}, "global_step": 1}, path)
    return path


@pytest.fixture(scope="module")
def syncnet_sd():
    return random_state_dict(list(syncnet_layout()), seed=0)


@pytest.fixture(scope="module")
def wav2lip_sd():
    return random_state_dict(list(wav2lip_layout()), seed=1)


@pytest.fixture(scope="module")
def syncnet_pth(syncnet_sd, tmp_path_factory):
    return save_as_wav2lip_release(syncnet_sd, tmp_path_factory.mktemp("ckpt") / "lipsync_expert.pth")


@pytest.fixture(scope="module")
def wav2lip_pth(wav2lip_sd, tmp_path_factory):
    return save_as_wav2lip_release(wav2lip_sd, tmp_path_factory.mktemp("ckpt") / "wav2lip.pth")


# --- claims --------------------------------------------------------------------------------------

def test_the_layer_tables_have_the_published_parameter_counts():
    assert n_parameters(syncnet_layout()) == 16_435_072
    layout = list(wav2lip_layout())
    assert n_parameters(layout) == 36_298_035
    assert round(n_parameters(layout, "face_encoder_blocks") / 1e6, 2) == 8.17
    assert round(n_parameters(layout, "audio_encoder") / 1e6, 2) == 2.81
    assert round(n_parameters(layout, "face_decoder_blocks") / 1e6, 2) == 25.29


@pytest.mark.parametrize("model, layout, keys", [
    (SyncNet, syncnet_layout, {"face_encoder.0.conv_block.0.weight": (32, 15, 7, 7),
                               "face_encoder.16.conv_block.1.running_mean": (512,),
                               "audio_encoder.12.conv_block.1.running_var": (512,)}),
    (Wav2Lip, wav2lip_layout, {"face_encoder_blocks.0.0.conv_block.0.weight": (16, 6, 7, 7),
                               "face_decoder_blocks.1.0.conv_block.0.weight": (1024, 512, 3, 3),
                               "output_block.1.weight": (3, 32, 1, 1)}),
])
def test_models_have_wav2lip_key_layout(model, layout, keys):
    ours = {k: tuple(v.shape) for k, v in model().state_dict().items()}
    assert ours == dict(layout())
    assert all(ours[k] == shape for k, shape in keys.items())
    assert sum(p.numel() for p in model().parameters()) == n_parameters(layout())


def test_syncnet_checkpoint_in_wav2lip_layout_loads_strictly(syncnet_pth, syncnet_sd):
    raw = torch.load(syncnet_pth, weights_only=True)["state_dict"]
    assert all(k.startswith("module.") for k in raw)
    model = load_syncnet(syncnet_pth)
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, syncnet_sd[k]), k


def test_wav2lip_checkpoint_in_wav2lip_layout_loads_strictly(wav2lip_pth, wav2lip_sd):
    model = load_wav2lip(wav2lip_pth)
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, wav2lip_sd[k]), k


def test_checkpoint_without_batch_norm_step_counters_loads(syncnet_sd, tmp_path):
    old = {k: v for k, v in syncnet_sd.items() if not k.endswith("num_batches_tracked")}
    model = load_syncnet(save_as_wav2lip_release(old, tmp_path / "old.pth"))
    assert all(torch.equal(v, old[k]) for k, v in model.state_dict().items() if k in old)


def test_syncnet_forward_matches_reference_computation(syncnet_pth, syncnet_sd):
    model = load_syncnet(syncnet_pth)
    g = torch.Generator().manual_seed(2)
    audio, faces = torch.randn(2, 1, 80, 16, generator=g), torch.rand(2, 15, 48, 96, generator=g)
    with torch.no_grad():
        ours = model(audio, faces)
        reference = syncnet_reference(syncnet_sd, audio, faces)
    for a, b in zip(ours, reference):
        assert a.shape == (2, 512)
        assert (a - b).abs().max() < 1e-5
        assert torch.allclose(a.norm(dim=1), torch.ones(2), atol=1e-6)
    # Different inputs give different embeddings: the random weights did not collapse the network.
    assert (ours[1][0] - ours[1][1]).abs().max() > 1e-3


def test_wav2lip_forward_matches_reference_computation(wav2lip_pth, wav2lip_sd):
    model = load_wav2lip(wav2lip_pth)
    g = torch.Generator().manual_seed(3)
    audio, faces = torch.randn(2, 3, 1, 80, 16, generator=g), torch.rand(2, 6, 3, 96, 96, generator=g)
    with torch.no_grad():
        window = model(audio, faces)
        frame = model(audio[:, 1], faces[:, :, 1])
        reference = wav2lip_window_reference(wav2lip_sd, audio, faces)
    assert window.shape == (2, 3, 3, 96, 96) and frame.shape == (2, 3, 96, 96)
    assert (window - reference).abs().max() < 1e-5
    assert (frame - reference[:, :, 1]).abs().max() < 1e-5
    assert window.min() >= 0 and window.max() <= 1
    assert window.std() > 0.01  # not saturated at 0 or 1


def test_lower_half_window_is_wav2lip_syncnet_input():
    g = torch.Generator().manual_seed(4)
    btchw = torch.rand(2, 5, 3, 96, 96, generator=g)
    bcthw = btchw.transpose(1, 2)
    # Wav2Lip: crop rows H//2.. of (B,3,T,H,W), then concatenate the frames on channels.
    cropped = bcthw[:, :, :, 48:]
    expected = torch.cat([cropped[:, :, t] for t in range(5)], dim=1)
    assert torch.equal(lower_half_window(btchw), expected)
    assert torch.equal(lower_half_window(bcthw), expected)
    assert expected.shape == (2, 15, 48, 96)
    with pytest.raises(ValueError, match="layout"):
        lower_half_window(torch.rand(1, 3, 3, 96, 96))
    assert lower_half_window(torch.rand(1, 3, 3, 96, 96), layout="BCTHW").shape == (1, 9, 48, 96)


def test_sync_loss_by_hand():
    a = torch.tensor([[1.0, 0.0]])
    v = torch.tensor([[0.6, 0.8]])  # cosine 0.6
    assert sync_loss(a, v, 1.0).item() == pytest.approx(-math.log(0.6), rel=1e-5)
    assert sync_loss(a, v, 0.0).item() == pytest.approx(-math.log(0.4), rel=1e-5)
    assert sync_loss(v, v, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert sync_loss(a, torch.tensor([[0.0, 2.0]]), 1.0).item() == pytest.approx(100.0)  # BCELoss's log floor


def test_sync_loss_is_lower_for_aligned_pairs_than_shuffled_ones():
    g = torch.Generator().manual_seed(5)
    audio = F.relu(torch.randn(8, 512, generator=g))  # SyncNet's embeddings follow a ReLU
    faces = audio + 0.1 * F.relu(torch.randn(8, 512, generator=g))
    shuffled = faces.roll(1, dims=0)
    assert sync_loss(audio, faces) < sync_loss(audio, shuffled)
    # Wav2Lip's expert training labels the shuffled pairs 0: then they cost less than aligned ones.
    assert sync_loss(audio, shuffled, torch.zeros(8)) < sync_loss(audio, faces, torch.zeros(8))
    # Same value as Wav2Lip's cosine_loss with a (B,1) label.
    y = torch.ones(8, 1)
    expected = nn.BCELoss()(F.cosine_similarity(audio, faces).unsqueeze(1), y)
    assert torch.allclose(sync_loss(audio, faces, y), expected)


def test_wrong_model_checkpoint_is_a_checkpoint_error(syncnet_pth, wav2lip_pth, tmp_path):
    with pytest.raises(CheckpointError, match=r"is not a Wav2Lip generator checkpoint: \d+ missing keys such as"):
        load_wav2lip(syncnet_pth)
    with pytest.raises(CheckpointError, match="is not a SyncNet lip-sync expert checkpoint"):
        load_syncnet(wav2lip_pth)
    assert isinstance(load_model_checkpoint(syncnet_pth), SyncNet)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"module.fc.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(CheckpointError, match="neither a Wav2Lip generator nor a SyncNet"):
        load_model_checkpoint(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_wav2lip(tmp_path / "absent.pth")


def test_safetensors_round_trip_is_bit_exact(syncnet_sd, tmp_path):
    model = SyncNet()
    model.load_state_dict(syncnet_sd)
    path = save_safetensors(model, tmp_path / "ckpt" / "syncnet.safetensors", {"step": 3, "note": "ünïcode"})
    state, metadata = load_safetensors(path)
    assert metadata == {"model": "SyncNet", "config": {"width": 1.0}, "step": 3, "note": "ünïcode"}  # the width rebuilds it
    assert state.keys() == syncnet_sd.keys()
    for k, v in syncnet_sd.items():
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k
    loaded = load_model_checkpoint(path)
    assert isinstance(loaded, SyncNet) and not loaded.training
    assert all(torch.equal(v, syncnet_sd[k]) for k, v in loaded.state_dict().items())
    assert sorted(p.name for p in path.parent.iterdir()) == ["syncnet.safetensors"]  # no temp files left


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_safetensors({"w": torch.arange(4.0)}, tmp_path / "w.safetensors", {"model": "none"})
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_safetensors({"w": torch.zeros(4)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_pickled_code_in_a_checkpoint_is_refused_unexecuted(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "trojan.pth"
    write_trojan(path, marker)
    with pytest.raises(CheckpointError, match="pickled objects other than tensors.*io.open"):
        load_reference_state_dict(path)
    with pytest.raises(CheckpointError):
        load_model_checkpoint(path)
    assert not marker.exists()
    # The payload is live: a full unpickle opens the marker.
    unpickle_unsafely(path, "zip")
    assert marker.exists()
