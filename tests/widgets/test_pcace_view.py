"""PCACEView: the ranking, bars that select channels and layers, top-k at once, settings wait for Run, export parts.

What every view does (runs, cancels, stale runs dropped, errors and warnings shown, export
formats, static PNG, closing) is checked once for all views in test_view_contract.py.
"""

from __future__ import annotations

import base64
import io
import math
import threading

import numpy as np
import pytest
import torch
from explorer_nets import gated_cnn
from PIL import Image
from torch import nn

import neuronviz as nv
from neuronviz.core.locks import hold_model
from neuronviz.widgets import PCACEView
from neuronviz.widgets.panels.bars import BOTTOM_COLOUR, SELECTED_COLOUR, TOP_COLOUR
from neuronviz.widgets.pictures import thumb

LAYERS = ["conv1", "conv2"]
N_IMAGES = 40  # ACE's smoothers warn below 40


def image_set(n: int = N_IMAGES, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g)


@pytest.fixture
def net():
    return gated_cnn()


@pytest.fixture
def images():
    return image_set()


def finished(net, images, **kwargs) -> PCACEView:
    v = PCACEView(net, images, LAYERS, **kwargs)
    v.wait(60)
    assert v.status == "done", v.error
    return v


def clean_maps(net, images, layer) -> torch.Tensor:
    """The layer's activations with a plain forward hook in eval mode (independent of neuronviz)."""
    store = {}
    handle = dict(net.named_modules())[layer].register_forward_hook(lambda m, i, o: store.setdefault("a", o.detach()))
    was = net.training
    net.eval()
    with torch.no_grad():
        net(images)
    net.train(was)
    handle.remove()
    return store["a"]


def count_passes(net) -> tuple[list, object]:
    """A list that grows by one per forward pass of ``net``, and the hook's handle."""
    passes = []
    return passes, net.register_forward_pre_hook(lambda m, a: passes.append(a[0].shape[0]))


def _decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


# ------------------------------------------------------------------------------ a run


def test_the_first_run_starts_by_itself_and_matches_rank_layers(net, images, snapshot):
    snap = snapshot(net)
    v = PCACEView(net, images, LAYERS)
    assert v.status == "running"  # returned at once, computing in the background
    v.wait(60)
    assert v.status == "done" and v.error is None
    assert "done · 40 images" in v.run_bar.status.value
    direct = nv.rank_layers(net, images, LAYERS, target=v.target, k=v.top_k)
    for layer in LAYERS:
        torch.testing.assert_close(v.ranking[layer].scores, direct[layer].scores)
    assert v.ranking.summary == direct.summary
    # the shown layer is the best one, its best channel selected
    assert v.layer == direct.best() and v.selected == (direct.best(), direct[direct.best()].top(1)[0])
    snap.assert_unchanged()


def test_a_run_is_the_ranking_passes_and_one_pass_for_the_maps_of_every_layer(net, images):
    v = PCACEView(net, images, LAYERS, batch_size=16, autorun=False)
    passes, handle = count_passes(net)
    try:
        v.run()
        v.wait(60)
    finally:
        handle.remove()
    assert v.status == "done", v.error
    assert passes == [16, 16, 8, v.n_shown]  # ceil(40 / 16) batches, then the shown images once
    for layer in LAYERS:  # the maps kept are each layer's own, on the shown images
        torch.testing.assert_close(v.outcome.result.maps[layer], clean_maps(net, images[: v.n_shown], layer))


def test_the_default_target_is_the_class_most_probable_over_the_images(net, images):
    v = PCACEView(net, images, LAYERS, autorun=False)
    net.eval()
    with torch.no_grad():
        mean = torch.softmax(net(images).double(), dim=1).mean(0)
    net.train()
    assert v.target == int(mean.argmax())
    assert v.classes.probabilities[v.target] == pytest.approx(float(mean.max()))
    labels = [label for label, _c in v.controls["target"].options]
    assert labels[0].startswith(f"class {v.target}  p=")
    assert v.status == "idle" and v.ranking is None


def test_progress_is_shown_after_each_batch(net, images):
    seen = []
    v = PCACEView(net, images, LAYERS, batch_size=16, autorun=False)
    v.run_bar.progress.observe(lambda c: seen.append(c["new"]), names="value")
    v.run()
    v.wait(60)
    assert seen[-1] == 1.0
    assert any(0 < p < 1 for p in seen), seen  # 16/40 and 32/40 were shown on the way


# ------------------------------------------------------------------------------ selection


