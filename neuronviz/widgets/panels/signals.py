"""What panels share to report a user's pick: a list of callbacks, and a switch that mutes them."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import ipywidgets as W

__all__ = ["Callbacks", "Quiet", "SelectCallback", "close_widgets"]

#: ``fn(layer, channel)``: what a panel calls when the user picks a neuron.
SelectCallback = Callable[[str, int], None]


class Quiet:
    """True inside ``with quiet:`` blocks: a panel updating its own widgets mutes its callbacks."""

    def __init__(self) -> None:
        self.depth = 0

    def __enter__(self) -> "Quiet":
        self.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1

    def __bool__(self) -> bool:
        return self.depth > 0


class Callbacks:
    """The ``on_select`` callbacks of a panel; calling it calls each with ``(layer, channel)``."""

    def __init__(self) -> None:
        self._fns: list[SelectCallback] = []

    def add(self, fn: SelectCallback) -> None:
        """Call ``fn(layer, channel)`` on every pick."""
        self._fns.append(fn)

    def __call__(self, layer: str, channel: int) -> None:
        """Call every callback with ``(layer, channel)``."""
        for fn in list(self._fns):
            fn(layer, channel)


def close_widgets(widgets: Iterable[Any]) -> None:
    """Close widgets a panel replaces, with their children, layouts and styles (so ipywidgets frees them)."""
    stack = list(widgets)
    while stack:
        w = stack.pop()
        if not isinstance(w, W.Widget):
            continue
        stack.extend(getattr(w, "children", ()))
        stack.extend(v for v in (getattr(w, "layout", None), getattr(w, "style", None)) if v is not None)
        w.close()
