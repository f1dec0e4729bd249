"""Where a layer keeps its channels: (N, C, H, W), channels last (N, H, W, C), or tokens (N, L, D).

Convolutional layers return channels first. Swin's stages and ConvNeXt blocks written with
``Linear`` layers return channels last, (N, H, W, C); a vision transformer's encoder layers
return tokens, (N, L, D), often with a class token before the L - 1 patch tokens. Scoring such a
layer as if its first axis were the channels scores the wrong numbers (three "channels" for a
Swin stage at a 3-pixel grid), so a :class:`Layout` says how to turn the output into channels
first: (N, C, H, W), tokens laid out on their patch grid (N, D, h, w).

``layout="auto"`` decides from the output's shape and the input image's size first, and from
the module's type where the shape alone cannot tell:

* a 4-D output (N, a, b, c) is channels last when (a, b) is a grid of the image (b is a scaled
  by the image's aspect, to rounding: a == b for a square image) and (b, c) is not; channels
  first otherwise;
* a 3-D output (N, A, B) is tokens when A is a patch grid of the image, maybe after 1 or 2
  leading class tokens, and B is not (or is one only without a class token); channels first
  (N, C, L) when B is a grid and A is not, or when B is 1;
* when both or neither readings fit, the module's type decides: ``nn.Linear`` and
  ``nn.LayerNorm`` over the last dimension, torchvision's Swin blocks, patch merging and
  vision transformer encoder blocks, ``nn.TransformerEncoderLayer`` keep their features last; a
  ``Sequential`` is judged by its last module; anything else is channels first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence, cast

import torch
from torch import nn

from .errors import NeuronvizError

__all__ = ["LAYOUTS", "Layout", "LayoutSpec", "detect_layout", "resolve_layout", "token_grid", "token_maps"]

#: Names accepted by ``layout=``.
LAYOUTS = ("auto", "channels_first", "channels_last", "tokens")

#: A layout name for every layer, or ``{layer: name}`` (layers not named are "auto").
LayoutSpec = str | Mapping[str, str]

#: Class tokens (and distillation tokens) that may come before the patch tokens.
MAX_EXTRA_TOKENS = 2

# modules whose output keeps its features on the last axis, by class name (torchvision's and torch's)
_FEATURES_LAST = frozenset({
    "SwinTransformerBlock", "SwinTransformerBlockV2", "PatchMerging", "PatchMergingV2",
    "ShiftedWindowAttention", "ShiftedWindowAttentionV2", "EncoderBlock", "Encoder", "MLPBlock",
    "TransformerEncoderLayer", "TransformerEncoder", "TransformerDecoderLayer", "TransformerDecoder",
})
_CHANNELS_FIRST = frozenset({"LayerNorm2d", "CNBlock"})


@dataclass(frozen=True)
class Layout:
    """How one layer's output is turned into channels first.

    Attributes
    ----------
    kind : {"channels_first", "channels_last", "tokens"}
        The layer's layout.
    grid : tuple of int or None
        Tokens: the patch grid (h, w) the tokens are laid on; None when no grid fits (the
        tokens are then L positions in a row).
    extra_tokens : int
        Tokens: leading tokens left out of the maps (a class token: 1).
    """

    kind: str = "channels_first"
    grid: tuple[int, int] | None = None
    extra_tokens: int = 0

    def __str__(self) -> str:
        return self.kind

    def to_channels_first(self, a: torch.Tensor) -> torch.Tensor:
        """A batch of this layer's outputs as (N, C, ...): (N, C, H, W), or tokens as (N, D, h, w).

        Parameters
        ----------
        a : torch.Tensor
            The layer's output (N, ...).

        Returns
        -------
        torch.Tensor
            A view where possible (channels last), a new tensor for tokens laid on a grid.
        """
        if self.kind == "channels_last":
            return a.movedim(-1, 1)
        if self.kind == "tokens":
            t = a[:, self.extra_tokens :].transpose(1, 2)  # (N, D, L - extra)
            return t.reshape(*t.shape[:2], *self.grid) if self.grid is not None else t
        return a

    def shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The channels-first shape of one sample whose output shape is ``shape`` (no batch)."""
        return tuple(self.to_channels_first(torch.empty((1, *shape), device="meta")).shape[1:])


