"""NeuronExplorer: colour the scatter and sort a table of the top-k by generality, once the examples are found."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import neuronviz as nv
from neuronviz.widgets.examples import SEARCH_BATCH

LAYERS = ["relu2", "relu3"]


def _found(w, seconds: float = 60.0) -> None:
    w.wait(seconds)
    end = time.monotonic() + seconds
    while set(w.generality) != set(LAYERS) and time.monotonic() < end:
        w.examples.wait(1.0)
        time.sleep(0.05)
    assert set(w.generality) == set(LAYERS), w.examples.panel.note.value


@pytest.fixture(scope="module")
def explorer():
    x, y = nv.load_digits()
    data = torch.utils.data.TensorDataset(x[:400], y[:400])
    w = nv.NeuronExplorer(nv.digits_model(), x[:1], LAYERS, examples=data, n_samples=8)
    try:
        _found(w)
        yield w, x[:400]
    finally:
        w.close()


def test_generality_is_that_of_the_data_set_examples(explorer):
    w, x = explorer
    ex = nv.top_examples(nv.digits_model(), x, LAYERS, k=9, batch_size=SEARCH_BATCH, progress=False)
    for layer in LAYERS:
        assert torch.equal(w.generality[layer].share, ex.generality(layer).share)


def test_the_scatter_is_coloured_by_generality_on_request_and_back_by_layer(explorer):
    w, _ = explorer
    scatter = w.scatter
    assert "generality" in [v for _, v in scatter.colour_by.options]
    scatter.colour_by.value = "generality"
    try:
        want = np.concatenate([w.generality[layer].share.numpy() for layer in LAYERS])  # points: layers, channels
        np.testing.assert_allclose(np.asarray(scatter.points_mark.color, dtype=float), want)
        assert scatter.points_mark.scales["color"] is scatter.generality_scale
        w.top_k = 3  # a new top-k keeps the colouring
        np.testing.assert_allclose(np.asarray(scatter.points_mark.color, dtype=float), want)
    finally:
        scatter.colour_by.value = "layer"
    layer_index = np.repeat(np.arange(len(LAYERS)), 32)
    assert np.array_equal(np.asarray(scatter.points_mark.color), layer_index)
    assert scatter.points_mark.scales["color"] is scatter.colour_scale


def test_the_table_lists_both_metrics_top_k_sorted_by_generality_and_a_pick_selects(explorer):
    w, _ = explorer
    table, scores, k = w.generality_table, w.scores, w.top_k
    top_c, top_p = scores.top("correlation", k), scores.top("precision", k)
    want = {(layer, c) for top in (top_c, top_p) for layer in LAYERS for c in top[layer]}
    assert {(r["layer"], r["channel"]) for r in table.rows} == want
    for row in table.rows:
        assert row["share"] == pytest.approx(float(w.generality[row["layer"]].share[row["channel"]]))
    shares = [r["share"] for r in table.sorted_rows()]
    assert shares == sorted(shares, reverse=True)
    table.sort.value = "share+"
    assert [r["share"] for r in table.sorted_rows()] == sorted(shares)
    mean_c = np.mean([float(w.generality[la].share[c]) for la in LAYERS for c in top_c[la]])
    assert f"correlation top-k {mean_c:.0%}" in table.summary.value
    first = table.sorted_rows()[0]
    table.table.value = 0  # what a click on the first row does
    assert w.selected == (first["layer"], first["channel"])
    table.sort.value = "share-"


def test_without_examples_there_is_nothing_to_colour_or_sort_by():
    x, _ = nv.load_digits()
    w = nv.NeuronExplorer(nv.digits_model(), x[:1], ["relu3"], n_samples=8)
    try:
        w.wait(30)
        assert w.generality == {}
        assert [v for _, v in w.scatter.colour_by.options] == ["layer"]
        assert not w.generality_table.rows
    finally:
        w.close()
