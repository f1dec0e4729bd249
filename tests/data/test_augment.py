"""augment: seeded random views of one photo, normalised like preprocess."""

from __future__ import annotations

import pytest
import torch

import neuronviz as nv


def test_views_are_seeded_distinct_and_normalised_like_preprocess():
    image = nv.sample_image("coffee")
    a = nv.augment(image, 6, size=64, seed=1)
    assert a.shape == (6, 3, 64, 64) and a.dtype == torch.float32
    assert torch.equal(a, nv.augment(image, 6, size=64, seed=1))
    assert not torch.equal(a, nv.augment(image, 6, size=64, seed=2))
    assert all(not torch.equal(a[0], a[i]) for i in range(1, 6))
    low, high = nv.preprocess(torch.zeros(3, 8, 8)).min(), nv.preprocess(torch.ones(3, 8, 8)).max()
    assert a.min() >= low - 1e-5 and a.max() <= high + 1e-5


def test_full_scale_unflipped_view_without_colour_change_is_the_preprocessed_photo():
    # min_scale=1 crops the whole short side; compare the colour-normalised content
    image = nv.sample_image("cat")
    views = nv.augment(image, 8, size=96, seed=0, min_scale=1.0)
    reference = nv.preprocess(image, size=96)[0]
    best = max(torch.corrcoef(torch.stack([v.flatten(), reference.flatten()]))[0, 1] for v in views)
    assert best > 0.95


@pytest.mark.parametrize("kwargs, message", [({"n": 0}, "positive"), ({"n": 3, "min_scale": 0}, "min_scale")])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(nv.NeuronvizError, match=message):
        nv.augment(nv.sample_image("cat"), **kwargs)
