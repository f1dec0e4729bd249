"""Views saved to a file and loaded back: the same panels without running the model; Run with the right model only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
from deep_equal import same
from explorer_nets import gated_cnn, image
from torch import nn

import neuronviz as nv
from neuronviz.core.archive import read_header, weights_fingerprint
from neuronviz.widgets import InversionView, NeuronExplorer, PCACEView
from neuronviz.widgets.view import View


def _images(n: int = 40) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@dataclass(frozen=True)
class Case:
    cls: type
    make: Callable[[nn.Module], View]
    result: Callable[[View], Any]
    shown: Callable[[View], Any]  # something the panels show, as plain data


CASES = {
    "explorer": Case(NeuronExplorer, lambda net: NeuronExplorer(net, image(), ["conv1", "conv2"], n_samples=6, top_k=3),
                     lambda v: v.scores, lambda v: (v.scatter.points_mark.x.tolist(), v.scatter.top_c_mark.x.tolist(), v.selected_info.value)),
    "pcace": Case(PCACEView, lambda net: PCACEView(net, _images(), ["conv1", "conv2"], top_k=2),
                  lambda v: v.ranking, lambda v: (v.layer_picker.value, v.channel_strip.label.value, v.channel_strip.info.value)),
    "inversion": Case(InversionView, lambda net: InversionView(net, image(), stage1_steps=2, stage2_steps=3),
                      lambda v: v.result, lambda v: v.info.value),
}


@pytest.fixture(params=list(CASES))
def case(request) -> Case:
    return CASES[request.param]


class Passes:
    """Counts forward passes of a model while in the block."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.n = model, 0

    def __enter__(self) -> "Passes":
        self._h = self.model.register_forward_pre_hook(lambda *_: setattr(self, "n", self.n + 1))
        return self

    def __exit__(self, *exc: object) -> None:
        self._h.remove()


def _finished(case: Case, net: nn.Module) -> View:
    v = case.make(net)
    v.wait(120)
    assert v.status == "done", v.error
    return v


def test_a_loaded_view_shows_the_same_snapshot_without_a_forward_pass(case, tmp_path):
    net = gated_cnn()
    v = _finished(case, net)
    if hasattr(v, "top_k"):
        v.top_k = 2 if v.top_k != 2 else 3  # a shown-only setting changed after the run is kept too
    path = v.save(tmp_path / "run.nvz")
    for model in (None, net):
        with Passes(net) as passes:
            w = case.cls.load(path, model=model)
        assert passes.n == 0
        assert type(w) is case.cls and w.status == "done" and w.outcome is not None
        same(v.snapshot(), w.snapshot(), "snapshot")
        same(case.result(v), case.result(w), "result")
        assert w.settings == v.settings and w.selected == v.selected
        assert case.shown(w) == case.shown(v)
        assert w.header.value == v.header.value
        assert "loaded from run.nvz" in w.run_bar.status.value
        w.export(tmp_path / "again.png")  # drawn from the saved data
        w.close()
    v.close()


def test_a_loaded_view_with_the_matching_model_runs_again_and_recomputes_the_same(case, tmp_path):
    net = gated_cnn()
    v = _finished(case, net)
    path = v.save(tmp_path / "run.nvz")
    w = case.cls.load(path, model=gated_cnn())  # another object with the same weights
    assert not w.run_bar.run_button.disabled
    with Passes(w.model) as passes:
        w.run()
        w.wait(120)
    assert w.status == "done", w.error
    assert passes.n > 0 and case.result(w) is not case.result(v)
    same(case.result(v), case.result(w), "recomputed")
    v.close()
    w.close()


def test_a_model_with_other_weights_is_refused_naming_the_class_it_was_made_with(case, tmp_path):
    v = _finished(case, gated_cnn())
    path = v.save(tmp_path / "run.nvz")
    other = gated_cnn()
    with torch.no_grad():
        other.fc.bias[0] += 0.5
    with pytest.raises(nv.NeuronvizError, match="fingerprint.*differs.*made with a Sequential.*other weights"):
        case.cls.load(path, model=other)
    with pytest.raises(nv.NeuronvizError, match="made with a Sequential, this is a Linear"):
        case.cls.load(path, model=nn.Linear(2, 2))
    v.close()


def test_without_a_model_run_is_disabled_and_says_why(case, tmp_path):
    v = _finished(case, gated_cnn())
    w = case.cls.load(v.save(tmp_path / "run.nvz"))
    assert w.model is None and w.model_name == "Sequential"
    assert w.run_bar.run_button.disabled and "without its model" in w.run_bar.run_button.tooltip
    assert "no model" in w.run_bar.status.value
    with pytest.raises(nv.NeuronvizError, match=r"without its model.*load\(path, model=\.\.\.\)"):
        w.run()
    w._run_clicked()  # the button's handler shows the reason instead of raising
    assert "without its model" in (w.error or "")
    v.close()
    w.close()


def test_without_a_model_the_curves_and_knock_outs_say_why_instead_of_failing(case, tmp_path):
    v = _finished(case, gated_cnn())
    w = case.cls.load(v.save(tmp_path / "run.nvz"))
    section = w.knockouts.section if hasattr(w, "knockouts") else w.faithfulness
    assert section.start() is False  # nothing started in the background
    assert "without its model" in section.status.value and section.curves is None
    if hasattr(w, "knockouts"):  # the explorer's knock-out toggle too
        w.knockouts.toggle.button.value = True
        assert "without its model" in w.knockouts.status.value
    v.close()
    w.close()


