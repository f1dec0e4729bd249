"""Bars of PCACE scores: one layer's channels ranked (a click selects a channel), and the layers ranked."""

from __future__ import annotations

import html
from typing import Callable

import bqplot
import ipywidgets as W
import numpy as np

from ...methods.pcace import LayerRanking, PCACEScores
from ...render.formatting import format_score
from ...render.pcace import BOTTOM_COLOUR, TOP_COLOUR

__all__ = ["ChannelBars", "LayerBars", "TOP_COLOUR", "BOTTOM_COLOUR", "BAR_COLOUR", "SELECTED_COLOUR"]

#: Colour of a bar that is neither top, bottom nor selected; of the selected channel's bar.
BAR_COLOUR, SELECTED_COLOUR = "#9ecae1", "#000000"
_SHOWN_LAYER_COLOUR = "#3182bd"


class _ClickableBars:
    """A bqplot Bars mark whose click on bar ``i`` calls every ``on_select`` callback with ``keys[i]``."""

    def __init__(self, mark: bqplot.Bars) -> None:
        self.bars_mark = mark
        self.keys: list = []
        self._on_select: list[Callable] = []
        self._quiet = 0
        mark.observe(self._clicked, names="selected")

    def on_select(self, fn: Callable) -> None:
        """Call ``fn(key)`` when the user clicks a bar."""
        self._on_select.append(fn)

    def _follow(self, index: int | None) -> None:
        """Make the mark's selection ``index`` without callbacks, so that a click on any other bar is a change."""
        self._quiet += 1
        try:
            self.bars_mark.selected = None if index is None else [index]
        finally:
            self._quiet -= 1

    def _clicked(self, change: dict) -> None:
        sel = change["new"]
        if self._quiet or sel is None or len(sel) == 0:
            return
        i = int(np.asarray(sel).reshape(-1)[-1])
        if 0 <= i < len(self.keys):
            for fn in list(self._on_select):
                fn(self.keys[i])


def _figure(marks: list, axes: list, title: str, margin: dict, width: int, height: int, css: str) -> bqplot.Figure:
    fig = bqplot.Figure(marks=marks, axes=axes, title=title, fig_margin=margin, animation_duration=0,
                        layout=W.Layout(width=f"{width}px", height=f"{height}px"))
    fig.add_class(css)
    return fig


class ChannelBars(_ClickableBars):
    """One layer's PCACE scores as bars, best channel first; a click on a bar selects its channel.

    The first mark holds one bar per channel in rank order (its ``x`` are the channel indices,
    on an ordinal scale in that order); the top-k bars are green, the bottom-k grey and the
    selected one black, with a triangle above it.

    DOM class: ``nv-pcace-bars`` (the bqplot Figure).

    Parameters
    ----------
    width, height : int
        Size of the figure in pixels.
    """

    def __init__(self, width: int = 620, height: int = 260) -> None:
        self.scores = np.zeros(0)
        self.x_scale = bqplot.OrdinalScale()
        self.y_scale = bqplot.LinearScale(min=0.0, max=1.05)
        scales = {"x": self.x_scale, "y": self.y_scale}
        tooltip = bqplot.Tooltip(fields=["index", "x", "y"], formats=["", "", ".3f"],
                                 labels=["rank (0 = best)", "channel", "PCACE score"])
        super().__init__(bqplot.Bars(x=[], y=[], scales=scales, colors=[BAR_COLOUR], padding=0.15, stroke_width=0.0,
                                     interactions={"click": "select", "hover": "tooltip"}, tooltip=tooltip,
                                     selected_style={}, unselected_style={}))
        self.selected_mark = bqplot.Scatter(x=[], y=[], scales=scales, marker="triangle-down", default_size=70,
                                            colors=[SELECTED_COLOUR])
        # hundreds of channel numbers would overlap into a black band: the tooltip names each bar instead
        axes = [bqplot.Axis(scale=self.x_scale, label="channels, best first (click a bar)",
                            tick_style={"display": "none"}),
                bqplot.Axis(scale=self.y_scale, side="left", label="PCACE score", tick_format=".1f",
                            label_offset="40px")]
        self.figure = _figure([self.bars_mark, self.selected_mark], axes, "no run yet",
                              {"top": 40, "bottom": 35, "left": 55, "right": 15}, width, height, "nv-pcace-bars")
        self.widget = self.figure

    @property
    def order(self) -> list[int]:
        """The channels in rank order, best first (one bar each)."""
        return self.keys

    def set_scores(self, scores: PCACEScores, k: int, selected: int | None) -> None:
        """Draw ``scores`` in rank order, the top and bottom ``k`` marked, ``selected`` highlighted."""
        self.keys = [int(c) for c in scores.ranking.tolist()]
        self.scores = scores.scores.double().numpy()
        self._follow(None)
        with self.bars_mark.hold_sync():
            self.x_scale.domain = self.keys
            self.bars_mark.x = np.asarray(self.keys)
            self.bars_mark.y = self.scores[self.keys]
        self.figure.title = (f"{scores.layer}: {len(self.keys)} channels ranked by PCACE "
                             f"({scores.n_components} component{'s' if scores.n_components > 1 else ''})")
        self.mark(k, selected)

    def mark(self, k: int, selected: int | None) -> None:
        """Colour the top and bottom ``k`` and the ``selected`` channel (no callbacks)."""
        n = len(self.keys)
        k = min(k, n)
        colours = [BAR_COLOUR] * (n - k) + [BOTTOM_COLOUR] * k
        colours[:k] = [TOP_COLOUR] * k
        rank = self.keys.index(selected) if selected in self.keys else None
        if rank is not None:
            colours[rank] = SELECTED_COLOUR
        self.bars_mark.colors = colours
        self._follow(rank)
        with self.selected_mark.hold_sync():
            if rank is None:
                self.selected_mark.x, self.selected_mark.y = np.zeros(0, dtype=int), np.zeros(0)
            else:
                self.selected_mark.x = np.asarray([selected])
                self.selected_mark.y = np.asarray([min(1.0, float(self.scores[selected])) + 0.04])

    def click(self, channel: int) -> None:
        """Act as a click on ``channel``'s bar (what the browser does)."""
        self.bars_mark.selected = [self.keys.index(int(channel))]


