"""Activation maps of a clean forward pass, and their upsampling to the image."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.capture import ActivationCapture, resolve_layers
from ..core.errors import NeuronvizError
from ..core.model_state import model_device, preserved_state
from ..core.validation import check_batch, check_image, forward_checked

__all__ = ["activation_maps", "batch_maps", "upsample_map", "forward_maps"]


def forward_maps(
    model: nn.Module, x: torch.Tensor, layers: str | Sequence[str]
) -> tuple[dict[str, torch.Tensor], object]:
    """One clean forward pass: ``({layer: (C, H, W) CPU map}, model output)``."""
    acts, out = _record(model, check_image(x, model), layers)
    return {name: _as_chw(a[0]) for name, a in acts.items()}, out


def batch_maps(model: nn.Module, images: torch.Tensor, layer: str) -> tuple[torch.Tensor, object]:
    """One forward pass of a few images: their (n, C, H, W) maps of ``layer`` on the CPU, and the output.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    images : torch.Tensor
        (n, C, H, W) images as the model takes them.
    layer : str
        The layer.

    Returns
    -------
    maps : torch.Tensor
        (n, C, H, W) float32; a (n, F) layer gives (n, F, 1, 1).
    output : object
        What the model returned.
    """
    acts, out = _record(model, check_batch(images, model, what="images"), [layer])
    a = next(iter(acts.values()))
    return torch.stack([_as_chw(one) for one in a]), out


def _record(model: nn.Module, x: torch.Tensor, layers: str | Sequence[str]) -> tuple[dict[str, torch.Tensor], object]:
    names = list(resolve_layers(model, layers))
    # channels first whatever the layer's layout, as the scores index them (Swin stages, ViT tokens)
    with preserved_state(model), torch.no_grad(), ActivationCapture(model, names, layout="auto") as rec:
        model.eval()
        out = forward_checked(model, x.to(model_device(model)))
        acts = rec.outputs()
    return {name: acts[name].float().cpu() for name in names}, out


def _as_chw(a: torch.Tensor) -> torch.Tensor:
    """One sample's activation as (C, H, W): (F,) -> (F, 1, 1), (C, L) -> (C, 1, L)."""
    if a.dim() == 1:
        return a.reshape(-1, 1, 1)
    if a.dim() == 2:
        return a.unsqueeze(1)
    return a.reshape(a.shape[0], -1, a.shape[-1])  # (C, D, H, W): depth stacked into rows


def activation_maps(model: nn.Module, x: torch.Tensor, layers: str | Sequence[str]) -> dict[str, torch.Tensor]:
    """The activation maps of ``layers`` on the unperturbed image.

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
    return forward_maps(model, x, layers)[0]


def upsample_map(a: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly upsample one activation map to the image size, scaled to [0, 1].

    Parameters
    ----------
    a : torch.Tensor
        (H, W) map of one channel.
    size : tuple of int
        ``(height, width)`` of the image.

    Returns
    -------
    numpy.ndarray
        float32 ``size`` array, min-max normalised to [0, 1]; all zeros for a constant map.

    Raises
    ------
    ValueError
        ``a`` is not 2-D, or ``size`` is not two positive integers.
    """
    a = torch.as_tensor(a)
    if a.dim() != 2:
        raise NeuronvizError(f"upsample_map expects one (H, W) map, got shape {tuple(a.shape)}")
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise NeuronvizError(f"size must be (height, width) with positive sides, got {size!r}")
    a = torch.nan_to_num(a.detach().to("cpu", torch.float32))
    up = F.interpolate(a[None, None], size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)[0, 0]
    lo, hi = float(up.min()), float(up.max())
    if not hi > lo:  # constant: nothing to highlight
        return np.zeros((int(size[0]), int(size[1])), dtype=np.float32)
    return ((up - lo) / (hi - lo)).clamp_(0.0, 1.0).numpy()
