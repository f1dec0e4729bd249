"""The input-resampling paper's figure: neurons chosen by correlation against those chosen by precision."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter

from ..core.errors import NeuronvizError
from ..methods.resampling import NeuronScores, overlap
from .figure import FONT_SIZES as _FS
from .figure import StaticFigure, check_display_image, check_path, class_label, save
from .formatting import format_score
from .maps import upsample_map

__all__ = ["render_score_maps", "check_score_figure"]

_OVERLAY_CMAP = "jet"
_BOTH_COLOUR = "#e6194b"  # frame of neurons both metrics select
_LAYER_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
# scatter styles of the selected channels (facecolor None: the layer's colour)
_TOP_C: dict[str, Any] = {"s": 60, "marker": "o", "facecolor": None, "edgecolor": "black", "linewidths": 1.2,
                          "zorder": 4}
_TOP_P: dict[str, Any] = {"s": 55, "marker": "D", "facecolor": None, "edgecolor": "black", "linewidths": 1.2,
                          "zorder": 5}
_BOTH: dict[str, Any] = {"s": 190, "marker": "o", "facecolor": "none", "edgecolor": _BOTH_COLOUR, "linewidths": 2.0,
                         "zorder": 6}


def _check_maps_match(maps: dict[str, torch.Tensor], scores: NeuronScores) -> None:
    """Scores drawn on another model's maps would label the wrong channels: refuse."""
    for layer in scores.layers:
        n_maps, n_scores = maps[layer].shape[0], scores.correlation[layer].numel()
        if n_maps != n_scores:
            raise NeuronvizError(
                f"layer {layer!r} has {n_maps} channels on this model but the scores have {n_scores}: "
                "render with the model and image that were scored"
            )


def _is_spatial(shape: tuple[int, ...]) -> bool:
    """Only (C, H, W) layers with more than one position get a map to overlay."""
    return len(shape) == 3 and shape[1] * shape[2] > 1



def _target_text(scores: NeuronScores, n_classes: int | None) -> str:
    if scores.target is None:
        return "target: a callable of the output"
    return f"target: {scores.output} of {class_label(scores.target, n_classes)}"


def _caption(scores: NeuronScores, n_classes: int | None, k: int, ov: float, n_both: int) -> str:
    ov_text = "n/a" if math.isnan(ov) else f"{ov:.3f}"
    return (
        f"{_target_text(scores, n_classes)}   |   {scores.n_samples} perturbed samples   |   "
        f"overlap of the top-{k} selections: {ov_text} (paper's measure, max 0.5)   |   "
        f"red frame: selected by both ({n_both})"
    )


# ---------------------------------------------------------------------------------------------
# panels


_SHORT = {"correlation": "corr", "precision": "prec"}


def _draw_image(sf: SubFigure, img: np.ndarray) -> None:
    ax = sf.subplots()
    ax.imshow(img, interpolation="bilinear")
    ax.set_title("input image", fontsize=_FS["head"])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_label("image")


def _draw_neuron(
    ax: Axes, img: np.ndarray, amap: torch.Tensor | None, channel: int, metric: str, value: float, both: bool
) -> None:
    """The image with one channel's map over it; a coloured frame when both metrics chose it."""
    ax.imshow(img, interpolation="bilinear")
    if amap is not None:
        m = upsample_map(amap, img.shape[:2])
        # opacity grows with activation so that the image stays visible where the neuron is quiet
        ax.imshow(m, cmap=_OVERLAY_CMAP, vmin=0.0, vmax=1.0, alpha=0.1 + 0.6 * m, interpolation="nearest")
    ax.set_title(f"ch {channel}\n{_SHORT[metric]} {format_score(metric, value)}", fontsize=_FS["cell"], linespacing=1.1,
                 pad=3)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(_BOTH_COLOUR if both else "0.6")
        spine.set_linewidth(3.0 if both else 0.6)