def test_a_loaded_view_saved_again_keeps_the_fingerprint_and_loads_with_the_model(case, tmp_path):
    net = gated_cnn()
    v = _finished(case, net)
    w = case.cls.load(v.save(tmp_path / "a.nvz"))
    again = w.save(tmp_path / "b.nvz")
    header = read_header(again)
    assert header["model"] == {"class": "Sequential", "fingerprint": weights_fingerprint(net)}
    assert header["settings"]["view"] == case.cls.__name__
    u = case.cls.load(again, model=net)
    same(v.snapshot(), u.snapshot(), "snapshot")
    for x in (v, w, u):
        x.close()


def test_the_file_must_hold_a_view_of_the_class_asked_for(tmp_path):
    net = gated_cnn()
    v = _finished(CASES["inversion"], net)
    path = v.save(tmp_path / "inv.nvz")
    with pytest.raises(nv.NeuronvizError, match=r"holds a saved InversionView, not a NeuronExplorer.*InversionView\.load"):
        NeuronExplorer.load(path)
    w = View.load(path)  # the base loads any saved view
    assert type(w) is InversionView
    v.result.save(tmp_path / "result.nvz")
    with pytest.raises(nv.NeuronvizError, match="holds an InversionResult, not a saved view"):
        InversionView.load(tmp_path / "result.nvz")
    assert isinstance(nv.load(path), nv.widgets.view.SavedView)  # nv.load gives the record
    v.close()
    w.close()


def test_saving_before_a_run_finished_is_refused(tmp_path):
    v = NeuronExplorer(gated_cnn(), image(), ["conv1"], n_samples=4, autorun=False)
    with pytest.raises(nv.NeuronvizError, match="nothing to save yet"):
        v.save(tmp_path / "x.nvz")
    assert not (tmp_path / "x.nvz").exists()
    v.close()


def test_a_file_cannot_set_attributes_the_view_does_not_declare(tmp_path):
    from neuronviz.core import archive

    v = _finished(CASES["inversion"], gated_cnn())
    state = nv.load(v.save(tmp_path / "inv.nvz"))
    state.attributes["compute"] = "not a method"  # an edited file
    archive.save(tmp_path / "edited.nvz", state)
    with pytest.raises(nv.NeuronvizError, match=r"unknown parts \['compute'\]"):
        InversionView.load(tmp_path / "edited.nvz")
    del state.attributes["compute"], state.attributes["x"]
    archive.save(tmp_path / "edited.nvz", state)
    with pytest.raises(nv.NeuronvizError, match=r"missing parts \['x'\]"):
        InversionView.load(tmp_path / "edited.nvz")
    v.close()


def _objects(v: Any, name: str) -> list[dict]:
    """The saved objects of type ``name`` anywhere in a header's value."""
    found = []
    if isinstance(v, dict):
        obj = v.get("$obj")
        if isinstance(obj, dict) and obj.get("type") == name:
            found.append(obj["fields"])
        for x in v.values():
            found += _objects(x, name)
    elif isinstance(v, list):
        for x in v:
            found += _objects(x, name)
    return found


def test_an_explorer_file_holds_its_activation_maps_once_and_loads_them_back_equal(tmp_path):
    import json

    import numpy as np

    from neuronviz.core.archive import _HEADER

    v = _finished(CASES["explorer"], gated_cnn())
    path = v.save(tmp_path / "run.nvz")
    with np.load(path) as npz:
        value = json.loads(npz[_HEADER].tobytes().decode("utf-8"))["value"]
    (result,) = _objects(value, "ExplorerResult")
    (scores,) = _objects(value, "NeuronScores")
    assert "maps" in scores and not {"maps", "sample_maps"} & set(result)  # the scores' kept maps, saved once
    w = NeuronExplorer.load(path)
    r, s = v.outcome.result, w.outcome.result
    assert set(s.maps) == set(r.maps) == set(s.sample_maps) == {"conv1", "conv2"}
    for layer in r.maps:
        assert torch.equal(s.maps[layer], r.maps[layer]) and torch.equal(s.sample_maps[layer], r.sample_maps[layer])
        assert s.maps[layer].dim() == 3 and len(s.sample_maps[layer]) == len(r.sample_indices)
    v.close()
    w.close()


def test_an_explorer_file_that_holds_the_maps_itself_still_loads(tmp_path, monkeypatch):
    from neuronviz.core import archive
    from neuronviz.widgets.explorer import ExplorerResult

    v = _finished(CASES["explorer"], gated_cnn())
    monkeypatch.setitem(archive._BY_CLASS, ExplorerResult, ("ExplorerResult", ()))  # as files were written before
    path = v.save(tmp_path / "old.nvz")
    monkeypatch.undo()
    w = NeuronExplorer.load(path)
    for layer, m in v.outcome.result.sample_maps.items():
        assert torch.equal(w.outcome.result.sample_maps[layer], m)
        assert torch.equal(w.outcome.result.maps[layer], v.outcome.result.maps[layer])
    v.close()
    w.close()
