"""score_neurons on the real embedded default model and photo."""

from __future__ import annotations

import pytest
import torch

import neuronviz as nv


@pytest.fixture(scope="module")
def model():
    return nv.default_model()


@pytest.mark.slow
def test_default_model_scores_on_the_cat_photo(model, snapshot):
    x = nv.preprocess(nv.sample_image("cat"))
    snap = snapshot(model)
    scores = nv.score_neurons(model, x, ["blocks.10", "blocks.15"], n_samples=12, batch_size=5)
    snap.assert_unchanged()
    assert 281 <= scores.target <= 285  # a cat class
    assert scores.shapes == {"blocks.10": (112, 14, 14), "blocks.15": (320, 7, 7)}
    corr = scores.correlation["blocks.15"]
    assert corr.shape == (320,) and torch.nanmean(corr) > 0 and (corr[~corr.isnan()] <= 1).all()
    top = scores.top("correlation", k=5)
    assert [len(v) for v in top.values()] == [5, 5]
    # the top channel's correlation is the layer's maximum
    assert corr[top["blocks.15"][0]] == torch.max(corr[~corr.isnan()])
    assert 0.0 <= nv.overlap(top, scores.top("precision", k=5)) <= 0.5


@pytest.mark.slow
def test_layer_name_typo_on_the_default_model_suggests_the_real_name(model):
    x = nv.preprocess(nv.sample_image("coffee"))
    with pytest.raises(nv.LayerNotFoundError, match="'blocks.10'"):
        nv.score_neurons(model, x, ["block.10"])


@pytest.mark.slow
def test_top_predictions_name_the_classes_and_leave_the_model_as_it_was(model, snapshot):
    snap = snapshot(model)
    top = nv.top_predictions(model, nv.preprocess(nv.sample_image("coffee")), k=3, categories=nv.imagenet_categories())
    snap.assert_unchanged()
    assert top[0][:2] == (967, "espresso")
    assert len(top) == 3 and top[0][2] >= top[1][2] >= top[2][2] > 0
