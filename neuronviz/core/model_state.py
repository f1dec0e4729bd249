"""Leave the user's model exactly as it was: modes, gradient flags and device restored on exit."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .validation import check_device

__all__ = ["preserved_state", "model_device", "on_device", "resolve_device"]


@contextmanager
def preserved_state(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every module's ``training`` flag and every parameter's ``requires_grad`` on exit.

    Parameters
    ----------
    model : torch.nn.Module
        The network; inside the block it may be switched to eval mode or frozen freely.

    Yields
    ------
    torch.nn.Module
        The same model.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither).

    Parameters
    ----------
    model : torch.nn.Module
        The network.

    Returns
    -------
    torch.device
    """
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The device to compute on: ``device`` if given, else the model's.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    device : str, torch.device or None
        Requested device; ``None`` keeps the model's.

    Returns
    -------
    torch.device

    Raises
    ------
    NeuronvizError
        ``device`` is not a valid device, is ``meta``, or names CUDA when CUDA is not available
        (see :func:`neuronviz.core.validation.check_device`).
    """
    dev = check_device(device)
    if dev is None:
        return model_device(model)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@contextmanager
def on_device(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Run the block with the model's tensors on ``device``, moving them back afterwards.

    The same ``Parameter`` objects are kept (only their data moves), so optimisers and other
    references held by the user stay valid. A model already on ``device`` is not touched.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    device : torch.device
        Where to compute.

    Yields
    ------
    torch.nn.Module
        The same model, on ``device``.
    """
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.device == device for t in tensors):
        yield model
        return
    homes = [(t, t.data) for t in tensors]
    try:
        for t, data in homes:
            t.data = data.to(device)
        yield model
    finally:
        for t, data in homes:
            t.data = data  # the original storage, so values are bit-identical
