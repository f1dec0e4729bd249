"""Every channel's correlation against its precision (log scale), coloured by layer; click, brush or lasso to select."""

from __future__ import annotations

import html
import math

import bqplot
import ipywidgets as W
import numpy as np

from ...methods.resampling import NeuronScores
from ...render.explorer import BOTH_COLOUR, layer_colour
from ...render.formatting import format_score
from .signals import Callbacks, Quiet, SelectCallback

__all__ = ["NeuronScatter", "scatter_positions"]

Neuron = tuple[str, int]


def scatter_positions(corr: np.ndarray, prec: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Where each channel goes on a correlation x log-precision plot.

    NaN correlation is drawn at 0; +inf precision (a constant channel) at the top edge and NaN
    precision (a dead channel) at the bottom edge, so that every channel has exactly one point.

    Parameters
    ----------
    corr, prec : numpy.ndarray
        (n,) scores of every point.

    Returns
    -------
    x, y : numpy.ndarray
        Positions.
    y_min, y_max : float
        The y range to show (the edges included).
    """
    corr = np.asarray(corr, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    finite = np.isfinite(prec) & (prec > 0)
    lo = float(prec[finite].min()) if finite.any() else 0.1
    hi = float(prec[finite].max()) if finite.any() else 10.0
    top, bottom = hi * 3.0, lo / 3.0
    y = np.where(finite, prec, np.where(np.isposinf(prec), top, bottom))
    x = np.nan_to_num(corr, nan=0.0)
    return x, y, bottom / 1.4, top * 1.4


#: The axes stay while the points need at least 1 / AXES_SLACK of their (log) y range and x range.
AXES_SLACK = 1.5
#: Factor of room the axes leave beyond the points when they change.
AXES_HEADROOM = 1.25


def _snug(axes: tuple, needed: tuple[float, float, float]) -> bool:
    """Whether the axes (y_min, y_max, x_max) hold the ``needed`` ones with little room to spare."""
    (lo, hi, x), (n_lo, n_hi, n_x) = (tuple(float(v) for v in axes), needed)
    if not (lo <= n_lo and n_hi <= hi and n_x <= x):
        return False
    return math.log(hi / lo) <= AXES_SLACK * math.log(n_hi / n_lo) and x <= AXES_SLACK * n_x


def _positions(corr: np.ndarray, prec: np.ndarray, y_min: float, y_max: float,
               x_max: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`scatter_positions` on given axes: +inf on the top edge, NaN on the bottom, the rest clipped in."""
    top, bottom = y_max / 1.4, y_min * 1.4
    finite = np.isfinite(prec) & (prec > 0)
    y = np.where(finite, np.clip(np.where(finite, prec, 1.0), bottom, top), np.where(np.isposinf(prec), top, bottom))
    return np.minimum(np.nan_to_num(corr, nan=0.0), x_max), y


def _set_changed(widget: W.Widget, **values: object) -> None:
    """Set the traits of ``widget`` that differ from ``values``, in one message."""
    changed = {name: v for name, v in values.items() if getattr(widget, name) != v}
    if changed:
        with widget.hold_sync():
            for name, v in changed.items():
                setattr(widget, name, v)


class NeuronScatter:
    """Every channel's correlation (x) against its precision (y, log scale), coloured by layer.

    The figure's FIRST mark is the scatter with exactly one point per channel (layers in
    order, channels in order); the marks after it show the top-k by correlation (hollow
    circles), by precision (hollow diamonds), the neurons selected by both (red rings) and
    the selected neuron (black square). A channel with +inf precision sits on the top edge,
    one with NaN precision (dead) on the bottom edge.

    Selection modes: ``click`` (a point selects its neuron), ``brush`` and ``lasso`` (the
    points inside are listed; picking one in the list selects it).

    DOM classes: ``nv-scatter`` (the bqplot Figure), ``nv-scatter-mode``, ``nv-brushed``.

    Parameters
    ----------
    width, height : int
        Size of the figure in pixels.
    """

    def __init__(self, width: int = 540, height: int = 380) -> None:
        self.points: list[Neuron] = []
        self.index: dict[Neuron, int] = {}
        self.layers: list[str] = []
        self.values: dict[str, np.ndarray] = {}
        self._on_select = Callbacks()
        self._quiet = Quiet()

        self.x_scale = bqplot.LinearScale(min=0.0)
        self.y_scale = bqplot.LogScale()
        self.colour_scale = bqplot.OrdinalColorScale(domain=[0], colors=[layer_colour(0)])
        scales = {"x": self.x_scale, "y": self.y_scale}
        tooltip = bqplot.Tooltip(fields=["x", "y"], formats=[".3f", ".4g"], labels=["correlation", "precision"])
        self.points_mark = bqplot.Scatter(
            x=[], y=[], color=[], scales={**scales, "color": self.colour_scale}, default_size=22, stroke="white",
            stroke_width=0.5, opacities=[0.8], interactions={"click": "select", "hover": "tooltip"},
            selected_style={"stroke": "black", "stroke-width": 1.5, "opacity": 1.0}, unselected_style={},
            tooltip=tooltip,
        )
        common = {"scales": scales, "fill": False, "stroke_width": 1.6}
        self.top_c_mark = bqplot.Scatter(x=[], y=[], marker="circle", default_size=110, colors=["black"], **common)
        self.top_p_mark = bqplot.Scatter(x=[], y=[], marker="diamond", default_size=110, colors=["black"], **common)
        self.both_mark = bqplot.Scatter(x=[], y=[], marker="circle", default_size=340, colors=[BOTH_COLOUR],
                                        **{**common, "stroke_width": 2.5})
        self.selected_mark = bqplot.Scatter(x=[], y=[], marker="square", default_size=260, colors=["black"],
                                            **{**common, "stroke_width": 2.5})
        axes = [
            bqplot.Axis(scale=self.x_scale, label="correlation |r| with the output", tick_format=".2f"),
            bqplot.Axis(scale=self.y_scale, side="left", label="precision 1/variance (log)",
                        tick_format=".3g", label_offset="50px"),
        ]
        self.figure = bqplot.Figure(
            marks=[self.points_mark, self.top_c_mark, self.top_p_mark, self.both_mark, self.selected_mark],
            axes=axes, title="every channel", fig_margin={"top": 40, "bottom": 50, "left": 70, "right": 15},
            layout=W.Layout(width=f"{width}px", height=f"{height}px"), animation_duration=0,
        )
        self.figure.add_class("nv-scatter")
        self._highlights: dict[bqplot.Scatter, list[Neuron]] = {
            m: [] for m in (self.top_c_mark, self.top_p_mark, self.both_mark, self.selected_mark)
        }
        for mark in self._highlights:
            mark.on_element_click(self._highlight_clicked)

        self.legend = W.HTML(value="")
        # colour by layer, or (once the data-set examples are found) by each channel's generality
        self.generality: dict[str, np.ndarray] = {}
        self.generality_scale = bqplot.ColorScale(min=0.0, max=1.0, scheme="viridis")
        self.colour_by = W.Dropdown(options=[("layer", "layer")], value="layer", description="colour by",
                                    tooltip="generality: the share of data-set images the channel fires on "
                                            "(once the examples are found)",
                                    style={"description_width": "60px"}, layout=W.Layout(width="220px"))
        self.colour_by.add_class("nv-colour-by")
        self.colour_by.observe(lambda _c: self._recolour(), names="value")
        self.mode = W.ToggleButtons(options=["click", "brush", "lasso"], value="click",
                                    tooltips=["click a point to select its neuron",
                                              "drag a box to list the neurons in it",
                                              "draw around points to list their neurons"],
                                    style={"button_width": "60px"})
        self.mode.add_class("nv-scatter-mode")
        self.brushed = W.Select(options=[], rows=5, layout=W.Layout(width=f"{width - 20}px", display="none"))
        self.brushed.add_class("nv-brushed")
        self.brush = bqplot.interacts.BrushSelector(x_scale=self.x_scale, y_scale=self.y_scale,
                                                    marks=[self.points_mark], color="#888888")
        self.lasso = bqplot.interacts.LassoSelector(marks=[self.points_mark], color="#888888")
        self.mode.observe(self._mode_changed, names="value")
        self.points_mark.observe(self._points_selected, names="selected")
        self.brushed.observe(self._brushed_picked, names="value")
        self.widget = W.VBox([self.figure, W.HBox([W.Label("select by"), self.mode, self.colour_by]), self.legend,
                              self.brushed])

    # -- public

    def on_select(self, fn: SelectCallback) -> None:
        """Call ``fn(layer, channel)`` when the user selects a neuron here."""
        self._on_select.add(fn)

    def set_scores(self, scores: NeuronScores, k: int, *, partial: bool = False) -> None:
        """Plot every channel of ``scores`` and mark each metric's top ``k``.

        In the browser a change of an axis redraws every mark and the axes, several times the
        cost of moving the points, so the axes stay while the points fit them snugly
        (:data:`AXES_SLACK`), and take some headroom when they change. A ``partial`` picture
        (of a live run) never changes them: its points are clipped to the axes' edges.
        """
        self.layers = list(scores.layers)
        points = [(layer, c) for layer in self.layers for c in range(scores.correlation[layer].numel())]
        same = points == self.points  # the same channels (a new run of the same layers): selection and colours stay
        self.points = points
        self.index = {p: i for i, p in enumerate(self.points)}
        corr = np.concatenate([scores.correlation[name].double().reshape(-1).numpy() for name in self.layers])
        prec = np.concatenate([scores.precision[name].double().reshape(-1).numpy() for name in self.layers])
        self.values = {"correlation": corr, "precision": prec}
        _x, _y, y_min, y_max = scatter_positions(corr, prec)
        x_max = float(max(0.05, min(1.0, _x.max() * 1.08 + 0.01)))
        current = (self.y_scale.min, self.y_scale.max, self.x_scale.max)
        if None not in current and (partial or _snug(current, (y_min, y_max, x_max))):
            y_min, y_max, x_max = (float(v) for v in current)  # type: ignore[arg-type]
        elif None not in current:  # new axes, with headroom so that the next runs fit them
            y_min, y_max, x_max = y_min / AXES_HEADROOM, y_max * AXES_HEADROOM, min(1.0, x_max * AXES_HEADROOM)
        x, y = _positions(corr, prec, y_min, y_max, x_max)
        self.x, self.y = x, y
        colour = np.concatenate([np.full(scores.correlation[name].numel(), i) for i, name in enumerate(self.layers)])
        colours = [layer_colour(i) for i in range(len(self.layers))]
        with self._quiet:
            # each message that changes a scale redraws every point in the browser: one per scale, if any
            _set_changed(self.colour_scale, domain=list(range(len(self.layers))), colors=colours)
            _set_changed(self.y_scale, min=y_min, max=y_max)
            _set_changed(self.x_scale, max=x_max)
            with self.points_mark.hold_sync():  # a change of the selection or the colours restyles every point
                if not same:
                    self.points_mark.selected = None
                self.points_mark.x, self.points_mark.y = x, y
                by_layer = self.colour_by.value == "layer"
                if not same or (by_layer and not np.array_equal(np.asarray(self.points_mark.color), colour)):
                    self.points_mark.color = colour
            self._set_brushed([])
        self.set_top(scores, k)
        if not by_layer and not same:
            self._recolour()
        dots = " ".join(
            f'<span style="color:{c};font-size:16px">●</span>&nbsp;{html.escape(name)}&nbsp;&nbsp;'
            for name, c in zip(self.layers, colours)
        )
        self.legend.value = (
            f'<div style="font-size:12px">{dots}○ top by correlation&nbsp;&nbsp;◇ top by precision&nbsp;&nbsp;'
            f'<span style="color:{BOTH_COLOUR}">◯</span> both&nbsp;&nbsp;□ selected&nbsp;&nbsp;'
            "(top edge: precision ∞, bottom edge: dead channel)</div>"
        )

    def set_generality(self, share: dict[str, np.ndarray]) -> None:
        """Each layer's (C,) generality share (:meth:`neuronviz.TopExamples.generality`): colour by it on request.

        Adds "generality" to the colour-by choices; layers not given are drawn at 0.
        """
        self.generality = {name: np.asarray(v, dtype=np.float64) for name, v in share.items()}
        options = [("layer", "layer"), ("generality (share of images it fires on)", "generality")]
        if list(self.colour_by.options) != options:
            self.colour_by.options = options
        if self.colour_by.value == "generality":
            self._recolour()

    def point_generality(self) -> np.ndarray:
        """(n,) the generality share of every point, in point order (NaN where unknown)."""
        return np.array([float(self.generality[name][c]) if name in self.generality
                         and c < len(self.generality[name]) else np.nan for name, c in self.points])

    def _recolour(self) -> None:
        """Colour the points by layer, or by generality on a 0-1 viridis scale."""
        if not self.points:
            return
        if self.colour_by.value == "generality":
            scale, colour = self.generality_scale, np.nan_to_num(self.point_generality(), nan=0.0)
        else:
            layer_of = {name: i for i, name in enumerate(self.layers)}
            scale, colour = self.colour_scale, np.array([layer_of[name] for name, _ in self.points])
        with self.points_mark.hold_sync():  # one message: the browser redraws the points once
            self.points_mark.scales = {**self.points_mark.scales, "color": scale}
            self.points_mark.color = colour

    def set_top(self, scores: NeuronScores, k: int) -> None:
        """Mark each metric's top ``k`` (call again when ``k`` changes)."""
        top_c, top_p = scores.top("correlation", k), scores.top("precision", k)
        sel_c = [(name, c) for name in self.layers for c in top_c[name]]
        sel_p = [(name, c) for name in self.layers for c in top_p[name]]
        both = [(name, c) for name in self.layers for c in top_c[name] if c in set(top_p[name])]
        for mark, neurons in ((self.top_c_mark, sel_c), (self.top_p_mark, sel_p), (self.both_mark, both)):
            self._place(mark, neurons)

    def set_selected(self, neuron: Neuron | None) -> None:
        """Mark the selected neuron (without calling the ``on_select`` callbacks)."""
        with self._quiet:
            if neuron is None or neuron not in self.index:
                self._place(self.selected_mark, [])
                return
            self._place(self.selected_mark, [neuron])
            i = self.index[neuron]
            current = self.points_mark.selected
            if self.mode.value == "click" and not (current is not None and len(current) == 1 and current[0] == i):
                self.points_mark.selected = [i]

    def click(self, neuron: Neuron) -> None:
        """Act as a click on ``neuron``'s point (what the browser does)."""
        self.points_mark.selected = [self.index[neuron]]

    # -- internals

    def _place(self, mark: bqplot.Scatter, neurons: list[Neuron]) -> None:
        idx = [self.index[n] for n in neurons if n in self.index]
        self._highlights[mark] = [self.points[i] for i in idx]
        with mark.hold_sync():
            mark.x = self.x[idx] if idx else np.zeros(0)
            mark.y = self.y[idx] if idx else np.zeros(0)

    def _highlight_clicked(self, mark: bqplot.Scatter, target: dict) -> None:
        i = target.get("data", {}).get("index", target.get("index"))
        neurons = self._highlights.get(mark, [])
        if i is not None and 0 <= int(i) < len(neurons):
            self.click(neurons[int(i)])

    def _points_selected(self, change: dict) -> None:
        if self._quiet:
            return
        sel = change["new"]
        idx = [] if sel is None else [int(i) for i in np.asarray(sel).reshape(-1)]
        idx = [i for i in idx if 0 <= i < len(self.points)]
        if self.mode.value == "click" or len(idx) == 1:
            if len(idx) >= 1:
                self._on_select(*self.points[idx[-1]])
            return
        self._set_brushed(idx)

    def _set_brushed(self, idx: list[int]) -> None:
        with self._quiet:
            corr, prec = self.values.get("correlation", np.zeros(0)), self.values.get("precision", np.zeros(0))
            self.brushed.options = [
                (f"{name} · channel {c}   corr {format_score('correlation', corr[i])}   "
                 f"prec {format_score('precision', prec[i])}", i)
                for i in idx for (name, c) in [self.points[i]]
            ]
            self.brushed.value = None
            self.brushed.layout.display = "flex" if idx else "none"

    def _brushed_picked(self, change: dict) -> None:
        if self._quiet or change["new"] is None:
            return
        layer, channel = self.points[int(change["new"])]
        self._place(self.selected_mark, [(layer, channel)])
        self._on_select(layer, channel)

    def _mode_changed(self, change: dict) -> None:
        mode = change["new"]
        with self._quiet:
            self.points_mark.selected = None
            self._set_brushed([])
        self.figure.interaction = {"brush": self.brush, "lasso": self.lasso}.get(mode)
        clicks = {"click": "select"} if mode == "click" else {}
        self.points_mark.interactions = {**clicks, "hover": "tooltip"}
