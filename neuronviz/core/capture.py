"""Forward hooks on named modules, with every hook always removed: the one mechanism neuronviz records with.

:func:`hooks` registers plain forward hooks for a block; :class:`ActivationCapture` records
named modules' outputs with it (detached copies, or attached to the graph, optionally turned
channels first, optionally ending the forward pass once the last of them has run);
:func:`layer_summary` lists a model's layers from one probe pass.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .errors import CaptureError, LayerNotFoundError, NeuronvizError, NeuronvizTypeError, closest_names
from .layouts import Layout, LayoutSpec, check_layout_spec, detect_layout, resolve_layout
from .locks import hold_model, runs_model
from .validation import check_model, forward_checked

__all__ = [
    "ActivationCapture", "HookFn", "capture", "hooks", "resolve_layers", "layer_summary", "LayerInfo", "LayerSummary",
]

#: A forward hook: ``fn(module, args, output)``, as ``nn.Module.register_forward_hook`` calls it;
#: a value it returns (not None) replaces the module's output.
HookFn = Callable[[nn.Module, tuple, Any], Any]


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> dict[str, nn.Module]:
    """Map layer names to the model's modules, failing early on any unknown name.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    layers : str or sequence of str
        Names as ``model.named_modules()`` (and :func:`layer_summary`) list them.

    Returns
    -------
    dict
        ``{name: module}`` in the order given, duplicates removed.

    Raises
    ------
    LayerNotFoundError
        A name is not a module of ``model``; the message suggests the closest names.
    NeuronvizTypeError
        ``layers`` is not a string or a sequence of strings (also a ``TypeError``).
    """
    if isinstance(layers, str):
        layers = [layers]
    try:
        names = list(dict.fromkeys(layers))
    except TypeError:
        raise NeuronvizTypeError(
            f"layers must be a layer name or a list of names, got {type(layers).__name__}"
        ) from None
    if not names:
        raise LayerNotFoundError("layers is empty: name at least one layer (see nv.layer_summary(model, x))")
    modules = dict(model.named_modules())
    modules.pop("", None)  # the root is not a layer
    out: dict[str, nn.Module] = {}
    for name in names:
        if not isinstance(name, str):
            raise NeuronvizTypeError(f"layer names must be strings, got {name!r} ({type(name).__name__})")
        if name not in modules:
            hint = closest_names(name, modules)
            did_you_mean = f" Did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
            raise LayerNotFoundError(
                f"model has no layer named {name!r}.{did_you_mean} "
                "nv.layer_summary(model, x) lists every layer with its output shape."
            )
        out[name] = modules[name]
    return out


@contextlib.contextmanager
def hooks(
    model: nn.Module,
    fns: Mapping[str, HookFn],
    *,
    before_forward: Callable[[nn.Module, tuple], None] | None = None,
    pre: Mapping[str, Callable[[nn.Module, tuple], None]] | None = None,
) -> Iterator[dict[str, nn.Module]]:
    """Forward hooks on named modules of ``model`` for the duration of a ``with`` block.

    Every hook is removed when the block ends, normally, by an exception or by
    ``KeyboardInterrupt``, and when registering fails half-way. Hooks run in the order the
    modules finish; on one module, in the order they were registered (so hooks registered by
    an outer block run first).

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    fns : mapping of str to callable
        ``{layer name: fn(module, args, output)}``. Unknown names fail here, before any hook
        is registered, with the closest names suggested. As in torch, a value ``fn`` returns
        replaces the module's output (a knock-out); return None to only observe.
    before_forward : callable, optional
        ``fn(model, args)``, called when a forward pass of ``model`` itself starts (a forward
        pre-hook on the root), e.g. to start a new recording.
    pre : mapping of str to callable, optional
        ``{layer name: fn(module, args)}``: forward pre-hooks, called before a module runs
        (to see its input before the module can change it in place); a value returned
        replaces the module's input.

    Yields
    ------
    dict of str to torch.nn.Module
        The hooked modules by name.

    Raises
    ------
    LayerNotFoundError
        A name is not a module of ``model``.

    Examples
    --------
    >>> order = []
    >>> with hooks(model, {n: lambda m, a, o, n=n: order.append(n) for n in ["conv1", "fc"]}):  # doctest: +SKIP
    ...     model(x)
    """
    pre = pre or {}
    names = list(dict.fromkeys([*fns, *pre]))
    modules = resolve_layers(model, names) if names else {}
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        if before_forward is not None:
            handles.append(model.register_forward_pre_hook(before_forward))
        for name, module in modules.items():
            if name in pre:
                handles.append(module.register_forward_pre_hook(pre[name]))
            if name in fns:
                handles.append(module.register_forward_hook(fns[name]))
        yield modules
    finally:
        while handles:
            handles.pop().remove()


#: What a consumed recording leaves behind (the layer ran; its tensor went to ``consume``).
_CONSUMED = torch.empty(0)


class _StopForward(Exception):
    """Raised by a recording hook to end a forward pass once every recorded layer has run."""


class ActivationCapture:
    """Context manager that records the output of named modules at every forward pass.

    The recording of a module is a copy taken when the module returns, so an in-place
    operation later in the network (``ReLU(inplace=True)``, ``x += y``) cannot change it;
    detached from the graph unless ``keep_graph``. A module that runs more than once within
    one forward pass of ``model`` raises :class:`CaptureError`: silently keeping the first or
    last call would record the wrong tensor (hook a module that runs once, or wrap the
    repeated call in its own module). Every hook is removed on exit, whether the block ends
    normally, by an exception or by ``KeyboardInterrupt`` (see :func:`hooks`).

    Parameters
    ----------
    model : torch.nn.Module
        The network whose forward passes are recorded.
    layers : str or sequence of str
        Module names (see :func:`layer_summary`). Unknown names fail here, before any
        forward pass, with the closest names suggested.
    copy : bool
        Record a copy (default). ``False`` records the module's own output tensor, which
        saves memory but is only safe when nothing modifies it in place afterwards.
    keep_graph : bool
        Record the output attached to the autograd graph (a gradient flows from the
        recording back to the input), for methods that optimise through a layer.
    stop_after_last : bool
        End each forward pass run by :meth:`forward` once every layer is recorded: the rest
        of the network is skipped and :meth:`forward` returns None. An attribute, so it can be
        switched between passes. Passes not run by :meth:`forward` must not use it.
    layout : str or mapping, default "channels_first"
        How outputs are recorded (see :mod:`neuronviz.core.layouts`): "channels_first" as the
        module returns them; "channels_last" (N, H, W, C) and "tokens" (N, L, D) turned into
        (N, C, H, W) and (N, D, h, w) (class tokens left out); "auto" detects the layout from
        the module and the output's shape. One name for every layer, or ``{layer: name}``.
    consume : callable, optional
        ``consume(name, tensor)``, called with each recording as its module returns, instead of
        keeping it: the module's own output (no copy, whatever ``copy`` says), read before any
        later module can change it in place, and released with the rest of the pass as the
        model's forward releases it (so memory and caches are used as in a plain pass). The
        consumer must not keep the tensor; :meth:`outputs` then only checks that every layer ran.

    Attributes
    ----------
    layouts : dict of str to Layout
        The layout of each layer recorded so far.

    Examples
    --------
    >>> with ActivationCapture(model, ["blocks.10"]) as rec:  # doctest: +SKIP
    ...     logits = model(x)
    >>> rec["blocks.10"].shape  # doctest: +SKIP
    torch.Size([1, 80, 14, 14])
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str],
        *,
        copy: bool = True,
        keep_graph: bool = False,
        stop_after_last: bool = False,
        layout: LayoutSpec = "channels_first",
        consume: Callable[[str, torch.Tensor], None] | None = None,
    ) -> None:
        self.model = check_model(model)
        self.consume = consume
        self.modules = resolve_layers(model, layers)
        self.copy = copy
        self.keep_graph = keep_graph
        self.stop_after_last = stop_after_last
        self._layout_names = check_layout_spec(layout, list(self.modules))
        self.layouts: dict[str, Layout] = {}
        self._image_size: tuple[int, int] | None = None
        self._outputs: dict[str, torch.Tensor] = {}
        self._stack: contextlib.ExitStack | None = None

    @property
    def layers(self) -> list[str]:
        """The recorded layer names, in order."""
        return list(self.modules)

    def _make_hook(self, name: str) -> HookFn:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                raise CaptureError(
                    f"layer {name!r} ({type(module).__name__}) returned {type(output).__name__}, not a tensor; "
                    "choose one of its submodules whose output is a tensor"
                )
            if name in self._outputs:
                raise CaptureError(
                    f"layer {name!r} ({type(module).__name__}) ran more than once in one forward pass, so its "
                    "activation is ambiguous; choose a module that runs once (a shared module called twice "
                    "cannot be told apart by hooks)"
                )
            kind = self._layout_names[name]
            layout = Layout() if kind == "channels_first" else resolve_layout(
                kind, module, output.shape, self._image_size, layer=name
            )
            self.layouts[name] = layout
            out = output if self.keep_graph else output.detach()
            copy = self.copy and self.consume is None
            if layout.kind == "channels_first":
                out = out.clone() if copy else out
            else:
                out = layout.to_channels_first(out)
                out = out.clone(memory_format=torch.contiguous_format) if copy else out
            if self.consume is not None:
                self.consume(name, out)
                out = _CONSUMED
            self._outputs[name] = out
            if self.stop_after_last and len(self._outputs) == len(self.modules):
                raise _StopForward

        return hook

    def _reset(self, module: nn.Module, args: tuple) -> None:
        # a new forward pass of the root model starts a new recording
        self._outputs.clear()
        first = args[0] if args else None
        self._image_size = (
            (first.shape[-2], first.shape[-1]) if isinstance(first, torch.Tensor) and first.dim() == 4 else None
        )

    def __enter__(self) -> "ActivationCapture":
        stack = contextlib.ExitStack()
        with stack:  # closes (removes the hooks) if entering fails
            # the model's lock for the block: another thread's neuronviz call would record into our hooks
            stack.enter_context(hold_model(self.model))
            stack.enter_context(hooks(model=self.model, fns={n: self._make_hook(n) for n in self.modules},
                                      before_forward=self._reset))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this object registered (idempotent)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def forward(self, *inputs: Any) -> Any:
        """Run ``model(*inputs)`` with the layers recorded (a refused input gives a clear error).

        Parameters
        ----------
        *inputs
            The model's inputs (one tensor for an image model).

        Returns
        -------
        object
            What the model returned, or None when ``stop_after_last`` ended the pass after the
            last recorded layer.
        """
        try:
            if len(inputs) == 1 and isinstance(inputs[0], torch.Tensor):
                return forward_checked(self.model, inputs[0])
            return self.model(*inputs)
        except _StopForward:
            return None

    def clear(self) -> None:
        """Forget the recorded tensors (frees their memory)."""
        self._outputs.clear()

    def outputs(self) -> dict[str, torch.Tensor]:
        """Return ``{layer: tensor}`` of the last forward pass (empty when the recordings were consumed).

        Raises
        ------
        CaptureError
            A layer did not run during the last forward pass.
        """
        self._check_ran()
        return {} if self.consume is not None else dict(self._outputs)

    def _check_ran(self) -> None:
        missing = [n for n in self.modules if n not in self._outputs]
        if missing:
            raise CaptureError(
                f"layer(s) {missing} produced no output during the forward pass: the model's forward "
                "does not call them for this input (unused or conditional modules cannot be recorded)"
            )

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.outputs()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.modules)

    def __len__(self) -> int:
        return len(self.modules)


