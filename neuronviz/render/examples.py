"""Data-set example figures: each neuron's top crops in a row, drawn from a TopExamples result and the data set.

Nothing here runs a model: the crops are cut from the data set with the receptive fields the
result holds; an activation map over a crop is drawn when the crop carries one
(``TopExamples.crops(..., model=model)``, passed as ``crops=``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..core.errors import NeuronvizError
from ..methods.examples import Crop, TopExamples
from .explorer import blend_overlay
from .figure import FONT_SIZES, StaticFigure, check_path, save
from .pcace import display_images

__all__ = ["render_examples", "crop_picture"]


def crop_picture(crop: Crop, *, opacity: float = 0.5) -> np.ndarray:
    """The (h, w, 3) float picture of a crop in [0, 1], its activation map blended over it when it has one.

    Parameters
    ----------
    crop : Crop
        From :meth:`neuronviz.TopExamples.crops`.
    opacity : float
        Of the activation map, in [0, 1].

    Returns
    -------
    numpy.ndarray
    """
    pixels = crop.pixels if crop.pixels.dim() == 3 else crop.pixels.unsqueeze(0)
    if 0 in pixels.shape:
        return np.zeros((1, 1, 3), dtype=np.float32)
    img = display_images(pixels.unsqueeze(0).float())[0]
    if crop.heat is None:
        return img
    heat = crop.heat.float().numpy()
    span = float(heat.max() - heat.min())
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    return blend_overlay(img, heat, opacity)


def render_examples(
    ex: TopExamples,
    dataset: Any,
    neurons: Sequence[tuple[str, int]],
    *,
    crops: Mapping[tuple[str, int], Sequence[Crop]] | None = None,
    names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
    dpi: int = 150,
) -> Figure:
    """Draw each neuron's data-set examples: one row of receptive-field crops, best first, with value and label.

    Parameters
    ----------
    ex : TopExamples
        From :func:`neuronviz.top_examples`.
    dataset : torch.Tensor or torch.utils.data.Dataset
        The images the examples were found in (``dataset[i]`` is image i).
    neurons : sequence of (layer, channel)
        The rows.
    crops : mapping, optional
        ``{(layer, channel): crops}`` already cut (e.g. with activation maps, from
        ``ex.crops(dataset, layer, channel, model=model)``); the others are cut here.
    names : sequence of str, optional
        Label classes by name (``names[label]``) rather than by number.
    title : str, optional
    path : str or pathlib.Path, optional
        Also save the figure there (.png, .svg or .pdf).
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    NeuronvizError
        No neurons, an unknown layer or channel, a bad path.
    """
    out = check_path(path)
    neurons = [(str(layer), int(channel)) for layer, channel in neurons]
    if not neurons:
        raise NeuronvizError("neurons is empty: name at least one (layer, channel) pair")
    rows = {n: list((crops or {}).get(n) or ex.crops(dataset, n[0], n[1])) for n in neurons}
    cols = max(1, max(len(r) for r in rows.values()))
    gen = {}
    for layer in {n[0] for n in neurons}:
        try:
            gen[layer] = ex.generality(layer)
        except NeuronvizError:  # found with generality=False
            pass
    fig = StaticFigure(figsize=(1.25 * cols + 1.6, 1.45 * len(neurons) + (0.5 if title else 0.1)), dpi=dpi,
                       layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(neurons), cols, squeeze=False))
    for r, (layer, channel) in enumerate(neurons):
        share = ""
        if layer in gen:
            share = f"\nfires on {float(gen[layer].share[channel]):.0%}"
        axes[r, 0].set_ylabel(f"{layer}\n#{channel}{share}", fontsize=FONT_SIZES["cell"], rotation=0,
                              ha="right", va="center")
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(rows[(layer, channel)]):
                ax.set_axis_off()
                continue
            crop = rows[(layer, channel)][c]
            ax.imshow(crop_picture(crop), interpolation="nearest")
            label = "" if crop.label is None else f" · {names[crop.label] if names else crop.label}"
            ax.set_title(f"{crop.value:.3g}{label}\nimage {crop.image}", fontsize=FONT_SIZES["cell"] - 1)
    if title:
        fig.suptitle(title, fontsize=FONT_SIZES["title"])
    save(fig, out, dpi)
    return fig
