"""App: the three views as tabs, built when first shown, taking turns on the model; nv.app() on the default model."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from explorer_nets import gated_cnn, image
from PIL import Image

import neuronviz as nv
from neuronviz.core.locks import hold_model, is_held
from neuronviz.widgets import App, InversionView, NeuronExplorer, PCACEView
from neuronviz.widgets.app import TABS, Tab

OPTIONS = {
    "explorer": {"n_samples": 6},
    "pcace": {"layers": ["conv2"]},
    "inversion": {"stage1_steps": 2, "stage2_steps": 2},
}


def image_set(n: int = 40) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def net():
    return gated_cnn()


def make_app(net, **kwargs) -> App:
    return App(net, image(), kwargs.pop("images", image_set()), **{**OPTIONS, **kwargs})


def test_only_the_explorer_is_built_until_another_tab_is_shown(net, snapshot):
    snap = snapshot(net)
    app = make_app(net)
    assert list(app.views) == ["explorer"] and app.tab == "explorer"
    assert isinstance(app.explorer, NeuronExplorer)
    assert app.titles == ("Neurons", "PCACE", "Inversion")
    assert app.children[1].children[0].value.startswith("<i>PCACE: opens")
    app.selected_index = 1  # what a click on the tab sends
    assert isinstance(app.views["pcace"], PCACEView) and app.children[1].children == (app.pcace,)
    assert "inversion" not in app.views
    app.tab = "inversion"
    assert isinstance(app.views["inversion"], InversionView)
    app.wait(60)
    assert {name: view.status for name, view in app.views.items()} == dict.fromkeys(TABS, "done")
    assert list(app.pcace.layers) == ["conv2"] and app.inversion.result.losses["stage1"].shape == (1, 2)
    assert app.explorer.scores.n_samples == 6
    snap.assert_unchanged()
    app.close()


def test_lazy_false_builds_every_view_and_the_target_reaches_each(net):
    app = make_app(net, lazy=False, target=2)
    assert list(app.views) == list(TABS)
    app.wait(60)
    assert app.explorer.scores.target == 2 and app.pcace.scores.target == 2 and app.inversion.result.target == [2]
    app.close()


def test_properties_build_views_that_were_not_shown(net):
    app = make_app(net, pcace={"layers": ["conv2"], "autorun": False})
    v = app.pcace
    assert v is app.pcace and v.status == "idle" and app.tab == "explorer"
    app.close()


def test_a_views_run_waits_for_another_run_on_the_model_and_can_be_cancelled_meanwhile(net):
    app = make_app(net, explorer={"n_samples": 6, "autorun": False}, pcace={"layers": ["conv2"], "autorun": False})
    explorer, pcace = app.explorer, app.pcace
    with hold_model(net):  # as another view's run does
        explorer.run()
        pcace.run()
        for view in (explorer, pcace):
            deadline = threading.Event()
            for _ in range(200):
                if view.run_bar.status.value.startswith("waiting"):
                    break
                deadline.wait(0.05)
            assert view.run_bar.status.value.startswith("waiting: another"), view.run_bar.status.value
        pcace.cancel()
        pcace.wait(10)
        assert pcace.status == "cancelled" and explorer.status == "running"
    explorer.wait(60)  # it goes on once the model is free
    assert explorer.status == "done" and not is_held(net)
    pcace.run()
    pcace.wait(60)
    assert pcace.status == "done"
    app.close()


def count_concurrent_passes(net) -> dict:
    """Hooks on the whole model counting forward passes in progress at once (``peak``)."""
    state = {"active": 0, "peak": 0, "passes": 0}
    guard = threading.Lock()

    def enter(module, args):
        with guard:
            state["active"] += 1
            state["passes"] += 1
            state["peak"] = max(state["peak"], state["active"])
        time.sleep(0.002)  # widen each pass, so that two threads would meet

    def leave(module, args, output):
        with guard:
            state["active"] -= 1

    net.register_forward_pre_hook(enter)
    net.register_forward_hook(leave)
    return state


def test_the_views_of_an_app_never_run_the_model_at_once(net):
    state = count_concurrent_passes(net)
    app = make_app(net, lazy=False, explorer={"n_samples": 24}, inversion={"stage1_steps": 4, "stage2_steps": 4})
    for _ in range(2):
        for view in app.views.values():
            view.run()
    app.wait(60)
    assert all(view.status == "done" for view in app.views.values())
    # a second run cancels the first at a batch boundary, so how many passes ran varies; the last runs
    # alone take more than 15 (explorer 2 batches, PCACE 2, inversion 2 x 8 steps)
    assert state["passes"] > 15 and state["peak"] == 1
    assert not is_held(net)
    app.close()


def test_views_made_on_their_own_in_separate_cells_also_take_turns_on_the_model(net):
    state = count_concurrent_passes(net)
    views = [
        NeuronExplorer(net, image(), n_samples=24),
        PCACEView(net, image_set(), layers=["conv2"]),
        InversionView(net, image(), stage1_steps=4, stage2_steps=4),
    ]
    for view in views:
        view.run()
    for view in views:
        view.wait(60)
    assert all(view.status == "done" for view in views)
    # the explorer's batches depend on whether live mode asked for an early partial; never under 15
    assert state["passes"] > 15 and state["peak"] == 1
    assert not is_held(net)
    for view in views:
        view.close()


def test_without_images_the_pcace_tab_says_what_it_needs(net):
    app = App(net, image(), explorer={"n_samples": 6, "autorun": False})
    app.tab = "pcace"
    box = app.children[1].children[0]
    assert "nv-error" in box._dom_classes and "images=" in box.value
    with pytest.raises(nv.NeuronvizError, match="images="):
        _ = app.pcace
    app.tab = "inversion"  # the other tabs still work
    assert isinstance(app.views["inversion"], InversionView)
    app.close()


def test_an_error_of_a_lazily_built_view_is_shown_in_its_tab(net):
    app = make_app(net, inversion={"lam": -1.0}, explorer={"n_samples": 6, "autorun": False})
    app.tab = "inversion"
    assert "lam" in app.children[2].children[0].value
    with pytest.raises(nv.NeuronvizError, match="lam"):
        _ = app.inversion
    app.close()


def test_a_photo_is_preprocessed_and_its_views_ranked(net):
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    app = App(net, photo, n_images=20, seed=3, explorer={"n_samples": 6, "autorun": False},
              pcace={"layers": ["conv2"], "autorun": False})
    assert tuple(app.x.shape) == (1, 3, 224, 224)
    torch.testing.assert_close(app.x, nv.preprocess(photo))
    torch.testing.assert_close(app.pcace.images, nv.augment(photo, 20, seed=3))
    app.close()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image": [1, 2, 3]}, "image"),
        ({"explorer": "fast"}, "explorer"),
        ({"n_images": 0}, "n_images"),
        ({"explorer": {"n_samples": 1}}, "n_samples"),
    ],
)
def test_bad_arguments_fail_early(net, kwargs, message):
    args = {"image": image(), **kwargs}
    with pytest.raises(nv.NeuronvizError, match=message):
        App(net, args.pop("image"), image_set(), **args)


def test_an_unknown_tab_is_refused(net):
    app = make_app(net, explorer={"n_samples": 6, "autorun": False})
    with pytest.raises(nv.NeuronvizError, match="tab"):
        app.tab = "saliency"
    app.close()


def test_a_new_tab_is_one_entry_of_the_registry(net, monkeypatch):
    made = []

    def make(app, **kwargs):
        made.append(kwargs)
        return InversionView(app.model, app.x, **kwargs)

    monkeypatch.setitem(TABS, "again", Tab(InversionView, make))
    app = make_app(net, again={"stage1_steps": 1, "stage2_steps": 1, "autorun": False}, target=3,
                   explorer={"n_samples": 6, "autorun": False})
    assert app.titles == ("Neurons", "PCACE", "Inversion", "Inversion") and "again" not in app.views
    app.tab = "again"
    assert isinstance(app.views["again"], InversionView) and app.view("again") is app.views["again"]
    assert made == [{"stage1_steps": 1, "stage2_steps": 1, "autorun": False, "target": 3}]
    assert app.children[3].children == (app.views["again"],)
    app.close()


def test_options_of_a_tab_that_does_not_exist_are_refused(net):
    with pytest.raises(nv.NeuronvizError, match="saliency.*explorer"):
        App(net, image(), image_set(), saliency={"n_samples": 6})


def test_the_names_are_exported():
    for name in ("App", "app", "PCACEView", "InversionView"):
        assert name in nv.__all__ and getattr(nv, name) is not None


def test_app_on_the_default_model_opens_on_the_explorer():
    app = nv.app(explorer={"autorun": False})
    assert isinstance(app.model, nv.models.EfficientNetLite0)
    alone = NeuronExplorer(app.model, app.x, autorun=False)  # the app leaves the explorer's defaults as they are
    assert list(app.explorer.layers) == list(alone.layers) and app.explorer.target == alone.target
    assert nv.imagenet_categories()[app.explorer.target] == "Egyptian cat"
    alone.close()
    assert list(app.views) == ["explorer"]
    app.close()
