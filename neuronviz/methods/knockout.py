"""Knock-outs: zero, mean-replace or scale chosen channels (or units) of named layers, and measure the output.

The definitions are those of ``shared/research/evidence.md``. For a layer output ``a`` of shape
(N, C, ...) and a set S of its channels or units:

* ``how="zero"``: ``a[:, S] = 0``;
* ``how="mean"``: ``a[:, S]`` = the mean of ``a[:, S]`` over a reference set, position by
  position (the perturbed copies of the image by default): the mean knock-out of a constant
  channel changes nothing;
* ``how=s`` (a number): ``a[:, S] *= s`` (0 is zero, above 1 amplifies).

Every knock-out is one formula, ``a * (1 - h) + r * h`` with ``h`` the 0/1 mask of S and ``r``
the replacement (0, the reference mean, or ``s * a``), applied by a forward hook that returns a
new tensor (never changing in place a tensor another module holds). Many sets are evaluated in
one batched forward pass: the input is repeated and row b of the batch gets its own mask
(B, C, 1, 1) (or (B, C, H, W) for units) on each hooked layer, so K sets cost ceil(K / B)
passes, and each row equals the knock-out of its set alone (the test checks it to 1e-6).

Why here and not in ``core``: the mechanism is torch only, but the mean knock-out needs a
reference set (perturbed copies) and the effects need the target rule; the hooks themselves are
registered through :func:`neuronviz.core.capture.hooks`, the one hook primitive of the project,
so nothing here registers a hook directly.

Channels are those of the layer's layout (:mod:`neuronviz.core.layouts`, the ``layout=`` rule of
:func:`neuronviz.score_neurons`): the last axis of a channels-last (N, H, W, C) output, the
features D of tokens (N, L, D), axis 1 otherwise. Masks are made channels first, (C,) or
(C, h, w) with tokens on their patch grid as the scores index them, and laid back onto the
output's own layout by the hook: a channel of a token layer is knocked out on every token, the
class token included (it is the same feature); a unit (d, i, j) on the patch token (i, j) only.
The reference means of ``how="mean"`` are kept in the output's own layout.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..core.archive import Archived, archived
from ..core.batching import default_batch_size, run_batched
from ..core.capture import ActivationCapture, hooks, resolve_layers
from ..core.errors import CaptureError, NeuronvizError, NeuronvizTypeError
from ..core.layouts import Layout, LayoutSpec, check_layout_spec, resolve_layout
from ..core.locks import hold_model, runs_model
from ..core.model_state import on_device, preserved_state, resolve_device
from ..core.perturb import Perturbation
from ..core.perturb import make as make_perturbation
from ..core.progress import ProgressArg, images_of, is_long, reports_progress
from ..core.streams import is_batch_stream, iter_batches
from ..core.targets import Target, TargetSpec, resolve_target
from ..core.validation import check_batch, check_image, check_int, forward_checked, plain

if TYPE_CHECKING:
    import pandas

__all__ = ["knockout", "knockout_effect", "KnockoutEffect", "Knockout", "KnockoutSet", "HOW", "ON"]

#: The named knock-out kinds; a number is a scale.
HOW = ("zero", "mean")
#: What the effects are evaluated on.
ON = ("image", "copies")

Neuron = Union[int, tuple]
#: One knock-out set: ``{layer: [channel, ...]}`` (or units ``(c, h, w)``).
KnockoutSet = Mapping[str, Sequence[Neuron]]
How = Union[str, float]


# ---------------------------------------------------------------------------------------------
# checking the arguments


def check_how(how: object) -> How:
    """``how`` as ``"zero"``, ``"mean"`` or a finite float scale.

    Raises
    ------
    NeuronvizError
        Anything else.
    """
    how = plain(how)
    if isinstance(how, str) and how in HOW:
        return how
    if isinstance(how, numbers.Real) and not isinstance(how, bool) and math.isfinite(float(how)):
        return float(how)
    raise NeuronvizError(f"how must be 'zero', 'mean' or a finite number (a scale, 0 zeroes), got {how!r}")


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_neuron(layer: str, v: object) -> Neuron:
    v = plain(v)
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.dtype.is_floating_point:
        v = int(v.item())
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, (tuple, list)) and v and all(_is_int(i) for i in v):
        return tuple(int(i) for i in v)
    raise NeuronvizError(
        f"layer {layer!r}: a knocked-out neuron must be a channel index (int) or a unit (c, h, w) tuple, got {v!r}"
    )


def check_set(model: nn.Module, spec: object, what: str = "the knock-out set") -> dict[str, list[Neuron]]:
    """A knock-out set as ``{layer: [neurons]}``, layer names checked against the model.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    spec : mapping
        ``{layer name: channel index, or a list of channel indices / unit tuples}``.
    what : str
        Name for the messages.

    Returns
    -------
    dict of str to list
        Neurons in the order given, duplicates removed.

    Raises
    ------
    LayerNotFoundError
        A name is not a module of ``model`` (closest names suggested).
    NeuronvizError
        Not a mapping, or a neuron that is neither an int nor a tuple of ints.
    """
    if not isinstance(spec, Mapping):
        raise NeuronvizTypeError(
            f"{what} must be a mapping {{layer: [channels]}}, e.g. {{'blocks.15': [37, 12]}}, got {type(spec).__name__}"
        )
    if spec:
        resolve_layers(model, list(spec))
    out: dict[str, list[Neuron]] = {}
    for layer, neurons in spec.items():
        if isinstance(neurons, (int, np.integer)) and not isinstance(neurons, bool):
            neurons = [neurons]
        if isinstance(neurons, torch.Tensor):
            neurons = neurons.reshape(-1).tolist() if neurons.dim() <= 1 else [tuple(r) for r in neurons.tolist()]
        if isinstance(neurons, (str, bytes)) or not isinstance(neurons, Iterable):
            raise NeuronvizTypeError(f"{what}: layer {layer!r} maps to {neurons!r}; give a list of channel indices")
        out[layer] = list(dict.fromkeys(_check_neuron(layer, v) for v in neurons))
    return out


def _static_channels(module: nn.Module) -> int | None:
    """The channel count a module's output has, when its type says so (convolution, norm, linear)."""
    for attr in ("out_channels", "num_features", "out_features"):
        n = getattr(module, attr, None)
        if isinstance(n, int):
            return n
    return None


