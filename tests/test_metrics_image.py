"""The image-quality metrics: PSNR, SSIM, FID (and FD-face), LPIPS."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from opflowtalker import assets
from opflowtalker.landmarks import LandmarkDetector
from opflowtalker.metrics import fid, inception, lpips
from opflowtalker.metrics.image import PSNR_CAP, MetricError, MetricUnavailable, psnr, ssim, ssim_per_image
from opflowtalker.models.checkpoints import CheckpointError
from opflowtalker.crops import crop_frame, face_boxes
from opflowtalker.params import from_params_yaml
from opflowtalker.preprocess import PreprocessParams

EXTERNAL = Path(__file__).resolve().parents[1] / "data" / "external"
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for these small batches: on a busy 2-core machine two OpenMP threads
    spin-wait for each other, and a 299x299 Inception pass took ten times the CPU time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- PSNR


def test_psnr_of_a_constant_offset_follows_from_its_mse():
    a = RNG.integers(0, 240, size=(2, 20, 24, 3)).astype(np.uint8)
    b = a.copy()
    b[0] += 10  # MSE 100 -> 10 log10(255^2 / 100) = 10 log10(650.25) = 28.13080 dB
    b[1] += 5  # MSE 25 -> 10 log10(2601) = 34.15140 dB
    assert psnr(b[0], a[0]) == pytest.approx(28.13080, abs=1e-5)
    assert psnr(b, a) == pytest.approx((28.13080 + 34.15140) / 2, abs=1e-5)
    # The same images on a [0, 1] scale.
    assert psnr(b / 255.0, a / 255.0, data_range=1.0) == pytest.approx(31.14110, abs=1e-5)


def test_psnr_of_identical_images_is_100_as_the_papers_ground_truth_rows():
    a = RNG.integers(0, 256, size=(3, 16, 16, 3)).astype(np.uint8)
    assert psnr(a, a) == PSNR_CAP == 100.0


# ---------------------------------------------------------------- SSIM


def test_ssim_of_an_image_with_itself_is_one():
    a = RNG.integers(0, 256, size=(2, 24, 30, 3)).astype(np.uint8)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a[0], 255 - a[0]) < 0.5


def test_ssim_of_two_constant_images_is_the_luminance_term():
    # No variance, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 255)^2 = 6.5025:
    # a = 100, b = 120 -> 24006.5025 / 24406.5025.
    a = np.full((16, 16, 3), 100, np.uint8)
    b = np.full((16, 16, 3), 120, np.uint8)
    assert ssim(a, b) == pytest.approx(24006.5025 / 24406.5025, abs=1e-9)


def _direct_ssim(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Wang et al.'s SSIM, window by window: an 11x11 Gaussian (sigma 1.5) centred on every pixel
    whose window lies inside the image, population statistics, mean over pixels, then channels."""
    r = np.arange(-5, 6)
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    per_channel = []
    for c in range(x.shape[2]):
        values = []
        for i in range(5, x.shape[0] - 5):
            for j in range(5, x.shape[1] - 5):
                px, py = x[i - 5 : i + 6, j - 5 : j + 6, c], y[i - 5 : i + 6, j - 5 : j + 6, c]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * px * px).sum() - mx * mx, (w * py * py).sum() - my * my
                cxy = (w * px * py).sum() - mx * my
                values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
        per_channel.append(np.mean(values))
    return float(np.mean(per_channel))


def test_ssim_matches_a_window_by_window_computation():
    x = RNG.integers(0, 256, size=(15, 17, 3)).astype(np.float64)
    y = np.clip(x + RNG.normal(0, 25, size=x.shape), 0, 255)
    z = np.clip(0.5 * x + 60, 0, 255)
    assert ssim(x, y) == pytest.approx(_direct_ssim(x, y, 255.0), abs=1e-10)
    # A batch is the mean of its images.
    expected = (_direct_ssim(x, y, 255.0) + _direct_ssim(x, z, 255.0)) / 2
    assert ssim(np.stack([y, z]), np.stack([x, x])) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("shape, data_range", [((2, 24, 30, 3), 255.0), ((1, 11, 11, 3), 255.0),
                                               ((3, 17, 40, 1), 1.0)])