def _draw_empty(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal")
    ax.text(0.5, 0.5, "no valid\nneuron", ha="center", va="center", fontsize=_FS["cell"], color="0.45",
            transform=ax.transAxes)
    for spine in ax.spines.values():
        spine.set_edgecolor("0.8")
        spine.set_linestyle((0, (2, 2)))


def _draw_metric_grid(
    sf: SubFigure,
    scores: NeuronScores,
    metric: str,
    top: dict[str, list],
    both: dict[str, set],
    maps: dict[str, torch.Tensor],
    img: np.ndarray,
    k: int,
) -> None:
    """One block of the figure: a row per layer, the top-k neurons of ``metric`` in it."""
    axes = sf.subplots(len(scores.layers), k, squeeze=False)
    values = scores.metric(metric)
    for row, layer in enumerate(scores.layers):
        spatial = _is_spatial(scores.shapes[layer])
        for col in range(k):
            ax = axes[row, col]
            if col < len(top[layer]):
                c = top[layer][col]
                amap = maps[layer][c] if spatial else None
                _draw_neuron(ax, img, amap, c, metric, float(values[layer][c]), c in both[layer])
                ax.set_label(f"neuron:{metric}:{layer}:{c}")
            else:
                _draw_empty(ax)
                ax.set_label(f"empty:{metric}:{layer}:{col}")
        label = layer if spatial else f"{layer}\n(no spatial map)"
        axes[row, 0].set_ylabel(label, fontsize=_FS["label"], fontweight="bold")
    sf.suptitle(f"top {k} by {metric}", fontsize=_FS["head"])


class _PlainLogFormatter(LogFormatter):
    """LogFormatter's choice of which ticks to label, written as plain numbers (0.1, 4, 300)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def _scatter_layer(
    ax: Axes, colour: str, corr: np.ndarray, prec: np.ndarray, top_c: list, top_p: list
) -> tuple[int, bool]:
    """One layer's points; returns (channels left out for a NaN score, whether any precision is +inf)."""
    edge_y = ax.get_xaxis_transform()  # x in data, y in axes fraction: the top edge is y = 1
    shown = ~np.isnan(corr) & ~np.isnan(prec)
    finite, inf = shown & np.isfinite(prec), shown & np.isinf(prec)
    ax.scatter(corr[finite], prec[finite], s=10, color=colour, alpha=0.55, linewidths=0, zorder=2)
    ax.scatter(corr[inf], np.ones(int(inf.sum())), s=28, marker="^", color=colour, transform=edge_y, clip_on=False,
               zorder=3)
    for sel, style in ((top_c, _TOP_C), (top_p, _TOP_P), (set(top_c) & set(top_p), _BOTH)):
        idx = np.array(sorted(c for c in sel if shown[c]), dtype=int)
        face = colour if style["facecolor"] is None else style["facecolor"]
        fin = np.isfinite(prec[idx])
        for mask, y, trans in ((fin, prec[idx], ax.transData), (~fin, np.ones(idx.size), edge_y)):
            if mask.any():
                ax.scatter(corr[idx][mask], y[mask], transform=trans, clip_on=False, **{**style, "facecolor": face})
    return int((~shown).sum()), bool(inf.any())


def _scatter_legend(ax: Axes, layer_handles: list, any_both: bool, any_inf: bool, hidden: int, left_out: int) -> None:
    handles = layer_handles + [
        Line2D([], [], ls="", marker="o", ms=7, mfc="white", mec="black", mew=1.2, label="top by correlation"),
        Line2D([], [], ls="", marker="D", ms=6, mfc="white", mec="black", mew=1.2, label="top by precision"),
    ]
    if any_both:
        handles.append(
            Line2D([], [], ls="", marker="o", ms=11, mfc="none", mec=_BOTH_COLOUR, mew=2, label="selected by both")
        )
    if any_inf:
        handles.append(Line2D([], [], ls="", marker="^", ms=6, color="0.4", label="precision = ∞ (top edge)"))
    if hidden:  # a text-only legend row, so the note never covers a point
        handles.append(Line2D([], [], ls="", label=f"{hidden} channel(s) with\na NaN score not shown"))
    if left_out:
        handles.append(Line2D([], [], ls="", label=f"{left_out} channel(s) left out of\nthe precision selection"))
    ax.legend(handles=handles, fontsize=_FS["cell"], loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
              frameon=False, handletextpad=0.3)


def _draw_scatter(sf: SubFigure, scores: NeuronScores, top_c: dict[str, list], top_p: dict[str, list]) -> None:
    """Correlation vs precision of every channel, coloured by layer; NaN left out, +inf on the top edge."""
    ax = sf.subplots()
    ax.set_label("scatter")
    ax.set_yscale("log")
    hidden, any_inf, layer_handles = 0, False, []
    for i, layer in enumerate(scores.layers):
        colour = _LAYER_COLOURS[i % len(_LAYER_COLOURS)]
        corr, prec = scores.correlation[layer].double().numpy(), scores.precision[layer].double().numpy()
        n_hidden, has_inf = _scatter_layer(ax, colour, corr, prec, top_c[layer], top_p[layer])
        hidden, any_inf = hidden + n_hidden, any_inf or has_inf
        layer_handles.append(Line2D([], [], ls="", marker="o", ms=6, color=colour, label=layer))
    if any_inf:
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 3)  # headroom in log scale: the ∞ row must not sit on finite points
        ax.text(-0.015, 1.0, "∞", transform=ax.transAxes, ha="right", va="center", fontsize=_FS["label"])
    ax.set_xlabel("correlation  |r| with the output", fontsize=_FS["label"])
    ax.set_ylabel("precision  1 / variance  (log)", fontsize=_FS["label"])
    # plain numbers (0.5, 2, 300) read better than 5x10^-1 when the range spans under a decade
    ax.yaxis.set_major_formatter(_PlainLogFormatter())
    ax.yaxis.set_minor_formatter(_PlainLogFormatter(minor_thresholds=(1.2, 0.5)))
    ax.tick_params(labelsize=_FS["cell"])
    ax.tick_params(which="minor", labelsize=_FS["cell"] - 1)
    ax.grid(True, which="major", lw=0.4, color="0.85", zorder=0)
    any_both = any(set(top_c[layer]) & set(top_p[layer]) for layer in scores.layers)
    excluded = getattr(scores, "excluded", {})
    left_out = sum(int(excluded[layer].sum()) for layer in scores.layers if layer in excluded)
    _scatter_legend(ax, layer_handles, any_both, any_inf, hidden, left_out)
    ax.set_title("every channel", fontsize=_FS["head"])