def neuron_mask(layer: str, shape: tuple[int, ...], neurons: Sequence[Neuron]) -> torch.Tensor:
    """The 0/1 mask of a set of neurons of one layer: (C,) for channels only, else the full (C, ...) shape.

    Parameters
    ----------
    layer : str
        The layer's name, for messages.
    shape : tuple of int
        The layer's output shape without the batch, channels first.
    neurons : sequence
        Channel indices and/or unit tuples.

    Returns
    -------
    torch.Tensor
        bool, (C,) when every neuron is a channel, else ``shape``.

    Raises
    ------
    NeuronvizError
        A channel or unit out of range, or a unit tuple of the wrong length.
    """
    c = shape[0]
    units = [n for n in neurons if isinstance(n, tuple)]
    full = bool(units) and len(shape) > 1
    mask = torch.zeros(shape if full else (c,), dtype=torch.bool)
    for n in neurons:
        if isinstance(n, tuple):
            if len(n) != len(shape):
                raise NeuronvizError(
                    f"layer {layer!r} has output shape {shape} per image, so a unit is a {len(shape)}-tuple; got {n}"
                )
            if not all(0 <= i < s for i, s in zip(n, shape)):
                raise NeuronvizError(f"unit {n} is out of range for layer {layer!r}, whose output is {shape} per image")
            if full:
                mask[n] = True
            else:
                mask[n[0]] = True
        else:
            if not 0 <= n < c:
                raise NeuronvizError(
                    f"channel {n} is out of range for layer {layer!r}, which has {c} channels (0..{c - 1})"
                )
            mask[n] = True
    return mask