def test_ssim_equals_scikit_images_with_the_same_settings(shape, data_range):
    """The module's SSIM is scikit-image's structural_similarity with a Gaussian window (sigma 1.5),
    population covariances and per-channel means: image by image, and a batch their mean."""
    from skimage.metrics import structural_similarity

    target = RNG.uniform(0, data_range, size=shape)
    pred = np.clip(target + RNG.normal(0, 0.1 * data_range, size=shape), 0, data_range)
    if data_range == 255.0:
        target, pred = target.astype(np.uint8), pred.astype(np.uint8)
    expected = [structural_similarity(p, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      channel_axis=-1, data_range=data_range) for p, t in zip(pred, target)]
    assert 0.2 < min(expected) <= max(expected) < 0.99
    assert ssim_per_image(pred, target, data_range) == pytest.approx(expected, abs=1e-12)
    assert ssim(pred, target, data_range) == pytest.approx(np.mean(expected), abs=1e-12)


@pytest.mark.parametrize("pred, target, phrase", [
    (np.zeros((16, 16, 3)), np.zeros((16, 18, 3)), "differ in shape"),
    (np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), "at least 11x11"),
    (np.zeros((16, 16)), np.zeros((16, 16)), "must be an image"),
    (np.full((16, 16, 3), np.nan), np.zeros((16, 16, 3)), "NaN"),
])
def test_unscorable_images_are_refused_in_one_sentence(pred, target, phrase):
    with pytest.raises(MetricError, match=phrase) as info:
        ssim(pred, target)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


# ---------------------------------------------------------------- the Frechet distance


def test_frechet_distance_of_one_dimensional_gaussians_has_the_closed_form():
    # (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2) = (1 - 3)^2 + 4 + 9 - 2 * 6 = 5.
    assert fid.frechet_distance(1.0, 4.0, 3.0, 9.0) == pytest.approx(5.0, abs=1e-9)


def test_frechet_distance_of_diagonal_covariances_sums_over_dimensions():
    # |diff|^2 = 3; traces 14 + 9; sqrt of the diagonal products 2 + 4 + 3 -> 3 + 23 - 18 = 8.
    d = fid.frechet_distance(np.zeros(3), np.diag([1.0, 4.0, 9.0]), np.ones(3), np.diag([4.0, 4.0, 1.0]))
    assert d == pytest.approx(8.0, abs=1e-9)


def test_frechet_distance_of_a_distribution_to_itself_is_zero_even_when_singular():
    x = RNG.normal(size=(5, 12))  # 5 samples in 12 dimensions: a rank-4 covariance
    mu, sigma = fid.feature_statistics(x)
    assert fid.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-5)
    assert fid.frechet_distance_from_features(x, x) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("n1, n2, d", [(6, 9, 20), (50, 40, 6)])
def test_distance_from_features_equals_the_sqrtm_formula(n1, n2, d):
    # Fewer samples than dimensions (cross-Gram route) and more (eigenvalue route).
    x1 = RNG.normal(size=(n1, d)) * np.linspace(0.5, 2.0, d)
    x2 = RNG.normal(loc=0.3, size=(n2, d))
    expected = fid.frechet_distance(*fid.feature_statistics(x1), *fid.feature_statistics(x2))
    assert fid.frechet_distance_from_features(x1, x2) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_one_sample_has_no_covariance_and_is_refused():
    with pytest.raises(MetricError, match="N >= 2"):
        fid.frechet_distance_from_features(np.zeros((1, 4)), np.zeros((3, 4)))


# ---------------------------------------------------------------- FID's Inception-v3


