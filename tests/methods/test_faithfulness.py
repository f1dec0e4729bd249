"""Deletion and insertion curves of neuron rankings and of input masks, checked on planted networks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from test_knockout import CONST, W_CONST, W_DRIVE, planted
from tiny_nets import tiny_cnn
from torch import nn

import neuronviz as nv
from neuronviz.methods.faithfulness import ALL_LAYERS, PIXELS, collect_rankings, normalised_auc


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(1, 3, 8, 8) + 0.5


def contributions(x: torch.Tensor) -> dict[int, float]:
    """Each feat channel's share of logit 0 in the planted network."""
    return {0: W_DRIVE * float(x[0, 0].mean()), 1: 0.0, 2: W_CONST * CONST, 3: 0.3 * float(x[0, 1].mean())}


def test_deletion_follows_the_planted_contributions_and_its_auc_is_the_trapezoid(x, snapshot):
    net = planted()
    snap = snapshot(net)
    order = [0, 2, 3, 1]
    curves = nv.deletion_curve(net, x, {"feat": order}, ks=range(5), random=0, target=0, output="logit")
    c = curves.curve("ranking", "feat")
    part = contributions(x)
    expected = [curves.original - sum(part[ch] for ch in order[:k]) for k in range(5)]
    assert c.values == pytest.approx(expected, abs=1e-5)
    auc = np.trapezoid(np.asarray(expected) / curves.original, np.arange(5) / 4)
    assert c.auc == pytest.approx(auc, abs=1e-5) and curves.auc["feat"]["ranking"] == c.auc
    snap.assert_unchanged()


def test_insertion_keeps_only_the_top_k(x):
    net = planted()
    order = [3, 0, 1, 2]
    curves = nv.deletion_curve(net, x, {"feat": order}, ks=[0, 1, 2, 4], mode="insertion", random=0, target=0,
                               output="logit")
    part, bias = contributions(x), 0.1
    expected = [bias + sum(part[ch] for ch in order[:k]) for k in (0, 1, 2, 4)]
    assert curves.curve("ranking").values == pytest.approx(expected, abs=1e-5)
    assert curves.curve("ranking").fraction == pytest.approx([0, 0.25, 0.5, 1])


def test_normalised_auc_is_the_mean_height_relative_to_the_original():
    assert normalised_auc(np.array([2.0, 2.0, 2.0]), np.array([0, 0.5, 1]), 2.0) == pytest.approx(1.0)
    assert normalised_auc(np.array([2.0, 0.0]), np.array([0.0, 1.0]), 2.0) == pytest.approx(0.5)
    assert normalised_auc(np.array([1.0, 0.0]), np.array([0.5, 1.0]), 1.0) == pytest.approx(0.5)
    assert math.isnan(normalised_auc(np.array([1.0]), np.array([0.0]), 0.0))


def test_a_curve_point_equals_the_knockout_of_the_ranking_top_k(x):
    net = tiny_cnn()
    ranking = {"conv1": [4, 1, 5, 0], "relu2": [3, 0, 2]}
    curves = nv.deletion_curve(net, x, ranking, ks=[0, 1, 3], random=0, across_layers=True, batch_size=4)
    for k in (1, 3):
        alone = nv.knockout_effect(net, x, {"conv1": ranking["conv1"][:k]})
        assert curves.curve("ranking", "conv1").values[[0, 1, 3].index(k)] == pytest.approx(alone.knocked[0], abs=1e-6)
    # across layers, merged by rank: conv1[0], relu2[0], conv1[1], relu2[1], ...
    merged = nv.knockout_effect(net, x, {"conv1": [4, 1], "relu2": [3]})
    assert curves.curve("ranking", ALL_LAYERS).values[2] == pytest.approx(merged.knocked[0], abs=1e-6)
    assert curves.groups == ["conv1", "relu2", ALL_LAYERS]


def test_one_batched_pass_per_batch_and_repeated_sets_run_once(x):
    net = tiny_cnn()
    scores = nv.score_neurons(net, x, ["conv1", "conv2"], n_samples=8)
    calls = []
    handle = net.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        curves = nv.deletion_curve(net, x, scores, ks=[0, 1, 2, 3, 4], random=4, batch_size=8)
    finally:
        handle.remove()
    points = sum(len(c.ks) * (len(c.aucs) if c.is_random else 1) for c in curves.curves)
    assert curves.n_sets < points  # k = 0 is the same set for every ranking
    assert len(calls) == 1 + math.ceil(curves.n_sets / 8) == curves.n_forward
    assert all(n <= 8 for n in calls[1:])


