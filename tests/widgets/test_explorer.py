"""NeuronExplorer: runs in the background, linked selection, settings, cancel, stale runs, errors."""

from __future__ import annotations

import ast
import base64
import io
import math
import pathlib
import sys
import types

import ipywidgets as W
import numpy as np
import pytest
import torch
from explorer_nets import gated_cnn, image
from PIL import Image
from torch import nn

import neuronviz as nv
from neuronviz.core.perturb import AdditiveGaussian, MultiplicativeGaussian
from neuronviz.widgets import NeuronExplorer, colab
from neuronviz.widgets.explorer import default_layers

LAYERS = ["conv1", "conv2"]


@pytest.fixture
def net():
    return gated_cnn()


@pytest.fixture
def x():
    return image()


def explorer(net, x, **kwargs) -> NeuronExplorer:
    kwargs.setdefault("n_samples", 6)
    kwargs.setdefault("live", False)  # these tests press Run; live mode is tested in test_live.py
    return NeuronExplorer(net, x, LAYERS, **kwargs)


def finished(net, x, **kwargs) -> NeuronExplorer:
    w = explorer(net, x, **kwargs)
    w.wait(60)
    assert w.status == "done", w.error
    return w


def clean_map(net, x, layer, channel) -> torch.Tensor:
    """The layer's activation on the clean image with a plain forward hook (independent of neuronviz)."""
    store = {}
    handle = dict(net.named_modules())[layer].register_forward_hook(lambda m, i, o: store.setdefault("a", o.detach()))
    was = net.training
    net.eval()
    with torch.no_grad():
        net(x)
    net.train(was)
    handle.remove()
    return store["a"][0, channel]


