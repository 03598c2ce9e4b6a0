"""The flow legend is the colour coding it explains: a pixel of the key is coloured as the flow
from the key's centre to that pixel, and still is white."""
import numpy as np

from opflowtalker.viz import flow_legend, flow_to_color


def test_the_legend_colours_each_direction_as_flow_to_color_does():
    key = flow_legend(65)
    assert key.shape == (65, 65, 3) and key.dtype == np.uint8
    assert key[32, 32].tolist() == [255, 255, 255]  # the centre: no motion
    assert key[0, 0].tolist() == [255, 255, 255]  # outside the disk
    for (dy, dx) in [(0, 32), (32, 0), (0, -32), (-32, 0), (20, -20)]:
        expected = flow_to_color(np.array([[[dx, dy]]], float), max_norm=32)[0, 0]
        assert key[32 + dy, 32 + dx].tolist() == expected.tolist()
    assert key[32, 64].tolist() != key[64, 32].tolist()  # right and down differ
