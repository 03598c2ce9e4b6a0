"""One sampler: a field read at moved pixel coordinates, bilinearly, as scipy reads it; whole pixels
read exactly; the generator's warp, the OFS loss's flow composition and RAFT's lookup share it."""
import numpy as np
import pytest
import torch
from scipy.ndimage import map_coordinates

from opflowtalker.flow.utils import bilinear_sampler
from opflowtalker.warp import pixel_grid, sample, warp


def test_a_field_is_read_bilinearly_at_pixel_coordinates_as_scipy_reads_it():
    rng = np.random.default_rng(0)
    field = rng.random((1, 2, 12, 16)).astype(np.float32)
    coords = np.stack([rng.uniform(0, 15, (5, 7)), rng.uniform(0, 11, (5, 7))], axis=-1).astype(np.float32)
    got = sample(torch.from_numpy(field), torch.from_numpy(coords)[None]).numpy()[0]
    for c in range(2):
        expected = map_coordinates(field[0, c], [coords[..., 1], coords[..., 0]], order=1)
        assert np.allclose(got[c], expected, atol=1e-5)


def test_whole_pixel_moves_read_pixels_exactly_and_outside_reads_the_border_or_zero():
    image = torch.arange(20.0).view(1, 1, 4, 5)
    moved = warp(image, torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 4, 5))
    assert torch.equal(moved[0, 0, :, :4], image[0, 0, :, 1:])
    assert torch.equal(moved[0, 0, :, 4], image[0, 0, :, 4])  # beyond the right edge: the border
    outside = torch.tensor([[[[-3.0, 1.0]]]])
    assert sample(image, outside, padding="zeros").item() == 0.0
    assert sample(image, outside, padding="border").item() == image[0, 0, 1, 0].item()
    assert torch.equal(bilinear_sampler(image, outside), sample(image, outside, padding="zeros"))


def test_one_motion_field_warps_every_level_of_a_decoder():
    # A shift of 2 image pixels is one pixel of a half-size feature map.
    features = torch.arange(48.0).view(1, 3, 4, 4)
    motion = torch.zeros(1, 2, 8, 8)
    motion[:, 1] = 2.0
    moved = warp(features, motion)
    assert torch.allclose(moved[..., :3, :], features[..., 1:, :])
    assert torch.equal(pixel_grid(2, 3, features)[1, 2], torch.tensor([2.0, 1.0]))


def test_zero_motion_is_the_identity():
    features = torch.randn(2, 4, 6, 6)
    assert torch.allclose(warp(features, torch.zeros(2, 2, 24, 24)), features, atol=1e-6)


@pytest.mark.parametrize("size", [(1, 5), (5, 1)])
def test_a_single_pixel_row_or_column_is_read_without_dividing_by_zero(size):
    image = torch.ones(1, 1, *size)
    assert torch.isfinite(sample(image, torch.zeros(1, 1, 1, 2))).all()