def test_random_rankings_give_a_mean_a_band_and_are_reproducible(x):
    net = tiny_cnn()
    a = nv.deletion_curve(net, x, {"conv1": [0, 1, 2, 3, 4, 5]}, random=6, seed=3, ks=range(7))
    b = nv.deletion_curve(net, x, {"conv1": [0, 1, 2, 3, 4, 5]}, random=6, seed=3, ks=range(7))
    r = a.curve("random")
    assert r.seeds.shape == (6, 7) and r.values == pytest.approx(r.seeds.mean(0))
    lo, hi = r.band()
    assert np.all(lo <= r.values + 1e-12) and np.all(r.values <= hi + 1e-12)
    assert r.auc == pytest.approx(r.aucs.mean()) and len(set(np.round(r.aucs, 12))) > 1
    assert np.array_equal(r.seeds, b.curve("random").seeds)
    # with every channel knocked out, all rankings end at the same point
    assert r.seeds[:, -1] == pytest.approx(a.curve("ranking").values[-1])


def test_scores_give_their_rankings_and_their_target(x):
    net = tiny_cnn()
    scores = nv.score_neurons(net, x, ["relu1", "relu2"], n_samples=8, target=2)
    found = collect_rankings(scores)
    assert list(found) == ["correlation", "precision"]
    assert found["correlation"]["relu2"] == scores.top("correlation", 4)["relu2"]
    base = nv.baseline_scores(net, x, ["relu2"])
    both = collect_rankings([scores, base], metrics=["correlation", "weight_sum"])
    assert list(both) == ["correlation", "weight_sum"]
    curves = nv.deletion_curve(net, x, [scores, base], metrics=["correlation", "weight_sum"], layers="relu2",
                               random=2)
    assert curves.target == 2 and curves.output == "probability"
    assert curves.rankings == ["correlation", "weight_sum", "random"]
    torch.manual_seed(0)
    imgs = torch.rand(40, 3, 8, 8)
    pc = nv.pcace(net, imgs, "relu2", target=1)
    curves = nv.deletion_curve(net, x, pc, random=0)
    assert curves.rankings == ["pcace"] and curves.target == 1


def test_unit_rankings_knock_out_units(x):
    net = tiny_cnn()
    scores = nv.score_neurons(net, x, "relu2", n_samples=8, per_unit=True)
    curves = nv.deletion_curve(net, x, scores, metrics=["correlation"], ks=[0, 2], random=1)
    assert collect_rankings(scores)["precision"]["relu2"] == scores.top("precision", 64)["relu2"]
    top = scores.top("correlation", 2)["relu2"]
    alone = nv.knockout_effect(net, x, {"relu2": top})
    assert curves.curve("correlation").values[1] == pytest.approx(alone.knocked[0], abs=1e-6)


def test_curves_on_copies_with_mean_knockouts_average_over_the_copies(x, snapshot):
    net = tiny_cnn()
    snap = snapshot(net)
    curves = nv.deletion_curve(net, x, {"conv1": [2, 0, 1]}, ks=[0, 2], how="mean", on="copies", n_samples=5,
                               random=0)
    eff = nv.knockout_effect(net, x, {"conv1": [2, 0]}, how="mean", on="copies", n_samples=5)
    assert curves.curve("ranking").values[1] == pytest.approx(eff.knocked[0], abs=1e-6)
    assert curves.original == pytest.approx(eff.original, abs=1e-9) and curves.on == "copies"
    snap.assert_unchanged()


def test_an_interrupt_leaves_the_model_untouched(x, snapshot):
    net = tiny_cnn()
    snap = snapshot(net)

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        nv.deletion_curve(net, x, {"conv1": [0, 1, 2]}, random=3, batch_size=2, progress=stop)
    with pytest.raises(KeyboardInterrupt):
        nv.mask_deletion_curve(net, x, torch.rand(8, 8), batch_size=2, progress=stop)
    snap.assert_unchanged()


@pytest.mark.parametrize("kwargs, match", [
    ({"ks": [0, 9]}, "ranks only 6"),
    ({"ks": [-1]}, "k must be"),
    ({"mode": "both"}, "mode must be"),
    ({"layers": "conv2"}, "no ranking covers"),
    ({"random": -1}, "random must be"),
    ({"per_layer": False}, "at least one"),
])
def test_bad_arguments_are_refused(x, kwargs, match):
    with pytest.raises(nv.NeuronvizError, match=match):
        nv.deletion_curve(tiny_cnn(), x, {"conv1": [0, 1, 2, 3, 4, 5]}, **kwargs)


def test_bad_rankings_are_refused(x):
    with pytest.raises(nv.NeuronvizError, match="ranking must be"):
        nv.deletion_curve(tiny_cnn(), x, 3)
    with pytest.raises(nv.NeuronvizError, match="out of range"):
        nv.deletion_curve(tiny_cnn(), x, {"conv1": [7]})
    with pytest.raises(nv.LayerNotFoundError, match="conv1"):
        nv.deletion_curve(tiny_cnn(), x, {"conv_1": [0]})


