"""PCACE figures: a layer's channel scores with its top and bottom channels' maps, and layers ranked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..methods.pcace import LayerRanking, PCACEScores
from .figure import FONT_SIZES, StaticFigure, check_path, class_label, save
from .maps import batch_maps, upsample_map

__all__ = ["render_pcace", "render_layer_ranking", "display_images"]

_TOP, _BOTTOM = "#2ca02c", "#7f7f7f"


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


def render_pcace(
    result: PCACEScores,
    model: nn.Module,
    images: torch.Tensor,
    *,
    k: int = 3,
    n_images: int = 3,
    path: str | Path | None = None,
    dpi: int = 150,
) -> Figure:
    """Draw a layer's PCACE scores and the maps of its top-``k`` and bottom-``k`` channels.

    Left, every channel's score in rank order with the top and bottom channels marked;
    right, one row per image (the first ``n_images``): the image, then the activation maps
    of the top channels (green titles) and of the bottom channels (grey titles) over it.

    Parameters
    ----------
    result : PCACEScores
        From :func:`neuronviz.pcace`.
    model : torch.nn.Module
        The ranked network (one forward pass of the shown images gives the maps).
    images : torch.Tensor
        (N, C, H, W) images as the model takes them; the first ``n_images`` are drawn.
    k : int
        Top and bottom channels shown.
    n_images : int
        Rows of images.
    path : str or pathlib.Path, optional
        Also save the figure there (``.png``, ``.svg`` or ``.pdf``).
    dpi : int
        Resolution of a saved PNG.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        ``k`` or ``n_images`` below 1, an unsupported suffix, or maps whose channel count
        does not match the scores.
    """
    if k < 1 or n_images < 1:
        raise ValueError(f"k and n_images must be >= 1, got {k}, {n_images}")
    path = check_path(path)
    shown = images[:n_images]
    maps, output = batch_maps(model, shown, result.layer)
    n_classes = output.shape[-1] if isinstance(output, torch.Tensor) and output.dim() == 2 else None
    if maps.shape[1] != result.scores.numel():
        raise ValueError(
            f"layer {result.layer!r} has {maps.shape[1]} channels on this model but the scores have "
            f"{result.scores.numel()}: render with the model that was ranked"
        )
    pictures = display_images(shown)
    k = min(k, result.scores.numel())
    top, bottom = result.top(k), result.bottom(k)

    cols = 1 + 2 * k
    fig = StaticFigure(figsize=(4.2 + 1.35 * cols, max(3.2, 1.35 * len(shown) + 0.9)), dpi=dpi, layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[4.2, 1.35 * cols], wspace=0.02)

    ax = left.subplots()
    ranked = result.scores[result.ranking].numpy()
    ax.plot(np.arange(len(ranked)), ranked, color="0.3", lw=1.2)
    ax.scatter(np.arange(k), ranked[:k], color=_TOP, zorder=3, label=f"top {k}")
    ax.scatter(np.arange(len(ranked) - k, len(ranked)), ranked[-k:], color=_BOTTOM, zorder=3, label=f"bottom {k}")
    ax.set_xlabel("channels, by rank", fontsize=FONT_SIZES["label"])
    ax.set_ylabel("PCACE score (maximal correlation)", fontsize=FONT_SIZES["label"])
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=FONT_SIZES["cell"])
    ax.set_title(f"{result.layer}: {result.scores.numel()} channels", fontsize=FONT_SIZES["head"])

    axes = np.atleast_2d(right.subplots(len(shown), cols))
    for row, (picture, amaps) in enumerate(zip(pictures, maps)):
        axes[row, 0].imshow(picture, interpolation="nearest")
        for col, (channel, colour) in enumerate([(c, _TOP) for c in top] + [(c, _BOTTOM) for c in bottom], start=1):
            a = axes[row, col]
            a.imshow(picture, interpolation="nearest")
            a.imshow(upsample_map(amaps[channel], picture.shape[:2]), cmap="jet", alpha=0.55, vmin=0, vmax=1)
            if row == 0:
                a.set_title(f"ch {channel}\n{result.scores[channel]:.2f}", color=colour, fontsize=FONT_SIZES["cell"])
        if row == 0:
            axes[row, 0].set_title("image", fontsize=FONT_SIZES["cell"])
    for a in axes.flat:
        a.set_xticks([])
        a.set_yticks([])

    target = f"the logit of {class_label(result.target, n_classes)}" if result.target is not None else "a callable target"
    fig.suptitle(
        f"PCACE of {result.layer} for {target}, {result.n_images} images, "
        f"{result.n_components} component(s)",
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
    path = check_path(path)
    names = list(ranking.layers)
    fig = StaticFigure(figsize=(max(4.0, 1.1 * len(names) + 2), 3.6), dpi=dpi, layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    summary = {r["layer"]: r for r in ranking.summary}
    for i, name in enumerate(names):
        s = ranking.layers[name].scores.numpy()
        ax.scatter(i + rng.uniform(-0.2, 0.2, len(s)), s, s=6, alpha=0.5, color="0.4")
        ax.scatter([i], [summary[name]["mean_top_k"]], marker="_", s=600, color=_TOP, lw=3, zorder=3)
    ax.scatter([], [], marker="_", s=200, color=_TOP, lw=3, label=f"mean of the top {ranking.k}")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=FONT_SIZES["cell"])
    ax.set_ylabel("PCACE score", fontsize=FONT_SIZES["label"])
    ax.set_ylim(0, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=FONT_SIZES["cell"], loc="lower right")
    ax.set_title("Which layers carry the class", fontsize=FONT_SIZES["head"])
    save(fig, path, dpi)
    return fig
