"""Results as tables: as_rows() and to_frame() agree with the result's tensors and share column names."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from tiny_nets import tiny_cnn

import neuronviz as nv
from neuronviz.core.errors import NeuronvizError

pd = pytest.importorskip("pandas")

X = torch.rand(1, 3, 8, 8)


@pytest.fixture(scope="module")
def scores():
    return nv.score_neurons(tiny_cnn(), X, ["conv1", "relu2"], n_samples=10)


def test_neuron_scores_frame_has_one_row_per_channel_with_the_result_values(scores):
    df = scores.to_frame()
    assert list(df.columns) == ["layer", "channel", "correlation", "precision", "mean_activation", "excluded"]
    assert len(df) == 6 + 4
    conv = df[df.layer == "conv1"]
    assert conv.channel.tolist() == list(range(6))
    np.testing.assert_allclose(conv.correlation, scores.correlation["conv1"].numpy(), equal_nan=True)
    np.testing.assert_allclose(conv.precision, scores.precision["conv1"].numpy(), equal_nan=True)
    assert conv.excluded.tolist() == scores.excluded["conv1"].tolist()


def test_the_explorer_csv_and_every_channel_table_start_with_layer_and_channel(scores):
    from neuronviz.widgets.explorer import _ROW_FIELDS

    assert list(_ROW_FIELDS[:2]) == ["layer", "channel"]
    base = nv.baseline_scores(tiny_cnn(), X, ["conv1"])
    pc = nv.pcace(tiny_cnn(), torch.rand(40, 3, 8, 8), "relu1", 0)
    for frame in (scores.to_frame(), base.to_frame(), pc.to_frame()):
        assert list(frame.columns[:2]) == ["layer", "channel"]


def test_the_old_neuron_column_still_reads_with_a_deprecation_warning(scores):
    row = scores.as_rows()[3]
    assert "neuron" not in row
    with pytest.warns(DeprecationWarning, match="channel"):
        assert row["neuron"] == row["channel"] == 3


def test_per_unit_rows_give_channel_and_position_of_each_unit():
    s = nv.score_neurons(tiny_cnn(), X, "conv2", n_samples=10, per_unit=True)
    df = s.to_frame()
    c, h, w = s.shapes["conv2"]
    assert list(df.columns[:3]) == ["layer", "channel", "position"] and len(df) == c * h * w
    row = df.iloc[h * w + 5]  # channel 1, position 5
    assert (row.channel, row.position) == (1, 5)
    np.testing.assert_allclose(row.correlation, float(s.correlation["conv2"][1].reshape(-1)[5]), equal_nan=True)
    with pytest.warns(DeprecationWarning):
        assert s.as_rows()[h * w + 5]["neuron"] == h * w + 5  # as before: the flat unit index


def test_baseline_frame_holds_the_computed_metrics():
    base = nv.baseline_scores(tiny_cnn(), X, ["conv1"])
    df = base.to_frame()
    assert list(df.columns) == ["layer", "channel", "weight_layer", "weight_sum", "weight_variance",
                                "activation_sum", "activation_variance"]
    np.testing.assert_allclose(df.weight_sum, base.weight_sum["conv1"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(df.activation_variance, base.activation_variance["conv1"].numpy(), rtol=1e-6,
                               equal_nan=True)
    only = nv.baseline_scores(tiny_cnn(), X, ["conv1"], weights=False).to_frame()
    assert "weight_sum" not in only.columns or only.weight_sum.isna().all()


def test_pcace_frames_rank_the_channels_as_the_ranking_does():
    ranking = nv.rank_layers(tiny_cnn(), torch.rand(40, 3, 8, 8), ["relu1", "relu2"], 0, k=2)
    s = ranking["relu1"]
    df = s.to_frame()
    assert df.sort_values("rank").channel.tolist() == s.ranking.tolist()
    np.testing.assert_allclose(df.pcace, s.scores.numpy())
    per_layer = ranking.to_frame()
    assert per_layer.layer.tolist() == [r["layer"] for r in ranking.summary]
    assert list(per_layer.columns) == ["layer", "channels", "mean_top_k", "max", "mean"]
    per_channel = ranking.to_frame(per="channel")
    assert len(per_channel) == 6 + 4 and set(per_channel.layer) == {"relu1", "relu2"}
    with pytest.raises(NeuronvizError, match="per must be"):
        ranking.as_rows(per="image")


def test_inversion_frame_has_one_row_per_image():
    r = nv.guided_feature_inversion(tiny_cnn(), torch.rand(2, 3, 8, 8), mask_layer="relu1", feature_layer="relu2",
                                    stage1_steps=2, stage2_steps=3, progress=False)
    df = r.to_frame()
    assert df.image.tolist() == [0, 1] and df.target.tolist() == list(r.target)
    np.testing.assert_allclose(df.mask_mean, r.mask.mean(dim=(1, 2)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(df.loss_stage2, r.losses["stage2"][:, -1].numpy())


def test_ace_frame_holds_the_transforms_at_each_observation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 2, generator=g, dtype=torch.float64)
    res = nv.ace(x, x[:, 0] ** 2)
    df = res.to_frame()
    assert list(df.columns) == ["observation", "x_transform_0", "x_transform_1", "y_transform"]
    np.testing.assert_allclose(df.x_transform_1, res.x_transforms[:, 1].numpy())
    np.testing.assert_allclose(df.y_transform, res.y_transform.numpy())


def test_to_frame_without_pandas_says_how_to_install_it(scores, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(NeuronvizError, match="pip install pandas"):
        scores.to_frame()
    assert scores.as_rows()  # the rows need nothing


def test_knockout_and_deletion_curve_frames_hold_their_rows():
    net = tiny_cnn()
    eff = nv.knockout_effect(net, X, [{"conv1": [0]}, {"conv1": [1, 2]}])
    df = eff.to_frame()
    assert list(df.columns) == ["name", "set", "original", "knocked", "effect", "relative"] and len(df) == 2
    np.testing.assert_allclose(df.effect, eff.effect)
    curves = nv.deletion_curve(net, X, {"conv1": [0, 1, 2]}, random=2, progress=False)
    frame = curves.to_frame()
    assert len(frame) == len(curves.as_rows()) and {"group", "ranking", "k", "value"} <= set(frame.columns)
    np.testing.assert_allclose(frame.value, [r["value"] for r in curves.as_rows()])