def _consistent(p: int, q: int, image_size: tuple[int, int] | None) -> bool:
    """Whether (p, q) can be a grid over the image: the same stride on both sides, to rounding."""
    if p < 1 or q < 1:
        return False
    if image_size is None:
        return p == q
    height, width = image_size
    if p > height or q > width:
        return False
    # q is p scaled by the image's aspect, up to the rounding of a strided size (exact when square)
    return abs(p * width / height - q) < 1


def token_grid(n_tokens: int, image_size: tuple[int, int] | None = None) -> tuple[int, tuple[int, int]] | None:
    """The patch grid that ``n_tokens`` tokens fill, after some leading class tokens.

    Parameters
    ----------
    n_tokens : int
        L, the number of tokens.
    image_size : tuple of int, optional
        (H, W) of the input image; the grid must have its aspect. None: a square grid.

    Returns
    -------
    tuple or None
        ``(extra, (h, w))``: ``extra`` leading tokens (0, 1 or 2) and the grid of the other
        ``h * w``; the fewest extra tokens that fit. None when no grid fits.
    """
    for extra in range(0, MAX_EXTRA_TOKENS + 1):
        n = n_tokens - extra
        if n < 1:
            break
        if image_size is None or image_size[0] == image_size[1]:
            h = math.isqrt(n)
            if h * h == n and (image_size is None or h <= image_size[0]):
                return extra, (h, h)
            continue
        guess = math.sqrt(n * image_size[0] / image_size[1])
        for h in sorted({max(1, math.floor(guess)), max(1, math.ceil(guess))}):
            if n % h == 0 and _consistent(h, n // h, image_size):
                return extra, (h, n // h)
    return None


def _type_hint(module: nn.Module | None) -> str | None:
    """"last" when the module's type keeps features on the last axis, "first" when on axis 1, else None."""
    while module is not None:
        name = type(module).__name__
        if name in _CHANNELS_FIRST or isinstance(module, (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase)):
            return "first"
        if name in _FEATURES_LAST or isinstance(module, nn.Linear):
            return "last"
        if isinstance(module, nn.LayerNorm):
            return "last" if len(module.normalized_shape) == 1 else None
        if name == "Permute" and hasattr(module, "dims"):
            dims = list(cast(Sequence[int], module.dims))  # nn.Module.__getattr__ is typed Tensor | Module
            return "last" if dims[1:] and dims[-1] == 1 else "first" if dims[1:2] == [len(dims) - 1] else None
        if isinstance(module, nn.Sequential) and len(module):
            module = module[-1]  # a stage is what its last module returns
            continue
        return None
    return None


def detect_layout(
    module: nn.Module | None, shape: Sequence[int], image_size: Sequence[int] | None = None
) -> Layout:
    """The layout of a layer's output, as ``layout="auto"`` decides it (see the module's notes).

    Parameters
    ----------
    module : torch.nn.Module or None
        The layer (its type decides where the shape cannot); None: by shape only.
    shape : sequence of int
        The output's shape, batch included: (N, a, b, c) or (N, L, D) or other.
    image_size : sequence of int, optional
        (H, W) of the model's input; None: grids are taken to be square.

    Returns
    -------
    Layout
    """
    size = (int(image_size[0]), int(image_size[1])) if image_size is not None else None
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        _, a, b = shape
        if b == 1:
            return Layout()  # one feature per position: read as channels of one position
        fits_a, fits_b = token_grid(a, size), token_grid(b, size)
        if fits_a is not None and (fits_b is None or fits_a[0] > 0 == fits_b[0]):
            verdict = "tokens"  # a grid after a class token is a token sequence's mark
        elif fits_b is not None and fits_a is None:
            verdict = "channels_first"
        else:
            verdict = "tokens" if _type_hint(module) == "last" else "channels_first"
        if verdict == "tokens":
            return Layout("tokens", fits_a[1], fits_a[0]) if fits_a is not None else Layout("tokens")
        return Layout()
    if len(shape) == 4:
        _, a, b, c = shape
        last, first = _consistent(a, b, size), _consistent(b, c, size)
        if last != first:
            return Layout("channels_last" if last else "channels_first")
    if len(shape) >= 4 and _type_hint(module) == "last":
        return Layout("channels_last")
    return Layout()


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or value not in LAYOUTS:
        raise NeuronvizError(f"{what} must be one of {LAYOUTS}, got {value!r}")
    return value


def check_layout_spec(layout: object, layers: Sequence[str]) -> dict[str, str]:
    """Each layer's layout name from a ``layout=`` argument.

    Parameters
    ----------
    layout : str or mapping
        One of :data:`LAYOUTS` for every layer, or ``{layer: name}`` (others "auto").
    layers : sequence of str
        The recorded layers.

    Returns
    -------
    dict of str to str

    Raises
    ------
    NeuronvizError
        An unknown layout name, or a mapping naming layers that are not recorded.
    """
    if isinstance(layout, Mapping):
        unknown = sorted(set(layout) - set(layers), key=str)
        if unknown:
            raise NeuronvizError(f"layout names layers that are not recorded: {unknown}; recorded: {list(layers)}")
        return {name: _check_name(layout.get(name, "auto"), f"layout[{name!r}]") for name in layers}
    name = _check_name(layout, "layout")
    return {layer: name for layer in layers}


def resolve_layout(
    kind: str, module: nn.Module | None, shape: Sequence[int], image_size: Sequence[int] | None = None,
    *, layer: str = "the layer",
) -> Layout:
    """The :class:`Layout` of one output for a layout name (``"auto"`` detects it).

    Parameters
    ----------
    kind : str
        One of :data:`LAYOUTS`.
    module : torch.nn.Module or None
        The layer.
    shape : sequence of int
        Its output's shape, batch included.
    image_size : sequence of int, optional
        (H, W) of the model's input, for the token grid.
    layer : str
        The layer's name, for messages.

    Returns
    -------
    Layout

    Raises
    ------
    NeuronvizError
        ``"channels_last"`` for an output of fewer than 3 dimensions, ``"tokens"`` for one
        that is not (N, L, D).
    """
    if kind == "auto":
        return detect_layout(module, shape, image_size)
    if kind == "channels_last" and len(shape) < 3:
        raise NeuronvizError(
            f"layer {layer!r} gives an output of shape {tuple(shape)}; layout 'channels_last' needs "
            "(N, ..., C) with at least one spatial axis: use 'channels_first' or 'auto'"
        )
    if kind == "tokens":
        if len(shape) != 3:
            raise NeuronvizError(
                f"layer {layer!r} gives an output of shape {tuple(shape)}; layout 'tokens' needs (N, L, D): "
                "use 'channels_first', 'channels_last' or 'auto'"
            )
        size = (int(image_size[0]), int(image_size[1])) if image_size is not None else None
        fit = token_grid(int(shape[1]), size)
        return Layout("tokens", fit[1], fit[0]) if fit is not None else Layout("tokens")
    return Layout(kind)


def token_maps(tokens: torch.Tensor, image_size: Sequence[int] | None = None) -> torch.Tensor:
    """Tokens as maps on their patch grid: (L, D) -> (D, h, w), (N, L, D) -> (N, D, h, w).

    Leading class tokens are left out when L = h*w + 1 (or + 2).

    Parameters
    ----------
    tokens : torch.Tensor
        (L, D) tokens of one image, or (N, L, D) of several.
    image_size : sequence of int, optional
        (H, W) of the input image, for a grid of its aspect; None: a square grid.

    Returns
    -------
    torch.Tensor
        (D, h, w) or (N, D, h, w).

    Raises
    ------
    NeuronvizError
        Not 2-D or 3-D, or no grid of the image's aspect holds the tokens.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() not in (2, 3):
        got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise NeuronvizError(f"tokens must be a tensor (L, D) or (N, L, D), got {got}")
    batch = tokens if tokens.dim() == 3 else tokens.unsqueeze(0)
    size = (int(image_size[0]), int(image_size[1])) if image_size is not None else None
    fit = token_grid(batch.shape[1], size)
    if fit is None:
        raise NeuronvizError(
            f"{batch.shape[1]} tokens fill no patch grid" + (f" of a {size[0]}x{size[1]} image" if size else "")
            + " (after at most 2 class tokens); pass image_size=(H, W) of the model's input"
        )
    maps = Layout("tokens", fit[1], fit[0]).to_channels_first(batch)
    return maps if tokens.dim() == 3 else maps[0]
