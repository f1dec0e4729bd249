"""nv.demo(): the explorer on the default model and the cat photo."""

from __future__ import annotations

import time

import pytest

import neuronviz as nv
from neuronviz.core.layer_choice import EFFICIENTNET_LITE0_LAYERS


@pytest.mark.slow
def test_demo_scores_the_default_models_post_activation_layers_and_clicks_fast():
    w = nv.demo(n_samples=8)
    w.wait(300)
    assert w.status == "done", w.error
    assert w.layers == list(EFFICIENTNET_LITE0_LAYERS)  # the default model's post-activation maps
    shapes = {i.name: tuple(i.shape) for i in nv.layer_summary(w.model, w.x)}
    assert w.scores.shapes == {layer: shapes[layer] for layer in w.layers}
    deep = w.layers[1]
    top1 = nv.top_predictions(w.model, w.x, k=1)[0][0]
    assert w.target == w.scores.target == top1
    assert "Egyptian cat" in w.controls["target"].label
    times = []
    for channel in (3, 50, 200, 7):
        start = time.perf_counter()
        w.selected = (deep, channel)
        times.append(time.perf_counter() - start)
    assert w.selected_label.value == f"{deep} · channel 7"
    assert sorted(times)[1] < 1.0  # aim: well under 0.2 s; generous for a loaded machine
