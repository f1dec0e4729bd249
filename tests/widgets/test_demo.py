"""nv.demo(): the explorer on the default model and the cat photo."""

from __future__ import annotations

import time

import pytest

import neuronviz as nv


@pytest.mark.slow
def test_demo_scores_two_late_blocks_of_the_default_model_and_clicks_fast():
    w = nv.demo(n_samples=8)
    w.wait(300)
    assert w.status == "done", w.error
    assert w.layers == ["blocks.10", "blocks.15"]
    assert w.scores.shapes == {"blocks.10": (112, 14, 14), "blocks.15": (320, 7, 7)}
    top1 = nv.top_predictions(w.model, w.x, k=1)[0][0]
    assert w.target == w.scores.target == top1
    assert "Egyptian cat" in w.controls.target.label
    times = []
    for channel in (3, 50, 200, 7):
        start = time.perf_counter()
        w.selected = ("blocks.15", channel)
        times.append(time.perf_counter() - start)
    assert w.selected_label.value == "blocks.15 · channel 7"
    assert sorted(times)[1] < 1.0  # aim: well under 0.2 s; generous for a loaded machine
