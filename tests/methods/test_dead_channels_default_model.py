"""On the cat photo with the default layers, only dead channels (constant maps) lose their precision."""

from __future__ import annotations

import pytest
import torch

import neuronviz as nv
from neuronviz.core.layer_choice import default_layers


@pytest.mark.slow
def test_no_channel_with_a_varying_map_gets_nan_precision_on_the_cat_photo():
    model = nv.default_model()
    x = nv.preprocess(nv.sample_image("cat"))
    layers = default_layers(model, nv.layer_summary(model, x))
    scores = nv.score_neurons(model, x, layers)  # the paper's 50 copies
    samples = nv.perturb.MultiplicativeGaussian().sample(x, range(50), seed=0)
    with torch.no_grad(), nv.capture(model, layers) as rec:
        model.eval()
        model(samples)
        acts = rec.outputs()
    for layer in layers:
        a = acts[layer].flatten(2)  # (N, C, positions)
        constant = (a.amax(0) == a.amin(0)).all(1)
        nan = torch.isnan(scores.precision[layer])
        assert scores.exclusion_rule[layer] == "mean"  # post-ReLU6: the paper's rule
        assert not (nan & ~constant).any()
        assert nan.sum() == (constant & scores.excluded[layer]).sum()
        assert torch.isfinite(scores.precision[layer][~constant]).all()
