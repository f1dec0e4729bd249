"""The inversion figure: one row per explained image, masks over the image, valid files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neuronviz as nv
from neuronviz.methods.inversion import InversionResult


def result(b: int, h: int = 16, w: int = 24) -> InversionResult:
    torch.manual_seed(0)
    return InversionResult(
        mask=torch.rand(b, h, w),
        inversion_mask=torch.rand(b, h, w),
        target=[285, 967][:b],
        probability=torch.tensor([0.7, 0.2][:b], dtype=torch.float64),
        losses={"stage1": torch.zeros(b, 2), "stage2": torch.zeros(b, 3)},
        weights=torch.rand(b, 4),
        inversion_weights=torch.rand(b, 4),
        mask_layer="head",
        feature_layer="head",
    )


def test_one_row_per_target_of_one_image_with_class_names(tmp_path):
    x = nv.preprocess(torch.rand(3, 16, 24), size=16)[..., :16]
    x = torch.nn.functional.interpolate(x, size=(16, 24))
    fig = nv.render_inversion(result(2), x, path=tmp_path / "inv.svg")
    assert len(fig.axes) == 6
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("Egyptian cat") and titles[5] == "stage 2: espresso (class 967)"
    assert (tmp_path / "inv.svg").read_text().lstrip().startswith("<?xml")


def test_images_that_do_not_match_the_masks_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        nv.render_inversion(result(2), torch.zeros(3, 3, 16, 24))


def test_pictures_are_drawn_as_given_under_each_mask():
    picture = np.random.default_rng(0).random((16, 24, 3)).astype(np.float32)
    r = result(2)
    fig = nv.render_inversion(r, pictures=[picture], categories=[f"c{i}" for i in range(1000)])
    for b in range(2):
        row = fig.axes[3 * b:3 * b + 3]
        for ax in row:
            np.testing.assert_array_equal(np.asarray(ax.get_images()[0].get_array()), picture)
        np.testing.assert_array_equal(np.asarray(row[1].get_images()[1].get_array()), r.inversion_mask[b].numpy())
        np.testing.assert_array_equal(np.asarray(row[2].get_images()[1].get_array()), r.mask[b].numpy())
    assert fig.axes[2].get_title() == "stage 2: c285"


def test_neither_or_both_of_images_and_pictures_are_refused():
    picture = np.zeros((16, 24, 3), dtype=np.float32)
    with pytest.raises(nv.NeuronvizError, match="one of the two"):
        nv.render_inversion(result(1))
    with pytest.raises(nv.NeuronvizError, match="one of the two"):
        nv.render_inversion(result(1), torch.zeros(1, 3, 16, 24), pictures=[picture])
    with pytest.raises(nv.NeuronvizError, match="do not match"):
        nv.render_inversion(result(1), pictures=[np.zeros((8, 8, 3), dtype=np.float32)])
