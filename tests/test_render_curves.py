"""Exported figures have the faithfulness curves' axes when curves exist, and not otherwise.

The render functions take the curves as data (explorer: the shown layers' deletion curves and
the knock-out's output before and after; PCACE: the layer's deletion curve; inversion: the
mask's deletion and insertion curves); the views pass them from their snapshots once computed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from tiny_nets import tiny_cnn

import neuronviz as nv
from neuronviz.render.explorer import ExplorerView, render_explorer
from neuronviz.render.html import explorer_page, inversion_page, pcace_page
from neuronviz.render.inversion import render_inversion
from neuronviz.render.pcace import render_pcace_maps

sys.path.insert(0, str(Path(__file__).parent / "widgets"))
from explorer_nets import gated_cnn, image  # noqa: E402


def labels(fig: Figure) -> list[str]:
    """The labels of every axes of the figure, in its subfigures too."""
    found, todo = [], [fig]
    while todo:
        f = todo.pop()
        found += [ax.get_label() for ax in f.axes]
        todo += list(f.subfigs)
    return found


def curve_axes(fig: Figure) -> list[str]:
    return sorted({label for label in labels(fig) if label.startswith("faithfulness:")})


@pytest.fixture(scope="module")
def scored():
    net, x = tiny_cnn(), torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    scores = nv.score_neurons(net, x, ["conv1", "relu2"], n_samples=8, keep_channel_means=True)
    maps = {layer: torch.rand(scores.correlation[layer].numel(), 4, 4) for layer in scores.layers}
    curves = nv.deletion_curve(net, x, scores, ks=[0, 1, 2], random=2)
    return net, x, scores, maps, curves


def explorer_view(scores, maps, **extra) -> ExplorerView:
    return ExplorerView(scores=scores, maps=maps, image=np.zeros((8, 8, 3)), selected=("conv1", 0), k=2, **extra)


def test_the_explorer_figure_has_the_curves_and_the_knockout_only_when_given(scored):
    _net, _x, scores, maps, curves = scored
    plain = render_explorer(explorer_view(scores, maps), dpi=40)
    assert curve_axes(plain) == [] and "knockout" not in labels(plain)
    full = render_explorer(explorer_view(scores, maps, curves=curves, knockout=("conv1 #0", 0.5, 0.25)), dpi=40)
    assert curve_axes(full) == ["faithfulness:deletion:conv1", "faithfulness:deletion:relu2"]
    assert "knockout" in labels(full)
    only = render_explorer(explorer_view(scores, maps, knockout=("conv1 #0", 0.5, 0.25)), dpi=40)
    assert curve_axes(only) == [] and "knockout" in labels(only)


def test_the_curve_axes_draw_the_curves_relative_to_the_output(scored):
    *_, curves = scored
    fig = render_explorer(explorer_view(scored[2], scored[3], curves=curves), dpi=40)
    ax = next(a for f in [fig, *fig.subfigs, *(s for sf in fig.subfigs for s in sf.subfigs)] for a in f.axes
              if a.get_label() == "faithfulness:deletion:conv1")
    drawn = {line.get_label().split(" (")[0]: line.get_ydata() for line in ax.get_lines()}
    assert np.allclose(drawn["correlation"], curves.curve("correlation", "conv1").values / curves.original)


def test_the_pcace_figure_has_the_deletion_curve_only_when_given():
    net = tiny_cnn()
    images = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    scores = nv.pcace(net, images, "conv1", target=0)
    maps = torch.rand(2, scores.scores.numel(), 8, 8)
    pictures = np.zeros((2, 8, 8, 3))
    assert curve_axes(render_pcace_maps(scores, maps, pictures, k=2, dpi=40)) == []
    curves = nv.deletion_curve(net, images[:1], scores, ks=[0, 1, 2], random=2, output="logit", samples=images[:2])
    fig = render_pcace_maps(scores, maps, pictures, k=2, curves=curves, dpi=40)
    assert curve_axes(fig) == ["faithfulness:deletion:conv1"]
    other = nv.deletion_curve(net, images[:1], {"relu2": [0, 1]}, ks=[0, 1], random=0)
    with pytest.raises(nv.NeuronvizError, match="not of layer"):
        render_pcace_maps(scores, maps, pictures, k=2, curves=other, dpi=40)


def test_the_inversion_figure_has_the_deletion_and_insertion_curves_only_when_given():
    net, x = gated_cnn(), image()
    result = nv.guided_feature_inversion(net, x, stage1_steps=2, stage2_steps=2)
    picture = np.zeros((16, 16, 3))
    assert curve_axes(render_inversion(result, pictures=[picture], dpi=40)) == []
    curves = [nv.mask_deletion_curve(net, x, result, mode=m, steps=4, random=2) for m in ("deletion", "insertion")]
    fig = render_inversion(result, pictures=[picture], curves=curves, dpi=40)
    assert curve_axes(fig) == ["faithfulness:deletion:pixels", "faithfulness:insertion:pixels"]


def test_the_views_export_their_curves_once_computed(snapshot, tmp_path):
    net, x = gated_cnn(), image()
    snap = snapshot(net)
    w = nv.NeuronExplorer(net, x, ["conv1", "conv2"], n_samples=6, live=False)
    w.wait(60)
    assert curve_axes(w.figure(dpi=40)) == []
    w.knockouts.draw_curves()
    w.knockouts.toggle.button.value = True
    w.knockouts.wait(60)
    fig = w.figure(dpi=40)
    assert curve_axes(fig) == ["faithfulness:deletion:conv1", "faithfulness:deletion:conv2"]
    assert "knockout" in labels(fig)
    w.close()

    images = torch.randn(40, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    v = nv.widgets.PCACEView(net, images, ["conv1", "conv2"])
    v.wait(60)
    assert curve_axes(v.figure(dpi=40)) == []
    v.faithfulness.start()
    v.faithfulness.wait(60)
    assert curve_axes(v.figure(dpi=40)) == [f"faithfulness:deletion:{v.layer}"]
    v.export(tmp_path / "pcace.png", dpi=40)
    v.close()

    inv = nv.widgets.InversionView(net, x, stage1_steps=2, stage2_steps=2)
    inv.wait(60)
    assert curve_axes(inv.figure(dpi=40)) == []
    inv.faithfulness.start()
    inv.faithfulness.wait(60)
    assert curve_axes(inv.figure(dpi=40)) == ["faithfulness:deletion:pixels", "faithfulness:insertion:pixels"]
    inv.close()
    snap.assert_unchanged()


# --- the HTML pages: the same curves as SVG ------------------------------------------------------

def curve_svgs(page: str) -> list[str]:
    """The (mode, group) of each curves SVG of a page."""
    return re.findall(r"<svg class='nv-mini nv-curves' data-mode='(\w+)' data-group='([^']+)'", page)


def polyline(svg_page: str, group: str, label_start: str) -> np.ndarray:
    """(P, 2) points of the curve whose legend starts with ``label_start`` in the SVG of ``group``."""
    svg = svg_page.split(f"data-group='{group}'", 1)[1].split("</svg>", 1)[0]
    points = re.search(rf"<polyline class='nv-curve' data-label='{re.escape(label_start)}[^']*' points='([^']*)'", svg)
    assert points is not None, f"no curve {label_start!r} in the SVG of {group}"
    return np.array([[float(v) for v in p.split(",")] for p in points.group(1).split()])


def test_the_explorer_page_draws_the_curves_and_the_knockout_only_when_given(scored):
    _net, _x, scores, maps, curves = scored
    assert curve_svgs(explorer_page(explorer_view(scores, maps))) == []
    assert "nv-knockout" not in explorer_page(explorer_view(scores, maps))
    page = explorer_page(explorer_view(scores, maps, curves=curves, knockout=("conv1 #0", 0.5, 0.25)))
    assert curve_svgs(page) == [("deletion", "conv1"), ("deletion", "relu2")]
    assert "knock-out of conv1 #0: the output goes from <b>0.5</b> to <b>0.25</b>" in page
    only = explorer_page(explorer_view(scores, maps, knockout=("conv1 #0", 0.5, 0.25)))
    assert curve_svgs(only) == [] and "nv-knockout" in only


def test_a_curve_svg_draws_the_values_relative_to_the_output_in_order_with_its_auc(scored):
    *_, curves = scored
    page = explorer_page(explorer_view(scored[2], scored[3], curves=curves))
    c = curves.curve("correlation", "conv1")
    pts = polyline(page, "conv1", "correlation")
    assert len(pts) == len(c.values)
    assert np.all(np.diff(pts[:, 0]) > 0)  # x: the share knocked out, increasing
    # y is an affine, decreasing map of o_k / o(x): the same up to scale and offset
    rel = c.values / curves.original
    slope, offset = np.polyfit(rel, pts[:, 1], 1)
    assert slope < 0 and np.allclose(pts[:, 1], slope * rel + offset, atol=0.06)
    assert f"correlation (AUC {c.auc:.2f})" in page
    random = curves.curve("random", "conv1")
    lo, hi = random.auc_band()
    assert f"random x2 (AUC {random.auc:.2f}, {lo:.2f}-{hi:.2f})" in page
    assert page.count("<polygon class='nv-band'") == len(curves.groups)  # a 5-95 % band per random curve


def test_the_pcace_and_inversion_pages_draw_their_curves_only_when_given():
    net = tiny_cnn()
    images = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    scores = nv.pcace(net, images, "conv1", target=0)
    ranking = nv.LayerRanking({"conv1": scores}, 2)
    maps, pictures = {"conv1": torch.rand(2, scores.scores.numel(), 8, 8)}, np.zeros((2, 8, 8, 3))
    assert curve_svgs(pcace_page(ranking, maps, pictures)) == []
    curves = nv.deletion_curve(net, images[:1], scores, ks=[0, 1, 2], random=2, output="logit", samples=images[:2])
    assert curve_svgs(pcace_page(ranking, maps, pictures, curves=curves)) == [("deletion", "conv1")]

    net, x = gated_cnn(), image()
    result = nv.guided_feature_inversion(net, x, stage1_steps=2, stage2_steps=2)
    picture = [np.zeros((16, 16, 3))]
    assert curve_svgs(inversion_page(result, picture)) == []
    both = [nv.mask_deletion_curve(net, x, result, mode=m, steps=4, random=2) for m in ("deletion", "insertion")]
    assert curve_svgs(inversion_page(result, picture, curves=both)) == [("deletion", "pixels"), ("insertion", "pixels")]


def test_the_exported_pages_of_the_views_have_their_curves_once_computed(tmp_path):
    net, x = gated_cnn(), image()
    w = nv.NeuronExplorer(net, x, ["conv1", "conv2"], n_samples=6, live=False)
    w.wait(60)
    assert curve_svgs(w.export(tmp_path / "before.html").read_text()) == []
    w.knockouts.draw_curves()
    w.knockouts.toggle.button.value = True
    w.knockouts.wait(60)
    page = w.export(tmp_path / "explorer.html").read_text()
    assert curve_svgs(page) == [("deletion", "conv1"), ("deletion", "conv2")] and "nv-knockout" in page
    w.close()
    inv = nv.widgets.InversionView(net, x, stage1_steps=2, stage2_steps=2)
    inv.wait(60)
    inv.faithfulness.start()
    inv.faithfulness.wait(60)
    assert curve_svgs(inv.export(tmp_path / "inversion.html").read_text()) == [("deletion", "pixels"),
                                                                               ("insertion", "pixels")]
    inv.close()
