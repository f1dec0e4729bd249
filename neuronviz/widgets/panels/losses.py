"""The loss of every optimisation step of two stages, one line each, on axes of their own."""

from __future__ import annotations

from typing import Sequence

import bqplot
import ipywidgets as W
import numpy as np

__all__ = ["LossPlot", "STAGE_COLOURS"]

#: Colours of the stage-1 and stage-2 lines (and of their axes).
STAGE_COLOURS = ("#1f77b4", "#d62728")


class LossPlot:
    """The losses of a two-stage optimisation: stage 1 on the left axis, stage 2 on the right.

    Stage 2 continues the step count of stage 1 (its first step is drawn at ``len(stage1) + 1``).

    DOM class: ``nv-losses`` (the bqplot figure).

    Parameters
    ----------
    labels : (str, str)
        Names of the two stages (legend and axis labels).
    width, height : int
        Size of the figure in pixels.

    Attributes
    ----------
    figure : bqplot.Figure
        The plot, to put in any box.
    stage1_line, stage2_line : bqplot.Lines
        One line per stage.
    """

    def __init__(self, labels: tuple[str, str] = ("stage 1", "stage 2"), width: int = 420, height: int = 260) -> None:
        x = bqplot.LinearScale()
        ys = bqplot.LinearScale(), bqplot.LinearScale()
        self.stage1_line, self.stage2_line = (
            bqplot.Lines(x=[], y=[], scales={"x": x, "y": y}, colors=[colour], stroke_width=2, labels=[label],
                         marker="circle", marker_size=12)
            for y, colour, label in zip(ys, STAGE_COLOURS, labels)
        )
        axes = [bqplot.Axis(scale=x, label="step", tick_format="d")] + [
            # SI prefixes keep the ticks short: the stage-1 squared error often runs into the thousands
            bqplot.Axis(scale=y, side=side, label=f"{label} loss", tick_format=".3s", color=colour,
                        label_offset="48px")
            for y, side, colour, label in zip(ys, ("left", "right"), STAGE_COLOURS, labels)
        ]
        self.figure = bqplot.Figure(marks=[self.stage1_line, self.stage2_line], axes=axes, title="loss per step",
                                    fig_margin={"top": 40, "bottom": 45, "left": 65, "right": 65},
                                    layout=W.Layout(width=f"{width}px", height=f"{height}px"), animation_duration=0)
        self.figure.add_class("nv-losses")

    def show(self, stage1: Sequence[float] | np.ndarray, stage2: Sequence[float] | np.ndarray) -> None:
        """Draw the losses of every step of each stage (empty sequences clear the plot)."""
        l1, l2 = np.asarray(stage1, dtype=np.float64), np.asarray(stage2, dtype=np.float64)
        with self.stage1_line.hold_sync():
            self.stage1_line.x, self.stage1_line.y = np.arange(1, len(l1) + 1), l1
        with self.stage2_line.hold_sync():
            self.stage2_line.x, self.stage2_line.y = np.arange(len(l1) + 1, len(l1) + len(l2) + 1), l2