def _reference_inception_convs() -> list[tuple[str, int, int, int, int]]:
    """(module, in, out, kh, kw) of every BasicConv2d of torchvision's Inception3 with pytorch-fid's
    FIDInceptionA/C/E blocks (torchvision/models/inception.py, pytorch_fid/inception.py)."""
    convs = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
             ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3)]
    for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        convs += [(f"{name}.branch1x1", cin, 64, 1, 1), (f"{name}.branch5x5_1", cin, 48, 1, 1),
                  (f"{name}.branch5x5_2", 48, 64, 5, 5), (f"{name}.branch3x3dbl_1", cin, 64, 1, 1),
                  (f"{name}.branch3x3dbl_2", 64, 96, 3, 3), (f"{name}.branch3x3dbl_3", 96, 96, 3, 3),
                  (f"{name}.branch_pool", cin, pool, 1, 1)]
    convs += [("Mixed_6a.branch3x3", 288, 384, 3, 3), ("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1),
              ("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3), ("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3)]
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        convs += [(f"{name}.branch1x1", 768, 192, 1, 1), (f"{name}.branch7x7_1", 768, c7, 1, 1),
                  (f"{name}.branch7x7_2", c7, c7, 1, 7), (f"{name}.branch7x7_3", c7, 192, 7, 1),
                  (f"{name}.branch7x7dbl_1", 768, c7, 1, 1), (f"{name}.branch7x7dbl_2", c7, c7, 7, 1),
                  (f"{name}.branch7x7dbl_3", c7, c7, 1, 7), (f"{name}.branch7x7dbl_4", c7, c7, 7, 1),
                  (f"{name}.branch7x7dbl_5", c7, 192, 1, 7), (f"{name}.branch_pool", 768, 192, 1, 1)]
    convs += [("Mixed_7a.branch3x3_1", 768, 192, 1, 1), ("Mixed_7a.branch3x3_2", 192, 320, 3, 3),
              ("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1), ("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
              ("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1), ("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3)]
    for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        convs += [(f"{name}.branch1x1", cin, 320, 1, 1), (f"{name}.branch3x3_1", cin, 384, 1, 1),
                  (f"{name}.branch3x3_2a", 384, 384, 1, 3), (f"{name}.branch3x3_2b", 384, 384, 3, 1),
                  (f"{name}.branch3x3dbl_1", cin, 448, 1, 1), (f"{name}.branch3x3dbl_2", 448, 384, 3, 3),
                  (f"{name}.branch3x3dbl_3a", 384, 384, 1, 3), (f"{name}.branch3x3dbl_3b", 384, 384, 3, 1),
                  (f"{name}.branch_pool", cin, 192, 1, 1)]
    return convs


def _reference_inception_shapes(batch_counters: bool = True) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in pt_inception-2015-12-05-6726825d.pth."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, kh, kw in _reference_inception_convs():
        shapes[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for what in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{what}"] = (cout,)
        if batch_counters:
            shapes[f"{name}.bn.num_batches_tracked"] = ()
    shapes["fc.weight"], shapes["fc.bias"] = (1008, 2048), (1008,)
    return shapes


def _reference_inception_state_dict(seed: int, batch_counters: bool = True) -> dict[str, torch.Tensor]:
    """Random tensors under the reference names and shapes. The convolutions are He-scaled
    (variance 2 / fan-in, for the ReLUs), so that through the 94 of them the activations neither
    vanish nor blow up and the pool3 features still differ from image to image."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for key, shape in _reference_inception_shapes(batch_counters).items():
        if key.endswith("conv.weight"):
            sd[key] = torch.randn(*shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))
        elif key.endswith("bn.weight"):
            sd[key] = 1.0 + 0.1 * torch.randn(*shape, generator=g)
        elif key.endswith(("bn.bias", "bn.running_mean")):
            sd[key] = 0.1 * torch.randn(*shape, generator=g)
        elif key.endswith("running_var"):
            sd[key] = 0.5 + torch.rand(*shape, generator=g)
        elif key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(0)
        else:
            sd[key] = 0.01 * torch.randn(*shape, generator=g)
    return sd


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fid") / inception.FID_WEIGHTS_FILE
    torch.save(_reference_inception_state_dict(seed=1), path)
    return path


def test_inception_has_the_reference_layout_key_for_key():
    reference = _reference_inception_shapes()
    assert len(_reference_inception_convs()) == 94 and len(reference) == 94 * 6 + 2 == 566
    ours = inception.InceptionV3().state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == reference
    assert tuple(ours["Mixed_6b.branch7x7_2.conv.weight"].shape) == (128, 128, 1, 7)
    assert tuple(ours["Mixed_7c.branch_pool.conv.weight"].shape) == (192, 2048, 1, 1)
    assert tuple(ours["fc.weight"].shape) == (1008, 2048)
    # torchvision's inception_v3 has 27,161,264 parameters; without AuxLogits (3,326,696) and with
    # 1008 classes instead of 1000 (+16,392) that is 23,850,960.
    assert sum(p.numel() for p in inception.InceptionV3().parameters()) == 23_850_960


def test_the_fid_weight_file_loads_strictly_with_and_without_batch_counters(inception_file, tmp_path):
    model = inception.load_inception(inception_file)
    expected = torch.load(inception_file, weights_only=True)
    assert torch.equal(model.Mixed_7c.branch_pool.conv.weight, expected["Mixed_7c.branch_pool.conv.weight"])
    assert not model.training

    # Files saved before PyTorch 0.4.1 have no BatchNorm step counters.
    old = tmp_path / "old.pth"
    torch.save(_reference_inception_state_dict(seed=1, batch_counters=False), old)
    assert torch.equal(inception.load_inception(old).Conv2d_1a_3x3.bn.running_var, expected["Conv2d_1a_3x3.bn.running_var"])

    # torchvision's own Inception file has AuxLogits and 1000 classes: not the FID network.
    other = tmp_path / "inception_v3_google.pth"
    torch.save({"fc.weight": torch.zeros(1000, 2048), "AuxLogits.fc.bias": torch.zeros(1000)}, other)
    with pytest.raises(CheckpointError, match="unexpected key such as 'AuxLogits.fc.bias'.*wrongly shaped key"):
        inception.load_inception(other)


def test_fid_without_its_weight_file_says_which_file_is_missing(tmp_path):
    images = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(MetricUnavailable, match="pt_inception-2015-12-05-6726825d.pth, which are not at"):
        fid.inception_fid(images, images, tmp_path / "missing.pth")


def test_pool3_features_are_mixed_7c_branches_in_the_reference_order():
    # With Mixed_7c's convolutions zeroed and its batch norms the identity plus a random bias, each
    # output channel is ReLU(its bias) whatever the input, in the order of the reference's
    # torch.cat([branch1x1, branch3x3 (2a, 2b), branch3x3dbl (3a, 3b), branch_pool]).
    model = inception.InceptionV3().eval()
    sd = model.state_dict()  # shares storage with the model
    with torch.no_grad():
        for name, *_ in _reference_inception_convs():
            if name.startswith("Mixed_7c."):
                sd[f"{name}.conv.weight"].zero_()
                sd[f"{name}.bn.weight"].fill_(1.0)
                sd[f"{name}.bn.bias"].normal_()
                sd[f"{name}.bn.running_mean"].zero_()
                sd[f"{name}.bn.running_var"].fill_(1.0 - 1e-3)  # var + eps = 1
        out = model.Mixed_7c(torch.randn(2, 2048, 8, 8))
    branches = ["branch1x1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"]
    expected = torch.cat([sd[f"Mixed_7c.{b}.bn.bias"] for b in branches]).clamp(min=0)
    assert out.shape == (2, 2048, 8, 8)
    torch.testing.assert_close(out.mean(dim=(2, 3)), expected.expand(2, -1), atol=1e-6, rtol=0)


def _two_sample_fid(x: np.ndarray, y: np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to two samples each, in closed form.

    Two samples a, b give the covariance d d^T / 2 with d = a - b, so S1 S2 = (d1 d1^T)(d2 d2^T) / 4
    has one non-zero eigenvalue (d1.d2)^2 / 4 and tr((S1 S2)^(1/2)) = |d1.d2| / 2."""
    d1, d2 = x[0] - x[1], y[0] - y[1]
    diff = x.mean(axis=0) - y.mean(axis=0)
    return float(diff @ diff + (d1 @ d1 + d2 @ d2) / 2 - abs(d1 @ d2))


def test_inception_fid_of_two_images_a_side_is_the_closed_form_on_pool3_features(inception_file):
    """FID from the weight file equals the two-sample closed form on pool3 features taken by hand:
    the network loaded from the file, images scaled to [0, 1] in RGB order, one forward pass."""
    real = RNG.integers(0, 256, size=(2, 48, 48, 3)).astype(np.uint8)
    fake = np.clip(real.astype(int) + RNG.integers(0, 80, size=(2, 1, 1, 3)), 0, 255).astype(np.uint8)
    network = inception.InceptionV3()
    network.load_state_dict(torch.load(inception_file, weights_only=True))
    with torch.no_grad():
        pool3 = network.eval()(torch.from_numpy(np.concatenate([real, fake])).permute(0, 3, 1, 2) / 255.0)
    features = pool3.double().numpy()
    expected = _two_sample_fid(features[:2], features[2:])
    assert expected > 1e-3 * (features**2).sum(axis=1).mean()  # the images' features differ
    # Four images through the full network at 299x299, about 0.2 s each.
    assert fid.inception_fid(real, fake, inception_file, batch_size=1) == pytest.approx(expected, rel=1e-5)
    # The same images on a [0, 1] scale, and cached (N, 2048) real features taken as they are.
    assert fid.inception_fid(features[:2], fake / 255.0, inception_file, data_range=1.0) == pytest.approx(
        expected, rel=1e-5)
    cached, other = RNG.normal(size=(2, 2048)), RNG.normal(loc=0.1, size=(2, 2048))
    assert fid.inception_fid(cached, other, inception_file) == pytest.approx(_two_sample_fid(cached, other), rel=1e-9)


# ---------------------------------------------------------------- FD-face


@pytest.fixture(scope="module")
def face_crops() -> dict[str, np.ndarray]:
    """Four 96x96 Wav2Lip-style crops per real person, each from a box shifted or scaled a little."""
    detector = LandmarkDetector("dlib")
    prep = from_params_yaml(PreprocessParams, "preprocess")  # the study's pads
    crops = {}
    for identity in ("hopper", "goatee", "woman", "glasses"):
        image = cv2.cvtColor(cv2.imread(str(assets.portrait_path(identity, EXTERNAL))), cv2.COLOR_BGR2RGB)
        box = face_boxes(detector.landmarks(image)[None], image.shape, prep.pads, prep.smooth)[0].astype(np.float64)
        side = box[2] - box[0]
        moves = [(0, 0, 1.0), (0.02, -0.02, 1.0), (-0.02, 0.01, 1.04), (0.01, 0.02, 0.97)]
        crops[identity] = np.stack([
            crop_frame(image, np.array([box[0] + dx * side, box[1] + dy * side,
                                        box[0] + (dx + s) * side, box[1] + (dy + s) * side]), 96)
            for dx, dy, s in moves])
    return crops


@pytest.fixture(scope="module")
def descriptors(face_crops) -> dict[str, np.ndarray]:
    return {identity: fid.face_embeddings(crops) for identity, crops in face_crops.items()}


def test_face_descriptors_of_one_person_are_close_and_of_two_people_far(descriptors):
    # dlib's verification threshold is 0.6 on these unit-scale descriptors.
    people = list(descriptors)
    for person in people:
        d = descriptors[person]
        assert d.shape == (4, 128)
        assert np.linalg.norm(d[:, None] - d[None], axis=-1).max() < 0.45
    for i, a in enumerate(people):
        for b in people[i + 1 :]:
            assert np.linalg.norm(descriptors[a][:, None] - descriptors[b][None], axis=-1).min() > 0.6


def test_fd_face_is_small_for_the_same_people_and_large_for_others(face_crops, descriptors):
    real = np.concatenate([face_crops["hopper"][:2], face_crops["goatee"][:2]])
    same = np.concatenate([face_crops["hopper"][2:], face_crops["goatee"][2:]])
    real_descriptors = np.concatenate([descriptors["hopper"][:2], descriptors["goatee"][:2]])
    others = np.concatenate([descriptors["woman"][:2], descriptors["glasses"][:2]])
    near = fid.face_embedding_fd(real, same)
    far = fid.face_embedding_fd(real_descriptors, others)
    assert 0 <= near < 0.5 * far
    # Cached descriptors give the same number as the images they came from.
    assert fid.face_embedding_fd(real_descriptors, same) == pytest.approx(near, abs=1e-9)


# ---------------------------------------------------------------- LPIPS


def _reference_alexnet(seed: int) -> dict[str, torch.Tensor]:
    """Random tensors named as torchvision's alexnet-owt-7be5be79.pth (features.* and some of its
    classifier.*, which LPIPS ignores)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"features.0": (64, 3, 11, 11), "features.3": (192, 64, 5, 5), "features.6": (384, 192, 3, 3),
              "features.8": (256, 384, 3, 3), "features.10": (256, 256, 3, 3)}
    sd = {}
    for name, shape in shapes.items():
        sd[f"{name}.weight"] = torch.randn(*shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        sd[f"{name}.bias"] = 0.05 * torch.randn(shape[0], generator=g)
    sd["classifier.1.bias"] = torch.zeros(4096)
    sd["classifier.6.bias"] = torch.zeros(1000)
    return sd


def _reference_linear(seed: int) -> dict[str, torch.Tensor]:
    """Non-negative weights named and shaped as lpips's weights/v0.1/alex.pth."""
    g = torch.Generator().manual_seed(seed)
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
            for i, c in enumerate((64, 192, 384, 256, 256))}


@pytest.fixture
def lpips_files(tmp_path):
    backbone, linear = tmp_path / lpips.ALEXNET_WEIGHTS_FILE, tmp_path / "alex.pth"
    torch.save(_reference_alexnet(seed=0), backbone)
    torch.save(_reference_linear(seed=0), linear)
    return backbone, linear


def test_lpips_weight_files_load_strictly(lpips_files, tmp_path):
    backbone, linear = lpips_files
    model = lpips.LPIPS.from_files(backbone, linear)
    assert torch.equal(model.net.features[10].weight, _reference_alexnet(seed=0)["features.10.weight"])
    assert torch.equal(model.lin3.model[1].weight, _reference_linear(seed=0)["lin3.model.1.weight"])
    assert not model.training

    wrong = tmp_path / "wrong.pth"
    sd = _reference_linear(seed=0)
    sd["lin1.model.1.weight"] = torch.rand(1, 64, 1, 1)
    torch.save(sd, wrong)
    with pytest.raises(CheckpointError, match="1 wrongly shaped key such as 'lin1.model.1.weight'"):
        lpips.LPIPS.from_files(backbone, wrong)


def test_lpips_of_an_image_with_itself_is_zero_and_grows_with_distortion(lpips_files):
    backbone, linear = lpips_files
    a = RNG.integers(0, 256, size=(3, 64, 64, 3)).astype(np.uint8)
    slightly = np.clip(a.astype(int) + RNG.integers(-8, 9, size=a.shape), 0, 255)
    badly = np.clip(a.astype(int) + RNG.integers(-80, 81, size=a.shape), 0, 255)
    assert lpips.lpips_distance(a, a, backbone, linear) == 0.0
    assert 0 < lpips.lpips_distance(slightly, a, backbone, linear) < lpips.lpips_distance(badly, a, backbone, linear)


def test_lpips_with_identity_like_weights_matches_numpy():
    # conv1 copies the centre pixel of its 11x11 window (input channel k to output channel k), only
    # lin0 is non-zero and all ones: LPIPS is then the mean over conv1's 15x15 positions (centres
    # at pixels 3, 7, ..., 59 of a 64-pixel side) of |u(x) - u(y)|^2, u = ReLU(scaled RGB) / its length.
    model = lpips.LPIPS().eval()
    with torch.no_grad():
        model.net.features[0].weight.zero_()
        model.net.features[0].bias.zero_()
        for k in range(3):
            model.net.features[0].weight[k, k, 5, 5] = 1.0
        for i in range(5):
            getattr(model, f"lin{i}").model[1].weight.fill_(1.0 if i == 0 else 0.0)
    x = RNG.integers(0, 256, size=(2, 64, 64, 3)).astype(np.uint8)
    y = RNG.integers(0, 256, size=(2, 64, 64, 3)).astype(np.uint8)

    def unit(images: np.ndarray) -> np.ndarray:
        scaled = (images[:, 3:60:4, 3:60:4] / 127.5 - 1.0 - np.array([-0.030, -0.088, -0.188])) / np.array(
            [0.458, 0.448, 0.450])
        r = np.maximum(scaled, 0.0)
        return r / (np.linalg.norm(r, axis=-1, keepdims=True) + 1e-10)

    expected = ((unit(x) - unit(y)) ** 2).sum(axis=-1).mean()
    assert lpips.lpips_distance(x, y, model=model) == pytest.approx(expected, rel=1e-5)


def test_lpips_without_its_weight_files_says_which_is_missing(lpips_files, tmp_path):
    backbone, linear = lpips_files
    images = np.zeros((1, 64, 64, 3), np.uint8)
    with pytest.raises(MetricUnavailable, match="AlexNet weights .* no path to it was given"):
        lpips.lpips_distance(images, images)
    with pytest.raises(MetricUnavailable, match=r"linear layers \(weights/v0.1/alex.pth\), which is not at"):
        lpips.lpips_distance(images, images, backbone, tmp_path / "nowhere.pth")
    with pytest.raises(MetricUnavailable, match="AlexNet weights .*, which is not at"):
        lpips.LPIPS.from_files(tmp_path / "nowhere.pth", linear)
