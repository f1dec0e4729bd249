"""The paper's baseline metrics against numpy formulas, a numpy forward pass, and planted channels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import neuronviz as nv
from neuronviz.core.errors import LayerNotFoundError, NeuronvizError
from neuronviz.methods.baselines import (
    BASELINES,
    activation_scores,
    baseline_scores,
    kernel_weight_scores,
    weight_layer,
)
from tiny_nets import tiny_cnn


def numpy_kernel_stats(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel, as the authors' code does with ``np.sum`` and ``np.var`` on ``weights[0][c]``."""
    w = w.astype(np.float64)
    return np.array([np.sum(w[c]) for c in range(w.shape[0])]), np.array([np.var(w[c]) for c in range(w.shape[0])])


def numpy_conv_relu(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 3x3, padding-1 convolution of one (C, H, W) image by explicit loops; (pre-ReLU, post-ReLU)."""
    x = x.astype(np.float64)
    c_in, h, wd = x.shape
    xp = np.zeros((c_in, h + 2, wd + 2))
    xp[:, 1:-1, 1:-1] = x
    out = np.zeros((w.shape[0], h, wd))
    for o in range(w.shape[0]):
        for i in range(h):
            for j in range(wd):
                out[o, i, j] = np.sum(xp[:, i : i + 3, j : j + 3] * w[o]) + b[o]
    return out, np.maximum(out, 0)


class TwoStage(nn.Module):
    """conv -> relu, then a block (conv, batch norm, relu) whose output is a container's."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(2, 5, 3, padding=1)
        self.relu = nn.ReLU()
        self.block = nn.Sequential(nn.Conv2d(5, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(self.pool(self.block(self.relu(self.conv(x))))))


# ---------------------------------------------------------------------------------------------
# kernel weights


@pytest.mark.parametrize(
    "module",
    [nn.Conv2d(3, 6, 3), nn.Conv2d(8, 8, 5, groups=8), nn.Conv1d(4, 7, 3), nn.Linear(9, 4)],
    ids=["conv2d", "depthwise", "conv1d", "linear"],
)
def test_kernel_weight_scores_match_numpy_per_output_channel(module):
    net = nn.Sequential()
    net.add_module("layer", module)
    got = kernel_weight_scores(net, "layer")
    want_sum, want_var = numpy_kernel_stats(module.weight.detach().numpy())
    np.testing.assert_allclose(got["sum"].numpy(), want_sum, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["variance"].numpy(), want_var, rtol=1e-12, atol=1e-15)
    assert got["sum"].dtype == torch.float64 and got["sum"].shape == (module.weight.shape[0],)


def test_kernel_weight_scores_ignore_the_bias():
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(1, 2, 1))
    with torch.no_grad():
        net.conv.weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
        net.conv.bias.fill_(100.0)
    assert kernel_weight_scores(net, "conv")["sum"].tolist() == [1.0, -2.0]


def test_kernel_weight_scores_refuse_a_layer_without_kernels():
    net = tiny_cnn()
    with pytest.raises(NeuronvizError, match="'relu1' \\(ReLU\\) has no weight.*conv1"):
        kernel_weight_scores(net, "relu1")
    with pytest.raises(NeuronvizError, match="1-D weight"):
        kernel_weight_scores(net, "bn2")
    with pytest.raises(LayerNotFoundError, match="conv1"):
        kernel_weight_scores(net, "conv_1")


def test_kernel_weight_scores_refuse_a_transposed_convolution():
    net = nn.Sequential()
    net.add_module("up", nn.ConvTranspose2d(3, 5, 2))
    with pytest.raises(NeuronvizError, match="transposed"):
        kernel_weight_scores(net, "up")


# ---------------------------------------------------------------------------------------------
# activations


def test_activation_scores_match_a_numpy_forward_pass():
    net = TwoStage()
    torch.manual_seed(2)
    x = torch.randn(1, 2, 6, 7)
    pre, post = numpy_conv_relu(x[0].numpy(), net.conv.weight.detach().numpy(), net.conv.bias.detach().numpy())
    got = activation_scores(net, x, "relu")
    np.testing.assert_allclose(got["sum"].numpy(), post.reshape(5, -1).sum(1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["variance"].numpy(), post.reshape(5, -1).var(1), rtol=1e-5, atol=1e-7)
    # before the ReLU, channels with a negative mean are left out (the authors' threshold of 0)
    got = activation_scores(net, x, "conv")
    negative = pre.reshape(5, -1).mean(1) < 0
    assert negative.any() and (~negative).any(), "the seed should give both kinds of channel"
    assert np.array_equal(np.isnan(got["sum"].numpy()), negative)
    np.testing.assert_allclose(got["sum"].numpy()[~negative], pre.reshape(5, -1).sum(1)[~negative], rtol=1e-5)
    kept = activation_scores(net, x, "conv", min_mean=None)
    np.testing.assert_allclose(kept["variance"].numpy(), pre.reshape(5, -1).var(1), rtol=1e-5)


def test_activation_scores_of_a_linear_layer_have_one_position_per_channel():
    net = TwoStage()
    x = torch.randn(1, 2, 6, 7)
    logits = net.eval()(x)[0].detach().double()
    got = activation_scores(net, x, "fc", min_mean=None)
    np.testing.assert_allclose(got["sum"].numpy(), logits.numpy(), rtol=1e-6)
    assert got["variance"].tolist() == [0.0, 0.0, 0.0]


def test_activation_scores_refuse_a_batch_and_bad_names():
    net = TwoStage()
    with pytest.raises(NeuronvizError, match="one image"):
        activation_scores(net, torch.randn(2, 2, 6, 6), "relu")
    with pytest.raises(LayerNotFoundError):
        activation_scores(net, torch.randn(1, 2, 6, 6), "reul")
    with pytest.raises(NeuronvizError, match="one layer name"):
        activation_scores(net, torch.randn(1, 2, 6, 6), ["relu"])


# ---------------------------------------------------------------------------------------------
# finding the kernels behind a layer, and all four metrics together


def test_weight_layer_finds_the_convolution_that_makes_the_channels():
    net = TwoStage()
    x = torch.randn(1, 2, 6, 6)
    assert weight_layer(net, x, "relu") == "conv"
    assert weight_layer(net, x, "conv") == "conv"
    assert weight_layer(net, x, "block") == "block.0"  # the batch norm's 1-D weight is skipped
    assert weight_layer(net, x, "block.2") == "block.0"
    assert weight_layer(net, x, "pool") == "block.0"
    assert weight_layer(net, x, "fc") == "fc"


def test_weight_layer_refuses_a_layer_whose_channel_count_differs():
    net = tiny_cnn()  # conv2 (4 channels) -> ... -> flat (4 features) -> fc
    x = torch.randn(1, 3, 8, 8)
    assert weight_layer(net, x, "relu2") == "conv2"
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    with pytest.raises(NeuronvizError, match="'2' has 144 channels.*'0', has 4 output channels.*weight_layers"):
        weight_layer(model, x, "2")
    with pytest.raises(NeuronvizError, match="no convolution or linear layer runs before '0'"):
        weight_layer(nn.Sequential(nn.ReLU(), nn.Conv2d(3, 2, 1)), x, "0")


def test_baseline_scores_agree_with_the_single_metric_functions(snapshot):
    net = tiny_cnn()  # in train mode: the scores must use eval mode and restore it
    snap = snapshot(net)
    torch.manual_seed(4)
    x = torch.randn(3, 9, 9)
    scores = baseline_scores(net, x, ["relu1", "relu2"])
    snap.assert_unchanged()
    assert scores.weight_layers == {"relu1": "conv1", "relu2": "conv2"}
    for layer, source in scores.weight_layers.items():
        w = kernel_weight_scores(net, source)
        assert torch.equal(scores.weight_sum[layer], w["sum"])
        assert torch.equal(scores.weight_variance[layer], w["variance"])
        a = activation_scores(net, x, layer)
        assert torch.equal(scores.activation_sum[layer], a["sum"])
        assert torch.equal(scores.activation_variance[layer], a["variance"])
    # eval mode: with the dropout of train mode active the activation would be random
    assert torch.equal(baseline_scores(net, x, ["relu2"]).activation_sum["relu2"], scores.activation_sum["relu2"])


def test_baseline_scores_use_the_kernels_they_are_told():
    net = tiny_cnn()
    x = torch.randn(1, 3, 8, 8)
    scores = baseline_scores(net, x, ["relu1", "relu2"], weight_layers={"relu2": "conv2"})
    assert scores.weight_layers["relu2"] == "conv2"
    with pytest.raises(NeuronvizError, match="has 4 channels but the kernels of 'conv1' make 6"):
        baseline_scores(net, x, ["relu2"], weight_layers={"relu2": "conv1"})
    with pytest.raises(NeuronvizError, match="not scored"):
        baseline_scores(net, x, ["relu1"], weight_layers={"relu2": "conv2"})
    with pytest.raises(LayerNotFoundError):
        baseline_scores(net, x, ["relu1"], weight_layers={"relu1": "conv9"})


def test_top_ranks_planted_values_and_never_picks_nan():
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(1, 6, 1, bias=True))
    with torch.no_grad():
        # channel c multiplies the (all-ones) image by a planted factor; channel 4 is negative
        net.conv.weight.copy_(torch.tensor([0.5, 3.0, 2.0, 3.0, -1.0, 1.0]).view(6, 1, 1, 1))
        net.conv.bias.zero_()
    scores = baseline_scores(net, torch.ones(1, 1, 4, 4), "conv")
    assert scores.top("weight_sum", 3) == {"conv": [1, 3, 2]}  # a tie keeps the lower index first
    assert scores.top("activation_sum", 6) == {"conv": [1, 3, 2, 5, 0]}  # channel 4 (mean < 0) is NaN
    assert math.isnan(float(scores.activation_variance["conv"][4]))
    assert scores.top("weight_variance", 2) == {"conv": [0, 1]}  # one weight per kernel: variance 0 everywhere
    with pytest.raises(ValueError, match="metric must be one of"):
        scores.top("correlation")
    with pytest.raises(ValueError, match="k must be"):
        scores.top("weight_sum", -1)


def test_top_selections_compare_with_overlap_of_the_paper():
    net = tiny_cnn()
    x = torch.randn(1, 3, 8, 8)
    scores = baseline_scores(net, x, ["relu1", "relu2"])
    for metric in BASELINES:
        top = scores.top(metric, 3)
        assert nv.overlap(top, top) == 0.5  # a selection overlaps itself fully: the paper's maximum
