"""Activation maps upsampled to the image they were computed on (from data: nothing here runs a model).

The maps themselves come from the computation that produced a result (``score_neurons(...,
keep_maps=...)``, :func:`neuronviz.methods.pcace.shown_maps`, :func:`neuronviz.figures.clean_maps`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import NeuronvizError

__all__ = ["upsample_map"]


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