class LayerBars(_ClickableBars):
    """Each ranked layer's mean top-k PCACE score as a bar, layers in the order given, and a table.

    A click on a bar shows that layer. The table lists :attr:`neuronviz.LayerRanking.summary`,
    best layer first.

    DOM classes: ``nv-layer-ranking`` (the bqplot Figure), ``nv-ranking-table`` (the table).

    Parameters
    ----------
    width, height : int
        Size of the figure in pixels.
    """

    def __init__(self, width: int = 360, height: int = 260) -> None:
        self.x_scale = bqplot.OrdinalScale()
        self.y_scale = bqplot.LinearScale(min=0.0, max=1.05)
        scales = {"x": self.x_scale, "y": self.y_scale}
        tooltip = bqplot.Tooltip(fields=["x", "y"], formats=["", ".3f"], labels=["layer", "mean top-k score"])
        super().__init__(bqplot.Bars(x=[], y=[], scales=scales, colors=[BAR_COLOUR], padding=0.2,
                                     interactions={"click": "select", "hover": "tooltip"}, tooltip=tooltip,
                                     selected_style={}, unselected_style={}))
        self.max_mark = bqplot.Scatter(x=[], y=[], scales=scales, marker="diamond", default_size=40, colors=["#444444"])
        # layer names such as blocks.12.expand.act would overlap side by side: tilted
        axes = [bqplot.Axis(scale=self.x_scale, label="layer (click a bar to show it)", tick_rotate=-20,
                            label_offset="80px"),
                bqplot.Axis(scale=self.y_scale, side="left", tick_format=".1f", label="score", label_offset="35px")]
        self.figure = _figure([self.bars_mark, self.max_mark], axes, "which layers carry the class",
                              {"top": 40, "bottom": 100, "left": 75, "right": 25}, width + 25, height + 50,
                              "nv-layer-ranking")
        self.table = W.HTML("")
        self.table.add_class("nv-ranking-table")
        self.widget = W.VBox([self.figure, self.table])

    @property
    def layers(self) -> list[str]:
        """The layers, one bar each, in the order they were ranked."""
        return self.keys

    def set_ranking(self, ranking: LayerRanking, shown: str | None) -> None:
        """Draw ``ranking`` (its ``k`` sets the mean top-k), the ``shown`` layer darker."""
        self.keys = list(ranking.layers)
        rows = {r["layer"]: r for r in ranking.summary}
        self._follow(None)
        with self.bars_mark.hold_sync():
            self.x_scale.domain = self.keys
            self.bars_mark.x = self.keys
            self.bars_mark.y = np.asarray([rows[name]["mean_top_k"] for name in self.keys])
        with self.max_mark.hold_sync():
            self.max_mark.x = self.keys
            self.max_mark.y = np.asarray([rows[name]["max"] for name in self.keys])
        self.bars_mark.colors = [_SHOWN_LAYER_COLOUR if name == shown else BAR_COLOUR for name in self.keys]
        self._follow(self.keys.index(shown) if shown in self.keys else None)
        self.figure.title = f"mean top-{ranking.k} per layer (◆ best)"
        best = ranking.best()

        def cell(value: float) -> str:
            return f"<td style='text-align:right'>{format_score('correlation', value)}</td>"

        cells = "".join(
            f"<tr style='{'font-weight:bold' if r['layer'] == shown else ''}'>"
            f"<td>{i + 1}</td><td>{html.escape(r['layer'])}{' ★' if r['layer'] == best else ''}</td>"
            f"<td style='text-align:right'>{r['channels']}</td>"
            f"{cell(r['mean_top_k'])}{cell(r['max'])}{cell(r['mean'])}</tr>"
            for i, r in enumerate(ranking.summary)
        )
        self.table.value = (
            "<table style='font-size:12px;border-collapse:collapse' cellpadding='3'>"
            f"<tr style='border-bottom:1px solid #ccc'><th>#</th><th>layer</th><th>channels</th>"
            f"<th>mean top-{ranking.k}</th><th>max</th><th>mean</th></tr>{cells}</table>"
        )

    def click(self, layer: str) -> None:
        """Act as a click on ``layer``'s bar (what the browser does)."""
        self.bars_mark.selected = [self.keys.index(layer)]
