"""One channel's maps over a few images, and the top and bottom channels' maps as a grid whose buttons select."""

from __future__ import annotations

import html
from typing import Callable, Sequence

import ipywidgets as W
import numpy as np
import torch

from ...render.formatting import format_score
from ...render.pcace import BOTTOM_COLOUR, TOP_COLOUR
from ..pictures import encode_png, resize, thumb
from .signals import close_widgets

__all__ = ["ChannelStrip", "TopBottomGrid", "GRID_MAX_K"]

#: Top and bottom columns of the grid at most (a wider grid does not fit a notebook).
GRID_MAX_K = 5


class ChannelStrip:
    """The selected channel's map blended over each of a few images, with its name and a line about it.

    DOM classes: ``nv-channel-maps`` (the strip), ``nv-selected`` (the channel's name).

    Parameters
    ----------
    pictures : sequence of numpy.ndarray
        (H, W, 3) float images in [0, 1], one per map.
    size : int
        Long side of each shown picture in pixels.
    """

    def __init__(self, pictures: Sequence[np.ndarray] | np.ndarray, size: int = 150) -> None:
        self.pictures = [resize(p, size) for p in pictures]
        self.images = [W.Image(format="png", value=encode_png(p), layout=W.Layout(width=f"{size}px"))
                       for p in self.pictures]
        self.strip = W.HBox([W.VBox([im, W.HTML(f"<span style='font-size:11px'>image {i}</span>")])
                             for i, im in enumerate(self.images)])
        self.strip.add_class("nv-channel-maps")
        self.label = W.Label("no channel selected")
        self.label.add_class("nv-selected")
        self.info = W.HTML("")
        self.widget = W.VBox([W.HTML("<b>selected channel</b> on the first images"), self.label, self.info, self.strip])

    def show(self, maps: torch.Tensor, opacity: float, label: str, info: str = "") -> None:
        """Blend ``maps`` ((n, h, w), one per picture) at ``opacity``; ``label`` (text) and ``info`` (HTML) above."""
        self.label.value = label
        self.info.value = info
        for im, pic, amap in zip(self.images, self.pictures, maps):
            im.value = thumb(pic, amap, opacity)


class TopBottomGrid:
    """The top-k and bottom-k channels' maps: a button per channel column (it selects), a row per image.

    DOM classes: ``nv-top-bottom`` (the grid), ``nv-grid-channel`` (its buttons).

    Parameters
    ----------
    pictures : sequence of numpy.ndarray
        (H, W, 3) float images in [0, 1], one row each.
    size : int
        Long side of each cell in pixels.
    """

    def __init__(self, pictures: Sequence[np.ndarray] | np.ndarray, size: int = 76) -> None:
        self.size = size
        self.pictures = [resize(p, size) for p in pictures]
        self.columns: list[int] = []
        self._on_select: list[Callable[[int], None]] = []
        self._buttons: list[W.Button] = []
        self._cells: list[list[W.Image]] = []  # a row per picture
        self._legend = W.HTML("")
        self.grid = W.VBox([])
        self.grid.add_class("nv-top-bottom")
        self.widget = W.VBox([W.HTML("<b>top and bottom channels</b> (the buttons select them)"), self.grid])

    def on_select(self, fn: Callable[[int], None]) -> None:
        """Call ``fn(channel)`` when the user clicks a column's button."""
        self._on_select.append(fn)

    def show(self, layer: str, top: list[int], bottom: list[int], scores: torch.Tensor, maps: torch.Tensor,
             opacity: float) -> None:
        """Columns ``top + bottom`` of ``layer`` (``scores`` (C,), ``maps`` (n, C, h, w)), blended at ``opacity``.

        With as many columns as shown now, the buttons and cells are updated in place (an opacity
        move or another layer sends new values, not a new grid of widgets).
        """
        self.columns = list(top) + list(bottom)
        if len(self._buttons) != len(self.columns):
            self._build(len(self.columns))
        for i, (b, c) in enumerate(zip(self._buttons, self.columns)):
            b.description = f"ch {c} · {format_score('correlation', float(scores[c]))}"
            b.tooltip = f"select channel {c} of {layer}"
            b.style.button_color = "#dff0d8" if i < len(top) else "#eeeeee"
        for j, (row, pic) in enumerate(zip(self._cells, self.pictures)):
            for im, c in zip(row, self.columns):
                im.value = thumb(pic, maps[j, c], opacity)
        self._legend.value = (
            f"<span style='font-size:11px'><span style='color:{TOP_COLOUR}'>■</span> top {len(top)} &nbsp; "
            f"<span style='color:{BOTTOM_COLOUR}'>■</span> bottom {len(bottom)} of {html.escape(layer)}</span>")

    def _build(self, n: int) -> None:
        """A legend, a row of ``n`` buttons and a row of ``n`` cells per picture, replacing the old ones."""
        self._buttons = []
        for i in range(n):
            b = W.Button(layout=W.Layout(width=f"{self.size}px", padding="0px"), style={"font_size": "10px"})
            b.add_class("nv-grid-channel")
            b.on_click(lambda _b, i=i: self._clicked(self.columns[i]))
            self._buttons.append(b)
        self._cells = [[W.Image(format="png", layout=W.Layout(width=f"{self.size}px")) for _ in range(n)]
                       for _ in self.pictures]
        self._legend = W.HTML("")
        old = self.grid.children
        self.grid.children = [self._legend, W.HBox(self._buttons), *(W.HBox(row) for row in self._cells)]
        close_widgets(old)  # the replaced cells would stay registered with ipywidgets otherwise

    def _clicked(self, channel: int) -> None:
        for fn in list(self._on_select):
            fn(channel)

