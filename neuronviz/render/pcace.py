"""PCACE figures, drawn from data: a layer's channel scores with its top and bottom channels' maps, and layers ranked.

Nothing here runs a model: the maps come with the call (:func:`neuronviz.methods.pcace.shown_maps`
computes them, once; :func:`neuronviz.render_pcace` does both for a script).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ..core.errors import NeuronvizError, NeuronvizTypeError
from ..methods.faithfulness import FaithfulnessCurves
from ..methods.pcace import LayerRanking, PCACEScores
from .faithfulness import draw_curves
from .figure import FONT_SIZES, StaticFigure, check_path, class_label, save
from .formatting import format_score
from .maps import upsample_map

__all__ = ["render_pcace_maps", "render_layer_ranking", "display_images", "TOP_COLOUR", "BOTTOM_COLOUR"]

#: Colours of the top and of the bottom channels, in the figures and in the view's bars.
TOP_COLOUR, BOTTOM_COLOUR = "#2ca02c", "#7f7f7f"


def display_images(images: torch.Tensor) -> np.ndarray:
    """Images as (n, H, W, 3) floats in [0, 1] for drawing.

    Three-channel images are taken to be normalised as the default model expects
    (:func:`neuronviz.data.deprocess`); other channel counts are shown in grey, min-max scaled
    per image.

    Parameters
    ----------
    images : torch.Tensor
        (n, C, H, W).

    Returns
    -------
    numpy.ndarray
    """
    if images.shape[1] == 3:
        from ..data import deprocess

        return np.stack([deprocess(img) for img in images])
    grey = images.float().mean(1)
    lo = grey.flatten(1).min(1).values.view(-1, 1, 1)
    hi = grey.flatten(1).max(1).values.view(-1, 1, 1)
    grey = (grey - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return grey.unsqueeze(-1).expand(-1, -1, -1, 3).cpu().numpy()


def render_pcace_maps(
    result: PCACEScores,
    maps: torch.Tensor,
    pictures: np.ndarray,
    *,
    k: int = 3,
    n_classes: int | None = None,
    curves: FaithfulnessCurves | None = None,
    path: str | Path | None = None,
    dpi: int = 150,
) -> Figure:
    """Draw a layer's PCACE scores and the given maps of its top-``k`` and bottom-``k`` channels.

    Left, every channel's score in rank order with the top and bottom channels marked (and,
    with ``curves``, the layer's deletion curve below it); right, one row per picture: the
    picture, then the activation maps of the top channels (green titles) and of the bottom
    channels (grey titles) over it.

    Parameters
    ----------
    result : PCACEScores
        From :func:`neuronviz.pcace`.
    maps : torch.Tensor
        (n, C, h, w) maps of the layer over the ``n`` pictures (e.g. from
        :func:`neuronviz.methods.pcace.shown_maps`).
    pictures : numpy.ndarray
        (n, H, W, 3) floats in [0, 1], the images as drawn (:func:`display_images`).
    k : int
        Top and bottom channels shown.
    n_classes : int, optional
        The model's number of classes (1000 names the ImageNet class in the title).
    curves : FaithfulnessCurves, optional
        The layer's deletion (or insertion) curves, e.g. of the PCACE ranking against random
        ones (:func:`neuronviz.deletion_curve`), drawn under the scores.
    path : str or pathlib.Path, optional
        Also save the figure there (``.png``, ``.svg`` or ``.pdf``).
    dpi : int
        Resolution of a saved PNG.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    NeuronvizError
        ``k`` below 1, no picture, an unsupported suffix, maps whose channel or picture count
        does not match the scores and pictures, or curves without this layer.
    """
    path = check_path(path)
    if k < 1:
        raise NeuronvizError(f"k must be >= 1, got {k}")
    if maps.dim() != 4 or maps.shape[1] != result.scores.numel():
        raise NeuronvizError(
            f"layer {result.layer!r} has maps of shape {tuple(maps.shape)} but the scores have "
            f"{result.scores.numel()} channels: draw with the maps of the model that was ranked"
        )
    if len(pictures) < 1 or len(pictures) != maps.shape[0]:
        raise NeuronvizError(
            f"{maps.shape[0]} maps but {len(pictures)} pictures; give one picture per map (at least one)"
        )
    if curves is not None and result.layer not in curves.groups:
        raise NeuronvizError(f"the curves are of {curves.groups}, not of layer {result.layer!r}: draw this layer's")
    k = min(k, result.scores.numel())
    top, bottom = result.top(k), result.bottom(k)

    cols = 1 + 2 * k
    fig = StaticFigure(figsize=(4.2 + 1.35 * cols, max(3.2 if curves is None else 6.4, 1.35 * len(pictures) + 0.9)),
                       dpi=dpi, layout="constrained")
    left, right = np.asarray(fig.subfigures(1, 2, width_ratios=[4.2, 1.35 * cols], wspace=0.02)).ravel()

    if curves is None:
        ax = left.subplots()
    else:
        ax, below = left.subplots(2, 1)
        draw_curves(below, curves, result.layer, title=f"{curves.mode} curve of {result.layer}")
    ranked = result.scores[result.ranking].numpy()
    ax.plot(np.arange(len(ranked)), ranked, color="0.3", lw=1.2)
    ax.scatter(np.arange(k), ranked[:k], color=TOP_COLOUR, zorder=3, label=f"top {k}")
    ax.scatter(np.arange(len(ranked) - k, len(ranked)), ranked[-k:], color=BOTTOM_COLOUR, zorder=3,
               label=f"bottom {k}")
    ax.set_xlabel("channels, by rank", fontsize=FONT_SIZES["label"])
    ax.set_ylabel("PCACE score (maximal correlation)", fontsize=FONT_SIZES["label"])
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=FONT_SIZES["cell"])
    ax.set_title(f"{result.layer}: {result.scores.numel()} channels", fontsize=FONT_SIZES["head"])

    axes = np.atleast_2d(right.subplots(len(pictures), cols))
    columns = [(c, TOP_COLOUR) for c in top] + [(c, BOTTOM_COLOUR) for c in bottom]
    for row, (picture, amaps) in enumerate(zip(pictures, maps)):
        axes[row, 0].imshow(picture, interpolation="nearest")
        for col, (channel, colour) in enumerate(columns, start=1):
            a = axes[row, col]
            a.imshow(picture, interpolation="nearest")
            a.imshow(upsample_map(amaps[channel], picture.shape[:2]), cmap="jet", alpha=0.55, vmin=0, vmax=1)
            if row == 0:
                a.set_title(f"ch {channel}\n{format_score('correlation', float(result.scores[channel]))}", color=colour,
                            fontsize=FONT_SIZES["cell"])
        if row == 0:
            axes[row, 0].set_title("image", fontsize=FONT_SIZES["cell"])
    for a in axes.flat:
        a.set_xticks([])
        a.set_yticks([])

    target = "a callable target" if result.target is None else f"the logit of {class_label(result.target, n_classes)}"
    fig.suptitle(
        f"PCACE of {result.layer} for {target}, {result.n_images} images, {result.n_components} component(s)",
        fontsize=FONT_SIZES["title"],
    )
    save(fig, path, dpi)
    return fig


def render_layer_ranking(ranking: LayerRanking, *, path: str | Path | None = None, dpi: int = 150) -> Figure:
    """Draw every layer's channel scores side by side, in the order the layers were given.

    Each layer is a column of its channels' scores (jittered points) with its mean top-``k``
    marked; the layer that carries the class most shows the highest marks.

    Parameters
    ----------
    ranking : LayerRanking
        From :func:`neuronviz.rank_layers`.
    path : str or pathlib.Path, optional
        Also save the figure there.
    dpi : int
        Resolution of a saved PNG.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not isinstance(ranking, LayerRanking):
        raise NeuronvizTypeError(
            f"ranking must be what nv.rank_layers returns (a LayerRanking), got {type(ranking).__name__}"
        )
    path = check_path(path)
    names = list(ranking.layers)
    fig = StaticFigure(figsize=(max(4.0, 1.1 * len(names) + 2), 3.6), dpi=dpi, layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    summary = {r["layer"]: r for r in ranking.summary}
    for i, name in enumerate(names):
        s = ranking.layers[name].scores.numpy()
        ax.scatter(i + rng.uniform(-0.2, 0.2, len(s)), s, s=6, alpha=0.5, color="0.4")
        ax.scatter([i], [summary[name]["mean_top_k"]], marker="_", s=600, color=TOP_COLOUR, lw=3, zorder=3)
    ax.scatter([], [], marker="_", s=200, color=TOP_COLOUR, lw=3, label=f"mean of the top {ranking.k}")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=FONT_SIZES["cell"])
    ax.set_ylabel("PCACE score", fontsize=FONT_SIZES["label"])
    ax.set_ylim(0, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=FONT_SIZES["cell"], loc="lower right")
    ax.set_title("Which layers carry the class", fontsize=FONT_SIZES["head"])
    save(fig, path, dpi)
    return fig
