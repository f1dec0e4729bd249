"""An App saved to one file and loaded back: the tabs that ran show their results without a forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from deep_equal import same
from explorer_nets import gated_cnn, image
from PIL import Image
from test_app import OPTIONS, image_set
from test_view_save_load import Passes
from torch import nn

import neuronviz as nv
from neuronviz.core.archive import read_header
from neuronviz.widgets import App, NeuronExplorer, PCACEView
from neuronviz.widgets.app import SavedApp


def ran_app(net: nn.Module) -> App:
    """An app whose explorer and PCACE tabs finished a run; its inversion tab was never shown."""
    app = App(net, image(), image_set(), **OPTIONS)
    app.tab = "pcace"
    app.wait(120)
    assert {n: v.status for n, v in app.views.items()} == {"explorer": "done", "pcace": "done"}
    return app


def test_a_loaded_app_shows_the_tabs_that_ran_without_a_forward_pass(tmp_path):
    net = gated_cnn()
    app = ran_app(net)
    path = app.save(tmp_path / "app.nvz")
    assert read_header(path)["type"] == "App" and read_header(path)["settings"]["tabs"] == ["explorer", "pcace"]
    with Passes(net) as passes:
        got = App.load(path)
    assert passes.n == 0
    assert got.tab == "pcace" and list(got.views) == ["explorer", "pcace"]
    for name in ("explorer", "pcace"):
        before, after = app.views[name], got.views[name]
        assert type(after) is type(before) and after.status == "done" and after.model is None
        same(before.snapshot(), after.snapshot(), name)
        assert after.selected == before.selected
        assert after.run_bar.run_button.disabled
    same(app.explorer.scores, got.explorer.scores, "scores")
    torch.testing.assert_close(got.x, app.x, rtol=0, atol=0)
    torch.testing.assert_close(got.image_set(), app.image_set(), rtol=0, atol=0)
    # the tab that never ran says what it needs, in its tab and when asked for
    got.tab = "inversion"
    assert "not saved in app.nvz" in got.children[2].children[0].value
    with pytest.raises(nv.NeuronvizError, match=r"not saved in app\.nvz.*model=\.\.\."):
        got.view("inversion")
    app.close()
    got.close()


def test_with_the_model_the_loaded_views_run_again_and_the_other_tabs_compute(tmp_path):
    app = ran_app(gated_cnn())
    path = app.save(tmp_path / "app.nvz")
    net = gated_cnn()  # another object with the same weights
    got = App.load(path, model=net)
    assert got.model is net and not got.explorer.run_bar.run_button.disabled
    with Passes(net) as passes:
        got.explorer.run()
        got.explorer.wait(120)
    assert passes.n > 0 and got.explorer.status == "done"
    same(app.explorer.scores, got.explorer.scores, "recomputed")
    got.tab = "inversion"  # not in the file: built and run now, on the app's image
    got.wait(120)
    assert got.inversion.status == "done", got.inversion.error
    assert got.inversion.result.mask.shape[-2:] == app.x.shape[-2:]
    app.close()
    got.close()


def test_a_model_with_other_weights_is_refused(tmp_path):
    app = ran_app(gated_cnn())
    path = app.save(tmp_path / "app.nvz")
    other = gated_cnn()
    with torch.no_grad():
        other.fc.bias[0] += 0.5
    with pytest.raises(nv.NeuronvizError, match="fingerprint.*differs.*other weights"):
        App.load(path, model=other)
    app.close()


def test_a_photo_app_keeps_its_photo_and_remakes_the_pcace_views_from_it(tmp_path):
    net = gated_cnn()
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8))
    app = App(net, photo, n_images=24, seed=3, explorer={"n_samples": 6})
    app.wait(120)
    got = App.load(app.save(tmp_path / "photo.nvz"), model=net)
    assert np.array_equal(got._photo, np.asarray(photo))
    torch.testing.assert_close(got.image_set(), app.image_set(), rtol=0, atol=0)  # the same seeded views
    app.close()
    got.close()


def test_saving_before_any_run_finished_and_loading_the_wrong_file_are_clear_errors(tmp_path):
    net = gated_cnn()
    app = App(net, image(), image_set(), explorer={"n_samples": 6, "autorun": False})
    with pytest.raises(nv.NeuronvizError, match=r"no tab has finished a run.*app\.wait\(\)"):
        app.save(tmp_path / "early.nvz")
    app.explorer.run()
    app.wait(120)
    view_file = app.explorer.save(tmp_path / "view.nvz")
    with pytest.raises(nv.NeuronvizError, match=r"holds a View, not a saved App; NeuronExplorer\.load\(path\)"):
        App.load(view_file)
    app_file = app.save(tmp_path / "app.nvz")
    with pytest.raises(nv.NeuronvizError, match=r"holds an App, not a saved view; nv\.App\.load\(path\)"):
        NeuronExplorer.load(app_file)
    with pytest.raises(nv.NeuronvizError, match="holds an App"):
        PCACEView.load(app_file)
    assert isinstance(nv.load(app_file), SavedApp)  # the record, as for any file
    app.close()
