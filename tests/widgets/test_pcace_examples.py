"""PCACEView(examples=...): the selected channel's top crops with activation and label, advice without them."""

from __future__ import annotations

import time

import torch

import neuronviz as nv
from neuronviz.widgets import PCACEView


def _crops_of(v: PCACEView, neuron: tuple[str, int], seconds: float = 60.0) -> list:
    """The panel's crops once they are the ones of ``neuron`` (searched and cut in threads of their own)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        v.examples.wait(1.0)
        crops = v.examples.panel.crops
        if crops and v.examples._shown == neuron:
            return crops
        time.sleep(0.05)
    raise AssertionError(f"no crops for {neuron}: {v.examples.panel.note.value}")


def test_the_selected_channels_top_crops_are_shown_with_activation_and_label_and_follow_the_selection(snapshot):
    model = nv.digits_model()
    before = snapshot(model)
    x, y = nv.load_digits()
    data = torch.utils.data.TensorDataset(x[:300], y[:300])
    v = PCACEView(model, x[y == 3][:40], ["relu2", "relu3"], examples=data)
    try:
        v.wait(60)
        assert v.status == "done", v.error
        ex = nv.top_examples(model, x[:300], ["relu2", "relu3"], k=9, progress=False)  # an independent pass
        for neuron in (v.selected, ("relu3", (v.selected[1] + 1) % 32), ("relu2", 5)):
            v.selected = neuron
            crops = _crops_of(v, neuron)
            want = ex[neuron[0]][neuron[1]]
            assert [c.image for c in crops] == [r.image for r in want]
            assert len(crops) == 9
            button = v.examples.panel.buttons[0].description
            assert button.startswith(f"{want[0].value:.3g} · {int(y[want[0].image])}")  # activation · label
            assert all(c.label == int(y[c.image]) for c in crops)
        assert set(v.examples.cache) >= {"relu2", "relu3"}
        assert v.examples.cache["relu2"] is v.examples.cache["relu3"]  # the ranked layers in one pass
        v.examples.panel.buttons[0].click()  # no overlay here: nothing to open, nothing breaks
    finally:
        v.close()
    before.assert_unchanged()


def test_without_examples_the_panel_says_how_to_give_them_to_this_view():
    x, y = nv.load_digits()
    v = PCACEView(nv.digits_model(), x[y == 3][:40], ["relu3"])
    try:
        v.wait(60)
        assert v.status == "done", v.error
        note = v.examples.panel.note.value
        assert "examples=" in note and "PCACEView" in note
        assert not v.examples.panel.crops and not v.examples.cache
    finally:
        v.close()
