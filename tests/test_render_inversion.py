"""The inversion figure: one row per explained image, masks over the image, valid files."""

from __future__ import annotations

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