class PixelSum(nn.Module):
    """logit 0 = mean of input channel 0 over the pixels, times 2; logit 1 = 0."""

    def forward(self, x):
        z = 2 * x[:, 0].mean((1, 2))
        return torch.stack([z, torch.zeros_like(z)], 1)


def test_mask_deletion_removes_the_top_pixels_into_the_background(x):
    net = PixelSum()
    mask = x[0, 0].clone()  # the brightest pixels of channel 0 first
    curves = nv.mask_deletion_curve(net, x, mask, steps=4, background="mean", random=8, target=0, output="logit")
    order = torch.argsort(-mask.reshape(-1), stable=True)
    bg = x[0, 0].mean()
    expected = []
    for k in range(5):
        img = x[0, 0].reshape(-1).clone()
        img[order[: round(k * 64 / 4)]] = bg
        expected.append(2 * float(img.mean()))
    m = curves.curve("mask", PIXELS)
    assert m.values == pytest.approx(expected, abs=1e-5)
    assert m.values[-1] == pytest.approx(2 * float(bg), abs=1e-5)
    assert m.auc < curves.curve("random", PIXELS).auc_band()[0]  # faster than every random mask
    assert curves.n_forward == 1 + math.ceil(9 * 5 / 32)


def test_mask_insertion_starts_from_the_blurred_image_and_ends_at_x(x):
    net = tiny_cnn()
    curves = nv.mask_deletion_curve(net, x, torch.rand(8, 8), mode="insertion", steps=4, random=0)
    with torch.no_grad():
        net.eval()
        out = torch.softmax(net(x), 1)[0, curves.target]
        blurred = torch.softmax(net(nv.methods.inversion.make_background(x, "blur")), 1)[0, curves.target]
    net.train()
    assert curves.curve("mask").values[-1] == pytest.approx(float(out), abs=1e-6)
    assert curves.curve("mask").values[0] == pytest.approx(float(blurred), abs=1e-6)


def test_an_inversion_result_gives_its_mask_and_class(x):
    from neuronviz.methods.inversion import InversionResult

    mask = torch.rand(1, 8, 8)
    res = InversionResult(mask=mask, inversion_mask=mask, target=[3], probability=torch.zeros(1), losses={},
                          weights=torch.zeros(1, 2), inversion_weights=torch.zeros(1, 2), mask_layer="a",
                          feature_layer="b")
    curves = nv.mask_deletion_curve(tiny_cnn(), x, res, random=0, steps=2)
    assert curves.target == 3
    with pytest.raises(nv.NeuronvizError, match="like the image"):
        nv.mask_deletion_curve(tiny_cnn(), x, torch.rand(4, 4))


def test_table_rows_and_plot_show_every_curve(x, tmp_path):
    net = tiny_cnn()
    curves = nv.deletion_curve(net, x, {"a": {"conv1": [0, 1, 2]}, "b": {"conv1": [2, 1, 0]}}, ks=[0, 1, 2, 3],
                               random=3)
    text = curves.table()
    assert all(name in text for name in ("a", "b", "random", "deletion AUC"))
    rows = curves.as_rows()
    assert len(rows) == 3 * 4 and {r["ranking"] for r in rows} == {"a", "b", "random"}
    assert rows[0]["relative"] == pytest.approx(1.0)
    fig = curves.plot(path=tmp_path / "curves.png", dpi=60)
    assert isinstance(fig, Figure) and (tmp_path / "curves.png").stat().st_size > 0
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3 and any("random x3" in line.get_label() for line in lines)
    pixels = nv.mask_deletion_curve(net, x, torch.rand(8, 8), random=2, steps=2)
    assert isinstance(nv.render_faithfulness(pixels), Figure)


def test_the_influence_counts_a_rise_of_the_output_as_much_as_a_drop(x):
    net = planted()
    with torch.no_grad():
        net.fc.weight[0, 0] = -W_DRIVE  # channel 0 now works against class 0: knocking it out raises the logit
        net.fc.bias[0] = 5.0  # a positive logit, so that the relative curve reads as it looks
    curves = nv.deletion_curve(net, x, {"feat": [0, 1]}, ks=[0, 1, 2], random=0, target=0, output="logit")
    c = curves.curve("ranking")
    rise = W_DRIVE * float(x[0, 0].mean()) / curves.original
    assert c.auc > 1  # the AUC reads it as an unfaithful ranking
    assert c.influence == pytest.approx(np.trapezoid([0, rise, rise], [0, 0.5, 1]), abs=1e-5)
    assert "|change|" in curves.table() and curves.as_rows()[0]["influence"] == c.influence