# ---------------------------------------------------------------------------------------------
# the figure


def check_score_figure(scores: NeuronScores, k: object, path: str | Path | None) -> Path | None:
    """Check what the comparison figure is asked for, before any work; returns the checked path.

    Parameters
    ----------
    scores : NeuronScores
        Per-channel scores.
    k : int
        Neurons per layer and metric.
    path : str or pathlib.Path, optional
        Where the figure is to be saved.

    Returns
    -------
    pathlib.Path or None

    Raises
    ------
    NeuronvizError
        Per-unit scores, ``k`` not a positive integer, or an unsupported file suffix.
    """
    if scores.per_unit:
        raise NeuronvizError(
            "render_scores draws per-channel scores, but these were computed with per_unit=True; "
            "score again with score_neurons(..., per_unit=False)"
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise NeuronvizError(f"k must be a positive integer, got {k!r}")
    return check_path(path)


def render_score_maps(
    scores: NeuronScores,
    maps: dict[str, torch.Tensor],
    image: np.ndarray,
    *,
    n_classes: int | None = None,
    k: int = 3,
    path: str | Path | None = None,
    dpi: int = 150,
    title: str | None = None,
) -> Figure:
    """Draw the input-resampling paper's comparison of neurons chosen by correlation and by precision.

    Drawn from data only (``nv.render_scores(scores, model, x)`` computes the maps with one
    forward pass and calls this). Left, the image; in the middle, one row per scored layer
    with its top-``k`` neurons by correlation and its top-``k`` by precision, each drawn as its
    activation map over the image, with a red frame on the neurons both metrics select;
    right, every channel's correlation against its precision (log scale, ``+inf`` at the top
    edge, NaN left out). A line below gives the target class and the overlap of the two
    selections (the paper's measure, at most 0.5).

    Parameters
    ----------
    scores : NeuronScores
        Per-channel scores from :func:`neuronviz.score_neurons` (``per_unit=False``).
    maps : dict of str to torch.Tensor
        Per scored layer, the (C, h, w) activation maps of the unperturbed image (a (C, 1, 1)
        map for a layer without positions).
    image : numpy.ndarray
        (H, W, 3) float image in [0, 1] to draw on.
    n_classes : int, optional
        The model's number of classes (1000 names the ImageNet class in the caption).
    k : int
        Neurons per layer and metric (fewer are drawn where a layer has fewer valid scores).
    path : str or pathlib.Path, optional
        Also save the figure there; the suffix (``.png``, ``.svg`` or ``.pdf``) sets the format.
    dpi : int
        Resolution of a saved PNG (and of the images embedded in SVG and PDF).
    title : str, optional
        Heading of the figure; a default names the method and ``k``.

    Returns
    -------
    matplotlib.figure.Figure
        A figure not registered with ``pyplot``; display it in Jupyter or save it again.

    Raises
    ------
    NeuronvizError
        Per-unit scores, ``k < 1``, an unsupported file suffix, a malformed ``image``, or maps
        missing a layer or whose channel counts do not match the scores (another model or layer).
    """
    path = check_score_figure(scores, k, path)
    missing = [layer for layer in scores.layers if layer not in maps]
    if missing:
        raise NeuronvizError(f"no maps of the scored layer(s) {missing}: give the maps of every layer in scores.layers")
    _check_maps_match(maps, scores)
    img = check_display_image(image)
    top_c, top_p = scores.top("correlation", k), scores.top("precision", k)
    both = {layer: set(top_c[layer]) & set(top_p[layer]) for layer in scores.layers}
    ov = overlap(top_c, top_p)

    n_rows = len(scores.layers)
    cell = 1.4
    grid_w, height = k * cell + 0.5, max(3.8, n_rows * (cell + 0.45) + 1.3)
    widths = [2.6, grid_w, grid_w, 5.6]
    fig = StaticFigure(figsize=(sum(widths), height), dpi=dpi, layout="constrained")
    sf_img, sf_corr, sf_prec, sf_sc = fig.subfigures(1, 4, width_ratios=widths, wspace=0.01)  # type: ignore[misc]

    _draw_image(sf_img, img)
    _draw_metric_grid(sf_corr, scores, "correlation", top_c, both, maps, img, k)
    _draw_metric_grid(sf_prec, scores, "precision", top_p, both, maps, img, k)
    _draw_scatter(sf_sc, scores, top_c, top_p)

    neurons = "neuron" if k == 1 else "neurons"
    fig.suptitle(title or f"Input resampling: top {k} {neurons} by correlation and by precision", fontsize=_FS["title"])
    fig.supxlabel(_caption(scores, n_classes, k, ov, sum(len(b) for b in both.values())), fontsize=_FS["label"])
    save(fig, path, dpi)
    return fig
