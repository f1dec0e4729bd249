"""The neuron explorer's view as a print-quality matplotlib figure, and the overlay helpers it shares with the widget.

The interactive explorer (:class:`neuronviz.widgets.NeuronExplorer`) and its export draw the same
things: the image with one neuron's activation map blended over it and the box of the map's
strongest cell, every channel's correlation against precision, the top-k selections of each
metric, and the selected neuron's activation against the output over the perturbed samples.
The blending and the box are computed here once, in numpy, so both look the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.patches import Rectangle

from ..core.errors import NeuronvizError
from ..methods.faithfulness import FaithfulnessCurves
from ..methods.resampling import NeuronScores, overlap
from .faithfulness import draw_curves
from .figure import FONT_SIZES as _FS
from .figure import StaticFigure, check_display_image, check_path, save
from .formatting import format_score
from .maps import upsample_map
from .resampling import _BOTH_COLOUR, _LAYER_COLOURS, _OVERLAY_CMAP, _draw_scatter, _target_text

__all__ = [
    "ExplorerView",
    "render_explorer",
    "blend_overlay",
    "strongest_cell",
    "cell_box",
    "layer_colour",
    "pearson",
    "BOTH_COLOUR",
    "BOX_COLOUR",
    "SELECTED_COLOUR",
]

BOTH_COLOUR = _BOTH_COLOUR
#: Frame of the strongest cell of the selected neuron's map.
BOX_COLOUR = "#ffffff"
#: Marker of the selected neuron in every scatter.
SELECTED_COLOUR = "#000000"

_LUT = (colormaps[_OVERLAY_CMAP](np.linspace(0.0, 1.0, 256))[:, :3]).astype(np.float32)


def layer_colour(i: int) -> str:
    """The colour of the ``i``-th scored layer, the same in every neuronviz figure and widget."""
    return _LAYER_COLOURS[i % len(_LAYER_COLOURS)]


def blend_overlay(image: np.ndarray, heat: np.ndarray | None, opacity: float) -> np.ndarray:
    """Blend a [0, 1] heat map over an image with the overlay colour map.

    The overlay's opacity grows with the heat (``opacity * (0.2 + 0.8 * heat)``), so the image
    stays visible where the neuron is quiet.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W, 3) float image in [0, 1].
    heat : numpy.ndarray or None
        (H, W) values in [0, 1] (e.g. from :func:`neuronviz.render.upsample_map`); None
        returns the image unchanged.
    opacity : float
        Overall opacity of the overlay, in [0, 1].

    Returns
    -------
    numpy.ndarray
        (H, W, 3) float32 in [0, 1].

    Raises
    ------
    ValueError
        ``heat`` does not match the image size, or ``opacity`` is outside [0, 1].
    """
    img = np.asarray(image, dtype=np.float32)
    if not 0.0 <= float(opacity) <= 1.0:
        raise NeuronvizError(f"opacity must be in [0, 1], got {opacity!r}")
    if heat is None:
        return img
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != img.shape[:2]:
        raise NeuronvizError(f"the heat map is {heat.shape} but the image is {img.shape[:2]}: they must match")
    colour = _LUT[np.clip(np.nan_to_num(heat) * 255.0 + 0.5, 0, 255).astype(np.intp)]
    alpha = (float(opacity) * (0.2 + 0.8 * np.clip(heat, 0.0, 1.0)))[..., None]
    return img * (1.0 - alpha) + colour * alpha


def strongest_cell(amap: torch.Tensor | np.ndarray) -> tuple[int, int]:
    """The (row, column) of the largest value of a 2-D map (the first one on ties; NaN ignored).

    Parameters
    ----------
    amap : torch.Tensor or numpy.ndarray
        (h, w) map.

    Returns
    -------
    tuple of int
    """
    a = np.nan_to_num(np.asarray(torch.as_tensor(amap).detach().cpu().float()), nan=-np.inf)
    if a.ndim != 2:
        raise NeuronvizError(f"strongest_cell expects one (h, w) map, got shape {a.shape}")
    r, c = np.unravel_index(int(np.argmax(a)), a.shape)
    return int(r), int(c)


def cell_box(
    cell: tuple[int, int], map_shape: tuple[int, int], image_size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """The image region of one cell of an activation map: ``(top, left, bottom, right)`` in pixels.

    This is the cell scaled to the image (the map's grid stretched over the image), an
    approximation of the receptive field that shows *where* the neuron fires most; the
    theoretical receptive field of a deep unit is larger and centred on the same place.

    Parameters
    ----------
    cell : tuple of int
        (row, column) in the map.
    map_shape : tuple of int
        (h, w) of the map.
    image_size : tuple of int
        (H, W) of the image.

    Returns
    -------
    tuple of float
        Pixel edges; ``bottom`` and ``right`` are exclusive.
    """
    (r, c), (h, w), (hh, ww) = cell, map_shape, image_size
    sy, sx = hh / h, ww / w
    return r * sy, c * sx, (r + 1) * sy, (c + 1) * sx


@dataclass
class ExplorerView:
    """What the explorer shows, as plain data: enough to draw it without a browser.

    Attributes
    ----------
    scores : NeuronScores
        Per-channel scores (with ``channel_means`` for the detail panel).
    maps : dict of str to torch.Tensor
        Per scored layer, the (C, h, w) activation maps of the unperturbed image.
    image : numpy.ndarray
        (H, W, 3) float image in [0, 1] to draw on.
    selected : tuple of (str, int) or None
        The selected neuron.
    k : int
        Size of each metric's selection per layer.
    opacity : float
        Opacity of the activation overlay, in [0, 1].
    samples : numpy.ndarray or None
        (n, H', W', 3) float images of a few perturbed copies.
    sample_indices : list of int
        Which copies ``samples`` are (indices into ``scores.outputs``).
    sample_maps : dict of str to torch.Tensor or None
        Per layer, (n, C, h, w) maps of ``samples``, to show the selected neuron on them.
    n_classes : int or None
        The model's number of classes (1000 names the ImageNet class).
    curves : FaithfulnessCurves or None
        The deletion curves of the shown layers (:func:`neuronviz.deletion_curve`), drawn in a
        row below when given.
    knockout : tuple (str, float, float) or None
        The knock-out shown: what was knocked out, the output before and after.
    """

    scores: NeuronScores
    maps: dict[str, torch.Tensor]
    image: np.ndarray
    selected: tuple[str, int] | None = None
    k: int = 5
    opacity: float = 0.6
    samples: np.ndarray | None = None
    sample_indices: list[int] = field(default_factory=list)
    sample_maps: dict[str, torch.Tensor] | None = None
    n_classes: int | None = None
    curves: FaithfulnessCurves | None = None
    knockout: tuple[str, float, float] | None = None


def _selected_map(view: ExplorerView) -> torch.Tensor | None:
    if view.selected is None:
        return None
    layer, channel = view.selected
    m = view.maps.get(layer)
    if m is None or m.dim() != 3 or m.shape[1] * m.shape[2] <= 1:
        return None  # a vector layer has no map to overlay
    return m[channel]


def _no_ticks(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_overlay(sf: SubFigure, view: ExplorerView, img: np.ndarray) -> None:
    ax = sf.subplots()
    ax.set_label("overlay")
    amap = _selected_map(view)
    heat = upsample_map(amap, img.shape[:2]) if amap is not None else None
    ax.imshow(blend_overlay(img, heat, view.opacity), interpolation="bilinear")
    if amap is not None:
        top, left, bottom, right = cell_box(strongest_cell(amap), (amap.shape[0], amap.shape[1]), img.shape[:2])
        for colour, width in (("black", 3.2), (BOX_COLOUR, 1.6)):  # a white frame with a dark halo
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, ec=colour,
                                   lw=width))
    _no_ticks(ax)
    if view.selected is None:
        ax.set_title("input image", fontsize=_FS["head"])
    else:
        layer, channel = view.selected
        note = "" if amap is not None else "\n(no spatial map)"
        ax.set_title(f"{layer} · channel {channel}{note}", fontsize=_FS["head"])
        if amap is not None:
            ax.set_xlabel("box: the map cell of the strongest activation", fontsize=_FS["cell"])


def _mark_selected_on_scatter(sf: SubFigure, view: ExplorerView) -> None:
    if view.selected is None:
        return
    ax = next(a for a in sf.axes if a.get_label() == "scatter")
    layer, channel = view.selected
    c = float(view.scores.correlation[layer][channel])
    p = float(view.scores.precision[layer][channel])
    if math.isnan(c) or math.isnan(p):
        return
    if math.isinf(p):
        ax.scatter([c], [1.0], transform=ax.get_xaxis_transform(), marker="*", s=260, c="none",
                   edgecolors=SELECTED_COLOUR, linewidths=1.5, zorder=8, clip_on=False)
    else:
        ax.scatter([c], [p], marker="*", s=260, c="none", edgecolors=SELECTED_COLOUR, linewidths=1.5, zorder=8)


def _draw_ranked(ax: Axes, values: list[float], channels: list[int], both: set, selected: int | None,
                 metric: str, colour: str) -> None:
    """Horizontal bars of one layer's top-k by one metric, best at the top."""
    n = len(channels)
    if n == 0:
        ax.text(0.5, 0.5, "no valid neuron", ha="center", va="center", fontsize=_FS["cell"], color="0.45",
                transform=ax.transAxes)
        _no_ticks(ax)
        return
    ys = np.arange(n)[::-1]
    finite = [v if math.isfinite(v) else np.nan for v in values]
    top = np.nanmax(finite) if not all(np.isnan(finite)) else 1.0
    widths = [v if math.isfinite(v) else top * 1.15 for v in values]  # +inf precision: longest bar
    bars = ax.barh(ys, widths, color=colour, alpha=0.75, height=0.7)
    for bar, ch in zip(bars, channels):
        if ch in both:
            bar.set_edgecolor(BOTH_COLOUR)
            bar.set_linewidth(2.0)
    labels = [f"ch {c}" for c in channels]
    ax.set_yticks(ys, labels, fontsize=_FS["cell"])
    for tick, ch in zip(ax.get_yticklabels(), channels):
        if ch == selected:
            tick.set_fontweight("bold")
        if ch in both:
            tick.set_color(BOTH_COLOUR)
    for y, v, w in zip(ys, values, widths):
        ax.text(w, y, " " + format_score(metric, v), va="center", ha="left", fontsize=_FS["cell"] - 1)
    ax.set_xlim(0, max(widths) * 1.45)
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)


