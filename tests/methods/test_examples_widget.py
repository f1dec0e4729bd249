"""NeuronExplorer(examples=...): the selected neuron's top crops, a click opens the image, and advice without them."""

from __future__ import annotations

import time

import torch

import neuronviz as nv


def _settle(w, seconds: float = 30.0) -> None:
    w.wait(seconds)
    w.examples.wait(seconds)
    end = time.monotonic() + seconds
    while not w.examples.panel.crops and time.monotonic() < end:  # the crops are cut in a thread of their own
        time.sleep(0.05)


def test_the_detail_shows_the_selected_neurons_top_crops_and_a_click_opens_the_image(snapshot):
    model = nv.digits_model()
    before = snapshot(model)
    x, y = nv.load_digits()
    w = nv.NeuronExplorer(model, x[:1], ["relu2"], examples=torch.utils.data.TensorDataset(x, y), n_samples=8)
    try:
        _settle(w)
        layer, channel = w.selected
        want = nv.top_examples(model, x, layer, k=9, progress=False)[layer][channel]
        crops = w.examples.panel.crops
        assert [c.image for c in crops] == [r.image for r in want]
        assert w.examples.panel.buttons[0].description.startswith(f"{want[0].value:.3g} · {int(y[want[0].image])}")
        w.examples.panel.buttons[0].click()
        assert f"data-set image {want[0].image}" in w.overlay.caption.value
        w.selected = (layer, (channel + 1) % 32)  # back to the explained image
        assert "data-set image" not in w.overlay.caption.value
    finally:
        w.close()
    before.assert_unchanged()


def test_without_examples_the_panel_says_how_to_give_them():
    x, _ = nv.load_digits()
    w = nv.NeuronExplorer(nv.digits_model(), x[:1], ["relu2"], n_samples=8)
    try:
        w.wait(30)
        assert "examples=" in w.examples.panel.note.value
        assert not w.examples.panel.crops
    finally:
        w.close()
