"""Checks on user input that turn would-be deep torch tracebacks into plain messages."""

from __future__ import annotations

import torch
from torch import nn

from .errors import NeuronvizError

__all__ = ["check_image", "check_batch", "expected_channels", "forward_checked"]


def expected_channels(model: nn.Module) -> int | None:
    """The input channel count of the model's first convolution, if it has one."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return int(module.in_channels)
    return None


def _check_values(x: torch.Tensor, what: str) -> None:
    if not torch.is_floating_point(x):
        raise NeuronvizError(
            f"{what} must be a float tensor (normalised as the model expects, e.g. nv.preprocess(image)); "
            f"got dtype {x.dtype}"
        )
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise NeuronvizError(f"{what} contains {bad} NaN or infinite value(s); pass finite pixel values")


def check_image(x: object, model: nn.Module | None = None) -> torch.Tensor:
    """Check one image and return it as (1, C, H, W).

    Parameters
    ----------
    x : torch.Tensor
        (C, H, W) or (1, C, H, W), float, finite.
    model : torch.nn.Module, optional
        When given, the channel count is checked against its first convolution.

    Returns
    -------
    torch.Tensor
        (1, C, H, W).

    Raises
    ------
    NeuronvizError
        Not a tensor, wrong number of dimensions, several images, wrong channel count,
        integer dtype, NaN or Inf.
    """
    if not isinstance(x, torch.Tensor):
        raise NeuronvizError(
            f"the image must be a torch tensor (1, C, H, W), got {type(x).__name__}; "
            "nv.preprocess(image) turns a PIL image or array into one"
        )
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1:
        raise NeuronvizError(
            f"expected one image of shape (1, C, H, W) or (C, H, W), got shape {tuple(x.shape)}"
            + ("; score one image at a time, or pass several as samples=" if x.dim() == 4 else "")
        )
    _check_values(x, "the image")
    _check_channels(x, model, "the image")
    return x


def check_batch(x: object, model: nn.Module | None = None, *, what: str = "samples", min_n: int = 1) -> torch.Tensor:
    """Check a batch of images (N, C, H, W).

    Parameters
    ----------
    x : torch.Tensor
        The batch.
    model : torch.nn.Module, optional
        Checked for channel count.
    what : str
        Name of the argument, for messages.
    min_n : int
        Fewest images accepted.

    Returns
    -------
    torch.Tensor
        ``x``.

    Raises
    ------
    NeuronvizError
        As :func:`check_image`, and fewer than ``min_n`` images.
    """
    if not isinstance(x, torch.Tensor):
        raise NeuronvizError(f"{what} must be a torch tensor (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise NeuronvizError(f"{what} must have shape (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] < min_n:
        raise NeuronvizError(f"{what} holds {x.shape[0]} image(s); at least {min_n} are needed")
    _check_values(x, what)
    _check_channels(x, model, what)
    return x


def _check_channels(x: torch.Tensor, model: nn.Module | None, what: str) -> None:
    want = expected_channels(model) if model is not None else None
    if want is not None and x.shape[1] != want:
        raise NeuronvizError(
            f"{what} has {x.shape[1]} channel(s) (shape {tuple(x.shape)}) but the model's first convolution "
            f"takes {want}; expected (N, {want}, H, W)"
        )


def forward_checked(model: nn.Module, x: torch.Tensor) -> object:
    """Run ``model(x)``, turning a shape or dtype refusal into a clear :class:`NeuronvizError`.

    Out-of-memory errors and exceptions that are not ``RuntimeError`` pass through unchanged.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    x : torch.Tensor
        Its input.

    Returns
    -------
    object
        What the model returned.
    """
    from .batching import is_out_of_memory

    try:
        return model(x)
    except RuntimeError as err:
        if is_out_of_memory(err) or isinstance(err, NeuronvizError):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NeuronvizError(
            f"the model refused an input of shape {tuple(x.shape)} ({x.dtype}, {x.device}): {first}"
        ) from err