def _draw_selections(sf: SubFigure, view: ExplorerView) -> None:
    scores, k = view.scores, view.k
    top_c, top_p = scores.top("correlation", k), scores.top("precision", k)
    axes = sf.subplots(len(scores.layers), 2, squeeze=False)
    for row, layer in enumerate(scores.layers):
        both = set(top_c[layer]) & set(top_p[layer])
        sel = view.selected[1] if view.selected is not None and view.selected[0] == layer else None
        colour = layer_colour(row)
        for col, (metric, chosen) in enumerate((("correlation", top_c[layer]), ("precision", top_p[layer]))):
            ax = axes[row, col]
            ax.set_label(f"ranked:{metric}:{layer}")
            values = [float(scores.metric(metric)[layer][c]) for c in chosen]
            _draw_ranked(ax, values, chosen, both, sel, metric, colour)
            if row == 0:
                ax.set_title(f"top {k} by {metric}", fontsize=_FS["label"])
        axes[row, 0].set_ylabel(layer, fontsize=_FS["label"], fontweight="bold")
    ov = overlap(top_c, top_p)
    ov_text = "n/a" if math.isnan(ov) else f"{ov:.3f}"
    sf.suptitle(f"selections · overlap {ov_text} (max 0.5)", fontsize=_FS["head"])