def test_clicking_a_channel_bar_selects_it_and_redraws_its_maps(net, images):
    v = finished(net, images)
    v.layer = "conv1"
    bars = v.channel_bars
    order = v.ranking["conv1"].ranking.tolist()
    assert list(bars.bars_mark.x) == order  # one bar per channel, best first
    np.testing.assert_allclose(bars.bars_mark.y, v.ranking["conv1"].scores[order].numpy())
    strip = v.channel_strip
    before = [im.value for im in strip.images]
    bars.bars_mark.selected = [3]  # what a click on the fourth bar sends
    assert v.selected == ("conv1", order[3])
    assert strip.label.value == f"conv1 · channel {order[3]}"
    assert bars.bars_mark.colors[3] == SELECTED_COLOUR
    assert [im.value for im in strip.images] != before
    # each strip image is the channel's own map over that image
    maps = clean_maps(net, images[: v.n_shown], "conv1")
    for j, im in enumerate(strip.images):
        assert im.value == thumb(strip.pictures[j], maps[j, order[3]], float(v.opacity.value))
    assert "#4 of 6" in strip.info.value


def test_clicking_a_layer_bar_shows_that_layer(net, images):
    v = finished(net, images)
    other = [layer for layer in LAYERS if layer != v.layer][0]
    v.layer_bars.bars_mark.selected = [LAYERS.index(other)]  # what a click sends
    assert v.layer == other and v.layer_picker.value == other
    assert v.selected == (other, v.ranking[other].top(1)[0])
    assert list(v.channel_bars.bars_mark.x) == v.ranking[other].ranking.tolist()
    assert other in v.channel_bars.figure.title
    # and the layer picker does the same
    v.layer_picker.value = [layer for layer in LAYERS if layer != other][0]
    assert v.layer != other


def test_the_top_and_bottom_grid_holds_the_ranked_channels_and_its_buttons_select(net, images):
    v = finished(net, images, top_k=2)
    scores, grid = v.scores, v.top_bottom
    assert grid.columns == scores.top(2) + scores.bottom(2)
    buttons = grid.grid.children[1].children
    assert [b.description.split(" · ")[0] for b in buttons] == [f"ch {c}" for c in grid.columns]
    assert len(grid.grid.children) == 2 + v.n_shown  # legend, buttons, one row per image
    buttons[-1].click()
    assert v.selected == (v.layer, scores.bottom(2)[-1])


def test_the_grid_updates_its_widgets_in_place_and_rebuilds_only_for_another_width(net, images):
    v = finished(net, images, top_k=2)
    grid = v.top_bottom
    buttons, cells = list(grid.grid.children[1].children), [list(r.children) for r in grid.grid.children[2:]]
    first = cells[0][0].value
    v.opacity.value = 0.0
    other = [layer for layer in LAYERS if layer != v.layer][0]
    v.layer = other
    assert list(grid.grid.children[1].children) == buttons  # the same widgets, new values
    assert [list(r.children) for r in grid.grid.children[2:]] == cells
    assert cells[0][0].value != first
    assert grid.columns == v.ranking[other].top(2) + v.ranking[other].bottom(2)
    assert [b.description.split(" · ")[0] for b in buttons] == [f"ch {c}" for c in grid.columns]
    assert other in buttons[0].tooltip and other in grid.grid.children[0].value
    buttons[-1].click()  # selects the channel the column shows now
    assert v.selected == (other, v.ranking[other].bottom(2)[-1])
    v.top_k = 1
    assert len(grid.grid.children[1].children) == 2 and buttons[0].comm is None  # rebuilt; the old ones closed


def test_top_k_applies_at_once_without_a_run(net, images):
    v = finished(net, images, top_k=3)
    outcome = v.outcome
    v.top_k = 1
    assert v.outcome is outcome and v.status == "done" and v.ranking.k == 1
    assert v.ranking.summary == nv.LayerRanking(v.ranking.layers, 1).summary
    colours = v.channel_bars.bars_mark.colors
    assert colours.count(TOP_COLOUR) + (colours[0] == SELECTED_COLOUR) == 1
    assert colours.count(BOTTOM_COLOUR) == 1
    assert len(v.top_bottom.columns) == 2
    assert "top-1" in v.layer_bars.table.value
    assert "settings changed" not in v.run_bar.status.value


def test_the_opacity_redraws_the_strip_and_the_grid(net, images):
    v = finished(net, images)
    strip, cell = v.channel_strip.images[0].value, v.top_bottom.grid.children[2].children[0].value
    v.opacity.value = 0.0
    assert v.channel_strip.images[0].value != strip
    assert v.top_bottom.grid.children[2].children[0].value != cell
    plain = _decoded(v.channel_strip.images[0].value) / 255.0
    np.testing.assert_allclose(plain, v.channel_strip.pictures[0], atol=1 / 255)


