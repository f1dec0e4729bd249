"""Faithfulness figures: deletion or insertion curves of rankings against random ones, drawn from the result alone.

Importing this module registers :func:`render_faithfulness` as the renderer of
:meth:`neuronviz.methods.faithfulness.FaithfulnessCurves.plot` (methods never import render).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..core.errors import NeuronvizError
from ..methods.faithfulness import FaithfulnessCurves, register_plotter
from .figure import FONT_SIZES, StaticFigure, check_path, class_label, save

__all__ = ["render_faithfulness", "draw_curves", "curves_label", "RANKING_COLOURS", "RANDOM_COLOUR"]

#: Colours of the rankings, the same in every figure; others take the tab10 cycle.
RANKING_COLOURS = {
    "correlation": "#1f77b4", "precision": "#ff7f0e", "pcace": "#2ca02c", "mask": "#d62728",
    "weight_sum": "#9467bd", "weight_variance": "#8c564b", "activation_sum": "#e377c2",
    "activation_variance": "#bcbd22",
}
RANDOM_COLOUR = "#7f7f7f"
_CYCLE = ["#17becf", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22"]


def ranking_colour(name: str, i: int) -> str:
    """The colour of ranking ``name`` (the ``i``-th of its panel), the same in the figures and the pages."""
    return RANKING_COLOURS.get(name, _CYCLE[i % len(_CYCLE)])


def curves_label(curves: FaithfulnessCurves, group: str) -> str:
    """The label :func:`draw_curves` gives its axes: ``"faithfulness:<mode>:<group>"`` (to find them in a figure)."""
    return f"faithfulness:{curves.mode}:{group}"


def group_of(curves: FaithfulnessCurves, group: str | None) -> tuple[str | None, list]:
    """``group`` (default the first) and its curves; raises :class:`NeuronvizError` when it has none."""
    group = curves.groups[0] if group is None and curves.groups else group
    shown = [c for c in curves.curves if c.group == group]
    if not shown:
        raise NeuronvizError(f"no curve of group {group!r}; the curves have {curves.groups}")
    return group, shown


def x_words(curves: FaithfulnessCurves) -> tuple[str, str]:
    """What the x axis counts and what happens to it: ``("neurons", "knocked out")``, ``("pixels", "removed")``..."""
    unit = "pixels" if curves.unit == "pixels" else "neurons"
    verb = {"deletion": "removed" if unit == "pixels" else "knocked out",
            "insertion": "inserted" if unit == "pixels" else "kept"}[curves.mode]
    return unit, verb


def draw_curves(ax: Axes, curves: FaithfulnessCurves, group: str | None = None, *, relative: bool = True,
                title: str | None = None, legend: bool = True) -> Axes:
    """Draw one group's curves on ``ax``: every ranking, random as its mean and 5-95 % band, AUCs in the legend.

    The figures of the views (explorer, PCACE, inversion) draw their curves with this, as
    :func:`render_faithfulness` does for each group.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw; labelled :func:`curves_label`.
    curves : FaithfulnessCurves
        From :func:`neuronviz.deletion_curve` or :func:`neuronviz.mask_deletion_curve`.
    group : str, optional
        The layer (or :data:`~neuronviz.methods.faithfulness.ALL_LAYERS`, ``PIXELS``); default the first.
    relative : bool
        Draw ``o / o(x)`` rather than the raw output.
    title : str, optional
        The axes' title (default the group).
    legend : bool
        Draw the legend.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    NeuronvizError
        No such group.
    """
    group, shown = group_of(curves, group)
    scale = curves.original if relative and curves.original else 1.0
    unit, verb = x_words(curves)
    ax.set_label(curves_label(curves, str(group)))
    for i, c in enumerate(shown):
        if c.is_random:
            assert c.aucs is not None  # a random curve keeps its seeds' AUCs
            lo, hi = c.band()
            a_lo, a_hi = c.auc_band()
            ax.fill_between(c.fraction, lo / scale, hi / scale, color=RANDOM_COLOUR, alpha=0.25, lw=0)
            ax.plot(c.fraction, c.values / scale, color=RANDOM_COLOUR, ls="--", lw=1.5,
                    label=f"random x{len(c.aucs)} (AUC {c.auc:.2f}, {a_lo:.2f}-{a_hi:.2f})")
        else:
            ax.plot(c.fraction, c.values / scale, color=ranking_colour(c.ranking, i), marker="o", ms=3, lw=1.8,
                    label=f"{c.ranking} (AUC {c.auc:.2f})")
    total = shown[0].total
    what = f"{total} steps" if unit == "pixels" else f"k / {total}"
    ax.set_xlabel(f"share of {unit} {verb} ({what})", fontsize=FONT_SIZES["label"])
    ax.set_ylabel("output / o(x)" if relative and curves.original else "output", fontsize=FONT_SIZES["label"])
    ax.set_title(title if title is not None else str(group), fontsize=FONT_SIZES["head"])
    ax.tick_params(labelsize=FONT_SIZES["cell"])
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=FONT_SIZES["cell"] - 1, loc="best", frameon=False)
    return ax


def render_faithfulness(
    curves: FaithfulnessCurves,
    *,
    relative: bool = True,
    columns: int = 3,
    title: str | None = None,
    n_classes: int | None = None,
    path: str | Path | None = None,
    dpi: int = 150,
) -> Figure:
    """Draw each group's curves (one panel per layer, "all layers" or "pixels"), random as a mean and a band.

    Parameters
    ----------
    curves : FaithfulnessCurves
        From :func:`neuronviz.deletion_curve` or :func:`neuronviz.mask_deletion_curve`.
    relative : bool
        Draw ``o / o(x)`` (the scale the AUCs are on) rather than the raw output.
    columns : int
        Panels per row at most.
    title : str, optional
        The figure's title (default: mode, target and output).
    n_classes : int, optional
        The model's number of classes, to name ImageNet classes in the title.
    path : str or pathlib.Path, optional
        Also save the figure there (``.png``, ``.svg`` or ``.pdf``).
    dpi : int
        Resolution.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    NeuronvizError
        No curves, bad ``columns``, an unsupported suffix.
    """
    path = check_path(path)
    if not isinstance(curves, FaithfulnessCurves) or not curves.curves:
        raise NeuronvizError("render_faithfulness needs the FaithfulnessCurves of nv.deletion_curve with curves")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise NeuronvizError(f"columns must be a positive integer, got {columns!r}")
    groups = curves.groups
    ncol = min(columns, len(groups))
    nrow = math.ceil(len(groups) / ncol)
    fig = StaticFigure(figsize=(4.2 * ncol, 3.3 * nrow + 0.5), dpi=dpi, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).reshape(-1)
    unit = "pixels" if curves.unit == "pixels" else "neurons"
    for ax, group in zip(axes, groups):
        draw_curves(ax, curves, group, relative=relative)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    head = title or (f"{curves.mode} curves of {class_label(curves.target, n_classes)} ({curves.output}, "
                     f"{'knock-out: ' + str(curves.how) if unit == 'neurons' else 'background: ' + str(curves.how)}, "
                     f"on {curves.on})")
    fig.suptitle(head, fontsize=FONT_SIZES["title"])
    save(fig, path, dpi)
    return fig


register_plotter(render_faithfulness)
