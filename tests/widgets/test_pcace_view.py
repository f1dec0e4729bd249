"""PCACEView: runs in the background, bars select channels and layers, settings wait for Run, cancel, errors, export."""

from __future__ import annotations

import base64
import io
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import neuronviz as nv
from neuronviz.widgets import PCACEView
from neuronviz.widgets.pcace_view import BOTTOM_COLOUR, SELECTED_COLOUR, TOP_COLOUR, _thumb

from explorer_nets import gated_cnn

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


def test_the_default_target_is_the_class_most_probable_over_the_images(net, images):
    v = PCACEView(net, images, LAYERS, autorun=False)
    net.eval()
    with torch.no_grad():
        mean = torch.softmax(net(images).double(), dim=1).mean(0)
    net.train()
    assert v.target == int(mean.argmax())
    labels = [label for label, _c in v.target_picker.options]
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
    before = [im.value for im in v._strip_images]
    bars.bars_mark.selected = [3]  # what a click on the fourth bar sends
    assert v.selected == ("conv1", order[3])
    assert v.selected_label.value == f"conv1 · channel {order[3]}"
    assert bars.bars_mark.colors[3] == SELECTED_COLOUR
    assert [im.value for im in v._strip_images] != before
    # each strip image is the channel's own map over that image
    maps = clean_maps(net, images[: v.n_shown], "conv1")
    torch.testing.assert_close(v._result.maps["conv1"], maps)
    for j, im in enumerate(v._strip_images):
        assert im.value == _thumb(v._strip_pictures[j], maps[j, order[3]], float(v.opacity.value))
    assert "#4 of 6" in v.selected_info.value


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
    scores = v.scores
    assert v._grid_columns == scores.top(2) + scores.bottom(2)
    buttons = v.grid.children[1].children
    assert [b.description.split(" · ")[0] for b in buttons] == [f"ch {c}" for c in v._grid_columns]
    assert len(v.grid.children) == 2 + v.n_shown  # legend, buttons, one row per image
    buttons[-1].click()
    assert v.selected == (v.layer, scores.bottom(2)[-1])


def test_top_k_applies_at_once_without_a_run(net, images):
    v = finished(net, images, top_k=3)
    job = v._worker.latest
    v.top_k = 1
    assert v._worker.latest is job and v.ranking.k == 1
    assert v.ranking.summary == nv.LayerRanking(v.ranking.layers, 1).summary
    colours = v.channel_bars.bars_mark.colors
    assert colours.count(TOP_COLOUR) + (colours[0] == SELECTED_COLOUR) == 1
    assert colours.count(BOTTOM_COLOUR) == 1
    assert len(v._grid_columns) == 2
    assert "top-1" in v.layer_bars.table.value


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


# ------------------------------------------------------------------------------ settings, cancel, stale runs, errors


def test_settings_wait_for_run_and_reach_it(net, images, snapshot):
    v = finished(net, images)
    before = v.ranking
    snap = snapshot(net)
    other = (v.target + 1) % 5
    v.components.value = 2
    v.target = other
    v.layers = ["conv2"]
    assert v.ranking is before and v.status == "done"  # nothing ran yet
    assert "press Run" in v.run_bar.status.value
    assert v.settings == {"layers": ["conv2"], "target": other, "n_components": 2, "device": "cpu", "top_k": 3}
    v.run_bar.run_button.click()
    v.wait(60)
    assert v.status == "done"
    direct = nv.pcace(net, images, "conv2", target=other, n_components=2)
    torch.testing.assert_close(v.ranking["conv2"].scores, direct.scores)
    assert list(v.ranking.layers) == ["conv2"] and v.selected[0] == "conv2"
    assert v.scores.target == other
    snap.assert_unchanged()


def test_a_target_outside_the_offered_ones_is_added_to_the_picker(net, images):
    v = PCACEView(net, images, LAYERS, autorun=False)
    offered = [c for _label, c in v.target_picker.options]
    assert len(offered) == 5  # every class of the 5-class net
    with pytest.raises(nv.NeuronvizError, match="0..4"):
        v.target = 5


def test_cancel_keeps_the_previous_ranking_and_the_model(net, images, snapshot):
    v = finished(net, images)
    before, selected = v.ranking, v.selected
    snap = snapshot(net)
    net.gate.close()
    v.run()
    assert net.gate.entered.wait(20)  # the run is inside a forward pass now
    v.run_bar.cancel_button.click()
    net.gate.open()
    v.wait(60)
    assert v.status == "cancelled" and "cancelled" in v.run_bar.status.value
    assert v.ranking is before and v.selected == selected
    snap.assert_unchanged()


