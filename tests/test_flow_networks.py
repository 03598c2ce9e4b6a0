"""RAFT and GMA, reproduced: their checkpoints load key for key and give the reference's flow.

The key tables below are written from princeton-vl/RAFT (``core/extractor.py``, ``core/update.py``,
``core/raft.py``) and zacjiang/GMA (``core/network.py``, ``core/gma.py``, ``core/update.py``). The
reference flows in ``REFERENCE_FLOWS`` were computed by those repositories' own code with the weights
``random_state_dict`` makes, so the package's networks are checked against the original computation
without it being importable here.
"""
import math

import pytest
import torch
from torch.nn import functional as F

from opflowtalker.flow.checkpoints import build_flow_network, load_flow_checkpoint
from opflowtalker.flow.corr import CorrBlock
from opflowtalker.flow.gma import GMA
from opflowtalker.flow.raft import RAFT, working_size
from opflowtalker.flow.utils import InputPadder, convex_upsample, coords_grid
from opflowtalker.models.checkpoints import CheckpointError

# --- key tables ----------------------------------------------------------------------------------

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def norm_keys(prefix, norm, channels):
    if norm == "batch":
        for name in BN:
            yield f"{prefix}.{name}", () if name == "num_batches_tracked" else (channels,)


def conv_keys(prefix, cout, cin, kh, kw=None, bias=True):
    yield f"{prefix}.weight", (cout, cin, kh, kh if kw is None else kw)
    if bias:
        yield f"{prefix}.bias", (cout,)


