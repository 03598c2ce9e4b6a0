"""Flow estimators, flow errors and the OFS loss (Eq. 7) behave as the paper's training needs."""
import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from opflowtalker.flow.classical import ClassicalFlow, dis_flow, farneback_flow, forward_backward_valid
from opflowtalker.flow.epe import end_point_error, multiscale_epe_loss, sequence_loss
from opflowtalker.flow.flownet import REFERENCE_PARAMETERS, FlowNet2S, load_flownet_checkpoint
from opflowtalker.landmarks import mouth_masks
from opflowtalker.losses import (WRONG_MOTIONS, OFSSchedule, busiest_window, compose_flows, freeze, interval_flows,
                                 l1_loss, motion_candidates, ofs_loss, ofs_of_motions, ofs_terms)
from opflowtalker.models.checkpoints import CheckpointError

SHIFT = (1.3, 0.7)


# --- helpers --------------------------------------------------------------------------------------

def sinusoid_texture(size: int, shift=(0.0, 0.0), seed: int = 0) -> np.ndarray:
    """A smooth random texture (sum of plane waves up to 0.1 cycles/px), moved by ``shift`` exactly."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    x, y = x - shift[0], y - shift[1]
    image = np.zeros((size, size))
    for _ in range(40):
        f, angle, phase = rng.uniform(0.03, 0.1), rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)
        image += np.cos(2 * np.pi * f * (np.cos(angle) * x + np.sin(angle) * y) + phase)
    return image


def shifted_pair(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    a, b = sinusoid_texture(size), sinusoid_texture(size, SHIFT)
    lo, hi = a.min(), a.max()
    return tuple(np.round(np.clip((t - lo) / (hi - lo) * 255, 0, 255)).astype(np.uint8) for t in (a, b))


def interior_epe(flow: np.ndarray, margin: int = 16) -> float:
    inner = flow[margin:-margin, margin:-margin]
    return float(np.linalg.norm(inner - np.float32(SHIFT), axis=-1).mean())


MOUTH_CENTRE = (48, 70)


def mouth_landmarks() -> np.ndarray:
    """68 points with the outer (48-59) and inner (60-67) lips on ellipses round the mouth."""
    lm = np.zeros((68, 2), dtype=np.float32)
    cx, cy = MOUTH_CENTRE
    outer = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    inner = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    lm[48:60] = np.stack([cx + 13 * np.cos(outer), cy + 6 * np.sin(outer)], axis=1)
    lm[60:68] = np.stack([cx + 8 * np.cos(inner), cy + 2 * np.sin(inner)], axis=1)
    return lm


def render_face(mouth_dx: int = 0, size: int = 96) -> np.ndarray:
    """A face-like RGB image: textured skin ellipse, eyes, nose, and a striped mouth moved by ``mouth_dx``."""
    skin = sinusoid_texture(size, seed=3)
    skin = (skin - skin.min()) / (skin.max() - skin.min())
    image = np.zeros((size, size, 3), np.float32)
    image[:] = (60, 70, 90)
    face = np.zeros((size, size), np.uint8)
    cv2.ellipse(face, (48, 50), (34, 44), 0, 0, 360, 1, -1)
    for c, base in enumerate((200, 160, 130)):
        image[..., c] = np.where(face > 0, base * (0.8 + 0.4 * skin), image[..., c])
    for x in (34, 62):
        cv2.ellipse(image, (x, 38), (7, 4), 0, 0, 360, (40, 30, 30), -1, cv2.LINE_AA)
    cv2.line(image, (48, 42), (46, 58), (150, 110, 90), 2, cv2.LINE_AA)
    cx, cy = MOUTH_CENTRE[0] + mouth_dx, MOUTH_CENTRE[1]
    cv2.ellipse(image, (cx, cy), (13, 6), 0, 0, 360, (150, 40, 50), -1, cv2.LINE_AA)
    for dx in (-8, -3, 2, 7):
        cv2.line(image, (cx + dx, cy - 4), (cx + dx + 1, cy + 4), (230, 200, 200), 1, cv2.LINE_AA)
    cv2.ellipse(image, (cx, cy), (8, 2), 0, 0, 360, (30, 10, 10), -1, cv2.LINE_AA)
    return np.clip(cv2.GaussianBlur(image, (0, 0), 0.8), 0, 255) / 255.0


def to_window(images: list[np.ndarray]) -> torch.Tensor:
    """(1, 3, T, H, W) from T (H, W, 3) images in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(3, 0, 1, 2).unsqueeze(0).float()


