"""Figures of results in one call: what a figure needs from the model is computed here, then drawn from data.

The renderers in :mod:`neuronviz.render` never run a model; this module runs the one forward
pass a figure needs (the activation maps of the unperturbed image) and hands the data to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from .core.capture import ActivationCapture, resolve_layers
from .core.errors import NeuronvizError
from .core.locks import hold_model, runs_model
from .core.model_state import model_device, preserved_state
from .core.validation import check_batch, check_image, forward_checked
from .methods.pcace import PCACEScores, shown_maps
from .methods.resampling import NeuronScores
from .render.figure import check_path
from .render.pcace import display_images, render_layer_ranking, render_pcace_maps
from .render.resampling import check_score_figure, render_score_maps

__all__ = ["activation_maps", "clean_maps", "render_scores", "render_pcace", "render_layer_ranking"]


def clean_maps(
    model: nn.Module, x: torch.Tensor, layers: str | Sequence[str]
) -> tuple[dict[str, torch.Tensor], object]:
    """The activation maps of ``layers`` on the unperturbed image, from one forward pass.

    Eval mode under ``torch.no_grad()``; the model's modes, flags and hooks are as before afterwards.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    x : torch.Tensor
        The image, (1, C, H, W) or (C, H, W), normalised as the model expects.
    layers : str or sequence of str
        Layer names.

    Returns
    -------
    maps : dict of str to torch.Tensor
        Per layer, a (C, h, w) float32 CPU tensor; a (N, F) layer gives (F, 1, 1).
    output : object
        What the model returned.

    Raises
    ------
    NeuronvizError
        Bad image, unknown layer (closest names suggested) or input the model refuses.
    """
    x = check_image(x, model)
    names = list(resolve_layers(model, layers))
    with preserved_state(model), torch.no_grad(), ActivationCapture(model, names) as rec:
        model.eval()
        output = forward_checked(model, x.to(model_device(model)))
        acts = rec.outputs()
    maps = {}
    for name in names:
        a = acts[name][0].float().cpu()
        maps[name] = a.reshape(a.shape[0], -1, a.shape[-1]) if a.dim() > 1 else a.reshape(-1, 1, 1)
    return maps, output


def activation_maps(model: nn.Module, x: torch.Tensor, layers: str | Sequence[str]) -> dict[str, torch.Tensor]:
    """The activation maps of ``layers`` on the unperturbed image (:func:`clean_maps` without the output).

    One forward pass in eval mode under ``torch.no_grad()``; the model's modes and gradient
    flags are restored and every hook removed afterwards.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    x : torch.Tensor
        The image, (1, C, H, W) or (C, H, W), normalised as the model expects.
    layers : str or sequence of str
        Layer names (see :func:`neuronviz.layer_summary`).

    Returns
    -------
    dict of str to torch.Tensor
        Per layer, a (C, H, W) float CPU tensor; a (N, F) layer gives (F, 1, 1).

    Raises
    ------
    NeuronvizError
        Unknown layer (closest names suggested), bad image, or a layer that did not run.
    """
    return clean_maps(model, x, layers)[0]


@runs_model
def render_scores(
    scores: NeuronScores,
    model: nn.Module,
    x: torch.Tensor,
    *,
    k: int = 3,
    image: np.ndarray | None = None,
    path: str | Path | None = None,
    dpi: int = 150,
    title: str | None = None,
) -> Figure:
    """Draw the input-resampling paper's comparison of neurons chosen by correlation and by precision.

    One forward pass of ``x`` gives the activation maps; the figure is then drawn from data by
    :func:`neuronviz.render.resampling.render_score_maps` (see there for what it shows).

    Parameters
    ----------
    scores : NeuronScores
        Per-channel scores from :func:`neuronviz.score_neurons` (``per_unit=False``).
    model : torch.nn.Module
        The scored network.
    x : torch.Tensor
        The scored image, (1, C, H, W) or (C, H, W), normalised as the model expects.
    k : int
        Neurons per layer and metric (fewer are drawn where a layer has fewer valid scores).
    image : numpy.ndarray, optional
        (H, W, 3) float image in [0, 1] to draw on; default ``neuronviz.data.deprocess(x)``.
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
        Per-unit scores, ``k < 1``, an unsupported file suffix (all before the forward pass),
        a malformed ``image``, maps whose channel counts do not match the scores (another model
        or layer), bad ``x`` or a layer the model does not have.
    """
    check_score_figure(scores, k, path)  # a bad request fails before the forward pass
    with hold_model(model):  # views running this model in the background take turns with it
        maps, output = clean_maps(model, x, scores.layers)
    n_classes = output.shape[-1] if isinstance(output, torch.Tensor) and output.dim() == 2 else None
    if image is None:
        from .data import deprocess

        image = deprocess(x)
    return render_score_maps(scores, maps, image, n_classes=n_classes, k=k, path=path, dpi=dpi, title=title)


@runs_model
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

    One forward pass of the first ``n_images`` images gives the maps
    (:func:`neuronviz.methods.pcace.shown_maps`); the figure is then drawn from data by
    :func:`neuronviz.render.pcace.render_pcace_maps`: left, every channel's score in rank order
    with the top and bottom channels marked; right, one row per image: the image, then the maps
    of the top channels (green titles) and of the bottom channels (grey titles) over it.
    (:func:`neuronviz.render_layer_ranking` needs no model: it draws the ranking alone.)

    Parameters
    ----------
    result : PCACEScores
        From :func:`neuronviz.pcace`.
    model : torch.nn.Module
        The ranked network.
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
    NeuronvizError
        ``k`` or ``n_images`` below 1, an unsupported suffix (both before the forward pass), bad
        images, or a layer whose channel count on ``model`` does not match the scores.
    """
    if not isinstance(result, PCACEScores):
        raise NeuronvizError(f"result must be the PCACEScores of nv.pcace, got {type(result).__name__}")
    for name, value in (("k", k), ("n_images", n_images)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NeuronvizError(f"{name} must be an integer >= 1, got {value!r}")
    path = check_path(path)
    shown = check_batch(images, model, what="images")[:n_images]
    maps, output = shown_maps(model, shown, [result.layer])
    n_classes = output.shape[-1] if isinstance(output, torch.Tensor) and output.dim() == 2 else None
    return render_pcace_maps(result, maps[result.layer], display_images(shown.detach().cpu()), k=k,
                             n_classes=n_classes, path=path, dpi=dpi)
