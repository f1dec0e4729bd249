"""The faithfulness panel draws every group's curves; the knock-out toggle reports presses and shows before/after."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_nets import tiny_cnn

import neuronviz as nv
from neuronviz.widgets.panels.faithfulness import FaithfulnessPanel, KnockoutToggle


def test_the_panel_draws_one_plot_per_layer_with_every_ranking_and_the_random_band():
    net = tiny_cnn()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    curves = nv.deletion_curve(net, x, {"a": {"conv1": [0, 1, 2], "relu2": [1, 0]}, "b": {"conv1": [2, 1, 0],
                               "relu2": [0, 1]}}, ks=[0, 1, 2], random=3)
    panel = FaithfulnessPanel()
    panel.show(curves)
    assert [f.title for f in panel.figures] == ["conv1", "relu2"]
    lines = panel.figures[0].marks
    assert len(lines) == 4  # a, b, the random band and the random mean
    labels = [m.labels[0] for m in lines if m.labels]
    assert any(label.startswith("a (") for label in labels) and any(label.startswith("random") for label in labels)
    drawn = next(m for m in lines if m.labels and m.labels[0].startswith("a ("))
    assert np.allclose(drawn.y, curves.curve("a", "conv1").values / curves.original)
    panel.show(None)
    assert panel.figures == [] and panel.row.children == ()


def test_the_toggle_calls_back_on_presses_only_and_shows_the_change():
    pressed = []
    toggle = KnockoutToggle(pressed.append)
    toggle.button.value = True
    toggle.show(0.75, 0.25, "conv1 #3")
    assert pressed == [True] and "0.750" in toggle.text.value and "-0.500" in toggle.text.value
    toggle.reset()
    assert pressed == [True] and toggle.button.value is False and toggle.text.value == ""
    toggle.show(None, None)
    assert toggle.text.value == ""


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_the_caption_names_the_mode(mode):
    curves = nv.deletion_curve(tiny_cnn(), torch.rand(1, 3, 8, 8), {"conv1": [0, 1]}, random=0, mode=mode)
    panel = FaithfulnessPanel()
    panel.show(curves)
    assert mode in panel.caption.value