@pytest.mark.parametrize("bad", [("conv9", 0), ("conv2", 4), ("conv2", -1), ("conv2",), "conv2", ("conv2", 1.5)])
def test_an_invalid_selection_raises_a_clear_error(net, images, bad):
    v = finished(net, images)
    keep = v.selected
    with pytest.raises(nv.NeuronvizError):
        v.selected = bad
    assert v.selected == keep


def test_selecting_before_a_run_is_refused(net, images):
    v = PCACEView(net, images, LAYERS, autorun=False)
    with pytest.raises(nv.NeuronvizError, match="first run"):
        v.selected = ("conv1", 0)
    with pytest.raises(nv.NeuronvizError, match="first run"):
        v.layer = "conv1"
    with pytest.raises(nv.NeuronvizError, match="first run"):
        v.channel = 0


# ------------------------------------------------------------------------------ settings and errors


def test_settings_wait_for_run_and_reach_it(net, images, snapshot):
    v = finished(net, images)
    before = v.ranking
    snap = snapshot(net)
    other = (v.target + 1) % 5
    v.controls["n_components"].value = 2
    v.target = other
    v.layers = ["conv2"]
    assert v.ranking is before and v.status == "done"  # nothing ran yet
    assert "press Run" in v.run_bar.status.value
    assert v.settings == {"layers": ["conv2"], "target": other, "n_components": 2, "device": "cpu", "top_k": 3}
    assert v.controls["layers"].value == ("conv2",) and v.controls["target"].value == other
    v.run_bar.run_button.click()
    v.wait(60)
    assert v.status == "done"
    direct = nv.pcace(net, images, "conv2", target=other, n_components=2)
    torch.testing.assert_close(v.ranking["conv2"].scores, direct.scores)
    assert list(v.ranking.layers) == ["conv2"] and v.selected[0] == "conv2"
    assert v.scores.target == other
    snap.assert_unchanged()


def test_a_selection_the_next_run_still_ranks_is_kept(net, images):
    v = finished(net, images)
    v.selected = ("conv1", 5)
    v.n_components = 2
    v.run()
    v.wait(60)
    assert v.selected == ("conv1", 5) and v.scores.n_components == 2
    assert "2 components" in v.channel_bars.figure.title


def test_a_target_outside_the_offered_ones_is_refused_with_the_range(net, images):
    v = PCACEView(net, images, LAYERS, autorun=False)
    offered = [c for _label, c in v.controls["target"].options]
    assert len(offered) == 5  # every class of the 5-class net
    with pytest.raises(nv.NeuronvizError, match="0..4"):
        v.target = 5


def test_images_pcace_cannot_correlate_give_an_error_in_the_widget(net, snapshot):
    same = image_set(1).expand(N_IMAGES, -1, -1, -1).clone()  # every image alike: PCACE cannot correlate
    snap = snapshot(net)
    v = PCACEView(net, same, LAYERS)
    v.wait(60)
    assert v.status == "error" and v.ranking is None
    assert "same on every image" in v.error and "same on every image" in v.run_bar.error.value
    snap.assert_unchanged()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"images": image_set(19)}, "at least 20 images"),
        ({"images": torch.randn(30, 3, 16)}, r"\(N, C, H, W\)"),
        ({"images": torch.randn(30, 1, 16, 16)}, "channel"),
        ({"layers": ["conv3"]}, "conv"),
        ({"n_components": 0}, "n_components"),
        ({"n_components": 9}, "n_components"),
        ({"top_k": 0}, "top_k"),
        ({"n_shown": 0}, "n_shown"),
        ({"batch_size": 0}, "batch_size"),
        ({"target": 5}, "target"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_arguments_fail_early_with_a_clear_error(net, kwargs, message, snapshot):
    snap = snapshot(net)
    images = kwargs.pop("images", image_set())
    layers = kwargs.pop("layers", LAYERS)
    with pytest.raises(nv.NeuronvizError, match=message):
        PCACEView(net, images, layers, autorun=False, **kwargs)
    snap.assert_unchanged()


def test_a_model_that_is_not_a_classifier_is_refused_early(images):
    with pytest.raises(nv.NeuronvizError, match="classes"):
        PCACEView(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), images, autorun=False)


