"""Guided feature inversion figures: each image with its stage-1 and stage-2 masks, drawn from the result alone."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from ..core.errors import NeuronvizError, NeuronvizTypeError
from ..methods.faithfulness import FaithfulnessCurves
from ..methods.inversion import InversionResult
from .faithfulness import draw_curves
from .figure import FONT_SIZES, StaticFigure, check_display_image, check_path, class_label, save

__all__ = ["render_inversion"]


def render_inversion(
    result: InversionResult,
    x: torch.Tensor | None = None,
    *,
    pictures: Sequence[np.ndarray] | None = None,
    categories: list[str] | None = None,
    curves: FaithfulnessCurves | Sequence[FaithfulnessCurves] | None = None,
    path: str | Path | None = None,
    dpi: int = 150,
) -> Figure:
    """Draw each explained image with its class-agnostic (stage 1) and class-discriminative (stage 2) mask.

    With ``curves``, the mask's deletion and insertion curves (:func:`neuronviz.mask_deletion_curve`)
    in a row below. The figure is drawn from the result and the images only: nothing here
    runs a model.

    Parameters
    ----------
    result : InversionResult
        From :func:`neuronviz.guided_feature_inversion`.
    x : torch.Tensor, optional
        The explained images, (B, 3, H, W) normalised as for the default model, or (1, 3, H, W)
        when several targets explained one image; un-normalised with :func:`neuronviz.deprocess`.
    pictures : sequence of numpy.ndarray, optional
        Instead of ``x``: the pictures to draw, (H, W, 3) floats in [0, 1] (or (H, W) grey), one
        per mask or one for all (for models normalised otherwise, as a view draws them).
    categories : list of str, optional
        Class names for the titles (default: ImageNet names for 1000-class targets).
    curves : FaithfulnessCurves or sequence of them, optional
        Curves of the mask's pixels (e.g. deletion and insertion), one panel each.
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
        Neither or both of ``x`` and ``pictures``, images and masks of different counts or sizes,
        or an unsupported suffix.
    """
    if not isinstance(result, InversionResult):
        raise NeuronvizTypeError(
            f"result must be what nv.guided_feature_inversion returns (an InversionResult), got {type(result).__name__}"
        )
    path = check_path(path)
    masks, stage1 = result.mask, result.inversion_mask
    images = _images(x, pictures)
    if len(images) == 1 and masks.shape[0] > 1:
        images = images * masks.shape[0]
    sizes = {tuple(img.shape[:2]) for img in images}
    if len(images) != masks.shape[0] or sizes != {tuple(masks.shape[-2:])}:
        raise NeuronvizError(
            f"{len(images)} image(s) of {sorted(sizes)} do not match {masks.shape[0]} mask(s) of "
            f"{tuple(masks.shape[-2:])}: pass the images that were explained"
        )
    several = [] if curves is None else [curves] if isinstance(curves, FaithfulnessCurves) else list(curves)
    rows = masks.shape[0]
    aspect = masks.shape[-2] / masks.shape[-1]  # panels keep the images' shape
    height = rows * (2.5 * aspect + 0.45) + 0.4
    fig = StaticFigure(figsize=(7.5, height + (3.0 if several else 0.0)), dpi=dpi, layout="constrained")
    if several:
        top, bottom = fig.subfigures(2, 1, height_ratios=[height, 3.0])  # type: ignore[misc]
        axes = np.atleast_2d(top.subplots(rows, 3))
        for ax, one in zip(np.atleast_1d(bottom.subplots(1, len(several))), several):
            draw_curves(ax, one, title=f"{one.mode} of the stage-2 mask")
    else:
        axes = np.atleast_2d(fig.subplots(rows, 3))
    for b in range(rows):
        img = images[b]
        c = result.target[b]
        name = categories[c] if categories is not None and c is not None else class_label(c, 1000)
        panels = [
            (None, f"{name}\np = {float(result.probability[b]):.2f}"),
            (stage1[b], "stage 1: all salient objects"),
            (masks[b], f"stage 2: {name}"),
        ]
        for ax, (mask, title) in zip(axes[b], panels):
            ax.imshow(img)
            if mask is not None:
                ax.imshow(mask.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.set_title(title, fontsize=FONT_SIZES["cell"])
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        f"Guided feature inversion (mask layer {result.mask_layer}, feature layer {result.feature_layer})",
        fontsize=FONT_SIZES["head"],
    )
    save(fig, path, dpi)
    return fig


def _images(x: torch.Tensor | None, pictures: Sequence[np.ndarray] | None) -> list[np.ndarray]:
    """The (H, W, 3) pictures to draw, from the normalised images or as given."""
    if pictures is not None and x is None:
        return [check_display_image(p) for p in pictures]
    if x is not None and pictures is None:
        from ..data import deprocess

        return [check_display_image(deprocess(img)) for img in x]
    raise NeuronvizError("pass the explained images as x= (normalised tensors) or as pictures=, one of the two")