def _expand(mask: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B, C) -> (B, C, 1, ...) to broadcast over a layer output of ``ndim`` dimensions."""
    return mask.reshape(mask.shape + (1,) * (ndim - mask.dim()))


def channels_first_shape(layout: Layout, native: Sequence[int]) -> tuple[int, ...]:
    """The channels-first shape (C, ...) of one sample whose output, in ``layout``, has shape ``native``.

    Parameters
    ----------
    layout : Layout
        The layer's layout.
    native : sequence of int
        The output's shape per sample (no batch), as the module returns it.

    Returns
    -------
    tuple of int
        (C, H, W) for channels last, (D, h, w) (or (D, L)) for tokens, ``native`` otherwise.
    """
    native = tuple(int(s) for s in native)
    if layout.kind == "channels_last":
        return (native[-1], *native[:-1])
    if layout.kind == "tokens":
        return (native[-1], *layout.grid) if layout.grid is not None else (native[-1], native[0] - layout.extra_tokens)
    return native


def to_layout(mask: torch.Tensor, layout: Layout, ndim: int) -> torch.Tensor:
    """Channels-first masks (B, C) or (B, C, ...) laid onto an output of ``ndim`` dimensions in ``layout``.

    Parameters
    ----------
    mask : torch.Tensor
        (B, C) channel masks, or (B, C, ...) unit masks in the channels-first shape.
    layout : Layout
        The output's layout.
    ndim : int
        The output's number of dimensions, batch included.

    Returns
    -------
    torch.Tensor
        A mask that broadcasts over the output: a channel covers every position (every token,
        class tokens included); a unit of a token layer covers its patch token only (units
        covering every patch token of a feature are the feature, so its class tokens too: a
        channel set batched with unit sets is knocked out as when alone).
    """
    if layout.kind == "channels_last":
        if mask.dim() == 2:
            return mask.reshape(mask.shape[0], *(1,) * (ndim - 2), mask.shape[1])
        return mask.movedim(1, -1)
    if layout.kind == "tokens":
        if mask.dim() == 2:
            return mask.unsqueeze(1)
        tokens = mask.reshape(mask.shape[0], mask.shape[1], -1).transpose(1, 2)  # (B, L - extra, D)
        if layout.extra_tokens:  # a feature knocked out on every patch token is the feature: class tokens too
            whole = tokens.bool().all(dim=1, keepdim=True).to(tokens.dtype)
            tokens = torch.cat([whole.expand(-1, layout.extra_tokens, -1), tokens], dim=1)
        return tokens
    return _expand(mask, ndim)


# ---------------------------------------------------------------------------------------------
# the hooks


class _Masker:
    """The forward hooks of a knock-out: per layer, ``out = a * (1 - h) + r * h``.

    ``masks[layer]`` is the float mask ``h`` of the next forward pass, (B, C[, ...]) with B the
    batch or 1 (every row the same). A layer that runs twice within one pass of the model is
    refused (its knock-out would be applied twice), as is an output that is not a tensor or
    has another channel count than the masks were made for.
    """

    def __init__(self, how: How, means: Mapping[str, torch.Tensor] | None = None,
                 layout: Mapping[str, str] | None = None) -> None:
        self.how = how
        self.means = dict(means or {})
        self.masks: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # channels first
        self.layout_names = dict(layout or {})  # "auto" for a layer not named
        self.layouts: dict[str, Layout] = {}  # resolved at the layer's first call unless given
        self.image_size: tuple[int, int] | None = None
        self.ran: set[str] = set()
        self.n_forward = 0
        self.lazy: dict[str, list[Neuron]] = {}

    def start(self, module: nn.Module, args: tuple) -> None:
        self.ran.clear()
        self.n_forward += 1
        first = args[0] if args else None  # the image size places a token grid, as in ActivationCapture
        if isinstance(first, torch.Tensor) and first.dim() == 4:
            self.image_size = (int(first.shape[-2]), int(first.shape[-1]))

    def hook(self, name: str) -> Callable[[nn.Module, tuple, Any], torch.Tensor]:
        def fn(module: nn.Module, args: tuple, output: Any) -> torch.Tensor:
            if not isinstance(output, torch.Tensor) or output.dim() < 2:
                got = type(output).__name__ if not isinstance(output, torch.Tensor) else f"a {output.dim()}-D tensor"
                raise CaptureError(
                    f"layer {name!r} ({type(module).__name__}) returned {got}; a knock-out needs an (N, C, ...) "
                    "tensor: choose one of its submodules"
                )
            if name in self.ran:
                raise CaptureError(
                    f"layer {name!r} ({type(module).__name__}) ran more than once in one forward pass, so a "
                    "knock-out would be applied to each call; choose a module that runs once"
                )
            self.ran.add(name)
            layout = self.layouts.get(name)
            if layout is None:  # the context manager learns the layout and the shape at the first call
                layout = self.layouts[name] = resolve_layout(self.layout_names.get(name, "auto"), module,
                                                             output.shape, self.image_size, layer=name)
            native = tuple(output.shape[1:])
            shape = channels_first_shape(layout, native)
            if name not in self.masks:
                self.shapes[name] = shape
                self.masks[name] = neuron_mask(name, shape, self.lazy[name]).unsqueeze(0)
            want = self.shapes[name]
            # channel masks fit any spatial size; unit masks and reference means need the same shape
            per_position = self.masks[name].dim() > 2
            if shape[0] != want[0] or (per_position and shape != want):
                raise NeuronvizError(
                    f"layer {name!r} gave output shape {shape} per image ({layout.kind}), but the knock-out was "
                    f"made for {want}"
                )
            if self.how == "mean" and tuple(self.means[name].shape) != native:
                raise NeuronvizError(
                    f"layer {name!r} gave output shape {native} per image, but its reference mean has shape "
                    f"{tuple(self.means[name].shape)}"
                )
            return self.apply(name, output)

        return fn

    def apply(self, name: str, a: torch.Tensor) -> torch.Tensor:
        h = to_layout(self.masks[name], self.layouts.get(name, Layout()), a.dim()).to(device=a.device, dtype=a.dtype)
        if h.shape[0] not in (1, a.shape[0]):
            raise NeuronvizError(f"the knock-out masks of {name!r} hold {h.shape[0]} rows for a batch of {a.shape[0]}")
        keep = 1 - h
        if self.how == "zero":
            return a * keep
        if self.how == "mean":
            return a * keep + self.means[name].to(device=a.device, dtype=a.dtype) * h
        return a * (keep + float(self.how) * h)

    @contextlib.contextmanager
    def on(self, model: nn.Module, layers: Sequence[str]) -> Iterator[None]:
        with hooks(model, {n: self.hook(n) for n in layers}, before_forward=self.start):
            yield


# ---------------------------------------------------------------------------------------------
# reference means


def layer_means(
    model: nn.Module,
    layers: Sequence[str],
    images: torch.Tensor | Iterable | Callable[[range], torch.Tensor],
    *,
    n: int | None = None,
    batch_size: int,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], int]:
    """Per-position mean of each layer's output over a reference set (float64 sums, batch by batch).

    Parameters
    ----------
    model : torch.nn.Module
        The network (already in eval mode, on ``device``, under ``no_grad``).
    layers : sequence of str
        Layer names.
    images : tensor, iterable of batches, or callable
        The reference images; a callable ``f(range)`` makes the batch of those indices (``n``).
    n : int, optional
        Number of images of a callable.
    batch_size : int
        Images per forward pass.
    device : torch.device
        Where to compute.

    Returns
    -------
    means : dict of str to torch.Tensor
        (C, ...) float32 on ``device``.
    passes : int
        Forward passes run.

    Raises
    ------
    NeuronvizError
        An empty reference set.
    """
    sums: dict[str, torch.Tensor] = {}
    count = [0, 0]

    with ActivationCapture(model, list(layers), copy=False) as rec:

        def add(batch: torch.Tensor) -> None:
            forward_checked(model, batch.to(device))
            acts = rec.outputs()
            part = {name: acts[name].double().sum(0) for name in layers}
            rec.clear()
            for name, s in part.items():
                sums[name] = s if name not in sums else sums[name] + s
            count[0] += batch.shape[0]
            count[1] += 1

        if callable(images) and not isinstance(images, torch.Tensor):
            run_batched(int(n or 0), batch_size, lambda r: add(images(r)))
        elif isinstance(images, torch.Tensor):
            run_batched(images.shape[0], batch_size, lambda r: add(images[r.start : r.stop]))
        else:
            for raw in iter_batches(images, batch_size, what="reference"):
                batch = check_batch(raw, model, what="reference", min_n=0)
                if batch.shape[0]:

                    def add_rows(r: range, b: torch.Tensor = batch) -> None:
                        add(b[r.start : r.stop])

                    run_batched(batch.shape[0], batch_size, add_rows)
    if count[0] == 0:
        raise NeuronvizError("the reference set holds no image; pass images (or a loader) with at least one")
    return {name: (s / count[0]).float() for name, s in sums.items()}, count[1]


def _reference_means(
    model: nn.Module,
    layers: Sequence[str],
    reference: object,
    x: torch.Tensor | None,
    pert: Perturbation,
    n_samples: int,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], int]:
    """The means of ``how="mean"``: given as ``{layer: tensor}``, over images, or over the copies of ``x``."""
    if isinstance(reference, Mapping):
        means = {}
        for name in layers:
            if name not in reference:
                raise NeuronvizError(f"reference gives no mean for layer {name!r}; it names {sorted(reference)}")
            m = reference[name]
            if not isinstance(m, torch.Tensor) or not torch.is_floating_point(m) or not torch.isfinite(m).all():
                raise NeuronvizError(
                    f"reference[{name!r}] must be a finite float tensor shaped like the layer's output")
            means[name] = m.detach().to(device, torch.float32)
        return means, 0
    if reference is None:
        if x is None:
            raise NeuronvizError(
                "how='mean' needs a reference set: pass x= (the image whose perturbed copies give the means) or "
                "reference= (images, a loader, or {layer: mean tensor})"
            )
        img = x.to(device)
        return layer_means(model, layers, lambda r: pert.sample(img, r, seed=seed), n=n_samples,
                           batch_size=batch_size, device=device)
    if isinstance(reference, torch.Tensor):
        ref = check_batch(reference, model, what="reference", min_n=1)
        return layer_means(model, layers, ref, batch_size=batch_size, device=device)
    if is_batch_stream(reference):
        return layer_means(model, layers, reference, batch_size=batch_size, device=device)
    raise NeuronvizTypeError(
        "reference must be None, images (N, C, H, W), a loader or {layer: mean tensor}, got "
        + type(reference).__name__
    )


def _check_mean_shapes(means: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]],
                       layouts: Mapping[str, Layout]) -> None:
    """The reference means against the layers' outputs, each in its own layout."""
    for name, shape in shapes.items():
        if name in means and channels_first_shape(layouts.get(name, Layout()), means[name].shape) != tuple(shape):
            raise NeuronvizError(
                f"the reference mean of layer {name!r} has shape {tuple(means[name].shape)}, which is not the "
                f"layer's output shape per image (channels first: {shape})"
            )