def test_default_layers_are_the_post_activation_maps_of_each_resolution(net, images):
    v = PCACEView(net, images, autorun=False)
    assert v.layers == ["relu1", "relu2"]  # after conv1 (16 x 16) and after conv2 + bn2 (8 x 8)


# ------------------------------------------------------------------------------ export and display


@pytest.mark.parametrize("part", ["layer", "ranking"])
def test_export_draws_either_part_from_the_run_without_the_model(net, images, tmp_path, part):
    v = finished(net, images)
    passes, handle = count_passes(net)
    held, release = threading.Event(), threading.Event()

    def another_caller():  # holds the model the whole time: an export that needed it would wait
        with hold_model(net):
            held.set()
            release.wait(30)

    t = threading.Thread(target=another_caller)
    t.start()
    try:
        assert held.wait(10)
        for suffix in (".png", ".svg", ".pdf"):
            path = v.export(tmp_path / f"v{suffix}", dpi=60, part=part)
            assert path.stat().st_size > 1000
    finally:
        release.set()
        t.join()
        handle.remove()
    assert passes == []


def test_the_layer_figure_shows_the_shown_layers_top_and_bottom_channels(net, images):
    v = finished(net, images, top_k=2)
    fig = v.figure(dpi=50, part="layer")
    titles = [ax.get_title() for ax in fig.axes]
    for channel in v.scores.top(2) + v.scores.bottom(2):
        score = float(v.scores.scores[channel])
        assert f"ch {channel}\n{score:.3f}" in titles
    assert v.layer in fig._suptitle.get_text()
    ranking = v.figure(part="ranking", dpi=50)
    assert [t.get_text() for t in ranking.axes[0].get_xticklabels()] == list(v.ranking.layers)


def test_export_refuses_other_parts(net, images, tmp_path):
    v = finished(net, images)
    with pytest.raises(nv.NeuronvizError, match="part"):
        v.export(tmp_path / "v.png", part="maps")
    with pytest.raises(nv.NeuronvizError, match="part"):
        v.figure(part="maps")


def test_the_export_button_writes_the_chosen_part(net, images, tmp_path):
    v = finished(net, images)
    assert v.export_part in v.exporter.widget.children
    v.export_part.value = "ranking"
    v.exporter.path.value = str(tmp_path / "ranking.pdf")
    v.exporter.button.click()
    assert (tmp_path / "ranking.pdf").read_bytes().startswith(b"%PDF")
    assert "ranking.pdf" in v.exporter.message.value and v.error is None


def test_the_display_data_holds_the_first_image_then_both_figures(net, images):
    v = PCACEView(net, images, LAYERS, autorun=False)
    bundle = v._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == v.model_id
    early = Image.open(io.BytesIO(base64.b64decode(bundle["image/png"])))
    assert early.size == (150, 150)
    v.run()
    v.wait(60)
    after = Image.open(io.BytesIO(base64.b64decode(v._repr_mimebundle_()["image/png"])))
    assert after.width > 300 and after.height > 300  # the ranking above the layer's figure
    alone = [v.figure(dpi=60, part=part) for part in ("ranking", "layer")]
    expected = sum(math.ceil(f.get_size_inches()[1] * 60) for f in alone)
    assert abs(after.height - expected) <= 2


def test_dom_classes_for_browser_tests(net, images):
    v = finished(net, images)
    classes = {
        "nv-pcace": v, "nv-run": v.run_bar.run_button, "nv-cancel": v.run_bar.cancel_button,
        "nv-progress": v.run_bar.progress, "nv-status": v.run_bar.status, "nv-error": v.run_bar.error,
        "nv-pcace-bars": v.channel_bars.figure, "nv-layer-ranking": v.layer_bars.figure,
        "nv-ranking-table": v.layer_bars.table, "nv-channel-maps": v.channel_strip.strip,
        "nv-top-bottom": v.top_bottom.grid, "nv-layers": v.controls["layers"], "nv-target": v.controls["target"],
        "nv-components": v.controls["n_components"], "nv-topk": v.controls["top_k"],
        "nv-device": v.controls["device"], "nv-show-layer": v.layer_picker, "nv-opacity": v.opacity,
        "nv-selected": v.channel_strip.label, "nv-export": v.exporter.button,
    }
    for css, widget in classes.items():
        assert css in widget._dom_classes, css
    assert not v.controls["n_components"].continuous_update and not v.controls["top_k"].continuous_update
    assert _decoded(v.channel_strip.images[0].value).shape == (150, 150, 3)
    assert len(v.top_bottom.grid.children[1].children) == 6  # top 3 + bottom 3 buttons