def test_a_newer_run_supersedes_the_running_one(net, images):
    applied = []

    class Recording(PCACEView):
        def _apply(self, result):
            applied.append(result.settings.target)
            super()._apply(result)

    v = Recording(net, images, LAYERS, autorun=False)
    net.gate.close()
    v.target = 1
    first = v.run()
    assert net.gate.entered.wait(20)
    v.target = 2
    second = v.run()
    net.gate.open()
    v.wait(60)
    assert applied == [2]
    assert first.state == "cancelled" and second.state == "done"
    assert v.scores.target == 2


def test_an_error_in_the_run_is_shown_and_the_model_kept(net, snapshot):
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


def test_default_layers_are_the_last_convolutions(net, images):
    v = PCACEView(net, images, autorun=False)
    assert v.layers == ["conv1", "conv2"]


# ------------------------------------------------------------------------------ export and display


@pytest.mark.parametrize("part", ["layer", "ranking"])
def test_export_writes_png_svg_and_pdf(net, images, tmp_path, part, snapshot):
    v = finished(net, images)
    snap = snapshot(net)
    png = v.export(tmp_path / "v.png", dpi=60, part=part).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    svg = v.export(tmp_path / "v.svg", part=part)
    assert svg.read_bytes().lstrip().startswith(b"<?xml") and b"<svg" in svg.read_bytes()[:2000]
    assert ET.parse(svg).getroot().tag.endswith("svg")
    pdf = v.export(tmp_path / "v.pdf", part=part).read_bytes()
    assert pdf.startswith(b"%PDF") and b"%%EOF" in pdf[-1024:]
    snap.assert_unchanged()  # the layer figure runs the model once


def test_export_refuses_other_suffixes_parts_and_early_calls(net, images, tmp_path):
    v = finished(net, images)
    with pytest.raises(nv.NeuronvizError, match=r"\.png"):
        v.export(tmp_path / "v.jpg")
    with pytest.raises(nv.NeuronvizError, match="part"):
        v.export(tmp_path / "v.png", part="maps")
    with pytest.raises(nv.NeuronvizError, match="dpi"):
        v.export(tmp_path / "v.png", dpi=0)
    fresh = PCACEView(net, images, LAYERS, autorun=False)
    with pytest.raises(nv.NeuronvizError, match="run"):
        fresh.export(tmp_path / "v.png")


def test_the_export_button_writes_the_chosen_part_or_shows_the_error(net, images, tmp_path):
    v = finished(net, images)
    v.export_part.value = "ranking"
    v.exporter.path.value = str(tmp_path / "ranking.pdf")
    v.exporter.button.click()
    assert (tmp_path / "ranking.pdf").read_bytes().startswith(b"%PDF")
    assert "ranking.pdf" in v.exporter.message.value
    v.exporter.path.value = "figure.jpg"
    v.exporter.button.click()
    assert ".png" in v.error and "figure.jpg" in v.run_bar.error.value


def test_the_display_data_holds_the_widget_and_a_png(net, images):
    v = PCACEView(net, images, LAYERS, autorun=False)
    bundle = v._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == v.model_id
    assert base64.b64decode(bundle["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    v.run()
    v.wait(60)
    after = Image.open(io.BytesIO(base64.b64decode(v._repr_mimebundle_()["image/png"])))
    assert after.width > 300 and after.height > 300  # the ranking and the layer's figure


def test_dom_classes_for_browser_tests(net, images):
    v = finished(net, images)
    classes = {
        "nv-pcace": v, "nv-run": v.run_bar.run_button, "nv-cancel": v.run_bar.cancel_button,
        "nv-progress": v.run_bar.progress, "nv-status": v.run_bar.status, "nv-error": v.run_bar.error,
        "nv-pcace-bars": v.channel_bars.figure, "nv-layer-ranking": v.layer_bars.figure,
        "nv-ranking-table": v.layer_bars.table, "nv-channel-maps": v.strip, "nv-top-bottom": v.grid,
        "nv-layers": v.layers_picker, "nv-target": v.target_picker, "nv-components": v.components,
        "nv-topk": v.top_k_slider, "nv-selected": v.selected_label, "nv-export": v.exporter.button,
    }
    for css, widget in classes.items():
        assert css in widget._dom_classes, css
    assert not v.components.continuous_update and not v.top_k_slider.continuous_update
    assert _decoded(v._strip_images[0].value).shape == (150, 150, 3)
