"""What every view promises, checked once for each registered view.

Runs in the background, cancels, drops stale results, shows errors and warnings, exports PNG,
SVG and PDF, carries a static PNG in its display data, validates its settings through
properties that move the controls, closes every widget it made, and leaves the model untouched.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
import gc
import io
import threading
import time
import warnings
import weakref
import xml.etree.ElementTree as ET
from dataclasses import dataclass, fields
from typing import Any, Callable

import pytest
import torch
from ipywidgets.widgets import widget as ipywidget
from PIL import Image
from torch import nn

import neuronviz as nv
from neuronviz.core.locks import is_held
from neuronviz.widgets import InversionView, NeuronExplorer, PCACEView
from neuronviz.widgets.view import View

from explorer_nets import gated_cnn, image


def _images(n: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 16, 16, generator=g)


@dataclass(frozen=True)
class Case:
    """How to build one view on a tiny network, and a setting that needs a new run."""

    cls: type
    make: Callable[..., View]
    rerun: tuple[str, Any, Any]
    result: Callable[[View], Any]


CASES = {
    "explorer": Case(
        NeuronExplorer,
        lambda cls, net, **kw: cls(net, image(), ["conv1", "conv2"], n_samples=6, **kw),
        ("seed", 1, 2),
        lambda v: v.scores,
    ),
    "pcace": Case(
        PCACEView,
        lambda cls, net, **kw: cls(net, _images(), ["conv1", "conv2"], **kw),
        ("n_components", 1, 2),
        lambda v: v.ranking,
    ),
    "inversion": Case(
        InversionView,
        lambda cls, net, **kw: cls(net, image(), stage1_steps=2, stage2_steps=3, **kw),
        ("seed", 1, 2),
        lambda v: v.result,
    ),
}


@pytest.fixture(params=list(CASES))
def case(request) -> Case:
    return CASES[request.param]


@pytest.fixture
def net() -> nn.Module:
    return gated_cnn()


def finished(case: Case, net: nn.Module, cls: type | None = None, **kw: Any) -> View:
    v = case.make(cls or case.cls, net, **kw)
    v.wait(120)
    assert v.status == "done", v.error
    return v


def test_every_view_is_a_view_with_a_declared_settings_dataclass(case):
    assert issubclass(case.cls, View)
    names = [f.name for f in fields(case.cls.Settings)]
    assert case.rerun[0] in names and case.cls.title


def test_the_first_run_starts_by_itself_and_ends_done(case, net, snapshot):
    snap = snapshot(net)
    v = finished(case, net)
    assert v.outcome is not None and case.result(v) is not None
    assert v.run_bar.progress.value == 1.0 and v.run_bar.status.value.startswith("done")
    assert v.header.value
    assert not is_held(net)
    snap.assert_unchanged()
    v.close()


def test_a_setting_property_validates_with_its_rule_and_moves_the_control(case, net):
    v = case.make(case.cls, net, autorun=False)
    name, _first, second = case.rerun
    setattr(v, name, second)
    assert getattr(v, name) == second and v.settings[name] == second
    if name in v.controls:
        assert v.controls[name].value == second
    with pytest.raises(nv.NeuronvizError, match=name):
        setattr(v, name, -5)
    assert getattr(v, name) == second
    assert type(v).__name__ in repr(v) and "status=" in repr(v)
    v.close()


def test_changing_a_rerun_setting_waits_for_run_and_says_so(case, net):
    v = finished(case, net)
    v.live = False  # Run behaviour (live mode: tests/widgets/test_live.py)
    before = case.result(v)
    name, first, second = case.rerun
    setattr(v, name, second if getattr(v, name) != second else first)
    assert case.result(v) is before
    assert "settings changed" in v.run_bar.status.value
    v.close()


def test_cancel_keeps_the_previous_result_and_the_model(case, net, snapshot):
    v = finished(case, net)
    v.live = False  # Run behaviour (live mode: tests/widgets/test_live.py)
    before = case.result(v)
    snap = snapshot(net)
    net.gate.close()
    name, first, second = case.rerun
    setattr(v, name, second)
    v.run()
    assert net.gate.entered.wait(20)  # the run is inside a forward pass now
    v.run_bar.cancel_button.click()
    net.gate.open()
    v.wait(60)
    assert v.status == "cancelled" and "cancelled" in v.run_bar.status.value
    assert case.result(v) is before
    snap.assert_unchanged()
    v.close()


def test_a_newer_run_supersedes_the_running_one_and_only_its_result_is_shown(case, net):
    shown = []

    class Recording(case.cls):
        def show(self, result):
            shown.append(self.outcome.settings)
            super().show(result)

    v = case.make(Recording, net, autorun=False)
    name, first, second = case.rerun
    net.gate.close()
    setattr(v, name, first)
    old = v.run()
    assert net.gate.entered.wait(20)
    setattr(v, name, second)
    new = v.run()
    net.gate.open()
    v.wait(60)
    assert [getattr(s, name) for s in shown] == [second]
    assert old.state == "cancelled" and new.state == "done"
    v.close()


class BreaksOnDemand(nn.Sequential):
    """The gated tiny network (same layer names) that raises in its forward pass once ``broken`` is set."""

    def __init__(self) -> None:
        super().__init__(OrderedDict(gated_cnn().named_children()))
        self.broken = False

    def forward(self, x):
        if self.broken:
            raise RuntimeError("this model broke on purpose")
        return super().forward(x)


def test_an_error_in_the_run_is_shown_in_the_widget_and_the_model_kept(case, snapshot):
    model = BreaksOnDemand()
    v = case.make(case.cls, model, autorun=False)
    snap = snapshot(model)
    model.broken = True
    v.run()
    v.wait(60)
    assert v.status == "error"
    assert "broke on purpose" in v.error and "broke on purpose" in v.run_bar.error.value
    assert v.outcome is None
    model.broken = False
    snap.assert_unchanged()
    v.close()


def test_warnings_of_a_run_reach_the_widget_not_the_notebook(case, net):
    class Warns(case.cls):
        def compute(self, settings, job):
            warnings.warn("every score of this run is NaN", nv.NeuronvizWarning)
            return super().compute(settings, job)

    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        v = finished(case, net, cls=Warns)
    assert not [w for w in escaped if "every score of this run" in str(w.message)]
    assert v.warnings == ["every score of this run is NaN"]
    assert "every score of this run is NaN" in v.run_bar.warnings.value
    v.run()
    v.wait(60)
    assert v.warnings == ["every score of this run is NaN"]  # again: each run's warnings are its own
    v.close()


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_export_writes_a_valid_file_of_each_format(case, net, tmp_path, suffix):
    v = finished(case, net)
    path = v.export(tmp_path / f"view{suffix}", dpi=80)
    data = path.read_bytes()
    if suffix == ".png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert Image.open(io.BytesIO(data)).size[0] > 200
    elif suffix == ".svg":
        assert ET.fromstring(data).tag.endswith("svg")
    else:
        assert data[:5] == b"%PDF-"
    v.close()


def test_export_refuses_other_suffixes_and_calls_before_a_result(case, net, tmp_path):
    v = case.make(case.cls, net, autorun=False)
    with pytest.raises(nv.NeuronvizError, match="first run"):
        v.export(tmp_path / "early.png")
    v.run()
    v.wait(60)
    with pytest.raises(nv.NeuronvizError, match=r"\.png"):
        v.export(tmp_path / "figure.jpg")
    v.exporter.path.value = str(tmp_path / "figure.jpg")
    v.exporter.button.click()
    assert ".png" in v.error and "figure.jpg" in v.run_bar.error.value
    v.close()


def test_the_display_data_holds_the_widget_and_a_static_png(case, net):
    v = finished(case, net)
    bundle = v._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    png = base64.b64decode(bundle["image/png"])
    assert Image.open(io.BytesIO(png)).size[0] > 100
    v.close()


def test_close_waits_for_the_run_and_leaves_the_model_restored(case, net, snapshot):
    v = case.make(case.cls, net, autorun=False)
    snap = snapshot(net)
    net.gate.close()
    job = v.run()
    assert net.gate.entered.wait(20)
    threading.Timer(0.3, net.gate.open).start()  # the run can only stop once its forward pass returns
    t0 = time.perf_counter()
    v.close()
    assert time.perf_counter() - t0 >= 0.2  # close waited for the run
    assert job.finished
    assert not is_held(net)
    snap.assert_unchanged()


def test_closing_frees_every_widget_and_the_view(case, net):
    v = finished(case, net)  # a first view: widget classes and caches warmed up
    v.close()
    del v
    gc.collect()
    before = len(ipywidget._instances)
    refs = []
    for _ in range(30):
        v = finished(case, net)
        refs.append(weakref.ref(v))
        v.close()
        del v
    gc.collect()
    assert len(ipywidget._instances) - before <= 0
    assert sum(r() is not None for r in refs) == 0