def _check_samples(n_samples: object) -> int:
    return check_int(n_samples, "n_samples", lo=1)


def _check_batch_size(batch_size: object, device: torch.device) -> int:
    if batch_size is None:
        return default_batch_size(device)
    return check_int(batch_size, "batch_size", lo=1)


# ---------------------------------------------------------------------------------------------
# the context manager


@dataclass
class Knockout:
    """What a :func:`knockout` block applies.

    Attributes
    ----------
    sets : dict of str to list
        ``{layer: [channels or units]}``.
    how : str or float
        ``"zero"``, ``"mean"`` or the scale.
    means : dict of str to torch.Tensor
        With ``how="mean"``: the per-position reference mean of each layer.
    n_forward : int
        Forward passes of the model run inside the block so far.
    """

    sets: dict[str, list[Neuron]]
    how: How
    means: dict[str, torch.Tensor] = field(default_factory=dict)
    _masker: _Masker | None = field(default=None, repr=False)

    @property
    def n_forward(self) -> int:
        """Forward passes of the model run inside the block so far."""
        return 0 if self._masker is None else self._masker.n_forward


@contextlib.contextmanager
def knockout(
    model: nn.Module,
    sets: KnockoutSet,
    how: How = "zero",
    reference: torch.Tensor | Iterable | Mapping[str, torch.Tensor] | None = None,
    *,
    x: torch.Tensor | None = None,
    n_samples: int = 32,
    perturbation: Perturbation | str | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    layout: LayoutSpec = "auto",
) -> Iterator[Knockout]:
    """Knock out channels (or units) of named layers for the forward passes of a ``with`` block.

    ``with nv.knockout(model, {"blocks.15.expand.act": [37, 12]}): out = model(x)``. Every
    forward pass inside the block has ``a[:, S]`` zeroed (``how="zero"``), replaced by its
    per-position mean over a reference set (``"mean"``) or multiplied by a number, on every
    named layer at once. The hooks are removed when the block ends, normally, by an exception
    or by ``KeyboardInterrupt``; nothing else of the model changes (the reference means are
    computed in eval mode without gradients, the modes and flags restored). The block holds the
    model's lock, so a view running the same model waits for it.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    sets : mapping
        ``{layer: [channel, ...]}``; a unit is a tuple ``(c, h, w)`` (``(f,)`` for an (N, F)
        layer). Layer names as :func:`neuronviz.layer_summary` lists them.
    how : {"zero", "mean"} or float
        The knock-out: zero, the reference mean, or a scale (0 zeroes, 2 doubles).
    reference : tensor, loader or mapping, optional
        For ``how="mean"``: images (N, C, H, W) or a loader whose per-position mean activation
        replaces the knocked-out neurons, or ``{layer: (C, ...) mean}``. Without it, the
        ``n_samples`` perturbed copies of ``x``.
    x : torch.Tensor, optional
        For ``how="mean"`` without ``reference``: the image whose perturbed copies (copy 0 is
        ``x`` itself) give the means.
    n_samples : int
        Number of perturbed copies of ``x``.
    perturbation : Perturbation, str or None
        How ``x`` is perturbed (None: the input-resampling paper's multiplicative scheme).
    seed : int
        Seed of the copies.
    batch_size : int, optional
        Images per forward pass of the reference.
    layout : str or mapping, default "auto"
        Where each layer keeps its channels, as for :func:`neuronviz.score_neurons`:
        "channels_first", "channels_last" (N, H, W, C: a channel is the last axis), "tokens"
        (N, L, D: a channel is a feature, knocked out on every token; a unit ``(d, i, j)`` is
        feature d of the patch token at (i, j) of the grid) or "auto" (from the output's shape
        and the module's type, at the layer's first call); one name, or ``{layer: name}``.

    Yields
    ------
    Knockout
        What is applied (sets, how, means, forward passes so far).

    Raises
    ------
    LayerNotFoundError
        An unknown layer (closest names suggested), before any hook is registered.
    NeuronvizError
        A bad ``how``, a channel out of range (before the block when the layer's type says its
        channel count, else at the first forward pass), a layer that runs twice in one forward
        pass or does not return an (N, C, ...) tensor, ``how="mean"`` with neither ``reference``
        nor ``x``, an unknown layout name.
    """
    net = model
    spec = check_set(model, sets)
    how = check_how(how)
    modules = resolve_layers(model, list(spec)) if spec else {}
    names = check_layout_spec(layout, list(spec))
    for name, module in modules.items():
        # the type's channel count is the layout's for "auto" (a Linear's features are last)
        c = _static_channels(module) if names[name] == "auto" else None
        ints = [n for n in spec[name] if isinstance(n, int)] + [n[0] for n in spec[name] if isinstance(n, tuple)]
        if c is not None and any(not 0 <= n < c for n in ints):
            bad = next(n for n in ints if not 0 <= n < c)
            raise NeuronvizError(
                f"channel {bad} is out of range for layer {name!r}, which has {c} channels (0..{c - 1})")
    with hold_model(net):
        means: dict[str, torch.Tensor] = {}
        if how == "mean" and spec:
            dev = resolve_device(model, None)
            size = _check_batch_size(batch_size, dev)
            img = check_image(x, model) if x is not None else None
            with preserved_state(model), torch.no_grad():
                model.eval()
                means, _ = _reference_means(model, list(spec), reference, img, make_perturbation(perturbation),
                                            _check_samples(n_samples), seed, size, dev)
        masker = _Masker(how, means, names)
        masker.lazy = spec
        image_size = _image_size(x, reference)
        for name, m in means.items():  # the shape is known (and the image's size): check the neurons now
            if image_size is None and names[name] != "channels_first":
                continue  # a token grid needs the image's size: checked at the first pass
            found = resolve_layout(names[name], modules[name], (1, *m.shape), image_size, layer=name)
            masker.layouts[name] = found
            masker.shapes[name] = channels_first_shape(found, m.shape)
            masker.masks[name] = neuron_mask(name, masker.shapes[name], spec[name]).unsqueeze(0)
        info = Knockout(sets=spec, how=how, means=means, _masker=masker)
        with masker.on(model, list(spec)):
            yield info


