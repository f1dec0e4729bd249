"""The knock-out section: the toggle shows the selected neuron's effect, the button draws the deletion curves."""

from __future__ import annotations

import types

import pytest
import torch
from tiny_nets import tiny_cnn

import neuronviz as nv
from neuronviz.widgets.knockouts import KnockoutSection, curve_ks


@pytest.fixture
def view():
    net = tiny_cnn()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    scores = nv.score_neurons(net, x, ["conv1", "relu2"], n_samples=8)
    return types.SimpleNamespace(model=net, x=x, scores=scores, top_k=2)


def test_the_toggle_shows_the_output_before_and_after_the_knockout(view, snapshot):
    snap = snapshot(view.model)
    section = KnockoutSection(view)
    section.select(("conv1", 3))
    section.toggle.button.value = True
    section.wait(30)
    eff = nv.knockout_effect(view.model, view.x, {"conv1": [3]})
    assert f"{eff.original:.3f}" in section.toggle.text.value and f"{eff.knocked[0]:.3f}" in section.toggle.text.value
    section.what.value = "correlation top-k"
    section.toggle.reset()
    section.toggle.button.value = True
    section.wait(30)
    top = view.scores.top("correlation", 2)["conv1"]
    assert ", ".join(map(str, top)) in section.toggle.text.value
    section.select(("relu2", 0))  # a new selection releases the toggle
    assert section.toggle.button.value is False and section.toggle.text.value == ""
    snap.assert_unchanged()


def test_the_button_draws_the_deletion_curves_of_the_shown_layers(view):
    section = KnockoutSection(view)
    section.draw_curves()
    section.wait(60)
    assert section.curves is not None and section.status.value == ""
    assert [f.title for f in section.panel.figures] == ["conv1", "relu2"]
    assert section.curves.rankings == ["correlation", "precision", "random"]
    assert curve_ks(view.scores)[-1] == min(32, min(len(v) for m in ("correlation", "precision")
                                                    for v in view.scores.top(m, 64).values()))


def test_errors_are_shown_in_the_section(view):
    view.x = torch.rand(1, 2, 8, 8)  # the model takes 3 channels
    section = KnockoutSection(view)
    section.draw_curves()
    section.wait(30)
    assert "NeuronvizError" in section.status.value


def test_the_explorer_knocks_out_the_selected_neuron_and_draws_the_curves(snapshot):
    from explorer_nets import gated_cnn, image

    net, x = gated_cnn(), image()
    snap = snapshot(net)
    w = nv.NeuronExplorer(net, x, ["conv1", "conv2"], n_samples=6, live=False)
    w.wait(60)
    assert w.status == "done", w.error
    w.selected = ("conv2", 1)
    section = w.knockouts
    assert section.neuron == ("conv2", 1)
    section.toggle.button.value = True
    section.wait(30)
    eff = nv.knockout_effect(net, x, {"conv2": [1]}, target=w.scores.target, output=w.scores.output)
    assert f"{float(eff.knocked[0]):.3f}" in section.toggle.text.value
    w.selected = ("conv1", 0)
    assert section.toggle.button.value is False
    section.draw_curves()
    section.wait(60)
    assert [f.title for f in section.panel.figures] == ["conv1", "conv2"], section.status.value
    w.close()
    snap.assert_unchanged()