class LucasKanade(nn.Module):
    """A small differentiable flow network: iterative Lucas-Kanade on blurred grey images.

    ``gain`` is a learnable weight (1 by default) so that the test can see whether weights get gradients.
    """

    def __init__(self, window: int = 11, sigma: float = 2.0, iterations: int = 5):
        super().__init__()
        radius = int(3 * sigma)
        g = torch.exp(-torch.arange(-radius, radius + 1.0) ** 2 / (2 * sigma ** 2))
        self.register_buffer("blur", (g / g.sum()).view(1, 1, 1, -1))
        self.window, self.iterations = window, iterations
        self.gain = nn.Parameter(torch.ones(()))

    def smooth(self, x: torch.Tensor) -> torch.Tensor:
        r = self.blur.shape[-1] // 2
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), self.blur)
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), self.blur.transpose(-1, -2))

    def box(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.window, 1, self.window // 2, count_include_pad=False)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        grey = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        g1, g2 = (self.smooth((x * grey).sum(1, keepdim=True) / 255.0) for x in (image1, image2))
        n, _, h, w = g1.shape
        ys, xs = torch.meshgrid(torch.arange(h, dtype=g1.dtype), torch.arange(w, dtype=g1.dtype), indexing="ij")
        flow = g1.new_zeros(n, 2, h, w)
        for _ in range(self.iterations):
            grid = torch.stack([2 * (xs + flow[:, 0]) / (w - 1) - 1, 2 * (ys + flow[:, 1]) / (h - 1) - 1], -1)
            warped = F.grid_sample(g2, grid, align_corners=True, padding_mode="border")
            mean = 0.5 * (g1 + warped)
            ix = F.pad(mean[..., 2:] - mean[..., :-2], (1, 1, 0, 0), mode="replicate") / 2
            iy = F.pad(mean[..., 2:, :] - mean[..., :-2, :], (0, 0, 1, 1), mode="replicate") / 2
            it = warped - g1
            a, b, c = self.box(ix * ix), self.box(ix * iy), self.box(iy * iy)
            bx, by = -self.box(ix * it), -self.box(iy * it)
            det = a * c - b * b + 1e-9
            flow = flow + torch.cat([(c * bx - b * by) / det, (a * by - b * bx) / det], dim=1)
        return flow * self.gain


class BrightnessFlow(nn.Module):
    """A stand-in network whose "flow" is gain x the change of the red and green channels (0..255 / 255):
    frames can be made to have any flow exactly, and the output is differentiable in the frames."""

    def __init__(self, gain: float = 10.0):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(gain))

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        return self.gain * (image2 - image1)[:, :2] / 255.0


def coded_window(steps: list[tuple[float, float]], size: int = 32, gain: float = 10.0) -> torch.Tensor:
    """(1, 3, T, H, W) frames whose BrightnessFlow between frames t and t+1 is ``steps[t]``."""
    value = np.array([0.2, 0.5, 0.5])
    frames = [value.copy()]
    for dx, dy in steps:
        value = value + np.array([dx, dy, 0.0]) / gain
        frames.append(value.copy())
    values = torch.tensor(np.stack(frames), dtype=torch.float32).T  # (3, T)
    return values[None, :, :, None, None].expand(1, 3, len(frames), size, size).contiguous()


def constant_flow(steps, size: int = 32) -> torch.Tensor:
    values = torch.tensor(steps, dtype=torch.float32)
    return values[None, :, :, None, None].expand(1, len(steps), 2, size, size).contiguous()


def all_valid(n: int, size: int = 32) -> torch.Tensor:
    return torch.ones(1, n, size, size, dtype=torch.bool)