def assert_scores_equal(a: nv.NeuronScores, b: nv.NeuronScores) -> None:
    assert a.layers == b.layers
    for layer in a.layers:
        for name in ("correlation", "precision", "mean_activation"):
            torch.testing.assert_close(getattr(a, name)[layer], getattr(b, name)[layer], equal_nan=True,
                                       rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.channel_means[layer], b.channel_means[layer], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.outputs, b.outputs, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------ a run


def test_the_first_run_starts_by_itself_and_matches_score_neurons(net, x, snapshot):
    snap = snapshot(net)
    w = explorer(net, x, seed=2)
    assert w.status == "running"  # returned at once, computing in the background
    w.wait(60)
    assert w.status == "done" and w.error is None
    assert "done" in w.run_bar.status.value
    direct = nv.score_neurons(net, x, LAYERS, n_samples=6, seed=2, keep_channel_means=True)
    assert_scores_equal(w.scores, direct)
    snap.assert_unchanged()


def test_changing_sliders_recomputes_only_on_run_with_the_new_settings(net, x, snapshot):
    w = finished(net, x)
    before = w.scores
    snap = snapshot(net)
    w.controls["n_samples"].value = 9
    w.controls["seed"].value = 5
    w.controls["perturbation"].value = "additive"
    assert w.strength == 0.5 and w.controls["strength"].max == 3.0  # the family's default and range
    w.controls["strength"].value = 0.25
    assert w.scores is before and w.status == "done"  # nothing ran yet
    assert "press Run" in w.run_bar.status.value
    w.run_bar.run_button.click()
    w.wait(60)
    assert w.status == "done"
    direct = nv.score_neurons(net, x, LAYERS, n_samples=9, seed=5, perturbation=AdditiveGaussian(sigma=0.25),
                              target=w.target, keep_channel_means=True)
    assert_scores_equal(w.scores, direct)
    assert w.settings == {"layers": LAYERS, "perturbation": "additive", "strength": 0.25, "n_samples": 9, "seed": 5,
                          "target": w.target, "device": "cpu", "top_k": 5}
    snap.assert_unchanged()


def test_python_settings_and_target_reach_the_next_run(net, x):
    w = finished(net, x)
    other = (w.target + 1) % 5
    w.target, w.n_samples, w.seed, w.strength, w.layers = other, 7, 3, 0.2, ["conv2"]
    w.run()
    w.wait(60)
    direct = nv.score_neurons(net, x, ["conv2"], target=other, n_samples=7, seed=3,
                              perturbation=MultiplicativeGaussian(0.2), keep_channel_means=True)
    assert_scores_equal(w.scores, direct)
    assert w.scores.target == other
    assert w.selected[0] == "conv2"  # the old selection's layer is gone: a neuron of the new layers


def test_constructor_and_first_run_cost_one_probe_pass_and_the_scoring_passes(net, x, snapshot):
    snap = snapshot(net)
    batches = []
    handle = net.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        w = NeuronExplorer(net, x, LAYERS, n_samples=40)  # default target and strip: nothing given
        w.wait(60)
    finally:
        handle.remove()
    assert w.status == "done", w.error
    assert batches[0] == 1 and sum(batches[1:]) == 40  # the probe, then every copy once
    assert len(batches) == 1 + math.ceil(40 / max(batches[1:]))
    snap.assert_unchanged()


def test_the_strip_shows_the_copies_with_their_own_maps(net, x):
    w = finished(net, x, n_samples=9)
    indices = w.detail.sample_indices
    assert indices[0] == 0 and indices[-1] == 8 and len(indices) == 5
    copies = w.scores.perturbation.sample(x, indices, seed=w.seed)
    for j in range(len(indices)):
        expected = clean_map(net, copies[j : j + 1], "conv2", 1)  # a plain forward hook on that copy
        torch.testing.assert_close(w.detail.sample_maps["conv2"][j, 1], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.detail.sample_maps["conv2"][0], w.snapshot().maps["conv2"])  # copy 0: the image


def test_a_new_run_redraws_the_strip_in_its_widgets_and_opens_none(net, x):
    w = finished(net, x, n_samples=9)
    images, before = list(w.detail._images), [im.value for im in w.detail._images]
    opened = len(W.widget._instances)
    w.n_samples, w.seed = 12, w.seed + 1
    w.run()
    w.wait(60)
    assert w.status == "done", w.error
    assert w.detail._images == images and len(W.widget._instances) == opened  # same widgets, none opened
    assert w.detail.sample_indices[-1] == 11
    assert [im.value for im in w.detail._images] != before  # ...showing the new run's copies
    w.n_samples = 3  # a shorter strip: its own widgets
    w.run()
    w.wait(60)
    assert len(w.detail._images) == 3 and len(w.detail.strip.children) == 3


def test_the_channels_left_out_of_precision_are_counted_in_the_widget(x):
    net = gated_cnn()
    with torch.no_grad():
        net.conv1.bias[0] = -100.0  # relu1's channel 0 never fires: planted dead
    w = NeuronExplorer(net, x, ["relu1", "relu2"], n_samples=6)
    w.wait(60)
    means = w.scores.channel_means["relu1"].double().mean(0)  # mean over copies of the position means
    n = int((means < 0.1).sum())  # the paper's rule on a layer that is never negative
    assert n >= 1
    assert f"relu1 {n} of 6 (mean activation under 0.1" in w.lists.excluded.value
    assert "nv-excluded" in w.lists.excluded._dom_classes
    w.selected = ("relu1", 0)
    assert "left out of the precision selection" in w.selected_info.value


def test_autorun_false_waits_for_run(net, x):
    w = explorer(net, x, autorun=False)
    w.n_samples = 8
    assert w.status == "idle" and w.scores is None
    w.wait(1)  # nothing to wait for
    w.run()
    w.wait(60)
    assert w.scores.n_samples == 8


# ------------------------------------------------------------------------------ linked selection


def _decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_setting_selected_updates_overlay_detail_and_label(net, x):
    w = finished(net, x)
    before = w.overlay.picture.value
    w.selected = ("conv2", 3)
    assert w.selected == ("conv2", 3)
    assert w.selected_label.value == "conv2 · channel 3"
    assert w.overlay.picture.value != before
    # the detail scatter plots this channel's mean activation against the output, sample by sample
    np.testing.assert_allclose(w.detail.points_mark.x, w.scores.channel_means["conv2"][:, 3].numpy(), rtol=1e-6)
    np.testing.assert_allclose(w.detail.points_mark.y, w.scores.outputs.numpy())
    # the box sits on the strongest cell of the channel's clean map, scaled to the 224-pixel picture
    amap = clean_map(net, x, "conv2", 3)
    r, c = np.unravel_index(int(amap.argmax()), tuple(amap.shape))
    cell = 224 / amap.shape[0]
    assert w.overlay.box == pytest.approx((r * cell, c * cell, (r + 1) * cell, (c + 1) * cell))
    assert _decoded(w.overlay.picture.value).shape == (224, 224, 3)
    # the scatter marks it and the point is the one selected
    i = w.scatter.index[("conv2", 3)]
    assert list(w.scatter.points_mark.selected) == [i]
    assert w.scatter.selected_mark.x[0] == pytest.approx(w.scatter.points_mark.x[i])


def test_clicking_a_scatter_point_selects_its_neuron_everywhere(net, x):
    w = finished(net, x)
    w.selected = ("conv1", 0)
    overlay = w.overlay.picture.value
    i = w.scatter.index[("conv2", 1)]
    w.scatter.points_mark.selected = [i]  # what a click in the browser sends
    assert w.selected == ("conv2", 1)
    assert w.selected_label.value == "conv2 · channel 1"
    assert w.overlay.picture.value != overlay
    np.testing.assert_allclose(w.detail.points_mark.x, w.scores.channel_means["conv2"][:, 1].numpy(), rtol=1e-6)
    # point i really is that channel: its coordinates are the channel's scores
    assert w.scatter.points_mark.x[i] == pytest.approx(float(w.scores.correlation["conv2"][1]), nan_ok=True) or \
        np.isnan(float(w.scores.correlation["conv2"][1]))


def test_the_scatter_holds_one_point_per_channel_first(net, x):
    w = finished(net, x)
    fig = w.scatter.figure
    assert fig.marks[0] is w.scatter.points_mark
    assert len(fig.marks[0].x) == len(fig.marks[0].y) == 6 + 4
    assert "nv-scatter" in fig._dom_classes and "nv-detail" in w.detail.figure._dom_classes
    finite = np.isfinite(np.concatenate([w.scores.precision[layer].numpy() for layer in LAYERS]))
    prec = np.concatenate([w.scores.precision[layer].numpy() for layer in LAYERS])
    np.testing.assert_allclose(fig.marks[0].y[finite], prec[finite], rtol=1e-6)


def test_picking_in_a_list_and_brushing_select_neurons(net, x):
    w = finished(net, x, top_k=2)
    layer = "conv1"
    chosen = w.scores.top("precision", 2)[layer]
    w.lists.pick(layer, "precision", chosen[-1])
    assert w.selected == (layer, chosen[-1])
    assert [v for _l, v in w.lists.lists[(layer, "precision")].options] == chosen

    w.scatter.mode.value = "brush"
    idx = [w.scatter.index[("conv1", 2)], w.scatter.index[("conv2", 0)], w.scatter.index[("conv2", 2)]]
    w.scatter.points_mark.selected = idx  # what a brush over three points sends
    assert [v for _l, v in w.scatter.brushed.options] == idx
    assert w.selected == (layer, chosen[-1])  # a brush lists, it does not select
    w.scatter.brushed.value = idx[1]
    assert w.selected == ("conv2", 0)


def test_top_k_applies_at_once_to_lists_and_marks(net, x):
    w = finished(net, x, top_k=3)
    before = w.scores
    w.top_k = 1
    assert w.status == "done" and w.scores is before  # no new run
    assert "press Run" not in w.run_bar.status.value
    for layer in LAYERS:
        for metric in ("correlation", "precision"):
            assert [v for _l, v in w.lists.lists[(layer, metric)].options] == w.scores.top(metric, 1)[layer]
    n_c = sum(len(v) for v in w.scores.top("correlation", 1).values())
    assert len(w.scatter.top_c_mark.x) == n_c
    top_c, top_p = w.scores.top("correlation", 1), w.scores.top("precision", 1)
    both = sum(len(set(top_c[layer]) & set(top_p[layer])) for layer in LAYERS)
    assert len(w.scatter.both_mark.x) == both


@pytest.mark.parametrize("bad", [("conv9", 0), ("conv2", 4), ("conv2", -1), ("conv2",), "conv2", ("conv2", 1.5)])
def test_an_invalid_selection_raises_a_clear_error(net, x, bad):
    w = finished(net, x)
    keep = w.selected
    with pytest.raises(nv.NeuronvizError):
        w.selected = bad
    assert w.selected == keep


# ------------------------------------------------------------------------------ errors
# (cancel, stale runs and the rest every view shares: tests/widgets/test_view_contract.py)


class RefusesBatches(nn.Module):
    """A classifier that takes one image at a time only."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if x.shape[0] > 1:
            raise RuntimeError("this model takes one image at a time")
        return self.inner(x)


def test_an_error_in_the_run_is_shown_and_kept(x, snapshot):
    model = RefusesBatches(gated_cnn())
    snap = snapshot(model)
    w = NeuronExplorer(model, x, ["inner.conv1"], n_samples=6)
    w.wait(60)
    assert w.status == "error"
    assert "one image at a time" in w.error
    assert "one image at a time" in w.run_bar.error.value
    assert w.scores is None
    snap.assert_unchanged()


def test_a_bad_export_name_from_the_button_shows_in_the_error_area(net, x):
    w = finished(net, x)
    w.exporter.path.value = "figure.jpg"
    w.exporter.button.click()
    assert ".png" in w.error and "figure.jpg" in w.run_bar.error.value


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layers": ["conv3"]}, "conv"),
        ({"n_samples": 2}, "n_samples"),
        ({"perturbation": "salt"}, "perturbation"),
        ({"strength": 7.0}, "strength"),
        ({"target": 5}, "target"),
        ({"top_k": 0}, "top_k"),
        ({"device": "tpu"}, "device"),
        ({"image_display": np.zeros((4, 4, 2), dtype=np.uint8)}, "image_display"),
        ({"image_display": np.full((4, 4, 3), 2.0)}, "image_display"),
    ],
)
def test_bad_arguments_fail_early_with_a_clear_error(net, x, kwargs, message):
    layers = kwargs.pop("layers", LAYERS)
    with pytest.raises(nv.NeuronvizError, match=message):
        NeuronExplorer(net, x, layers, autorun=False, **kwargs)


def test_a_typo_in_a_layer_name_suggests_the_right_one(net, x):
    with pytest.raises(nv.LayerNotFoundError, match="conv2"):
        NeuronExplorer(net, x, ["conv_2"], autorun=False)


def test_default_layers_are_the_activations_after_the_convolutions(net, x):
    w = NeuronExplorer(net, x, autorun=False)
    assert w.layers == ["relu1", "relu2"]  # post-ReLU maps, as the paper scored them
    assert default_layers(net, nv.layer_summary(net, x)) == ["relu1", "relu2"]


def test_the_default_number_of_copies_is_the_papers(net, x):
    assert NeuronExplorer(net, x, LAYERS, autorun=False).n_samples == 50


# ------------------------------------------------------------------------------ display


def test_the_display_data_holds_the_widget_and_a_png(net, x):
    w = explorer(net, x, autorun=False)
    bundle = w._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == w.model_id
    assert base64.b64decode(bundle["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    w.run()
    w.wait(60)
    after = base64.b64decode(w._repr_mimebundle_()["image/png"])
    picture = Image.open(io.BytesIO(after))
    assert picture.width > 500  # the whole view now, not only the image


def test_dom_classes_for_browser_tests(net, x):
    w = explorer(net, x, autorun=False)
    classes = {
        "nv-explorer": w, "nv-run": w.run_bar.run_button, "nv-cancel": w.run_bar.cancel_button,
        "nv-progress": w.run_bar.progress, "nv-status": w.run_bar.status, "nv-error": w.run_bar.error,
        "nv-overlay": w.overlay.picture, "nv-scatter": w.scatter.figure, "nv-detail": w.detail.figure,
        "nv-selections": w.lists.widget, "nv-samples": w.controls["n_samples"], "nv-seed": w.controls["seed"],
        "nv-strength": w.controls["strength"], "nv-topk": w.controls["top_k"], "nv-export": w.exporter.button,
        "nv-selected": w.selected_label, "nv-kind": w.controls["perturbation"], "nv-layers": w.controls["layers"],
        "nv-target": w.controls["target"], "nv-device": w.controls["device"], "nv-export-scores": w.scores_button,
    }
    for css, widget in classes.items():
        assert css in widget._dom_classes, css
    assert not w.controls["n_samples"].continuous_update and not w.controls["strength"].continuous_update
    assert w.controls["n_samples"].max >= 512


def test_colab_widget_manager_is_enabled_once_only_in_colab(monkeypatch):
    calls = []
    fake = types.ModuleType("google.colab")
    fake.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append(1))
    monkeypatch.setattr(colab, "_done", False)
    assert colab.enable_colab_widgets() is False and calls == []  # not in Colab
    monkeypatch.setitem(sys.modules, "google.colab", fake)
    assert colab.enable_colab_widgets() is True
    assert colab.enable_colab_widgets() is False
    assert calls == [1]


def test_core_and_methods_import_no_widget_library():
    root = pathlib.Path(nv.__file__).parent
    offenders = []
    for package in ("core", "methods"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [("." * node.level) + (node.module or "")]
                else:
                    continue
                for name in names:
                    top = name.lstrip(".").split(".")[0]
                    upward = node.__class__ is ast.ImportFrom and node.level >= 2 and top in ("widgets", "render")
                    if top in ("ipywidgets", "bqplot") or upward:
                        offenders.append(f"{path.relative_to(root)}: {name}")
    assert not offenders, offenders


def test_a_model_that_is_not_a_classifier_is_refused_early(x):
    with pytest.raises(nv.NeuronvizError, match="classes"):
        NeuronExplorer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), x, autorun=False)


def test_image_display_is_drawn_on_and_copies_are_shown_in_its_colours(net):
    from neuronviz.widgets.pictures import resize

    rng = np.random.default_rng(3)
    picture = rng.random((16, 16, 3)).astype(np.float32)
    mean, std = np.array([0.3, 0.5, 0.4]), np.array([0.2, 0.25, 0.3])
    x = torch.from_numpy(((picture - mean) / std).transpose(2, 0, 1)[None].astype(np.float32))
    w = NeuronExplorer(net, x, LAYERS, n_samples=5, image_display=(picture * 255).round().astype(np.uint8))
    w.wait(60)
    assert w.image.shape == (224, 224, 3)
    # copy 0 is the clean image: mapped back through the picture's channel ranges it is the picture
    np.testing.assert_allclose(w.detail.samples[0], resize(picture, 112), atol=0.01)
