"""Checks on user input that turn would-be deep torch tracebacks into plain messages.

One vocabulary for every public function and view:

- numbers: numpy integers and floats are accepted wherever Python ones are
  (:func:`plain`, applied to every argument by :func:`neuronviz.core.locks.runs_model`);
  booleans are not numbers; counts are checked by :func:`check_int`, reals by :func:`check_number`;
- models: :func:`check_model` refuses anything that is not a ``torch.nn.Module`` by its type's
  name, and a model on the ``meta`` device;
- devices: :func:`check_device` refuses ``meta``, unknown names and CUDA without CUDA;
- images: :func:`check_image` / :func:`check_batch` refuse non-tensors, wrong shapes, empty
  images, integer dtypes, NaN/Inf and the wrong channel count, and cast other float dtypes
  (float64, float16) to the model's;
- every refusal is a :class:`~neuronviz.core.errors.NeuronvizError` (``ValueError``), type
  refusals a :class:`~neuronviz.core.errors.NeuronvizTypeError` (also a ``TypeError``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import NeuronvizError, NeuronvizTypeError

__all__ = [
    "check_image",
    "check_batch",
    "check_model",
    "check_device",
    "check_int",
    "check_images_source",
    "check_number",
    "plain",
    "expected_channels",
    "model_dtype",
    "forward_checked",
]


def plain(value: Any) -> Any:
    """``value`` with numpy scalars turned into Python ones, inside lists and tuples too.

    Parameters
    ----------
    value : object
        Any argument.

    Returns
    -------
    object
        ``int`` for a numpy integer, ``float`` for a numpy float, ``bool`` for a numpy bool,
        a list or tuple of the same converted items; anything else unchanged.
    """
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if type(value) in (list, tuple):  # not named tuples or subclasses: their types must stay
        items = [plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def check_int(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an ``int``, refusing bools, floats and values outside ``[lo, hi]``.

    Parameters
    ----------
    value : object
        An int or numpy integer.
    name : str
        The argument's name, for the message.
    lo, hi : int, optional
        Bounds, inclusive.

    Returns
    -------
    int

    Raises
    ------
    NeuronvizTypeError
        Not an integer.
    NeuronvizError
        Out of range.
    """
    value = plain(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise NeuronvizTypeError(f"{name} must be an integer{_range(lo, hi)}, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise NeuronvizError(f"{name} must be an integer{_range(lo, hi)}, got {value}")
    return value


def check_number(value: Any, name: str, lo: float | None = None, hi: float | None = None, *,
                 strict_lo: bool = False) -> float:
    """``value`` as a finite ``float`` within bounds.

    Parameters
    ----------
    value : object
        An int, float or numpy number.
    name : str
        The argument's name.
    lo, hi : float, optional
        Bounds, inclusive (``lo`` exclusive with ``strict_lo``).
    strict_lo : bool
        Refuse ``value == lo``.

    Returns
    -------
    float

    Raises
    ------
    NeuronvizTypeError
        Not a number.
    NeuronvizError
        NaN, infinite or out of range.
    """
    value = plain(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise NeuronvizTypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    low_bad = lo is not None and (v <= lo if strict_lo else v < lo)
    if not math.isfinite(v) or low_bad or (hi is not None and v > hi):
        bounds = []
        if lo is not None:
            bounds.append(f"{'>' if strict_lo else '>='} {lo:g}")
        if hi is not None:
            bounds.append(f"<= {hi:g}")
        shown = " " + " and ".join(bounds) if bounds else ""
        raise NeuronvizError(f"{name} must be a finite number{shown}, got {value!r}")
    return v


def _range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def check_images_source(images: Any, what: str = "images") -> Any:
    """Refuse early what is neither a tensor nor an iterable of batches (a DataLoader).

    Parameters
    ----------
    images : object
        A tensor (N, C, H, W) or an iterable of batches.
    what : str
        The argument's name.

    Returns
    -------
    object
        ``images``.

    Raises
    ------
    NeuronvizTypeError
        ``None``, a number, a string or another object that cannot be iterated.
    """
    if isinstance(images, torch.Tensor):
        return images
    if images is None or isinstance(images, (str, bytes, numbers.Number)) or not hasattr(images, "__iter__"):
        raise NeuronvizTypeError(
            f"{what} must be an (N, C, H, W) tensor or an iterable of such batches (a DataLoader), "
            f"got {type(images).__name__}"
        )
    return images


def check_model(model: Any, what: str = "model") -> nn.Module:
    """Refuse anything that is not a usable ``torch.nn.Module``.

    Parameters
    ----------
    model : object
        The user's model.
    what : str
        The argument's name.

    Returns
    -------
    torch.nn.Module
        ``model``.

    Raises
    ------
    NeuronvizTypeError
        Not an ``nn.Module`` (a function, a state dict, a class instead of an instance...).
    NeuronvizError
        Parameters or buffers on the ``meta`` device (shapes without values).
    """
    if not isinstance(model, nn.Module):
        if isinstance(model, type) and issubclass(model, nn.Module):
            hint = f"; pass an instance, e.g. {model.__name__}()"
        elif isinstance(model, dict):
            hint = "; a state dict holds weights only: build the network and load_state_dict() it"
        elif callable(model):
            hint = "; wrap a function in an nn.Module whose forward calls it"
        else:
            hint = ""
        raise NeuronvizTypeError(f"{what} must be a torch.nn.Module, got {type(model).__name__}{hint}")
    for t in _tensors(model):
        if t.device.type == "meta":
            raise NeuronvizError(
                f"the {what}'s parameters are on the 'meta' device (shapes without values); materialise it "
                "first, e.g. model.to_empty(device='cpu') and load_state_dict(weights)"
            )
    return model


def _tensors(model: nn.Module):
    yield from model.parameters()
    yield from model.buffers()


def check_device(device: Any, what: str = "device") -> torch.device | None:
    """``device`` as a usable ``torch.device`` (``None`` stays ``None``).

    Parameters
    ----------
    device : str, torch.device or None
        E.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    what : str
        The argument's name.

    Returns
    -------
    torch.device or None

    Raises
    ------
    NeuronvizError
        Not a device name, ``meta``, or an accelerator that is not available here.
    """
    if device is None:
        return None
    if not isinstance(device, (str, torch.device, int)) or isinstance(device, bool):
        raise NeuronvizTypeError(f"{what} must be a device name such as 'cpu' or 'cuda:0', got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise NeuronvizError(f"{what}={device!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'") from err
    if dev.type == "meta":
        raise NeuronvizError(f"{what}={device!r}: the meta device holds no values, so nothing can be computed there; "
                             "use 'cpu' or 'cuda'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NeuronvizError(f"{what}={device!r} was asked for but CUDA is not available here; use {what}='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NeuronvizError(
                f"{what}={device!r}: there are {torch.cuda.device_count()} CUDA device(s) here "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise NeuronvizError(f"{what}={device!r} was asked for but MPS is not available here; use {what}='cpu'")
    elif dev.type != "cpu":
        raise NeuronvizError(f"{what}={device!r} is not supported; use 'cpu' or 'cuda'")
    return dev


def model_dtype(model: nn.Module | None) -> torch.dtype | None:
    """The floating dtype of the model's first floating parameter or buffer, if any."""
    if model is None:
        return None
    for t in _tensors(model):
        if torch.is_floating_point(t):
            return t.dtype
    return None


def expected_channels(model: nn.Module) -> int | None:
    """The input channel count of the model's first convolution, if it has one."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return int(module.in_channels)
    return None


def all_finite(x: torch.Tensor) -> bool:
    """Whether a non-empty float tensor holds no NaN and no infinity.

    Its maximum and minimum say it (a NaN makes both NaN, an infinity shows in one of them): two
    reductions, where ``torch.isfinite(x).all()`` writes a mask of the whole tensor first (about
    15 times slower on a batch of 224 px images).

    Parameters
    ----------
    x : torch.Tensor
        Floating point, at least one element.

    Returns
    -------
    bool
    """
    return bool(torch.stack([x.amax(), -x.amin()]).lt(math.inf).all())


def _check_values(x: torch.Tensor, what: str) -> None:
    if x.device.type == "meta":
        raise NeuronvizError(f"{what} is on the 'meta' device (a shape without values); pass a tensor with values")
    if any(d == 0 for d in x.shape[1:]):
        raise NeuronvizError(f"{what} is empty (shape {tuple(x.shape)}); every image needs channels, height and width")
    if x.is_complex() or x.dtype == torch.bool or not torch.is_floating_point(x):
        raise NeuronvizError(
            f"{what} must be a float tensor (normalised as the model expects, e.g. nv.preprocess(image)); "
            f"got dtype {x.dtype}"
        )
    if not all_finite(x):
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
        (1, C, H, W), in the model's float dtype.

    Raises
    ------
    NeuronvizError
        Not a tensor, wrong number of dimensions, several images, wrong channel count,
        integer dtype, NaN or Inf.
    """
    if not isinstance(x, torch.Tensor):
        raise NeuronvizTypeError(
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
    return _cast(x, model)


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
        raise NeuronvizTypeError(
            f"{what} must be a torch tensor (N, C, H, W), got {type(x).__name__}; nv.preprocess(image) turns a "
            "PIL image or array into one"
        )
    if x.dim() != 4:
        raise NeuronvizError(f"{what} must have shape (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] < min_n:
        raise NeuronvizError(f"{what} holds {x.shape[0]} image(s); at least {min_n} are needed")
    if x.shape[0] == 0:
        return _cast(x, model)
    _check_values(x, what)
    _check_channels(x, model, what)
    return _cast(x, model)


def _cast(x: torch.Tensor, model: nn.Module | None) -> torch.Tensor:
    """``x`` in the model's float dtype (a float64 image for a float32 model is cast, not refused)."""
    want = model_dtype(model)
    return x.to(want) if want is not None and x.dtype != want else x


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
