"""The views' self-contained HTML pages: one file, one circle per scored channel, embedded PNGs, nothing external.

The page in a real browser (clicks, the overlay that follows, offline) is tested in
tests/browser/test_html_export.py.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_nets import tiny_cnn

import neuronviz as nv
from neuronviz.render.explorer import blend_overlay
from neuronviz.render.html import heat_png, write_page
from neuronviz.widgets import InversionView, NeuronExplorer, PCACEView

LAYERS = ["conv1", "conv2"]
_DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def _image(seed: int = 1, size: int = 16) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the text of the JSON data block."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.data_text = ""
        self._in_data = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        self._in_data = tag == "script" and attrs.get("id") == "nv-data"

    def handle_endtag(self, tag):
        self._in_data = False

    def handle_data(self, data):
        if self._in_data:
            self.data_text += data


def parse(page: str) -> tuple[list[tuple[str, dict[str, str]]], dict]:
    p = _Elements()
    p.feed(page)
    return p.tags, json.loads(p.data_text)


def decode_png(uri: str) -> Image.Image:
    raw = base64.b64decode(_DATA_URI.fullmatch(uri).group(1))
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    im = Image.open(io.BytesIO(raw))
    im.load()
    assert im.format == "PNG"
    return im


@pytest.fixture(scope="module")
def explorer():
    w = NeuronExplorer(tiny_cnn(), _image(), LAYERS, n_samples=8, top_k=2)
    w.wait(60)
    assert w.status == "done", w.error
    w.selected = ("conv1", 5)
    yield w
    w.close()


@pytest.fixture(scope="module")
def explorer_page(explorer, tmp_path_factory):
    path = explorer.export(tmp_path_factory.mktemp("pages") / "view.html")
    return path.read_text(encoding="utf-8")


def test_export_html_writes_one_complete_page(explorer, tmp_path):
    path = explorer.export(tmp_path / "view.HTML")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["view.HTML"]  # one file, nothing beside it
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    tags, data = parse(text)
    assert [t for t, _ in tags].count("script") == 2  # the data and the inline script, no src
    assert data["selected"] == "conv1|5"


def test_one_circle_per_scored_channel(explorer, explorer_page):
    scores = explorer.scores
    tags, _data = parse(explorer_page)
    points = [a for t, a in tags if t == "circle" and "nv-pt" in a.get("class", "").split()]
    expected = {f"{layer}|{c}" for layer in LAYERS
                for c, (r, p) in enumerate(zip(scores.correlation[layer].tolist(), scores.precision[layer].tolist()))
                if not (math.isnan(r) or math.isnan(p))}
    assert len(points) == len(expected) > 0
    assert {a["data-key"] for a in points} == expected


def test_hover_text_names_the_neuron_and_its_scores(explorer, explorer_page):
    scores = explorer.scores
    c = scores.top("correlation", 1)["conv2"][0]
    title = re.search(r"data-key='conv2\|%d' data-label='[^']*'><title>([^<]*)</title>" % c, explorer_page).group(1)
    assert title.startswith(f"conv2 · channel {c}")
    assert f"correlation {float(scores.correlation['conv2'][c]):.3f} (#1 of" in title
    assert "precision" in title and "mean activation" in title


def test_embedded_overlays_are_the_top_k_and_the_selected_neuron_as_pngs(explorer, explorer_page):
    scores, k = explorer.scores, explorer.top_k
    _tags, data = parse(explorer_page)
    chosen = {(layer, c) for layer in LAYERS
              for c in [*scores.top("correlation", k)[layer], *scores.top("precision", k)[layer]]}
    assert set(data["entries"]) == {f"{la}|{c}" for la, c in chosen | {("conv1", 5)}}
    h, w = explorer.image.shape[:2]
    for entry in data["entries"].values():
        (uri,) = entry["h"]
        assert decode_png(uri).size == (w, h)
        top, left, bottom, right = entry["b"]
        assert 0 <= top < bottom <= 100 and 0 <= left < right <= 100
    for uri in _DATA_URI.findall(explorer_page):
        decode_png("data:image/png;base64," + uri)


def test_the_selection_lists_and_the_overlap(explorer, explorer_page):
    scores, k = explorer.scores, explorer.top_k
    top_c, top_p = scores.top("correlation", k), scores.top("precision", k)
    ov = nv.overlap(top_c, top_p)
    assert f"<b>{'n/a' if math.isnan(ov) else f'{ov:.3f}'}</b>" in explorer_page
    tags, _data = parse(explorer_page)
    items = [a["data-key"] for t, a in tags if t == "button" and "nv-item" in a.get("class", "")]
    assert items == [f"{la}|{c}" for la in LAYERS for c in [*top_c[la], *top_p[la]]]


def test_the_settings_of_the_run_are_on_the_page(explorer, explorer_page):
    rows = dict(re.findall(r"<tr><th scope='row'>([^<]*)</th><td>([^<]*)</td></tr>", explorer_page))
    assert rows["model"] == "Sequential"
    assert rows["perturbation"] == "multiplicative" and rows["samples"] == "8" and rows["seed"] == "0"
    assert rows["layers"] == "conv1, conv2" and rows["top-k"] == "2"
    assert rows["target"] == explorer.classes.name(explorer.scores.target)
    assert rows["strength"] == str(explorer.strength)


def test_nothing_on_the_page_points_outside_it(explorer_page):
    tags, _data = parse(explorer_page)
    links = [v for _t, a in tags for name, v in a.items() if name in ("src", "href", "action", "xlink:href")]
    assert links and all(v.startswith("data:") for v in links)
    assert not re.search(r"https?:|[\"'(=]\s*//", explorer_page)  # no URL, none protocol-relative
    for word in ("fetch(", "XMLHttpRequest", "import(", "<link", "@import", "url("):
        assert word not in explorer_page


def test_heat_layer_at_opacity_o_composes_the_widgets_blend():
    rng = np.random.default_rng(0)
    picture = rng.random((12, 10, 3)).astype(np.float32)
    heat = rng.random((12, 10)).astype(np.float32)
    rgba = np.asarray(Image.open(io.BytesIO(heat_png(heat))).convert("RGBA"), dtype=np.float64) / 255
    for o in (0.0, 0.35, 1.0):
        alpha = o * rgba[..., 3:]  # the browser: CSS opacity times the PNG's alpha, source-over
        composed = picture * (1 - alpha) + rgba[..., :3] * alpha
        np.testing.assert_allclose(composed, blend_overlay(picture, heat, o), atol=3 / 255)


def test_write_page_refuses_other_suffixes(tmp_path):
    with pytest.raises(nv.NeuronvizError, match="html"):
        write_page("<!DOCTYPE html>", tmp_path / "page.txt")


def test_export_before_a_run_says_so(tmp_path):
    w = NeuronExplorer(tiny_cnn(), _image(), LAYERS, autorun=False)
    try:
        with pytest.raises(nv.NeuronvizError, match="run"):
            w.export(tmp_path / "view.html")
        assert not (tmp_path / "view.html").exists()
    finally:
        w.close()


def test_pcace_page_has_a_bar_per_channel_and_the_maps_of_top_bottom_and_selected(tmp_path):
    images = torch.randn(40, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    v = PCACEView(tiny_cnn(), images, LAYERS, top_k=2, n_shown=2)
    try:
        v.wait(60)
        assert v.status == "done", v.error
        v.selected = ("conv1", v.ranking["conv1"].bottom(3)[0])  # not among the top or bottom 2
        text = v.export(tmp_path / "pcace.html").read_text(encoding="utf-8")
        ranking = v.ranking
    finally:
        v.close()
    tags, data = parse(text)
    bars = [a["data-key"] for t, a in tags if t == "rect" and "nv-bar" in a.get("class", "")]
    assert sorted(bars) == sorted(f"{la}|{c}" for la in LAYERS for c in range(ranking[la].scores.numel()))
    layer_bars = [a for t, a in tags if t == "rect" and "nv-layerbar" in a.get("class", "")]
    assert [a["data-select"] for a in layer_bars] == [f"{la}|{ranking[la].top(1)[0]}" for la in LAYERS]
    expected = {f"{la}|{c}" for la in LAYERS for c in [*ranking[la].top(2), *ranking[la].bottom(2)]}
    assert set(data["entries"]) == expected | {data["selected"]}
    for entry in data["entries"].values():
        assert len(entry["h"]) == 2 and all(decode_png(u).size == (16, 16) for u in entry["h"])
    assert not re.search(r"https?:", text)


def test_inversion_page_has_both_masks_and_both_loss_curves(tmp_path):
    v = InversionView(tiny_cnn(), _image(), stage1_steps=3, stage2_steps=4)
    try:
        v.wait(60)
        assert v.status == "done", v.error
        text = v.export(tmp_path / "inversion.html").read_text(encoding="utf-8")
        result = v.result
    finally:
        v.close()
    tags, _data = parse(text)
    for stage, mask in ((1, result.inversion_mask[0]), (2, result.mask[0])):
        (img,) = [a for t, a in tags if t == "img" and f"nv-mask-stage{stage}" in a.get("class", "")]
        rgba = np.asarray(decode_png(img["src"]).convert("RGBA"))
        assert rgba.shape[:2] == tuple(mask.shape)
        expected_alpha = 255 * (0.2 + 0.8 * np.clip(mask.numpy(), 0, 1))  # the mask as drawn, not rescaled
        np.testing.assert_allclose(rgba[..., 3], expected_alpha, atol=2)
    lines = [a for t, a in tags if t == "polyline"]
    assert [len(a["points"].split()) for a in lines] == [3, 4]
    assert not re.search(r"https?:", text)


@pytest.mark.slow
def test_the_demo_explorer_page_is_under_3_mb(tmp_path, record_property, capsys):
    w = nv.demo(examples=None, live=False)
    try:
        w.wait(600)
        assert w.status == "done", w.error
        path = w.export(tmp_path / "demo.html")
        n_channels = sum(w.scores.correlation[la].numel() for la in w.scores.layers)
    finally:
        w.close()
    size = path.stat().st_size
    record_property("demo_page_bytes", size)
    with capsys.disabled():
        print(f"\ndemo explorer page: {size / 1024:.0f} KB for {n_channels} channels")
    assert size < 3 * 1024 * 1024
    tags, data = parse(path.read_text(encoding="utf-8"))
    assert len(data["entries"]) <= 2 * 5 * len(w.scores.layers) + 1


def test_with_bootstrap_replicates_the_page_draws_the_intervals_and_rank_intervals():
    from neuronviz.render.explorer import INTERVAL_LEVEL, ExplorerView
    from neuronviz.render.html import explorer_page as make_page

    net, x = tiny_cnn(), _image()
    scores = nv.score_neurons(net, x, LAYERS, n_samples=24, bootstrap=32, keep_channel_means=True)
    k = 2
    view = ExplorerView(scores=scores, maps={}, image=np.zeros((16, 16, 3)), selected=None, k=k)
    page = make_page(view)
    tags, _ = parse(page)
    points = {a["data-key"]: a for t, a in tags if t == "circle" and "nv-pt" in a.get("class", "")}
    whiskers = [a for t, a in tags if t == "line" and a.get("class") == "nv-whisker"]
    top_c, top_p = scores.top("correlation", k), scores.top("precision", k)
    chosen = {f"{la}|{c}" for la in LAYERS for c in [*top_c[la], *top_p[la]]}
    assert whiskers and {w["data-of"] for w in whiskers} <= chosen
    # the points' x is an affine map of the correlation; the horizontal whiskers use the same map
    keys = list(points)
    corr = np.array([float(scores.correlation[k_.split("|")[0]][int(k_.split("|")[1])]) for k_ in keys])
    cx = np.array([float(points[k_]["cx"]) for k_ in keys])
    slope, offset = np.polyfit(corr, cx, 1)
    assert np.allclose(cx, slope * corr + offset, atol=0.06)
    interval = scores.interval("correlation", INTERVAL_LEVEL)
    axis = next(a for t, a in tags if t == "line" and a.get("class") == "nv-axis")  # the x axis: the plot's width
    x_min, x_max = float(axis["x1"]), float(axis["x2"])
    horizontal = [w for w in whiskers if w["y1"] == w["y2"]]
    assert horizontal
    for w in horizontal:
        layer, c = w["data-of"].split("|")
        lo, hi = interval[layer]
        assert float(w["x1"]) == pytest.approx(max(slope * float(lo[int(c)]) + offset, x_min), abs=0.15)
        assert float(w["x2"]) == pytest.approx(min(slope * float(hi[int(c)]) + offset, x_max), abs=0.15)
        assert float(w["y1"]) == pytest.approx(float(points[w["data-of"]]["cy"]), abs=0.06)
    # each list entry carries its rank interval, and ≈ where tied with the (k+1)-th
    for metric, chosen_m in (("correlation", top_c), ("precision", top_p)):
        ranks, ties = scores.rank_interval(metric, INTERVAL_LEVEL), scores.tied(metric, k, INTERVAL_LEVEL)
        for layer in LAYERS:
            r_lo, r_hi = ranks[layer]
            for c, tied in zip(chosen_m[layer], ties[layer]):
                text = f"{'≈ ' if tied else ''}#{r_lo[c]:.0f}–{r_hi[c]:.0f}</span>"
                assert text in page, (metric, layer, c, text)
    assert "whiskers: 90% bootstrap intervals of the top 2 (32 replicates)" in page
    # without replicates: none of it
    plain = nv.score_neurons(net, x, LAYERS, n_samples=24, keep_channel_means=True)
    assert plain.replicates is None
    page = make_page(ExplorerView(scores=plain, maps={}, image=np.zeros((16, 16, 3)), selected=None, k=k))
    assert "nv-whisker" not in page and "nv-rank" not in page and "bootstrap intervals" not in page
