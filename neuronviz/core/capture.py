"""Record the outputs of named modules during a forward pass, with every hook always removed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from .errors import CaptureError, LayerNotFoundError, closest_names

__all__ = ["ActivationCapture", "capture", "resolve_layers", "layer_summary", "LayerInfo"]


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
    TypeError
        ``layers`` is not a string or a sequence of strings.
    """
    if isinstance(layers, str):
        layers = [layers]
    try:
        names = list(dict.fromkeys(layers))
    except TypeError:
        raise TypeError(f"layers must be a layer name or a list of names, got {type(layers).__name__}") from None
    if not names:
        raise LayerNotFoundError("layers is empty: name at least one layer (see nv.layer_summary(model, x))")
    modules = dict(model.named_modules())
    modules.pop("", None)  # the root is not a layer
    out: dict[str, nn.Module] = {}
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"layer names must be strings, got {name!r} ({type(name).__name__})")
        if name not in modules:
            hint = closest_names(name, modules)
            did_you_mean = f" Did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
            raise LayerNotFoundError(
                f"model has no layer named {name!r}.{did_you_mean} "
                "nv.layer_summary(model, x) lists every layer with its output shape."
            )
        out[name] = modules[name]
    return out


class ActivationCapture:
    """Context manager that records the output of named modules at every forward pass.

    The recording of a module is a detached copy taken when the module returns, so an
    in-place operation later in the network (``ReLU(inplace=True)``, ``x += y``) cannot
    change it. A module that runs more than once within one forward pass of ``model``
    raises :class:`CaptureError`: silently keeping the first or last call would record
    the wrong tensor (hook a module that runs once, or wrap the repeated call in its own
    module). Every hook is removed on exit, whether the block ends normally, by an
    exception or by ``KeyboardInterrupt``.

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

    Examples
    --------
    >>> with ActivationCapture(model, ["blocks.10"]) as rec:  # doctest: +SKIP
    ...     logits = model(x)
    >>> rec["blocks.10"].shape  # doctest: +SKIP
    torch.Size([1, 80, 14, 14])
    """

    def __init__(self, model: nn.Module, layers: str | Sequence[str], *, copy: bool = True) -> None:
        self.model = model
        self.modules = resolve_layers(model, layers)
        self.copy = copy
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def layers(self) -> list[str]:
        """The recorded layer names, in order."""
        return list(self.modules)

    def _make_hook(self, name: str):
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
            out = output.detach()
            self._outputs[name] = out.clone() if self.copy else out

        return hook

    def _reset(self, module: nn.Module, args: tuple) -> None:
        # a new forward pass of the root model starts a new recording
        self._outputs.clear()

    def __enter__(self) -> "ActivationCapture":
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._reset))
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this object registered (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    def clear(self) -> None:
        """Forget the recorded tensors (frees their memory)."""
        self._outputs.clear()

    def outputs(self) -> dict[str, torch.Tensor]:
        """Return ``{layer: tensor}`` of the last forward pass.

        Raises
        ------
        CaptureError
            A layer did not run during the last forward pass.
        """
        missing = [n for n in self.modules if n not in self._outputs]
        if missing:
            raise CaptureError(
                f"layer(s) {missing} produced no output during the forward pass: the model's forward "
                "does not call them for this input (unused or conditional modules cannot be recorded)"
            )
        return dict(self._outputs)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.outputs()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.modules)

    def __len__(self) -> int:
        return len(self.modules)


def capture(model: nn.Module, layers: str | Sequence[str], *, copy: bool = True) -> ActivationCapture:
    """Record named modules' outputs; see :class:`ActivationCapture`.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    layers : str or sequence of str
        Module names.
    copy : bool
        Record copies (safe against later in-place operations).

    Returns
    -------
    ActivationCapture
        Use it in a ``with`` block.
    """
    return ActivationCapture(model, layers, copy=copy)


@dataclass(frozen=True)
class LayerInfo:
    """One candidate layer: its name, module type, output shape (without the batch) and size."""

    name: str
    type: str
    shape: tuple[int, ...]
    channels: int
    positions: int

    def __str__(self) -> str:
        return f"{self.name:<32} {self.type:<20} {str(tuple(self.shape)):<18}"


class LayerSummary(list):
    """A list of :class:`LayerInfo` that prints as a table."""

    def names(self) -> list[str]:
        """The layer names, in forward order."""
        return [info.name for info in self]

    def __str__(self) -> str:
        head = f"{'layer':<32} {'type':<20} {'output shape':<18}"
        return "\n".join([head, "-" * len(head)] + [str(info) for info in self])

    def _repr_pretty_(self, p, cycle) -> None:  # IPython shows the table
        p.text(str(self))


def layer_summary(model: nn.Module, x: torch.Tensor, *, max_depth: int | None = None) -> LayerSummary:
    """List the layers that can be scored, with their type and output shape.

    Runs one forward pass of ``x`` (first image only) in eval mode without gradients;
    the model's mode is restored. A layer is listed when it returns a single tensor of
    at least 2 dimensions and runs once per forward pass, in the order the layers finish.

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
        A list of :class:`LayerInfo`; ``print`` it for a table.
    """
    from .model_state import preserved_state  # local: keeps capture importable on its own

    seen: list[tuple[str, nn.Module, torch.Tensor]] = []
    called: set[str] = set()
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if name in called:
                called.add(name + "\0twice")
                return
            called.add(name)
            if isinstance(output, torch.Tensor) and output.dim() >= 2:
                seen.append((name, module, output))

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        with preserved_state(model), torch.no_grad():
            model.eval()
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    rows = LayerSummary()
    for name, module, out in seen:
        if name + "\0twice" in called:
            continue  # runs more than once per forward: not capturable
        if max_depth is not None and name.count(".") + 1 > max_depth:
            continue
        shape = tuple(out.shape[1:])
        rows.append(
            LayerInfo(
                name=name,
                type=type(module).__name__,
                shape=shape,
                channels=int(shape[0]),
                positions=int(torch.tensor(shape[1:]).prod().item()) if len(shape) > 1 else 1,
            )
        )
    return rows