# --- classical flow --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", [dis_flow, farneback_flow])
def test_classical_flow_recovers_a_subpixel_translation(method):
    a, b = shifted_pair()
    rgb = [np.repeat(x[..., None], 3, axis=2) for x in (a, b)]
    for pair in ((a, b), rgb):
        flow = method(*pair)
        assert flow.shape == (96, 96, 2) and flow.dtype == np.float32
        assert interior_epe(flow) < 0.05


def test_classical_wrapper_has_the_networks_call_convention():
    a, b = shifted_pair(64)

    def as_batch(x):
        return torch.from_numpy(np.repeat(x[None, None], 3, axis=1)).float().repeat(2, 1, 1, 1)
    for method, direct in (("dis", dis_flow), ("farneback", farneback_flow)):
        flow = ClassicalFlow(method)(as_batch(a), as_batch(b))
        assert flow.shape == (2, 2, 64, 64) and flow.dtype == torch.float32
        np.testing.assert_allclose(flow[1].permute(1, 2, 0).numpy(), direct(a, b), atol=1e-6)
    with pytest.raises(ValueError):
        ClassicalFlow("lucas-kanade")


def test_forward_backward_check_keeps_consistent_vectors_inside_the_image():
    fw = np.broadcast_to(np.float32(SHIFT), (40, 50, 2)).copy()
    ok = forward_backward_valid(fw, -fw)
    assert ok[:-1, :-2].all() and not ok[:, -1].any() and not ok[-1].any()  # targets past the edge
    assert not forward_backward_valid(fw, np.zeros_like(fw)).any()  # a backward flow that does not undo it


# --- end-point error and the networks' losses ------------------------------------------------------

def test_end_point_error_of_a_known_field():
    target = torch.randn(2, 2, 8, 8)
    pred = target + torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    assert end_point_error(pred, target).item() == pytest.approx(5.0)
    valid = torch.zeros(2, 8, 8, dtype=torch.bool)
    valid[:, :4] = True
    pred_half = torch.where(valid.unsqueeze(1), pred, target)
    assert end_point_error(pred_half, target, valid).item() == pytest.approx(5.0)
    assert end_point_error(pred_half, target, ~valid).item() == pytest.approx(0.0)
    assert end_point_error(pred_half, target).item() == pytest.approx(2.5)


def test_sequence_loss_weights_later_iterations_more():
    target = torch.zeros(1, 2, 4, 4)
    preds = [target + 1.0, target + 2.0]
    valid = torch.ones(1, 4, 4)
    assert sequence_loss(preds, target, valid, gamma=0.8).item() == pytest.approx(0.8 * 1 + 2)
    assert sequence_loss(preds, target + 500.0, valid).item() == 0.0  # beyond max_flow: ignored, as in RAFT


def test_multiscale_loss_is_zero_for_the_pooled_target():
    target = torch.randn(1, 2, 64, 64) * 5
    preds = [F.avg_pool2d(target / 20.0, 4 * 2 ** i) for i in range(5)]
    assert multiscale_epe_loss(preds, target).item() == pytest.approx(0.0, abs=1e-6)
    assert multiscale_epe_loss([p + 1 for p in preds], target).item() == pytest.approx(
        np.sqrt(2) * sum((0.32, 0.16, 0.08, 0.04, 0.02)), rel=1e-5)


# --- FlowNet2-S ------------------------------------------------------------------------------------

# The reference's FlowNet2S (flownet2-pytorch models.py / networks/FlowNetS.py): layer -> weight shape.
REFERENCE_LAYERS = {
    "conv1.0": (64, 6, 7, 7), "conv2.0": (128, 64, 5, 5), "conv3.0": (256, 128, 5, 5), "conv3_1.0": (256, 256, 3, 3),
    "conv4.0": (512, 256, 3, 3), "conv4_1.0": (512, 512, 3, 3), "conv5.0": (512, 512, 3, 3),
    "conv5_1.0": (512, 512, 3, 3), "conv6.0": (1024, 512, 3, 3), "conv6_1.0": (1024, 1024, 3, 3),
    "deconv5.0": (1024, 512, 4, 4), "deconv4.0": (1026, 256, 4, 4), "deconv3.0": (770, 128, 4, 4),
    "deconv2.0": (386, 64, 4, 4), "predict_flow6": (2, 1024, 3, 3), "predict_flow5": (2, 1026, 3, 3),
    "predict_flow4": (2, 770, 3, 3), "predict_flow3": (2, 386, 3, 3), "predict_flow2": (2, 194, 3, 3),
}
UNBIASED = ("upsampled_flow6_to_5", "upsampled_flow5_to_4", "upsampled_flow4_to_3", "upsampled_flow3_to_2")