def _draw_detail(sf: SubFigure, view: ExplorerView) -> None:
    ax = sf.subplots()
    ax.set_label("detail")
    scores = view.scores
    out_name = {"probability": "probability", "logit": "logit"}.get(scores.output, "target value")
    ax.set_ylabel(f"output ({out_name})", fontsize=_FS["label"])
    ax.set_xlabel("channel activation (mean over positions)", fontsize=_FS["label"])
    ax.tick_params(labelsize=_FS["cell"])
    ax.grid(True, lw=0.4, color="0.85")
    if view.selected is None or scores.channel_means is None:
        ax.text(0.5, 0.5, "no neuron selected" if view.selected is None else "no per-sample activations kept",
                ha="center", va="center", transform=ax.transAxes, fontsize=_FS["label"], color="0.45")
        return
    layer, channel = view.selected
    a = scores.channel_means[layer][:, channel].double().numpy()
    o = scores.outputs.double().numpy()
    colour = layer_colour(scores.layers.index(layer))
    ax.scatter(a, o, s=14, color=colour, alpha=0.7, linewidths=0)
    idx = [i for i in view.sample_indices if 0 <= i < len(o)]
    if idx:
        ax.scatter(a[idx], o[idx], s=60, facecolor="none", edgecolor="black", linewidths=1.2, label="copies shown")
        for i in idx:
            ax.annotate(str(i), (a[i], o[i]), xytext=(4, 3), textcoords="offset points", fontsize=_FS["cell"] - 1)
    r = pearson(a, o)
    r_text = "n/a" if math.isnan(r) else f"{r:.2f}"
    ax.set_title(f"{layer} · channel {channel}: r = {r_text} over {len(o)} copies", fontsize=_FS["head"])


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two samples; NaN when either is constant."""
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else math.nan


def _draw_strip(sf: SubFigure, view: ExplorerView) -> None:
    n = 0 if view.samples is None else len(view.samples)
    if n == 0:
        ax = sf.subplots()
        ax.axis("off")
        return
    axes = sf.subplots(1, n, squeeze=False)[0]
    layer, channel = view.selected if view.selected is not None else (None, None)
    maps = view.sample_maps.get(layer) if (view.sample_maps and layer is not None) else None
    spatial = maps is not None and maps.dim() == 4 and maps.shape[2] * maps.shape[3] > 1
    outputs = view.scores.outputs
    for ax, img, j, i in zip(axes, [] if view.samples is None else view.samples, range(n), view.sample_indices):
        img = check_display_image(img)
        heat = upsample_map(maps[j, channel], img.shape[:2]) if spatial and maps is not None else None
        ax.imshow(blend_overlay(img, heat, view.opacity), interpolation="bilinear")
        _no_ticks(ax)
        ax.set_title(f"copy {i}\noutput {float(outputs[i]):.3g}", fontsize=_FS["cell"], linespacing=1.1)
    sf.suptitle("perturbed copies" + (" with the neuron's map" if spatial else ""), fontsize=_FS["head"])


def _draw_evidence(sf: SubFigure, view: ExplorerView) -> None:
    """The knock-out's output before and after, and each layer's deletion curves, in one row."""
    groups = view.curves.groups if view.curves is not None else []
    axes = sf.subplots(1, len(groups) + (view.knockout is not None), squeeze=False)[0]
    if view.knockout is not None:
        ax, axes = axes[0], axes[1:]
        ax.set_label("knockout")
        what, before, after = view.knockout
        bars = ax.bar([0, 1], [before, after], color=["0.55", "#d62728"], width=0.6)
        for bar, v in zip(bars, (before, after)):
            ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.3g}", ha="center",
                    va="bottom" if v >= 0 else "top", fontsize=_FS["cell"])
        ax.set_xticks([0, 1], ["before", "knocked out"], fontsize=_FS["cell"])
        ax.set_ylabel("output", fontsize=_FS["label"])
        ax.tick_params(labelsize=_FS["cell"])
        ax.set_title(f"knock-out: {what}", fontsize=_FS["head"])
    if view.curves is not None:
        for ax, group in zip(axes, groups):
            draw_curves(ax, view.curves, group, title=f"{view.curves.mode} curves · {group}")


#: Level of the bootstrap intervals the explorer draws (whiskers, rank intervals, ties).
INTERVAL_LEVEL = 0.9
#: Colour of the interval whiskers on the scatter, and of the tie mark in the lists.
WHISKER_COLOUR = "#444444"
TIED_COLOUR = "#b35806"


def _draw_intervals(sf_sc: SubFigure, sf_sel: SubFigure, view: ExplorerView, top_c: dict, top_p: dict) -> None:
    """With bootstrap replicates: whiskers of the top-k's intervals on the scatter, rank intervals and ties in lists.

    Horizontal whiskers are the correlation intervals, vertical ones the precision intervals
    (an infinite bound reaches the top edge), of every neuron in either top-k; each list entry
    gets its rank interval, ``≈`` where it is tied with the (k+1)-th. Nothing without replicates.
    """
    from matplotlib.collections import LineCollection

    scores, k, level = view.scores, view.k, INTERVAL_LEVEL
    if not scores.replicates:
        return
    ax = next(a for a in sf_sc.axes if a.get_label() == "scatter")
    iv = {m: scores.interval(m, level) for m in ("correlation", "precision")}
    y_top = ax.get_ylim()[1]
    # data coordinates; and x in data with y on the top edge, for +inf precision
    segments: list[list[tuple[float, float]]] = []
    top_segments: list[list[tuple[float, float]]] = []
    for layer in scores.layers:
        (c_lo, c_hi), (p_lo, p_hi) = iv["correlation"][layer], iv["precision"][layer]
        for c in dict.fromkeys(top_c[layer] + top_p[layer]):
            x, y = float(scores.correlation[layer][c]), float(scores.precision[layer][c])
            if math.isnan(x) or math.isnan(y):
                continue  # not drawn on the scatter
            lo, hi = float(c_lo[c]), float(c_hi[c])
            if math.isfinite(lo) and math.isfinite(hi):
                (segments if math.isfinite(y) else top_segments).append([(lo, y if math.isfinite(y) else 1.0),
                                                                         (hi, y if math.isfinite(y) else 1.0)])
            lo, hi = float(p_lo[c]), float(p_hi[c])
            if math.isfinite(y) and math.isfinite(lo) and lo > 0:
                segments.append([(x, lo), (x, min(hi, y_top) if not math.isnan(hi) else y)])
    for segs, transform, gid in ((segments, ax.transData, "interval-whiskers"),
                                 (top_segments, ax.get_xaxis_transform(), "interval-whiskers-top")):
        if segs:
            lines = LineCollection(segs, colors=WHISKER_COLOUR, linewidths=1.0, zorder=4, transform=transform)
            lines.set_gid(gid)
            ax.add_collection(lines, autolim=False)
    ax.set_title(f"{ax.get_title()} · whiskers: {level:.0%} intervals of the top {k}", fontsize=_FS["head"])
    for metric, chosen in (("correlation", top_c), ("precision", top_p)):
        ranks, ties = scores.rank_interval(metric, level), scores.tied(metric, k, level)
        for layer in scores.layers:
            ranked = next((a for a in sf_sel.axes if a.get_label() == f"ranked:{metric}:{layer}"), None)
            if ranked is None or not chosen[layer]:
                continue
            r_lo, r_hi = ranks[layer]
            left, right = ranked.get_xlim()
            ranked.set_xlim(left, right * 1.35)  # room for the rank intervals at the right edge
            edge = ranked.get_yaxis_transform()  # x in axes fraction, y in data
            for y, c, tied in zip(np.arange(len(chosen[layer]))[::-1], chosen[layer], ties[layer]):
                text = ranked.text(1.0, y, f"{'≈ ' if tied else ''}#{r_lo[c]:.0f}–{r_hi[c]:.0f}", transform=edge,
                                   ha="right", va="center", fontsize=_FS["cell"] - 1,
                                   color=TIED_COLOUR if tied else "0.35")
                text.set_gid(f"rank-interval{'-tied' if tied else ''}")
    sf_sel.suptitle(f"{sf_sel.get_suptitle()}\n#: {level:.0%} rank interval · ≈ tied with #{k + 1}",
                    fontsize=_FS["head"])


def render_explorer(
    view: ExplorerView,
    *,
    path: str | Path | None = None,
    dpi: int = 150,
    title: str | None = None,
) -> Figure:
    """Draw the explorer's current view: overlay, scatter, selections, detail and perturbed copies.

    Top row: the image with the selected neuron's map over it and a box on the map's
    strongest cell (see :func:`cell_box`); every channel's correlation against precision (the
    selected neuron starred); each layer's top-``k`` by correlation and by precision as ranked
    bars, red where both metrics chose the neuron. Second row: the selected neuron's
    activation against the output over the perturbed copies, and a few copies with its map.
    With ``view.knockout`` or ``view.curves``, a third row: the output before and after the
    knock-out, and each layer's deletion curves against random rankings.

    Parameters
    ----------
    view : ExplorerView
        What to draw.
    path : str or pathlib.Path, optional
        Also save the figure there; the suffix (``.png``, ``.svg`` or ``.pdf``) sets the format.
    dpi : int
        Resolution of a saved PNG (and of the images embedded in SVG and PDF).
    title : str, optional
        Heading of the figure; by default it names the target and the number of copies.

    Returns
    -------
    matplotlib.figure.Figure
        A figure not registered with ``pyplot``.

    Raises
    ------
    ValueError
        Per-unit scores, ``k < 1``, an unsupported file suffix, a malformed image, or a
        selected neuron that is not among the scores.
    """
    scores = view.scores
    if scores.per_unit:
        raise NeuronvizError("the explorer draws per-channel scores; these were computed with per_unit=True")
    if isinstance(view.k, bool) or not isinstance(view.k, int) or view.k < 1:
        raise NeuronvizError(f"k must be a positive integer, got {view.k!r}")
    if view.selected is not None:
        layer, channel = view.selected
        if layer not in scores.layers or not 0 <= channel < scores.correlation[layer].numel():
            raise NeuronvizError(f"the selected neuron {view.selected!r} is not among the scored channels")
    path = check_path(path)
    img = check_display_image(view.image)

    n_layers = len(scores.layers)
    top_h = max(4.2, 1.25 * n_layers * max(1.0, view.k / 4) + 1.2)
    evidence = 3.4 if view.curves is not None or view.knockout is not None else 0.0  # the third row's height
    fig = StaticFigure(figsize=(16.5, top_h + 3.6 + evidence), dpi=dpi, layout="constrained")
    rows = list(fig.subfigures(2 + bool(evidence), 1, height_ratios=[top_h, 3.6] + [evidence] * bool(evidence),
                               hspace=0.02))  # type: ignore[arg-type]
    top, bottom = rows[0], rows[1]
    sf_img, sf_sc, sf_sel = top.subfigures(1, 3, width_ratios=[3.6, 7.4, 5.5], wspace=0.01)
    sf_det, sf_strip = bottom.subfigures(1, 2, width_ratios=[5.0, 11.5], wspace=0.01)

    _draw_overlay(sf_img, view, img)
    top_c, top_p = scores.top("correlation", view.k), scores.top("precision", view.k)
    _draw_scatter(sf_sc, scores, top_c, top_p)
    _mark_selected_on_scatter(sf_sc, view)
    _draw_selections(sf_sel, view)
    _draw_intervals(sf_sc, sf_sel, view, top_c, top_p)
    _draw_detail(sf_det, view)
    _draw_strip(sf_strip, view)
    if evidence:
        _draw_evidence(rows[2], view)

    seed_text = f", seed {scores.seed}" if scores.perturbation is not None else ""
    fig.suptitle(
        title or f"Neuron explorer · {_target_text(scores, view.n_classes)} · {scores.n_samples} perturbed copies"
        f"{seed_text}",
        fontsize=_FS["title"],
    )
    save(fig, path, dpi)
    return fig
