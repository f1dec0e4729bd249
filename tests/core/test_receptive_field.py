"""Receptive fields equal the analytic ones on chains of convolutions and poolings; others are measured."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuronviz.core.errors import NeuronvizError
from neuronviz.core.receptive_field import receptive_field


def reference_box(specs, size, row, col):
    """Independent reference: walk the position back through each layer, widening an interval."""
    boxes = []
    for p in (row, col):
        lo, hi = p, p  # inclusive interval on the current layer
        for k, s, q, d in reversed(specs):
            lo, hi = lo * s - q, hi * s - q + d * (k - 1)
        boxes.append((lo, hi))
    (top, bottom), (left, right) = boxes
    return max(0, top), max(0, left), min(size, bottom + 1), min(size, right + 1)


CHAINS = {
    "convs with stride and padding": [("conv", 3, 1, 1, 1), ("conv", 3, 2, 1, 1), ("conv", 5, 2, 2, 1)],
    "dilation": [("conv", 3, 1, 0, 2), ("conv", 3, 1, 2, 2), ("conv", 3, 2, 1, 3)],
    "pools between": [("conv", 3, 1, 1, 1), ("max", 2, 2, 0, 1), ("conv", 3, 1, 1, 1), ("avg", 3, 2, 1, 1),
                      ("conv", 1, 1, 0, 1)],
    "no padding, large kernels": [("conv", 7, 2, 0, 1), ("max", 3, 2, 1, 1), ("conv", 3, 1, 0, 1)],
}


def build(chain):
    layers, c = [], 2
    for kind, k, s, q, d in chain:
        if kind == "conv":
            layers += [nn.Conv2d(c, 3, k, stride=s, padding=q, dilation=d), nn.ReLU()]
            c = 3
        elif kind == "max":
            layers.append(nn.MaxPool2d(k, stride=s, padding=q, dilation=d))
        else:
            layers.append(nn.AvgPool2d(k, stride=s, padding=q))
    torch.manual_seed(0)
    return nn.Sequential(*layers)


@pytest.mark.parametrize("name", list(CHAINS))
def test_chain_fields_equal_the_analytic_boxes_at_every_position(name, snapshot):
    chain = CHAINS[name]
    net = build(chain)
    before = snapshot(net)
    x = torch.zeros(1, 2, 41, 41)
    last = str(len(net) - 1)
    rf = receptive_field(net, last, x)
    assert rf.method == "analytic"
    specs = [(k, s, q, d) for _, k, s, q, d in chain]
    for row in range(rf.grid[0]):
        for col in range(rf.grid[1]):
            assert rf.box((row, col)) == reference_box(specs, 41, row, col), (row, col)
    before.assert_unchanged()


def test_gradient_probe_agrees_with_the_analytic_field_on_a_conv_chain():
    net = build(CHAINS["convs with stride and padding"])
    x = torch.zeros(1, 2, 24, 24)
    exact = receptive_field(net, "4", x)
    measured = receptive_field(net, "4", x, method="gradient")
    assert measured.method == "gradient"
    for p in range(exact.grid[0] * exact.grid[1]):
        assert measured.box(p) == exact.box(p)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(1, 2, 5, padding=2)
        self.out = nn.ReLU()

    def forward(self, x):
        return self.out(self.a(x) + self.b(x))


def test_a_branching_model_is_measured_by_gradient_and_covers_the_wider_branch():
    torch.manual_seed(0)
    rf = receptive_field(Branchy(), "out", torch.zeros(1, 1, 12, 12))
    assert rf.method == "gradient"
    assert rf.box((6, 6)) == (4, 4, 9, 9)  # the 5x5 branch
    with pytest.raises(NeuronvizError, match="not a chain"):
        receptive_field(Branchy(), "out", torch.zeros(1, 1, 12, 12), method="analytic")


def test_a_position_off_the_grid_is_refused():
    rf = receptive_field(build(CHAINS["dilation"]), "1", torch.zeros(1, 2, 16, 16))
    with pytest.raises(NeuronvizError, match="outside"):
        rf.box((99, 0))