def capture(
    model: nn.Module,
    layers: str | Sequence[str],
    *,
    copy: bool = True,
    keep_graph: bool = False,
    stop_after_last: bool = False,
    layout: LayoutSpec = "channels_first",
) -> ActivationCapture:
    """Record named modules' outputs; see :class:`ActivationCapture`.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    layers : str or sequence of str
        Module names.
    copy : bool
        Record copies (safe against later in-place operations).
    keep_graph : bool
        Keep the recordings attached to the autograd graph.
    stop_after_last : bool
        End passes run by :meth:`ActivationCapture.forward` after the last recorded layer.
    layout : str or mapping
        "channels_first" (as returned), "channels_last", "tokens" or "auto".

    Returns
    -------
    ActivationCapture
        Use it in a ``with`` block.
    """
    return ActivationCapture(
        model, layers, copy=copy, keep_graph=keep_graph, stop_after_last=stop_after_last, layout=layout
    )


@dataclass(frozen=True)
class LayerInfo:
    """One candidate layer: its name, module type, output shape (without the batch) and size.

    ``shape`` is channels first, (C, H, W) or (F,), also for a layer whose output is channels
    last (N, H, W, C) or tokens (N, L, D): ``layout`` then says so ("channels_last", or
    "tokens", whose shape is (D, h, w) on the patch grid, class tokens left out; see
    :mod:`neuronviz.core.layouts`), and ``channels`` counts C (D).
    """

    name: str
    type: str
    shape: tuple[int, ...]
    channels: int
    positions: int
    layout: str = "channels_first"

    def __str__(self) -> str:
        note = "" if self.layout == "channels_first" else f" {self.layout}"
        return f"{self.name:<32} {self.type:<20} {str(tuple(self.shape)):<18}{note}"