def _image_size(x: torch.Tensor | None, reference: object) -> tuple[int, int] | None:
    """(H, W) of the images the reference means were taken over, when known."""
    for images in (reference, x):
        if isinstance(images, torch.Tensor) and images.dim() in (3, 4):
            return int(images.shape[-2]), int(images.shape[-1])
    return None


# ---------------------------------------------------------------------------------------------
# batched effects


@dataclass
class _Setup:
    """What every batched evaluation needs: target, shapes, means, images and the clean output."""

    tgt: Target
    shapes: dict[str, tuple[int, ...]]
    clean: float
    means: dict[str, torch.Tensor]
    n_forward: int


def probe(model: nn.Module, x: torch.Tensor, layers: Sequence[str], target: TargetSpec, output: str,
          device: torch.device, layout: LayoutSpec = "auto",
          ) -> tuple[Target, dict[str, tuple[int, ...]], float, dict[str, Layout]]:
    """One clean forward pass of ``x``: the target, each layer's channels-first shape, the clean value, the layouts.

    The model must already be in eval mode on ``device`` under ``no_grad``. The layouts are
    resolved as :func:`neuronviz.score_neurons` resolves them (``layout=``), so a ranking of
    its scores names the channels knocked out here.

    Raises
    ------
    NeuronvizError
        A layer that does not run, or whose output is not (N, C, ...); a bad target or layout.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    layouts: dict[str, Layout] = {}
    if not layers:
        out = forward_checked(model, x.to(device))
    else:
        with ActivationCapture(model, list(layers), copy=False, layout=layout) as rec:
            out = forward_checked(model, x.to(device))
            acts = rec.outputs()
            for name in layers:
                if acts[name].dim() < 2:
                    raise NeuronvizError(
                        f"layer {name!r} gives a {acts[name].dim()}-D output; a knock-out needs (N, C, ...)")
                shapes[name] = tuple(acts[name].shape[1:])
                layouts[name] = rec.layouts.get(name, Layout())
            rec.clear()
    tgt = resolve_target(target, output, predict=lambda: out)
    clean = tgt(out).double()
    if not torch.isfinite(clean).all():
        raise NeuronvizError("the target gave a NaN or infinite value on the image")
    return tgt, shapes, float(clean[0]), layouts


def evaluate_sets(
    model: nn.Module,
    masker: _Masker,
    tgt: Target,
    images: torch.Tensor,
    masks: Mapping[str, torch.Tensor],
    n_sets: int,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The target value of every (set, image) pair, in batched forward passes.

    Row ``r`` of the flattened work is set ``r // N`` on image ``r % N``; each batch of
    ``batch_size`` rows is one forward pass, every row with its own mask on every hooked layer.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode, on the images' device, under ``no_grad``, hooked by ``masker``.
    masker : _Masker
        Its ``masks`` are set before every pass.
    tgt : Target
        The explained output.
    images : torch.Tensor
        (N, C, H, W) on the model's device.
    masks : mapping of str to torch.Tensor
        Per hooked layer, (n_sets, C[, ...]) bool masks.
    n_sets : int
        Number of sets.
    batch_size : int
        Rows per forward pass (halved on out-of-memory).
    progress : callable, optional
        ``progress(done, total)`` after each pass, in rows.

    Returns
    -------
    torch.Tensor
        (n_sets, N) float64 on the CPU.
    """
    n = images.shape[0]
    total = n_sets * n
    values = torch.empty(total, dtype=torch.float64)
    dev = images.device
    on_dev = {name: m.to(dev) for name, m in masks.items()}

    def step(r: range) -> None:
        rows = torch.arange(r.start, r.stop, device=dev)
        for name, m in on_dev.items():
            masker.masks[name] = m[rows // n]
        out = forward_checked(model, images[rows % n])
        o = tgt(out).double()
        if not torch.isfinite(o).all():
            raise NeuronvizError("the target gave NaN or infinite values on a knocked-out input")
        values[r.start : r.stop] = o.cpu()

    run_batched(total, batch_size, step, on_progress=progress)
    return values.view(n_sets, n)


def stack_masks(sets: Sequence[Mapping[str, Sequence[Neuron]]], shapes: Mapping[str, tuple[int, ...]]
                ) -> dict[str, torch.Tensor]:
    """Per layer touched by any set, the (K, C) (or (K, C, ...) when a set names units) bool masks of the K sets."""
    out: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        rows = [neuron_mask(name, shape, s.get(name, ())) for s in sets]
        if any(r.dim() > 1 for r in rows):
            rows = [r if r.dim() > 1 else _expand(r, len(shape)).expand(shape) for r in rows]
        out[name] = torch.stack(rows) if rows else torch.zeros((0, shape[0]), dtype=torch.bool)
    return out


@archived('KnockoutEffect')
@dataclass
class KnockoutEffect(Archived):
    """The output before and after each knock-out set.

    Attributes
    ----------
    sets : list of dict
        The sets, ``{layer: [neurons]}``.
    names : list of str
        A name per set.
    original : float
        ``o(x)``: the target value without knock-out (the mean over the copies or samples when
        evaluated on them).
    knocked : numpy.ndarray
        (K,) ``o_S(x)`` per set (the mean over the copies or samples).
    effect : numpy.ndarray
        (K,) ``o(x) - o_S(x)``.
    relative : numpy.ndarray
        (K,) ``effect / o(x)`` (NaN where ``o(x) == 0``).
    per_image : numpy.ndarray
        (K, N) ``o_S`` on every image evaluated (N = 1 on the image).
    original_per_image : numpy.ndarray
        (N,) ``o`` without knock-out on every image.
    target : int or None
        The explained class (None for a callable target).
    output : str
        ``"probability"``, ``"logit"`` or ``"callable"``.
    how : str or float
        The knock-out.
    on : str
        ``"image"``, ``"copies"`` or ``"samples"``.
    n_images : int
        Images each set was evaluated on.
    n_forward : int
        Forward passes this call ran (the clean pass and the reference's included).
    """

    sets: list[dict[str, list[Neuron]]]
    names: list[str]
    original: float
    knocked: np.ndarray
    effect: np.ndarray
    relative: np.ndarray
    per_image: np.ndarray
    original_per_image: np.ndarray
    target: int | None
    output: str
    how: How
    on: str
    n_images: int
    n_forward: int

    def as_rows(self) -> list[dict]:
        """One dict per set: name, set, original, knocked, effect, relative.

        Returns
        -------
        list of dict
            Ready for ``csv.DictWriter`` or ``pandas.DataFrame``.
        """
        return [
            {"name": n, "set": s, "original": self.original, "knocked": float(k), "effect": float(e),
             "relative": float(r)}
            for n, s, k, e, r in zip(self.names, self.sets, self.knocked, self.effect, self.relative)
        ]

    def to_frame(self) -> "pandas.DataFrame":
        """:meth:`as_rows` as a pandas DataFrame.

        Returns
        -------
        pandas.DataFrame

        Raises
        ------
        NeuronvizError
            pandas is not installed.
        """
        from ..core.tables import rows_to_frame

        return rows_to_frame(self.as_rows(), ["name", "set", "original", "knocked", "effect", "relative"])

    def table(self) -> str:
        """The effects as a text table, one line per set."""
        head = f"{'set':<28} {'original':>10} {'knocked':>10} {'effect':>10} {'relative':>9}"
        lines = [head, "-" * len(head)]
        for row in self.as_rows():
            lines.append(f"{row['name'][:28]:<28} {row['original']:>10.4g} {row['knocked']:>10.4g} "
                         f"{row['effect']:>10.4g} {row['relative']:>9.1%}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        what = f"class {self.target}" if self.target is not None else "callable target"
        return (f"KnockoutEffect({len(self.sets)} set(s), {what} ({self.output}), how={self.how!r}, on {self.on} "
                f"({self.n_images} image(s)), {self.n_forward} forward passes)")


def _as_sets(model: nn.Module, sets: object) -> tuple[list[dict[str, list[Neuron]]], list[str]]:
    """One set, a list of sets, or ``{name: set}``, as (sets, names)."""
    if isinstance(sets, Mapping) and sets and all(isinstance(v, Mapping) for v in sets.values()):
        names = [str(k) for k in sets]
        return [check_set(model, v, f"set {k!r}") for k, v in sets.items()], names
    if isinstance(sets, Mapping):
        one = check_set(model, sets)
        return [one], [_set_name(one)]
    if isinstance(sets, (list, tuple)) and sets:
        out = [check_set(model, s, f"set {i}") for i, s in enumerate(sets)]
        return out, [_set_name(s) for s in out]
    raise NeuronvizTypeError(
        "sets must be one set {layer: [channels]}, a non-empty list of sets, or {name: set}; "
        f"got {type(sets).__name__}"
    )


def _set_name(s: Mapping[str, Sequence[Neuron]]) -> str:
    parts = []
    for layer, neurons in s.items():
        shown = ", ".join(str(n) for n in list(neurons)[:4]) + (", ..." if len(neurons) > 4 else "")
        parts.append(f"{layer}[{shown}]")
    return " + ".join(parts) or "nothing"


def run_sets(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str],
    make_masks: Callable[[dict[str, tuple[int, ...]]], dict[str, torch.Tensor]],
    *,
    target: TargetSpec,
    output: str,
    how: How,
    reference: object,
    on: str,
    n_samples: int,
    perturbation: Perturbation | str | None,
    samples: torch.Tensor | Iterable | None,
    seed: int,
    batch_size: int | None,
    device: str | torch.device | None,
    progress: Callable[[int, int], None] | None,
    layout: LayoutSpec = "auto",
) -> dict:
    """Evaluate knock-out sets; the engine of :func:`knockout_effect` and the faithfulness curves.

    ``make_masks(shapes)`` gets each layer's output shape (from the clean pass) and returns,
    per layer, the (K, C) or (K, C, ...) bool masks of the K sets (:func:`stack_masks`), channels
    first whatever the layer's ``layout``.
    Returns a dict: ``values`` (K, N) float64, ``original`` (N,), ``target`` (Target),
    ``shapes``, ``on``, ``n_forward``, ``how``. The caller holds the model's lock.
    """
    how = check_how(how)
    if on not in ON:
        raise NeuronvizError(f"on must be one of {ON} (or pass samples=), got {on!r}")
    layers = list(dict.fromkeys(layers))
    if layers:
        resolve_layers(model, layers)
    dev = resolve_device(model, device)
    x = check_image(x, model)
    size = _check_batch_size(batch_size, dev)
    pert = make_perturbation(perturbation)
    stream = samples is not None and is_batch_stream(samples)
    if samples is not None and not stream:
        samples = check_batch(samples, model, what="samples", min_n=1)
    where = "samples" if samples is not None else on
    if where == "copies" or (how == "mean" and reference is None):
        n_samples = _check_samples(n_samples)

    with preserved_state(model), on_device(model, dev), torch.no_grad():
        model.eval()
        x = x.to(dev)
        tgt, shapes, clean, layouts = probe(model, x, layers, target, output, dev, layout)
        passes = 1
        means: dict[str, torch.Tensor] = {}
        if how == "mean" and layers:
            means, used = _reference_means(model, layers, reference, x, pert, n_samples, seed, size, dev)
            _check_mean_shapes(means, shapes, layouts)
            passes += used
        masker = _Masker(how, means)
        masker.layouts.update(layouts)
        for name, shape in shapes.items():
            masker.shapes[name] = shape
        masks = make_masks(shapes)
        n_sets = next(iter(masks.values())).shape[0] if masks else 1
        if where != "image":  # the clean row first: o without knock-out on the same images
            masks = {name: torch.cat([torch.zeros_like(m[:1]), m]) for name, m in masks.items()}
        n_rows = n_sets + (where != "image")
        with masker.on(model, layers):
            if where == "image":
                values = evaluate_sets(model, masker, tgt, x, masks, n_rows, size, progress)
                original = torch.tensor([clean], dtype=torch.float64)
            elif where == "copies":
                copies = torch.cat([pert.sample(x, range(lo, min(lo + size, n_samples)), seed=seed)
                                    for lo in range(0, n_samples, size)])
                values = evaluate_sets(model, masker, tgt, copies, masks, n_rows, size, progress)
                original, values = values[0], values[1:]
            elif not stream:
                assert isinstance(samples, torch.Tensor)  # check_batch made it one above
                values = evaluate_sets(model, masker, tgt, samples.to(dev), masks, n_rows, size, progress)
                original, values = values[0], values[1:]
            else:
                assert samples is not None  # a stream of batches
                parts = []
                for raw in iter_batches(samples, size, what="samples"):
                    batch = check_batch(raw, model, what="samples", min_n=0)
                    if batch.shape[0]:
                        parts.append(evaluate_sets(model, masker, tgt, batch.to(dev), masks, n_rows, size))
                if not parts:
                    raise NeuronvizError("samples yielded no image; pass a loader with at least one image")
                values = torch.cat(parts, dim=1)
                original, values = values[0], values[1:]
        passes += masker.n_forward
    return {"values": values, "original": original, "target": tgt, "shapes": shapes, "on": where,
            "n_forward": passes, "how": how, "layouts": {name: str(v) for name, v in layouts.items()}}


@runs_model
@reports_progress(lambda a: is_long({"image": 1, "copies": a.arguments["n_samples"]}.get(
    a.arguments["on"], images_of(a.arguments["samples"])),
    len(a.arguments["sets"]) if isinstance(a.arguments["sets"], (list, tuple)) else 1), unit="row")
def knockout_effect(
    model: nn.Module,
    x: torch.Tensor,
    sets: KnockoutSet | Sequence[KnockoutSet] | Mapping[str, KnockoutSet],
    target: TargetSpec = None,
    *,
    output: str = "probability",
    how: How = "zero",
    reference: torch.Tensor | Iterable | Mapping[str, torch.Tensor] | None = None,
    on: str = "image",
    n_samples: int = 32,
    perturbation: Perturbation | str | None = None,
    samples: torch.Tensor | Iterable | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: ProgressArg = None,
    layout: LayoutSpec = "auto",
) -> KnockoutEffect:
    """The output before and after knocking out each of many sets, in batched forward passes.

    The effect of a set S is ``o(x) - o_S(x)`` on the explained output (the class probability
    or logit, by the same target rule as :func:`neuronviz.score_neurons`), also relative to
    ``o(x)``. The K sets are evaluated together: the input is repeated, each row of a batch
    carries its own mask on every knocked-out layer, so K sets on N images cost
    ``ceil(K x N / batch_size)`` forward passes, plus one clean pass of ``x`` (the target,
    the layers' shapes and ``o(x)``) and, for ``how="mean"``, the passes over the reference.

    The model runs in eval mode under ``torch.no_grad()``; its modes, flags, device and hooks
    are as before when this returns or raises.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    x : torch.Tensor
        The image, (1, C, H, W) or (C, H, W), normalised as the model expects.
    sets : mapping, list of mappings, or mapping of names to mappings
        One set ``{layer: [channels]}`` (units as ``(c, h, w)`` tuples), a list of them, or
        ``{name: set}``.
    target : None, int or callable
        None: the class predicted on ``x``; an int: that class; a callable: maps the model
        output to (N,) values.
    output : {"probability", "logit"}
        For a class target.
    how : {"zero", "mean"} or float
        The knock-out (see :func:`knockout`).
    reference : tensor, loader or mapping, optional
        For ``how="mean"``: the images (or ``{layer: mean}``) whose mean replaces the knocked-out
        neurons; None: the perturbed copies of ``x``.
    on : {"image", "copies"}
        Evaluate on ``x`` itself, or on its ``n_samples`` perturbed copies (mean over copies).
    n_samples : int
        Number of perturbed copies (``on="copies"``, and the default reference of ``how="mean"``).
    perturbation : Perturbation, str or None
        How the copies are made (None: the paper's multiplicative scheme).
    samples : tensor or iterable, optional
        Evaluate on these images instead (N, C, H, W), or on the batches of a loader (mean over
        all its images); ``on`` is then ignored.
    seed : int
        Seed of the copies.
    batch_size : int, optional
        Rows (set x image) per forward pass; automatic when None, halved on out-of-memory.
    device : str or torch.device, optional
        Where to compute (the model is moved there for the call and back).
    progress : bool, callable or None
        ``True``: a progress bar (:mod:`neuronviz.core.progress`); ``False``: none; None (the
        default): a bar when the sets times the images evaluated reach 200 or the samples are
        a loader. A callable: ``progress(done, total)`` in rows after each pass; raising from
        it cancels.
    layout : str or mapping, default "auto"
        Where each layer keeps its channels, as for :func:`neuronviz.score_neurons`:
        "channels_first", "channels_last" (N, H, W, C), "tokens" (N, L, D; channels are the
        features D, units ``(d, i, j)`` patch tokens on their grid) or "auto"; one name, or
        ``{layer: name}``.

    Returns
    -------
    KnockoutEffect

    Raises
    ------
    NeuronvizError
        Bad image, samples or sets; an unknown layer (closest names suggested); a channel or
        unit out of range; a layer that runs twice in one pass; a bad target or ``how``.
    """
    spec, names = _as_sets(model, sets)
    layers = list(dict.fromkeys(name for s in spec for name in s))
    assert not isinstance(progress, bool)  # reports_progress made True/False a callback or None
    res = run_sets(model, x, layers, lambda shapes: stack_masks(spec, shapes), target=target, output=output, how=how,
                   reference=reference, on=on,
                   n_samples=n_samples, perturbation=perturbation, samples=samples, seed=seed,
                   batch_size=batch_size, device=device, progress=progress, layout=layout)
    values, original = res["values"].numpy(), res["original"].numpy()
    o = float(original.mean())
    knocked = values.mean(axis=1)
    effect = o - knocked
    relative = effect / o if o != 0 else np.full_like(effect, np.nan)
    tgt = res["target"]
    return KnockoutEffect(
        sets=spec, names=names, original=o, knocked=knocked, effect=effect, relative=relative,
        per_image=values, original_per_image=original, target=tgt.class_index, output=tgt.output,
        how=res["how"], on=res["on"], n_images=int(values.shape[1]), n_forward=int(res["n_forward"]),
    )