def test_flownet2s_has_the_reference_layout_and_loads_a_checkpoint_strictly(tmp_path):
    model = FlowNet2S()
    expected = {f"{name}.weight": shape for name, shape in REFERENCE_LAYERS.items()}
    expected.update({f"{name}.bias": (shape[1] if name.startswith("deconv") else shape[0],)
                     for name, shape in REFERENCE_LAYERS.items()})
    expected.update({f"{name}.weight": (2, 2, 4, 4) for name in UNBIASED})
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMETERS == 38_676_506

    torch.manual_seed(1)
    saved = {f"module.{k}": torch.randn_like(v) * 0.01 for k, v in model.state_dict().items()}
    path = tmp_path / "FlowNet2-S_checkpoint.pth.tar"
    torch.save({"state_dict": saved, "epoch": 0, "best_EPE": torch.tensor(3.5)}, path)
    loaded = load_flownet_checkpoint(path)
    assert not loaded.training
    assert torch.equal(loaded.predict_flow2.weight, saved["module.predict_flow2.weight"])

    torch.save({"state_dict": {"conv1.0.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="missing"):
        load_flownet_checkpoint(tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        load_flownet_checkpoint(tmp_path / "junk.pth")


def reference_forward(sd: dict, inputs: torch.Tensor, div_flow: float = 20.0) -> torch.Tensor:
    """flownet2-pytorch's FlowNet2S.forward at inference, written with functional ops on its state
    dict; ``inputs`` (B, 3, 2, H, W) as the reference takes them."""
    rgb_mean = inputs.reshape(inputs.shape[:2] + (-1,)).mean(-1).view(inputs.shape[:2] + (1, 1, 1))
    x = (inputs - rgb_mean) / 255.0
    x = torch.cat([x[:, :, 0], x[:, :, 1]], dim=1)
    def act(y):
        return F.leaky_relu(y, 0.1)

    def conv(name, y, stride=1):
        k = sd[f"{name}.0.weight"].shape[-1]
        return act(F.conv2d(y, sd[f"{name}.0.weight"], sd[f"{name}.0.bias"], stride, (k - 1) // 2))

    def deconv(name, y):
        return act(F.conv_transpose2d(y, sd[f"{name}.0.weight"], sd[f"{name}.0.bias"], 2, 1))

    def predict(name, y):
        return F.conv2d(y, sd[f"{name}.weight"], sd[f"{name}.bias"], 1, 1)

    def up(name, y):
        return F.conv_transpose2d(y, sd[f"{name}.weight"], None, 2, 1)

    c2 = conv("conv2", conv("conv1", x, 2), 2)
    c3 = conv("conv3_1", conv("conv3", c2, 2))
    c4 = conv("conv4_1", conv("conv4", c3, 2))
    c5 = conv("conv5_1", conv("conv5", c4, 2))
    c6 = conv("conv6_1", conv("conv6", c5, 2))
    f6 = predict("predict_flow6", c6)
    cat5 = torch.cat([c5, deconv("deconv5", c6), up("upsampled_flow6_to_5", f6)], 1)
    f5 = predict("predict_flow5", cat5)
    cat4 = torch.cat([c4, deconv("deconv4", cat5), up("upsampled_flow5_to_4", f5)], 1)
    f4 = predict("predict_flow4", cat4)
    cat3 = torch.cat([c3, deconv("deconv3", cat4), up("upsampled_flow4_to_3", f4)], 1)
    f3 = predict("predict_flow3", cat3)
    cat2 = torch.cat([c2, deconv("deconv2", cat3), up("upsampled_flow3_to_2", f3)], 1)
    f2 = predict("predict_flow2", cat2)
    return F.interpolate(f2 * div_flow, scale_factor=4, mode="bilinear", align_corners=False)


def test_flownet2s_forward_matches_the_reference_computation():
    torch.manual_seed(0)
    model = FlowNet2S(width=0.25).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.1)  # keep the untrained network's activations moderate
        image1, image2 = torch.rand(2, 3, 64, 128) * 255, torch.rand(2, 3, 64, 128) * 255
        flow = model(image1, image2)
        expected = reference_forward(model.state_dict(), torch.stack([image1, image2], dim=2))
        assert flow.shape == (2, 2, 64, 128)
        torch.testing.assert_close(flow, expected, rtol=1e-4, atol=1e-4)
        odd = model(image1[..., :50, :90], image2[..., :50, :90])  # resized to 64x128 inside
        assert odd.shape == (2, 2, 50, 90) and torch.isfinite(odd).all()

    model.train()
    preds = model(image1, image2)
    assert [tuple(p.shape[-2:]) for p in preds] == [(16, 32), (8, 16), (4, 8), (2, 4), (1, 2)]
    multiscale_epe_loss(preds, torch.zeros(2, 2, 64, 128)).backward()
    assert model.conv1[0].weight.grad is not None
    with pytest.raises(ValueError, match="multiples of 64"):
        model(image1[..., :50, :90], image2[..., :50, :90])


# --- OFS loss ----------------------------------------------------------------------------------------

def test_ofs_loss_is_zero_when_the_generated_flow_equals_the_ground_truth():
    # A real (untrained, frozen) FlowNet2-S: the stored flow is its own flow of the ground truth.
    torch.manual_seed(0)
    net = freeze(FlowNet2S(width=0.25))
    frames = torch.rand(2, 3, 5, 64, 64)
    with torch.no_grad():
        first, second = (frames[:, :, s:s + 4].transpose(1, 2).reshape(8, 3, 64, 64) * 255 for s in (0, 1))
        gt = net(first, second).reshape(2, 4, 2, 64, 64)
    mouth = torch.zeros(2, 5, 64, 64, dtype=torch.bool)
    mouth[..., 40:56, 20:44] = True
    generated = frames.clone().requires_grad_(True)
    loss = ofs_loss(generated, gt, all_valid(4, 64).expand(2, -1, -1, -1), mouth, net)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)

    # ... and the stand-in network: frames coded to move exactly as the ground truth does.
    steps = [(1.0, -0.5), (0.5, 0.5), (-1.0, 0.0), (2.0, 1.0)]
    frames = coded_window(steps)
    mouth = torch.ones(1, 5, 32, 32, dtype=torch.bool)
    for distance in ("l2", "l1", "epe"):
        loss = ofs_loss(frames, constant_flow(steps), all_valid(4), mouth, freeze(BrightnessFlow()), distance=distance)
        assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_ofs_loss_grows_with_a_jittering_mouth():
    """Ground truth: a still face. Generated: the mouth jumps s px sideways every other frame,
    the audio-independent lip motion the OFS loss is meant to suppress."""
    masks = torch.from_numpy(mouth_masks(np.stack([mouth_landmarks()] * 5), 96, dilate=2))[None]
    gt_flow, valid = torch.zeros(1, 4, 2, 96, 96), all_valid(4, 96)
    net = freeze(LucasKanade())
    terms = []
    for s in (0, 1, 2, 3):
        generated = to_window([render_face(s if t % 2 else 0) for t in range(5)])
        face, mouth = ofs_terms(generated, gt_flow, valid, masks, net)
        terms.append((face.item(), mouth.item()))
    face, mouth = np.array(terms).T
    assert face[0] == pytest.approx(0.0, abs=1e-8) and mouth[0] == pytest.approx(0.0, abs=1e-8)
    assert np.all(np.diff(face) > 0) and np.all(np.diff(mouth) > 0)
    assert np.all(mouth[1:] > 5 * face[1:])  # the motion is the mouth's: its term sees it undiluted


def test_ofs_gradient_reaches_the_frames_but_not_the_flow_network():
    masks = torch.from_numpy(mouth_masks(np.stack([mouth_landmarks()] * 5), 96, dilate=2))[None]
    net = freeze(LucasKanade())
    net.gain.requires_grad_(True)  # even a weight left trainable gets no gradient from the OFS loss
    frames = to_window([render_face(2 if t % 2 else 0) for t in range(5)]).requires_grad_(True)
    loss = ofs_loss(frames, torch.zeros(1, 4, 2, 96, 96), all_valid(4, 96), masks, net)
    loss.backward()
    assert torch.isfinite(frames.grad).all() and frames.grad.abs().sum() > 0
    assert net.gain.grad is None

    trained = LucasKanade()  # still in training mode: refused, its output and batch statistics would differ
    with pytest.raises(ValueError, match="eval mode"):
        ofs_loss(frames, torch.zeros(1, 4, 2, 96, 96), all_valid(4, 96), masks, trained)
    with pytest.raises(ValueError, match="no gradient"):
        ofs_loss(frames, torch.zeros(1, 4, 2, 96, 96), all_valid(4, 96), masks, ClassicalFlow().eval())


def test_compose_flows_adds_translations_and_follows_the_first_flow():
    f_a = torch.tensor([1.5, -0.5]).view(1, 2, 1, 1).expand(1, 2, 20, 30)
    f_b = torch.tensor([0.25, 2.0]).view(1, 2, 1, 1).expand(1, 2, 20, 30)
    total, valid = compose_flows(f_a, f_b)
    torch.testing.assert_close(total[valid.unsqueeze(1).expand_as(total)].view(2, -1).T,
                               torch.tensor([[1.75, 1.5]]).expand(int(valid.sum()), 2))
    inside = valid[0]
    assert inside[1:, :28].all() and not inside[0].any() and not inside[:, 28:].any()  # targets off the image

    ys, xs = torch.meshgrid(torch.arange(20.0), torch.arange(30.0), indexing="ij")
    f_b = torch.stack([0.1 * xs, torch.zeros_like(xs)])[None]  # varies in x: read where f_a lands
    total, valid = compose_flows(f_a, f_b)
    torch.testing.assert_close(total[0, 0][valid[0]], (1.5 + 0.1 * (xs + 1.5))[valid[0]])

    invalid_b = torch.ones(1, 20, 30, dtype=torch.bool)
    invalid_b[:, :, 10] = False
    _, valid = compose_flows(f_a, f_b, valid_b=invalid_b)
    assert not valid[0, 5, 8:10].any() and valid[0, 5, 7]  # x + 1.5 reads column 10 from x = 8.5, 9


@pytest.mark.parametrize("interval,frames_in_window", [(1, 5), (2, 5), (4, 5), (5, 6)])
def test_ofs_interval_compares_frames_k_apart_with_composed_ground_truth(interval, frames_in_window):
    steps = [(1.0, -0.5), (0.5, 0.5), (-1.0, 0.0), (2.0, 1.0), (0.5, 0.5)][: frames_in_window - 1]
    frames, gt = coded_window(steps), constant_flow(steps)
    flows, _ = interval_flows(gt, all_valid(len(steps)), interval)
    for t in range(len(steps) + 1 - interval):
        torch.testing.assert_close(flows[0, t, :, 16, 16], torch.tensor(steps[t:t + interval]).sum(0))
    mouth = torch.ones(1, len(steps) + 1, 32, 32, dtype=torch.bool)
    loss = ofs_loss(frames, gt, all_valid(len(steps)), mouth, freeze(BrightnessFlow()), interval=interval)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    if interval > 1:  # one stored step where k are due is an error the loss sees
        wrong = ofs_loss(coded_window([steps[0]] * len(steps)), gt, all_valid(len(steps)), mouth,
                         freeze(BrightnessFlow()), interval=1)
        assert wrong.item() > 0.01


def test_ofs_interval_longer_than_the_window_is_refused():
    steps = [(1.0, 0.0)] * 4
    with pytest.raises(ValueError, match="more than 5 frames"):
        ofs_loss(coded_window(steps), constant_flow(steps), all_valid(4), torch.ones(1, 5, 32, 32, dtype=torch.bool),
                 freeze(BrightnessFlow()), interval=5)


def test_ofs_distances_and_window_reductions():
    # Ground truth still; the generated window's pairs move 1, 2, 3, 4 px along x.
    frames = coded_window([(1.0, 0.0), (2.0, 0.0), (3.0, 0.0), (4.0, 0.0)])
    gt, valid, mouth = torch.zeros(1, 4, 2, 32, 32), all_valid(4), torch.ones(1, 5, 32, 32, dtype=torch.bool)
    net = freeze(BrightnessFlow())
    expected = {  # per pair: MSE e^2/2 and MAE e/2 over the two components, EPE e
        ("l2", "mean"): np.mean([1, 4, 9, 16]) / 2, ("l2", "max"): 16 / 2,
        ("l1", "mean"): np.mean([1, 2, 3, 4]) / 2, ("l1", "max"): 4 / 2,
        ("epe", "mean"): 2.5, ("epe", "max"): 4.0,
    }
    for (distance, reduction), value in expected.items():
        face, mouth_term = ofs_terms(frames, gt, valid, mouth, net, distance=distance, reduction=reduction)
        assert face.item() == pytest.approx(value, rel=1e-4) and mouth_term.item() == pytest.approx(value, rel=1e-4)


def test_ofs_respects_validity_and_mixes_face_and_mouth_by_alpha():
    frames = coded_window([(2.0, 0.0)] * 4)
    gt = torch.zeros(1, 4, 2, 32, 32)
    net = freeze(BrightnessFlow())
    mouth = torch.zeros(1, 5, 32, 32, dtype=torch.bool)
    mouth[..., 20:28, 8:24] = True
    valid = all_valid(4)
    face, mouth_term = ofs_terms(frames, gt, valid, mouth, net)
    assert face.item() == pytest.approx(2.0) and mouth_term.item() == pytest.approx(2.0)
    assert ofs_loss(frames, gt, valid, mouth, net, alpha=0.0).item() == pytest.approx(face.item())

    # Errors only where the ground truth is invalid count for nothing.
    frames_left = frames.clone()
    frames_left[..., 16:] = frames[:, :, :1, :, 16:]  # the right half stays still, as the ground truth
    valid_right = valid.clone()
    valid_right[..., :16] = False
    assert ofs_loss(frames_left, gt, valid_right, mouth, net).item() == pytest.approx(0.0, abs=1e-6)
    assert ofs_loss(frames_left, gt, valid, mouth, net).item() > 0.5
    # A mouth with no valid pixel drops out rather than averaging zeros in.
    no_mouth = torch.zeros_like(mouth)
    assert ofs_terms(frames, gt, valid, no_mouth, net)[1].item() == 0.0

    # (1 - alpha) face + alpha mouth, with alpha from the schedule.
    mouth_only = frames.clone()
    mouth_only[..., :20, :] = frames[:, :, :1, :20, :]
    mouth_only[..., 28:, :] = frames[:, :, :1, 28:, :]
    face, mouth_term = ofs_terms(mouth_only, gt, valid, mouth, net)
    schedule = OFSSchedule(mouth_start_step=1000)
    assert schedule.alpha_at(0) == 0.0 and schedule.alpha_at(999) == 0.0 and schedule(1000) == pytest.approx(0.1)
    for step in (0, 1000):
        alpha = schedule.alpha_at(step)
        loss = ofs_loss(mouth_only, gt, valid, mouth, net, alpha=alpha)
        assert loss.item() == pytest.approx((1 - alpha) * face.item() + alpha * mouth_term.item(), rel=1e-5)
    assert mouth_term.item() > face.item()


def test_ofs_checks_layouts_and_options():
    frames = coded_window([(1.0, 0.0)] * 4)
    mouth, net = torch.ones(1, 5, 32, 32, dtype=torch.bool), freeze(BrightnessFlow())
    with pytest.raises(ValueError, match="permute"):
        ofs_loss(frames, torch.zeros(1, 4, 32, 32, 2), all_valid(4), mouth, net)
    with pytest.raises(ValueError, match="distance"):
        ofs_loss(frames, constant_flow([(1.0, 0.0)] * 4), all_valid(4), mouth, net, distance="huber")
    with pytest.raises(ValueError, match="reduction"):
        ofs_loss(frames, constant_flow([(1.0, 0.0)] * 4), all_valid(4), mouth, net, reduction="median")


def test_mouth_masks_follow_the_lips_and_grow_with_dilation():
    lm = np.stack([mouth_landmarks()] * 3)
    masks = mouth_masks(lm, 96)
    wider = mouth_masks(lm, 96, dilate=3)
    assert masks.shape == (3, 96, 96) and masks.dtype == bool
    assert masks[0, MOUTH_CENTRE[1], MOUTH_CENTRE[0]] and not masks[0, 10, 10]
    assert wider.sum() > masks.sum() and (wider | ~masks).all()


def test_l1_loss():
    a = torch.zeros(1, 3, 5, 8, 8)
    assert l1_loss(a + 0.25, a).item() == pytest.approx(0.25)
    with pytest.raises(ValueError):
        l1_loss(a, a[:, :, :4])


# --- what the OFS loss can tell apart --------------------------------------------------------------

def moving_clip(n: int = 12, size: int = 96, speed: tuple[float, float] = (0.0, 1.5)) -> dict[str, np.ndarray]:
    """A prepared-clip-like dict whose lower half is a texture moving down by ``speed`` px a frame
    from frame 3 on (still before), with its exact flow, all valid, and a mouth at the centre below."""
    faces, flow = [], np.zeros((n - 1, size, size, 2), np.float32)
    upper = sinusoid_texture(size, seed=1)
    for t in range(n):
        moved = max(t - 3, 0)
        lower = sinusoid_texture(size, shift=(speed[0] * moved, speed[1] * moved), seed=2)
        image = np.where(np.arange(size)[:, None] >= size // 2, lower, upper)
        faces.append(np.repeat(np.clip(128 + 25 * image, 0, 255).astype(np.uint8)[..., None], 3, axis=-1))
        if t >= 3 and t < n - 1:
            flow[t, size // 2 + 4:, :, 0], flow[t, size // 2 + 4:, :, 1] = speed
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    landmarks = np.full((68, 2), size / 2, np.float64)
    landmarks[48:68] = np.stack([size / 2 + 14 * np.cos(angles), 0.75 * size + 6 * np.sin(angles)], axis=1)
    return {"faces": np.stack(faces), "flow": flow.astype(np.float16), "valid": np.ones((n - 1, size, size), bool),
            "landmarks": np.repeat(landmarks[None].astype(np.float32), n, axis=0)}


def test_the_busiest_window_starts_where_the_motion_does():
    clip = moving_clip()
    assert busiest_window(clip["flow"]) == 3
    with pytest.raises(ValueError, match="no 6-frame window"):
        busiest_window(clip["flow"][:6])


def test_motion_candidates_are_the_real_window_late_frozen_and_backwards():
    clip = moving_clip()
    windows, flow, valid, mouth = motion_candidates(clip, 3)
    assert list(windows) == ["real frames", *WRONG_MOTIONS]
    real = windows["real frames"]
    assert real.shape == (1, 3, 6, 96, 96) and flow.shape == (1, 5, 2, 96, 96) and mouth.shape == (1, 6, 96, 96)
    assert torch.equal(windows["one frame late"][:, :, 1:], real[:, :, :-1])
    frozen = windows["mouth frozen"]
    assert torch.equal(frozen[:, :, :, :48], real[:, :, :, :48])
    assert torch.equal(frozen[:, :, :, 48:], real[:, :, :1, 48:].expand_as(frozen[:, :, :, 48:]))
    assert torch.equal(windows["played backwards"], real.flip(2))
    assert mouth[0, 0, 72, 48] and not mouth[0, 0, 10, 10]


def test_a_flow_estimator_scores_the_real_motion_lowest_and_the_zero_flow_cannot_tell():
    clip = moving_clip()
    losses = ofs_of_motions(ClassicalFlow().eval(), clip)
    assert set(losses) == {"real frames", *WRONG_MOTIONS}
    assert all(losses[m] > 2 * losses["real frames"] for m in WRONG_MOTIONS), losses

    class Zero(nn.Module):
        def forward(self, a, b):
            return torch.zeros(a.shape[0], 2, *a.shape[-2:])

    zero = ofs_of_motions(Zero().eval(), clip)
    assert len({round(v, 6) for v in zero.values()}) == 1