class LayerSummary(list):
    """A list of :class:`LayerInfo` that prints as a table.

    Attributes
    ----------
    output : object
        What the model returned on the probe pass (first image), detached, on the CPU: the
        class scores of the same pass that listed the layers.
    """

    output: object = None

    def names(self) -> list[str]:
        """The layer names, in forward order."""
        return [info.name for info in self]

    def __str__(self) -> str:
        head = f"{'layer':<32} {'type':<20} {'output shape':<18}"
        return "\n".join([head, "-" * len(head)] + [str(info) for info in self])

    def _repr_pretty_(self, p, cycle) -> None:  # IPython shows the table
        p.text(str(self))


@runs_model
def layer_summary(model: nn.Module, x: torch.Tensor, *, max_depth: int | None = None) -> LayerSummary:
    """List the layers that can be scored, with their type and output shape.

    Runs one forward pass of ``x`` (first image only) in eval mode without gradients;
    the model's mode is restored. A layer is listed when it returns a single tensor of
    at least 2 dimensions and runs once per forward pass, in the order the layers finish.
    Shapes are channels first, with the layout of channels-last and token layers detected
    as ``layout="auto"`` does (:func:`neuronviz.core.layouts.detect_layout`). The model's
    output of this pass is kept as ``summary.output``, so the class scores need no second pass.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    x : torch.Tensor
        An input batch as the model takes it, e.g. (1, 3, 224, 224).
    max_depth : int, optional
        List only names with at most this many dotted parts (``max_depth=2`` keeps
        ``blocks.10`` and drops ``blocks.10.depthwise``), to see a deep network's outline.

    Returns
    -------
    LayerSummary
        A list of :class:`LayerInfo`; ``print`` it for a table. ``.output`` is what the model
        returned on the first image, detached, on the CPU.

    Raises
    ------
    NeuronvizError
        ``x`` is not a tensor, an image with the wrong channel count, dtype or NaN values
        (checked as every method checks its images), or input the model refuses.
    """
    from .model_state import preserved_state  # local: keeps capture importable on its own
    from .validation import check_image, forward_checked

    if not isinstance(x, torch.Tensor):
        raise NeuronvizTypeError(
            f"x must be a torch tensor as the model takes it, e.g. (1, C, H, W), got {type(x).__name__}; "
            "nv.preprocess(image) turns a PIL image or array into one"
        )
    if x.dim() == 0:
        raise NeuronvizError(
            "x is a 0-d tensor (one number); pass an input batch as the model takes it, e.g. (1, C, H, W)"
        )
    if x.dim() in (3, 4):  # an image or a batch of images: checked like every method's input
        x = check_image(x[:1] if x.dim() == 4 else x, model)
    if max_depth is not None and (isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1):
        raise NeuronvizError(f"max_depth must be a positive integer or None, got {max_depth!r}")
    seen: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    called: set[str] = set()

    def make_hook(name: str) -> HookFn:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if name in called:
                called.add(name + "\0twice")
                return
            called.add(name)
            if isinstance(output, torch.Tensor) and output.dim() >= 2:
                seen.append((name, module, tuple(output.shape)))  # the shape only: no tensor is kept

        return hook

    probe = x[:1]
    image_size = tuple(probe.shape[-2:]) if probe.dim() == 4 else None
    with preserved_state(model), torch.no_grad():
        model.eval()
        with hooks(model, {name: make_hook(name) for name, _ in model.named_modules() if name}):
            output = forward_checked(model, probe)
    rows = LayerSummary()
    rows.output = _detached_cpu(output)
    for name, module, full in seen:
        if name + "\0twice" in called:
            continue  # runs more than once per forward: not capturable
        if max_depth is not None and name.count(".") + 1 > max_depth:
            continue
        layout = detect_layout(module, full, image_size)
        shape = layout.shape(full[1:])
        rows.append(
            LayerInfo(
                name=name,
                type=type(module).__name__,
                shape=shape,
                channels=int(shape[0]),
                positions=math.prod(shape[1:]),
                layout=layout.kind,
            )
        )
    return rows


def _detached_cpu(obj: object) -> object:
    """A model output with every tensor in it detached and on the CPU (tuples, lists, dicts walked)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, (tuple, list)) and not hasattr(obj, "_fields"):
        return type(obj)(_detached_cpu(v) for v in obj)
    if isinstance(obj, dict):
        items = {k: _detached_cpu(v) for k, v in obj.items()}
        try:
            return type(obj)(items)  # a dict subclass such as a ModelOutput keeps its type
        except Exception:  # noqa: BLE001 - a subclass with another constructor: a plain dict will do
            return items
    return obj
