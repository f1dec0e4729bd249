"""The explorer's figure draws the bootstrap intervals: whiskers on the scatter, rank intervals and ties in the lists."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_nets import tiny_cnn

import neuronviz as nv
from neuronviz.render.explorer import INTERVAL_LEVEL, ExplorerView, render_explorer

LAYERS = ["relu1", "relu2"]
K = 3


def _view(bootstrap: int) -> ExplorerView:
    net = tiny_cnn().eval()
    torch.manual_seed(1)
    x = torch.rand(1, 3, 24, 24)
    scores = nv.score_neurons(net, x, LAYERS, target=1, n_samples=24, bootstrap=bootstrap, keep_channel_means=True,
                              keep_maps=[0], progress=False)
    maps = {layer: m[0] for layer, m in (scores.maps or {}).items()}
    return ExplorerView(scores=scores, maps=maps, image=np.full((24, 24, 3), 0.5), selected=(LAYERS[0], 0), k=K)


def _with_gid(fig, prefix: str) -> list:
    return [a for a in fig.findobj(lambda a: (a.get_gid() or "").startswith(prefix))]


@pytest.fixture(scope="module")
def with_replicates() -> ExplorerView:
    return _view(bootstrap=16)


def test_the_figure_has_a_whisker_per_interval_of_the_shown_top_k_points(with_replicates):
    view = with_replicates
    fig = render_explorer(view, dpi=40)
    scatter = next(a for a in fig.axes if a.get_label() == "scatter")
    drawn = [seg for lines in _with_gid(fig, "interval-whiskers") for seg in lines.get_segments()]
    assert drawn and all(lines.axes is scatter for lines in _with_gid(fig, "interval-whiskers"))
    scores = view.scores
    corr_iv, prec_iv = scores.interval("correlation", INTERVAL_LEVEL), scores.interval("precision", INTERVAL_LEVEL)
    top_c, top_p = scores.top("correlation", K), scores.top("precision", K)
    horizontal, vertical = set(), set()
    for layer in LAYERS:
        for c in set(top_c[layer]) | set(top_p[layer]):
            x, y = float(scores.correlation[layer][c]), float(scores.precision[layer][c])
            horizontal.add((round(float(corr_iv[layer][0][c]), 9), round(float(corr_iv[layer][1][c]), 9)))
            if math.isfinite(y):
                vertical.add((round(x, 9), round(float(prec_iv[layer][0][c]), 9)))
    got_h = {(round(float(s[0][0]), 9), round(float(s[1][0]), 9)) for s in drawn if s[0][1] == s[1][1]}
    got_v = {(round(float(s[0][0]), 9), round(float(s[0][1]), 9)) for s in drawn if s[0][0] == s[1][0]}
    assert horizontal <= got_h  # every shown point's correlation interval, lower to upper
    assert vertical <= got_v  # and its precision interval, from the lower bound


def test_the_lists_carry_each_entrys_rank_interval_and_mark_the_tied_ones(with_replicates):
    view = with_replicates
    fig = render_explorer(view, dpi=40)
    texts = _with_gid(fig, "rank-interval")
    scores = view.scores
    entries = sum(len(scores.top(m, K)[layer]) for m in ("correlation", "precision") for layer in LAYERS)
    tied = sum(sum(scores.tied(m, K, INTERVAL_LEVEL)[layer]) for m in ("correlation", "precision") for layer in LAYERS)
    assert len(texts) == entries
    assert len([t for t in texts if t.get_gid() == "rank-interval-tied"]) == tied
    assert all(t.get_text().startswith("≈") == (t.get_gid() == "rank-interval-tied") for t in texts)
    lo, hi = scores.rank_interval("correlation", INTERVAL_LEVEL)[LAYERS[0]]
    best = scores.top("correlation", K)[LAYERS[0]][0]
    assert any(t.get_text().endswith(f"#{lo[best]:.0f}–{hi[best]:.0f}") for t in texts)


def test_scores_without_replicates_draw_no_whiskers_and_no_rank_intervals():
    fig = render_explorer(_view(bootstrap=0), dpi=40)
    assert not _with_gid(fig, "interval-whiskers") and not _with_gid(fig, "rank-interval")


def test_the_explorers_exported_figure_includes_the_intervals(tmp_path):
    x, _ = nv.load_digits()
    w = nv.NeuronExplorer(nv.digits_model(), x[:1], ["relu2"], n_samples=12)
    try:
        w.wait(60)
        assert w.scores.replicates  # the explorer scores with a bootstrap
        fig = w.figure(dpi=40)
        assert _with_gid(fig, "interval-whiskers") and _with_gid(fig, "rank-interval")
        assert w.export(tmp_path / "explorer.svg").stat().st_size > 0
        assert "interval-whiskers" in (tmp_path / "explorer.svg").read_text()  # the gid is kept in SVG
    finally:
        w.close()