def encoder_layout(prefix, small, out_dim, norm):
    """BasicEncoder (residual blocks, 64-64-96-128) or SmallEncoder (bottlenecks, 32-32-64-96)."""
    stem, *widths = (32, 32, 64, 96) if small else (64, 64, 96, 128)
    yield from norm_keys(f"{prefix}.norm1", norm, stem)
    yield from conv_keys(f"{prefix}.conv1", stem, 3, 7)
    cin = stem
    for layer, (width, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
        for i in range(2):
            p = f"{prefix}.layer{layer}.{i}"
            block_in, downsample = (cin, stride != 1) if i == 0 else (width, False)
            if small:
                q = width // 4
                yield from conv_keys(f"{p}.conv1", q, block_in, 1)
                yield from conv_keys(f"{p}.conv2", q, q, 3)
                yield from conv_keys(f"{p}.conv3", width, q, 1)
                norms = [(1, q), (2, q), (3, width)] + ([(4, width)] if downsample else [])
            else:
                yield from conv_keys(f"{p}.conv1", width, block_in, 3)
                yield from conv_keys(f"{p}.conv2", width, width, 3)
                norms = [(1, width), (2, width)] + ([(3, width)] if downsample else [])
            for n, channels in norms:
                yield from norm_keys(f"{p}.norm{n}", norm, channels)
            if downsample:
                yield from conv_keys(f"{p}.downsample.0", width, block_in, 1)
                yield from norm_keys(f"{p}.downsample.1", norm, width)
        cin = width
    yield from conv_keys(f"{prefix}.conv2", out_dim, cin, 1)


def sep_gru_keys(prefix, hidden, inputs):
    for gate in "zrq":
        yield from conv_keys(f"{prefix}.conv{gate}1", hidden, hidden + inputs, 1, 5)
    for gate in "zrq":
        yield from conv_keys(f"{prefix}.conv{gate}2", hidden, hidden + inputs, 5, 1)


def raft_layout(small=False, gma=False):
    if small:
        yield from encoder_layout("fnet", True, 128, "instance")
        yield from encoder_layout("cnet", True, 96 + 64, "none")
        u = "update_block"
        yield from conv_keys(f"{u}.encoder.convc1", 96, 4 * 7 ** 2, 1)
        yield from conv_keys(f"{u}.encoder.convf1", 64, 2, 7)
        yield from conv_keys(f"{u}.encoder.convf2", 32, 64, 3)
        yield from conv_keys(f"{u}.encoder.conv", 80, 128, 3)
        for gate in "zrq":
            yield from conv_keys(f"{u}.gru.conv{gate}", 96, 96 + 82 + 64, 3)
        yield from conv_keys(f"{u}.flow_head.conv1", 128, 96, 3)
        yield from conv_keys(f"{u}.flow_head.conv2", 2, 128, 3)
        return
    yield from encoder_layout("fnet", False, 256, "instance")
    yield from encoder_layout("cnet", False, 256, "batch")
    u = "update_block"
    yield from conv_keys(f"{u}.encoder.convc1", 256, 4 * 9 ** 2, 1)
    yield from conv_keys(f"{u}.encoder.convc2", 192, 256, 3)
    yield from conv_keys(f"{u}.encoder.convf1", 128, 2, 7)
    yield from conv_keys(f"{u}.encoder.convf2", 64, 128, 3)
    yield from conv_keys(f"{u}.encoder.conv", 126, 256, 3)
    yield from sep_gru_keys(f"{u}.gru", 128, 128 + 128 + (128 if gma else 0))
    yield from conv_keys(f"{u}.flow_head.conv1", 256, 128, 3)
    yield from conv_keys(f"{u}.flow_head.conv2", 2, 256, 3)
    yield from conv_keys(f"{u}.mask.0", 256, 128, 3)
    yield from conv_keys(f"{u}.mask.2", 64 * 9, 256, 1)
    if gma:
        yield f"{u}.aggregator.gamma", (1,)
        yield from conv_keys(f"{u}.aggregator.to_v", 128, 128, 1, bias=False)
        yield from conv_keys("att.to_qk", 256, 128, 1, bias=False)
        yield "att.pos_emb.rel_height.weight", (2 * 160 - 1, 128)
        yield "att.pos_emb.rel_width.weight", (2 * 160 - 1, 128)
        yield "att.pos_emb.rel_ind", (160, 160)


LAYOUTS = {"raft": dict(raft_layout()), "raft-small": dict(raft_layout(small=True)),
           "gma": dict(raft_layout(gma=True))}
PUBLISHED_PARAMETERS = {"raft": 5_257_536, "raft-small": 990_162, "gma": 5_879_873}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked", "rel_ind")


def shortcut_norm(key, layout):
    """The block's own name for the shortcut's norm, which the released files store under both."""
    for name in ("norm4", "norm3"):
        twin = key.replace("downsample.1", name)
        if twin in layout:
            return twin
    raise KeyError(key)


def random_state_dict(layout, seed):
    """Weights that keep activations O(1), non-trivial batch-norm statistics, and a non-zero
    aggregation scale so that GMA's global motion term takes part."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif ".downsample.1." in key:
            state[key] = state[shortcut_norm(key, layout)]
        elif key.endswith("rel_ind"):
            positions = torch.arange(shape[0])
            state[key] = positions.view(1, -1) - positions.view(-1, 1) + shape[0] - 1
        elif key.endswith("gamma"):
            state[key] = torch.full(shape, 0.5)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif ".norm" in key and key.endswith("weight") or key.endswith("downsample.1.weight"):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 4:
            state[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        else:
            state[key] = 0.1 * torch.randn(shape, generator=g)
    return state


def test_key_tables_have_the_published_parameter_counts():
    for arch, layout in LAYOUTS.items():
        counted = sum(math.prod(shape) for key, shape in layout.items()
                      if not key.endswith(BUFFERS) and ".downsample.1." not in key)
        assert counted == PUBLISHED_PARAMETERS[arch], arch


@pytest.mark.parametrize("arch", sorted(LAYOUTS))
def test_networks_have_the_reference_key_layout(arch):
    model = build_flow_network(arch)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == LAYOUTS[arch]
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS[arch]


def test_representative_keys_are_where_the_references_put_them():
    gma = LAYOUTS["gma"]
    assert gma["fnet.conv1.weight"] == (64, 3, 7, 7)
    assert gma["update_block.gru.convz1.weight"] == (128, 384 + 128, 1, 5)
    assert gma["update_block.mask.2.bias"] == (576,)
    assert gma["att.to_qk.weight"] == (256, 128, 1, 1)
    assert gma["update_block.aggregator.gamma"] == (1,)
    # The shortcut's batch norm is stored twice, under its own name and inside the shortcut.
    assert {"cnet.layer2.0.norm3.running_var", "cnet.layer2.0.downsample.1.running_var"} <= set(gma)
    assert LAYOUTS["raft"]["update_block.gru.convz1.weight"] == (128, 256 + 128, 1, 5)
    assert LAYOUTS["raft-small"]["update_block.gru.convz.weight"] == (96, 96 + 146, 3, 3)
    assert not any(k.startswith("update_block.mask") for k in LAYOUTS["raft-small"])


def save_as_release(state_dict, path):
    """The layout of the released files: a bare state dict saved from nn.DataParallel."""
    torch.save({"module." + k: v for k, v in state_dict.items()}, path)
    return path


@pytest.mark.parametrize("arch", sorted(LAYOUTS))
def test_checkpoint_in_reference_layout_loads_strictly(arch, tmp_path):
    state = random_state_dict(LAYOUTS[arch], seed=1)
    model = load_flow_checkpoint(save_as_release(state, tmp_path / f"{arch}.pth"), arch)
    assert not model.training
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_wrong_architecture_is_a_one_sentence_value_error(tmp_path):
    path = save_as_release(random_state_dict(LAYOUTS["raft"], seed=1), tmp_path / "raft-things.pth")
    with pytest.raises(ValueError) as raised:
        load_flow_checkpoint(path, "gma")
    assert isinstance(raised.value, CheckpointError)
    message = str(raised.value)
    assert "not a GMA checkpoint" in message and "missing" in message and "\n" not in message
    with pytest.raises(ValueError, match="wrongly shaped"):
        load_flow_checkpoint(path, "raft-small")
    with pytest.raises(ValueError, match="none of"):
        load_flow_checkpoint(path, "flownet2")


# --- the flow matches the reference computation ----------------------------------------------

def pair_of_images(height, width, batch=1, seed=0):
    """A smooth random scene and the same scene moved by (+1, +2) px, in 0..255."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, height // 8 + 3, width // 8 + 3, generator=g)
    scene = 255 * F.interpolate(coarse, size=(height + 16, width + 16), mode="bicubic", align_corners=False).clamp(0, 1)
    return scene[..., 8:8 + height, 8:8 + width].contiguous(), scene[..., 6:6 + height, 7:7 + width].contiguous()



# Flows of zacjiang/GMA's RAFTGMA and princeton-vl/RAFT's RAFT (run from their repositories, eval
# mode, ``test_mode=True``) on ``pair_of_images(128, 128)`` with ``random_state_dict(layout, seed=2)``,
# 3 iterations: the flow at pixels (y, x) of PROBES, channel x then y, and the mean |flow| per channel.
PROBES = [(0, 0), (17, 101), (64, 64), (127, 5), (90, 127)]
REFERENCE_FLOWS = {
    "raft": ([(-3.44766, -1.49703), (-6.08828, -13.29249), (-6.29156, -19.03204), (-1.81218, -1.37867), (1.22973, -0.05222)],
            [5.05924, 9.29701]),
    "raft-small": ([(-4.31814, -3.26571), (-9.08989, 3.25542), (-6.63879, -0.55642), (-2.97107, 0.52537), (2.05387, 2.56941)],
                  [7.54660, 4.38138]),
    "gma": ([(-2.89405, 3.20785), (-6.87664, 0.30121), (-8.46989, 11.84834), (-1.76451, 1.40131), (-1.68022, 4.98768)],
           [5.55153, 8.52871]),
}

# GMA with a warm start: the reference's 1/8-resolution ``flow_init`` is ``WARM_START`` everywhere,
# which is ours at full resolution scaled by 8.
WARM_START = (1.5, -0.75)
REFERENCE_WARM_GMA = ([(4.11940, -0.59049), (7.72665, -4.68128), (10.64197, 4.27718), (3.94987, -1.60464), (6.83779, -1.14027)],
                     [8.81338, 2.00164])


def probe(flow):
    values = [flow[0, :, y, x].tolist() for y, x in PROBES]
    return values, flow[0].abs().mean(dim=(1, 2)).tolist()


@pytest.mark.parametrize("arch", sorted(LAYOUTS))
def test_flow_matches_the_reference_code(arch):
    model = build_flow_network(arch)
    model.load_state_dict(random_state_dict(LAYOUTS[arch], seed=2))
    model.eval()
    image1, image2 = pair_of_images(128, 128)
    with torch.no_grad():
        flow = model(image1, image2, iters=3)
    values, mean_abs = probe(flow)
    expected_values, expected_mean_abs = REFERENCE_FLOWS[arch]
    torch.testing.assert_close(torch.tensor(values), torch.tensor(expected_values), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(mean_abs), torch.tensor(expected_mean_abs), atol=1e-4, rtol=1e-4)


def test_warm_started_gma_matches_the_reference_code():
    model = GMA()
    model.load_state_dict(random_state_dict(LAYOUTS["gma"], seed=2))
    model.eval()
    image1, image2 = pair_of_images(128, 128)
    flow_init = 8 * torch.tensor(WARM_START).view(1, 2, 1, 1).expand(1, 2, 128, 128)
    with torch.no_grad():
        flow = model(image1, image2, iters=2, flow_init=flow_init)
    values, mean_abs = probe(flow)
    torch.testing.assert_close(torch.tensor(values), torch.tensor(REFERENCE_WARM_GMA[0]), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(mean_abs), torch.tensor(REFERENCE_WARM_GMA[1]), atol=1e-4, rtol=1e-4)


def bilinear_at(volume, x, y):
    """volume (N, H, W) read at real (x, y) (N, K), zero beyond the border: the textbook formula."""
    n, height, width = volume.shape
    x0, y0 = x.floor(), y.floor()
    out = torch.zeros_like(x)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            inside = (xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1)
            index = (yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).long()
            out += torch.where(inside, weight * volume.reshape(n, -1).gather(1, index), torch.zeros_like(x))
    return out


def test_correlation_lookup_matches_the_direct_formula():
    g = torch.Generator().manual_seed(0)
    batch, dim, height, width, levels, r = 2, 16, 16, 20, 4, 2
    fmap1, fmap2 = torch.randn(2, batch, dim, height, width, generator=g)
    # Correspondences inside the frame, near its border and beyond it.
    coords = coords_grid(batch, height, width) + 6 * torch.randn(batch, 2, height, width, generator=g)
    looked_up = CorrBlock(fmap1, fmap2, num_levels=levels, radius=r)(coords)
    assert looked_up.shape == (batch, levels * (2 * r + 1) ** 2, height, width)

    volume = torch.einsum("bcij,bckl->bijkl", fmap1, fmap2) / math.sqrt(dim)
    volume = volume.reshape(batch * height * width, 1, height, width)
    x = coords[:, 0].reshape(-1, 1)
    y = coords[:, 1].reshape(-1, 1)
    offsets = torch.arange(-r, r + 1, dtype=torch.float32)
    # Channel i*(2r+1)+j of a level is the offset (i - r) in x and (j - r) in y.
    ox = offsets.repeat_interleave(2 * r + 1).view(1, -1)
    oy = offsets.repeat(2 * r + 1).view(1, -1)
    expected = []
    for level in range(levels):
        pooled = F.avg_pool2d(volume, 2 ** level) if level else volume
        expected.append(bilinear_at(pooled[:, 0], x / 2 ** level + ox, y / 2 ** level + oy))
    expected = torch.cat(expected, dim=1).view(batch, height, width, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(looked_up, expected, atol=1e-5, rtol=1e-5)


def test_convex_upsampling_matches_the_direct_formula():
    g = torch.Generator().manual_seed(0)
    n, height, width = 1, 3, 4
    flow = torch.randn(n, 2, height, width, generator=g)
    mask = torch.randn(n, 9 * 64, height, width, generator=g)
    up = convex_upsample(flow, mask)
    padded = F.pad(8 * flow, (1, 1, 1, 1))
    for i in range(height):
        for j in range(width):
            for a in range(8):
                for b in range(8):
                    # Neighbour k = 3 * (di + 1) + (dj + 1); mask channel k * 64 + 8 * a + b.
                    weights = torch.softmax(mask[0, [k * 64 + 8 * a + b for k in range(9)], i, j], dim=0)
                    neighbours = padded[0, :, i:i + 3, j:j + 3].reshape(2, 9)
                    torch.testing.assert_close(up[0, :, 8 * i + a, 8 * j + b], neighbours @ weights)


def test_input_padder_round_trip():
    x = torch.randn(1, 3, 130, 141)
    padder = InputPadder(x.shape)
    padded, = padder.pad(x)
    assert padded.shape[-2:] == (136, 144)
    assert torch.equal(padder.unpad(padded), x)


# --- behaviour at the sizes the study uses -------------------------------------------------------

@pytest.fixture(scope="module")
def gma():
    model = GMA()
    model.load_state_dict(random_state_dict(LAYOUTS["gma"], seed=3))
    return model.eval()


def test_no_nan_at_96_px(gma):
    image1, image2 = pair_of_images(96, 96, batch=2)
    with torch.no_grad():
        flow = gma(image1, image2, iters=2)
    assert flow.shape == (2, 2, 96, 96)
    assert torch.isfinite(flow).all()


def test_small_inputs_are_estimated_at_128_px_and_scaled_back(gma):
    assert working_size(96, 96) == (128, 128)
    assert working_size(96, 200) == (128, 272)
    assert working_size(128, 136) == (128, 136)
    image1, image2 = pair_of_images(96, 96)
    up = [F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False) for x in (image1, image2)]
    with torch.no_grad():
        small = gma(image1, image2, iters=2)
        large = gma(*up, iters=2)
    expected = 0.75 * F.interpolate(large, size=(96, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(small, expected)


def test_sides_not_divisible_by_8_are_padded(gma):
    image1, image2 = pair_of_images(130, 141)
    with torch.no_grad():
        flow = gma(image1, image2, iters=2)
    assert flow.shape == (1, 2, 130, 141)
    assert torch.isfinite(flow).all()


@pytest.mark.parametrize("arch", sorted(LAYOUTS))
def test_train_mode_returns_every_iteration(arch):
    model = build_flow_network(arch).train()
    image1, image2 = pair_of_images(128, 128, batch=2)
    predictions = model(image1, image2, iters=3)
    assert len(predictions) == 3
    assert all(p.shape == (2, 2, 128, 128) and torch.isfinite(p).all() for p in predictions)
    predictions[-1].abs().mean().backward()
    assert model.update_block.flow_head.conv2.weight.grad is not None


def test_flow_init_is_respected(gma):
    image1, image2 = pair_of_images(128, 128)
    with torch.no_grad():
        cold = gma(image1, image2, iters=2)
        zero = gma(image1, image2, iters=2, flow_init=torch.zeros(1, 2, 128, 128))
        warm = gma(image1, image2, iters=2, flow_init=torch.full((1, 2, 128, 128), 8.0))
    assert torch.equal(cold, zero)
    assert (warm - cold).abs().mean() > 1.0


def test_flow_init_is_respected_at_96_px(gma):
    image1, image2 = pair_of_images(96, 96)
    with torch.no_grad():
        cold = gma(image1, image2, iters=2)
        warm = gma(image1, image2, iters=2, flow_init=torch.full((1, 2, 96, 96), 6.0))
    assert torch.isfinite(warm).all()
    assert (warm - cold).abs().mean() > 1.0


def test_iters_must_be_positive(gma):
    image1, image2 = pair_of_images(128, 128)
    with pytest.raises(ValueError, match="iters"):
        gma(image1, image2, iters=0)


def test_raft_small_is_raft_with_the_small_parts():
    assert RAFT(small=True).corr_radius == 3 and RAFT().corr_radius == 4
