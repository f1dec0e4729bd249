"""Faithfulness panels: deletion curves of rankings against random ones, and a knock-out toggle (output before/after).

Both panels draw plain data only: :class:`FaithfulnessPanel` a
:class:`~neuronviz.methods.faithfulness.FaithfulnessCurves`, :class:`KnockoutToggle` the two
numbers a view computes (with :func:`neuronviz.knockout_effect`) when the toggle is pressed.
"""

from __future__ import annotations

import html
from typing import Callable, Sequence

import bqplot
import ipywidgets as W
import numpy as np

from ...methods.faithfulness import FaithfulnessCurves
from ...render.faithfulness import RANDOM_COLOUR, RANKING_COLOURS

__all__ = ["FaithfulnessPanel", "KnockoutToggle"]


def _num(v: float) -> str:
    return f"{v:.3f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


class FaithfulnessPanel:
    """One small plot per layer (or per mode): each ranking's curve, random as a dashed mean and a band.

    Shows one :class:`~neuronviz.methods.faithfulness.FaithfulnessCurves` (a plot per group: a
    view's layers), or several (e.g. the deletion and the insertion curves of an input mask: a
    plot per group and mode, titled ``"pixels · deletion"``).

    DOM classes: ``nv-faithfulness`` (the box), ``nv-faithfulness-plot`` (each bqplot figure).

    Parameters
    ----------
    width, height : int
        Size of each plot in pixels.

    Attributes
    ----------
    widget : ipywidgets.VBox
        The panel, to put in any box.
    figures : list of bqplot.Figure
        One per group of the curves shown.
    """

    def __init__(self, width: int = 320, height: int = 240) -> None:
        self.width, self.height = width, height
        self.figures: list[bqplot.Figure] = []
        self.caption = W.HTML("<span style='font-size:12px'>no curves yet</span>")
        self.row = W.HBox([], layout=W.Layout(flex_flow="row wrap"))
        self.widget = W.VBox([self.caption, self.row])
        self.widget.add_class("nv-faithfulness")

    def show(self, curves: FaithfulnessCurves | Sequence[FaithfulnessCurves] | None, empty: str = "no curves yet"
             ) -> None:
        """Draw the curves: one result, or several side by side (None or an empty list clears the panel).

        Parameters
        ----------
        curves : FaithfulnessCurves, sequence of them, or None
            What to draw.
        empty : str
            The caption when there is nothing to draw.
        """
        self.figures = []
        several: list[FaithfulnessCurves] = (
            [] if curves is None else [curves] if isinstance(curves, FaithfulnessCurves) else list(curves))
        if not several:
            self.row.children = ()
            self.caption.value = f"<span style='font-size:12px'>{html.escape(empty)}</span>"
            return
        for one in several:
            self._draw(one, f" · {one.mode}" if len(several) > 1 else "")
        self.row.children = tuple(self.figures)
        modes = " and ".join(dict.fromkeys(c.mode for c in several))
        better = "; ".join(f"{'lower' if c.mode == 'deletion' else 'higher'} {c.mode} AUC"
                           for c in {c.mode: c for c in several}.values())
        self.caption.value = (f"<span style='font-size:12px'>{html.escape(modes)} curves, AUC relative to "
                              f"o(x) = {_num(several[0].original)} in brackets ({better} = more faithful)</span>")

    def _draw(self, curves: FaithfulnessCurves, suffix: str) -> None:
        """Append one plot per group of ``curves`` to :attr:`figures`."""
        rel = curves.original or 1.0
        for group in curves.groups:
            x, y = bqplot.LinearScale(min=0.0, max=1.0), bqplot.LinearScale()
            marks = []
            for c in (c for c in curves.curves if c.group == group):
                if c.is_random:
                    lo, hi = c.band()
                    marks.append(bqplot.Lines(x=np.concatenate([c.fraction, c.fraction[::-1]]),
                                              y=np.concatenate([lo, hi[::-1]]) / rel, fill="inside",
                                              fill_colors=[RANDOM_COLOUR], fill_opacities=[0.2], colors=[RANDOM_COLOUR],
                                              stroke_width=0, scales={"x": x, "y": y}))
                    style, colour, label = "dashed", RANDOM_COLOUR, f"random ({_num(c.auc)})"
                else:
                    style, colour = "solid", RANKING_COLOURS.get(c.ranking, "#17becf")
                    label = f"{c.ranking} ({_num(c.auc)})"
                marks.append(bqplot.Lines(x=c.fraction, y=c.values / rel, colors=[colour], line_style=style,
                                          stroke_width=2, labels=[label], display_legend=True,
                                          scales={"x": x, "y": y}))
            if curves.unit == "pixels":
                what = "share of top pixels " + ("removed" if curves.mode == "deletion" else "inserted")
            else:
                what = "share of top neurons " + ("knocked out" if curves.mode == "deletion" else "kept")
            axes = [bqplot.Axis(scale=x, label=what, tick_format=".1f"),
                    bqplot.Axis(scale=y, side="left", label="output / o(x)", tick_format=".2f",
                                label_offset="40px")]
            fig = bqplot.Figure(marks=marks, axes=axes, title=group + suffix, title_style={"font-size": "12px"},
                                legend_location="top-right", legend_style={"font-size": "10px"},
                                fig_margin={"top": 35, "bottom": 45, "left": 55, "right": 10},
                                layout=W.Layout(width=f"{self.width}px", height=f"{self.height}px"),
                                animation_duration=0)
            fig.add_class("nv-faithfulness-plot")
            self.figures.append(fig)


class KnockoutToggle:
    """A toggle that knocks a neuron (or a set) out and shows the output before and after at once.

    DOM class: ``nv-knockout`` (the box).

    Parameters
    ----------
    on_toggle : callable
        ``on_toggle(pressed)``, called when the user presses or releases the toggle; the view
        computes the output and calls :meth:`show`.
    """

    def __init__(self, on_toggle: Callable[[bool], None] | None = None) -> None:
        self.button = W.ToggleButton(value=False, description="knock out", icon="ban",
                                     tooltip="the output with the selected neuron knocked out (zeroed)",
                                     layout=W.Layout(width="120px"))
        self.text = W.HTML("")
        self.widget = W.HBox([self.button, self.text])
        self.widget.add_class("nv-knockout")
        self._callback = on_toggle
        self.button.observe(self._changed, "value")

    def _changed(self, change: dict) -> None:
        if self._callback is not None:
            self._callback(bool(change["new"]))

    def show(self, before: float | None, after: float | None, what: str = "") -> None:
        """Show the output before and after the knock-out (None clears)."""
        if before is None or after is None:
            self.text.value = ""
            return
        change = after - before
        self.text.value = (f"<span style='font-size:12px'>{html.escape(what)} output {_num(before)} &rarr; "
                           f"{_num(after)} ({'+' if change >= 0 else ''}{_num(change)})</span>")

    def reset(self) -> None:
        """Release the toggle without calling back, and clear the text."""
        callback, self._callback = self._callback, None
        try:
            self.button.value = False
        finally:
            self._callback = callback
        self.text.value = ""
