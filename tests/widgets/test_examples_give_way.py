"""The data-set examples of a view give way to its runs: no forward pass while it wants the model."""

from __future__ import annotations

import threading
import time

import torch
from torch import nn

import neuronviz as nv
from neuronviz.core.locks import is_held
from neuronviz.widgets.examples import ExamplesSection


class _Counting(nn.Module):
    """The digits CNN, counting its forward passes; ``on_call(n)`` runs before the n-th."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nv.digits_model()
        self.calls = 0
        self.on_call = lambda n: None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.on_call(self.calls)
        return self.net(x)


class _View:
    """What the section needs of a view; ``busy`` is what its ``wants_model`` says."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.layers, self.image, self.overlay = model, ["net.relu2"], None, None
        self.busy = threading.Event()

    def wants_model(self) -> bool:
        return self.busy.is_set()


def _until(cond, seconds: float = 30.0) -> bool:
    end = time.monotonic() + seconds
    while not cond() and time.monotonic() < end:
        time.sleep(0.02)
    return bool(cond())


def test_the_search_waits_while_the_view_wants_the_model_then_finds_the_same_examples():
    x, y = nv.load_digits()
    model = _Counting().eval()
    view = _View(model)
    view.busy.set()
    section = ExamplesSection(view, torch.utils.data.TensorDataset(x[:64], y[:64]))
    section.show(("net.relu2", 3))
    time.sleep(0.5)
    assert model.calls == 0 and not section.cache  # nothing ran while a run of the view was pending
    view.busy.clear()
    assert _until(lambda: bool(section.panel.crops))
    want = nv.top_examples(model, x[:64], "net.relu2", k=9, progress=False)["net.relu2"][3]
    assert [c.image for c in section.panel.crops] == [r.image for r in want]


def test_a_search_under_way_stops_at_its_next_batch_and_frees_the_model_for_the_run():
    x, y = nv.load_digits()
    model = _Counting().eval()
    view = _View(model)
    model.on_call = lambda n: view.busy.set() if n == 3 else None  # a live run is scheduled mid-search
    section = ExamplesSection(view, torch.utils.data.TensorDataset(x[:400], y[:400]))
    section.show(("net.relu2", 5))
    assert _until(lambda: model.calls >= 3)
    time.sleep(0.5)
    assert model.calls == 3  # the batch under way finished; no further one started
    assert not is_held(model)  # the run can take the model at once
    model.on_call = lambda n: None
    view.busy.clear()
    assert _until(lambda: bool(section.panel.crops))  # the pass started again and finished
    assert section.cache["net.relu2"].n_images == 400
    want = nv.top_examples(model, x[:400], "net.relu2", k=9, progress=False)["net.relu2"][5]
    assert [c.image for c in section.panel.crops] == [r.image for r in want]
