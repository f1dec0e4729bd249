"""The overlay blending, the strongest-cell box and where the scatter puts infinite or NaN precision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib import colormaps

from neuronviz.render.explorer import blend_overlay, cell_box, strongest_cell
from neuronviz.widgets.panels import OverlayPanel, scatter_positions


def test_blend_is_the_colour_mapped_heat_over_the_image_with_heat_weighted_opacity():
    rng = np.random.default_rng(0)
    img = rng.random((5, 7, 3)).astype(np.float32)
    heat = rng.random((5, 7)).astype(np.float32)
    out = blend_overlay(img, heat, 0.5)
    colour = colormaps["jet"](heat)[..., :3]  # reference: matplotlib's own mapping (256-entry table)
    alpha = 0.5 * (0.2 + 0.8 * heat)[..., None]
    np.testing.assert_allclose(out, img * (1 - alpha) + colour * alpha, atol=2.5 / 255)
    np.testing.assert_array_equal(blend_overlay(img, heat, 0.0), img)
    with pytest.raises(ValueError):
        blend_overlay(img, heat[:4], 0.5)
    with pytest.raises(ValueError):
        blend_overlay(img, heat, 1.5)


def test_the_box_is_the_cell_of_a_planted_peak_scaled_to_the_image():
    amap = torch.zeros(7, 7)
    amap[2, 5] = 3.0
    assert strongest_cell(amap) == (2, 5)
    assert cell_box((2, 5), (7, 7), (224, 224)) == (64.0, 160.0, 96.0, 192.0)
    assert cell_box((0, 1), (2, 4), (100, 200)) == (0.0, 50.0, 50.0, 100.0)


def test_the_overlay_panel_draws_the_box_on_the_planted_peak():
    img = np.full((56, 56, 3), 0.5, dtype=np.float32)
    panel = OverlayPanel(img, opacity=0.0)  # no colour: only the frame changes pixels
    amap = torch.zeros(4, 4)
    amap[3, 1] = 1.0
    panel.show(amap)
    assert panel.box == (42.0, 14.0, 56.0, 28.0)
    pic = panel.render().astype(int)
    changed = np.argwhere(np.abs(pic - 128).sum(axis=2) > 0)
    assert changed[:, 0].min() == 42 and changed[:, 0].max() == 55
    assert changed[:, 1].min() == 14 and changed[:, 1].max() == 27


def test_infinite_precision_goes_on_top_and_nan_at_the_bottom_one_point_each():
    corr = np.array([0.2, math.nan, 0.5, 0.9])
    prec = np.array([10.0, 100.0, math.inf, math.nan])
    x, y, lo, hi = scatter_positions(corr, prec)
    assert len(x) == len(y) == 4
    assert x[1] == 0.0 and x[3] == 0.9
    assert y[0] == 10.0 and y[1] == 100.0
    assert y[2] > 100.0 and y[3] < 10.0
    assert lo < y.min() and hi > y.max()
