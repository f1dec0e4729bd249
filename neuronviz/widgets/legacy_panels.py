"""Reusable widget panels (ipywidgets + bqplot) and the base of a view that computes in the background.

Each panel owns a few widgets, exposes them as ``panel.widget`` (put it in any box), draws what
it is given through plain methods (``show``, ``set_scores`` ...) and reports user selections
through callbacks registered with ``on_select``. Panels never touch a model and never start
work: a view (such as :class:`neuronviz.widgets.NeuronExplorer`) computes in its
:class:`~neuronviz.widgets.jobs.Worker` and feeds the panels the results.

Programmatic updates (``set_selected``) never fire the panel's own callbacks, so a view can
keep every panel in step without loops.

Panels
------
:class:`RunBar`
    Run and Cancel buttons, a progress bar, a status label and an error area.
:class:`OverlayPanel`
    An image with an activation map blended over it and a box, plus an opacity slider.
:class:`NeuronScatter`
    Every channel's correlation (x) against precision (y, log scale), coloured by layer, with
    each metric's top-k marked; click, brush or lasso to select.
:class:`SelectionLists`
    Per layer, the top-k by correlation next to the top-k by precision, with their overlap.
:class:`NeuronDetail`
    One neuron's activation against the output over the perturbed samples, and a strip of samples.
:class:`BackgroundView`
    Base class of a view: a VBox with a worker, a run bar, ``status``/``error`` traits,
    ``wait``/``cancel`` and a static PNG alongside the widget in its display data.

Shared by several views
-----------------------
:class:`ClassChoices`
    The classes a view can explain, most probable first, named for ImageNet models.
:class:`ExportRow`
    A file name, an Export button and a message.
:func:`hold_model`
    Runs of different views on one model take turns (hooks and restored states must not mix).
:func:`figure_png`
    A matplotlib figure as a small PNG for the display data.
"""

from __future__ import annotations

import base64
import html
import io
import contextlib
import math
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import bqplot
import ipywidgets as W
import numpy as np
import torch
import traitlets
from PIL import Image, ImageDraw

from ..core import locks as _core_locks
from ..core.errors import NeuronvizError
from ..methods.resampling import NeuronScores, overlap
from ..render.explorer import BOTH_COLOUR, BOX_COLOUR, blend_overlay, cell_box, layer_colour, strongest_cell
from ..render.maps import upsample_map
from .jobs import Job, Worker

__all__ = [
    "RunBar",
    "OverlayPanel",
    "NeuronScatter",
    "SelectionLists",
    "NeuronDetail",
    "BackgroundView",
    "ClassChoices",
    "ExportRow",
    "check_dpi",
    "figure_png",
    "hold_model",
    "model_lock",
    "encode_png",
    "to_uint8",
    "format_score",
]

Neuron = tuple[str, int]
SelectCallback = Callable[[str, int], None]


# ---------------------------------------------------------------------------------------------
# small helpers


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) float image in [0, 1] as uint8 (values clipped)."""
    return (np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def encode_png(image: np.ndarray | Image.Image) -> bytes:
    """PNG bytes of an image (a uint8 or [0, 1] float (H, W, 3) array, or a PIL image), fast compression."""
    if not isinstance(image, Image.Image):
        arr = np.asarray(image)
        image = Image.fromarray(arr if arr.dtype == np.uint8 else to_uint8(arr))
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # speed over size: a click re-encodes the overlay
    return buf.getvalue()


def format_score(metric: str, value: float) -> str:
    """A score as short text: ``0.42`` for correlation; ``12.3``, ``6141``, ``1.2e7``, ``∞`` for precision."""
    if math.isnan(value):
        return "NaN"
    if metric == "correlation":
        return f"{value:.3f}"
    if math.isinf(value):
        return "∞"
    if 1e-3 <= value < 1e5:
        return f"{value:.4g}"
    return f"{value:.2e}"


class _Quiet:
    """Suppresses a panel's callbacks while it updates its own widgets."""

    def __init__(self) -> None:
        self.depth = 0

    def __enter__(self) -> "_Quiet":
        self.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1

    def __bool__(self) -> bool:
        return self.depth > 0


class _Callbacks:
    def __init__(self) -> None:
        self._fns: list[SelectCallback] = []

    def add(self, fn: SelectCallback) -> None:
        self._fns.append(fn)

    def __call__(self, layer: str, channel: int) -> None:
        for fn in list(self._fns):
            fn(layer, channel)


# ---------------------------------------------------------------------------------------------
# run bar


class RunBar:
    """Run and Cancel buttons, a progress bar, a status label and an error area.

    DOM classes: ``nv-run``, ``nv-cancel``, ``nv-progress``, ``nv-status``, ``nv-error``.

    Parameters
    ----------
    on_run, on_cancel : callable
        Called without arguments when the buttons are clicked.
    run_label : str
        Text of the Run button.
    """

    def __init__(self, on_run: Callable[[], None], on_cancel: Callable[[], None], run_label: str = "Run") -> None:
        self.run_button = W.Button(description=run_label, button_style="primary", icon="play",
                                   tooltip="compute with the settings above", layout=W.Layout(width="90px"))
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True,
                                      tooltip="stop the running computation", layout=W.Layout(width="90px"))
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="220px"))
        self.status = W.Label(value="idle")
        self.error = W.HTML(value="", layout=W.Layout(width="100%"))
        self.run_button.add_class("nv-run")
        self.cancel_button.add_class("nv-cancel")
        self.progress.add_class("nv-progress")
        self.status.add_class("nv-status")
        self.error.add_class("nv-error")
        self.run_button.on_click(lambda _b: on_run())
        self.cancel_button.on_click(lambda _b: on_cancel())
        self.widget = W.VBox(
            [W.HBox([self.run_button, self.cancel_button, self.progress, self.status],
                    layout=W.Layout(align_items="center")), self.error]
        )

    def running(self, text: str = "running") -> None:
        """Show a run starting: progress at zero, Cancel enabled, the error cleared."""
        self.progress.bar_style = ""
        self.progress.value = 0.0
        self.cancel_button.disabled = False
        self.status.value = text
        self.show_error(None)

    def set_progress(self, done: int, total: int) -> None:
        """Show ``done`` out of ``total``."""
        self.progress.value = min(1.0, done / total) if total > 0 else 0.0
        self.status.value = f"running: {done}/{total}"

    def finished(self, state: str, text: str | None = None) -> None:
        """Show the end of a run: ``state`` is ``"done"``, ``"cancelled"`` or ``"error"``."""
        self.cancel_button.disabled = True
        if state == "done":
            self.progress.value = 1.0
            self.progress.bar_style = "success"
        else:
            self.progress.bar_style = "warning" if state == "cancelled" else "danger"
        self.status.value = text or state

    def show_error(self, message: str | None) -> None:
        """Show ``message`` in the error area (None clears it)."""
        if not message:
            self.error.value = ""
            return
        self.error.value = (
            '<div style="color:#a40000;background:#fff0f0;border:1px solid #e0b4b4;padding:4px 8px;'
            f'white-space:pre-wrap;font-family:monospace;font-size:12px">{html.escape(message)}</div>'
        )


# ---------------------------------------------------------------------------------------------
# image with an activation overlay


class OverlayPanel:
    """An image with an activation map blended over it and a box on the map's strongest cell.

    The map is upsampled bilinearly to the image, blended with :func:`neuronviz.render.explorer.blend_overlay`
    and the PNG encoded with PIL, so an update takes a few milliseconds at 224 px. The box
    is the map cell of the strongest activation scaled to the image
    (:func:`neuronviz.render.explorer.cell_box`), an approximate receptive field.

    DOM classes: ``nv-overlay`` (the :class:`ipywidgets.Image`), ``nv-opacity`` (the slider).

    Parameters
    ----------
    image : numpy.ndarray
        (H, W, 3) float image in [0, 1], shown at its own size.
    opacity : float
        Initial overlay opacity.
    width : int
        Displayed width in pixels.
    """

    def __init__(self, image: np.ndarray, opacity: float = 0.6, width: int = 300) -> None:
        self.image = np.asarray(image, dtype=np.float32)
        self.amap: torch.Tensor | None = None
        self.box: tuple[float, float, float, float] | None = None
        self.picture = W.Image(format="png", value=encode_png(self.image), layout=W.Layout(width=f"{width}px"))
        self.picture.add_class("nv-overlay")
        self.opacity = W.FloatSlider(value=opacity, min=0.0, max=1.0, step=0.05, description="opacity",
                                     continuous_update=False, readout_format=".2f", style={"description_width": "55px"},
                                     layout=W.Layout(width=f"{width - 10}px"))
        self.opacity.add_class("nv-opacity")
        self.caption = W.HTML(value="", layout=W.Layout(width=f"{width}px"))
        self.opacity.observe(lambda _c: self.redraw(), names="value")
        self.widget = W.VBox([self.picture, self.opacity, self.caption])

    def show(self, amap: torch.Tensor | None, caption: str = "") -> None:
        """Overlay one (h, w) activation map (None: the plain image) and set the caption (HTML)."""
        self.amap = amap
        self.caption.value = caption
        self.redraw()

    def redraw(self) -> None:
        """Encode the image with the current map and opacity into the Image widget."""
        self.picture.value = encode_png(self.render())

    def render(self) -> np.ndarray:
        """The current picture as a uint8 (H, W, 3) array."""
        img, amap = self.image, self.amap
        if amap is None or amap.dim() != 2 or amap.numel() <= 1:
            self.box = None
            return to_uint8(img)
        heat = upsample_map(amap, img.shape[:2])
        self.box = cell_box(strongest_cell(amap), tuple(amap.shape), img.shape[:2])
        pic = Image.fromarray(to_uint8(blend_overlay(img, heat, float(self.opacity.value))))
        top, left, bottom, right = self.box
        draw = ImageDraw.Draw(pic)
        rect = [left, top, right - 1, bottom - 1]
        draw.rectangle(rect, outline=(0, 0, 0), width=3)  # a white frame with a dark halo shows on any image
        draw.rectangle(rect, outline=BOX_COLOUR, width=1)
        return np.asarray(pic)


# ---------------------------------------------------------------------------------------------
# correlation vs precision scatter


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
        self._on_select = _Callbacks()
        self._quiet = _Quiet()

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
        self._highlights = {m: [] for m in (self.top_c_mark, self.top_p_mark, self.both_mark, self.selected_mark)}
        for mark in self._highlights:
            mark.on_element_click(self._highlight_clicked)

        self.legend = W.HTML(value="")
        self.mode = W.ToggleButtons(options=["click", "brush", "lasso"], value="click",
                                    tooltips=["click a point to select its neuron", "drag a box to list the neurons in it",
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
        self.widget = W.VBox([self.figure, W.HBox([W.Label("select by"), self.mode]), self.legend, self.brushed])

    # -- public

    def on_select(self, fn: SelectCallback) -> None:
        """Call ``fn(layer, channel)`` when the user selects a neuron here."""
        self._on_select.add(fn)

    def set_scores(self, scores: NeuronScores, k: int) -> None:
        """Plot every channel of ``scores`` and mark each metric's top ``k``."""
        self.layers = list(scores.layers)
        self.points = [(layer, c) for layer in self.layers for c in range(scores.correlation[layer].numel())]
        self.index = {p: i for i, p in enumerate(self.points)}
        corr = np.concatenate([scores.correlation[l].double().reshape(-1).numpy() for l in self.layers])
        prec = np.concatenate([scores.precision[l].double().reshape(-1).numpy() for l in self.layers])
        self.values = {"correlation": corr, "precision": prec}
        x, y, y_min, y_max = scatter_positions(corr, prec)
        self.x, self.y = x, y
        colour = np.concatenate([np.full(scores.correlation[l].numel(), i) for i, l in enumerate(self.layers)])
        colours = [layer_colour(i) for i in range(len(self.layers))]
        with self._quiet:
            self.colour_scale.domain = list(range(len(self.layers)))
            self.colour_scale.colors = colours
            self.y_scale.min, self.y_scale.max = y_min, y_max
            self.x_scale.max = float(max(0.05, min(1.0, x.max() * 1.08 + 0.01)))
            with self.points_mark.hold_sync():
                self.points_mark.selected = None
                self.points_mark.x, self.points_mark.y, self.points_mark.color = x, y, colour
            self._set_brushed([])
        self.set_top(scores, k)
        dots = " ".join(
            f'<span style="color:{c};font-size:16px">●</span>&nbsp;{html.escape(l)}&nbsp;&nbsp;'
            for l, c in zip(self.layers, colours)
        )
        self.legend.value = (
            f'<div style="font-size:12px">{dots}○ top by correlation&nbsp;&nbsp;◇ top by precision&nbsp;&nbsp;'
            f'<span style="color:{BOTH_COLOUR}">◯</span> both&nbsp;&nbsp;□ selected&nbsp;&nbsp;'
            "(top edge: precision ∞, bottom edge: dead channel)</div>"
        )

    def set_top(self, scores: NeuronScores, k: int) -> None:
        """Mark each metric's top ``k`` (call again when ``k`` changes)."""
        top_c, top_p = scores.top("correlation", k), scores.top("precision", k)
        sel_c = [(l, c) for l in self.layers for c in top_c[l]]
        sel_p = [(l, c) for l in self.layers for c in top_p[l]]
        both = [(l, c) for l in self.layers for c in top_c[l] if c in set(top_p[l])]
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
            corr, prec = self.values.get("correlation"), self.values.get("precision")
            self.brushed.options = [
                (f"{l} · channel {c}   corr {format_score('correlation', corr[i])}   "
                 f"prec {format_score('precision', prec[i])}", i)
                for i in idx for (l, c) in [self.points[i]]
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
        self.points_mark.interactions = {"click": "select", "hover": "tooltip"} if mode == "click" else {"hover": "tooltip"}


# ---------------------------------------------------------------------------------------------
# the two selections per layer


class SelectionLists:
    """Per layer, the top-k by correlation beside the top-k by precision; picking an entry selects it.

    Entries chosen by both metrics are marked ``◆``. The overlap of the two selections
    (:func:`neuronviz.overlap`, the paper's measure, at most 0.5; and Jaccard) is shown overall
    and per layer.

    DOM classes: ``nv-selections`` (the box), ``nv-overlap`` (the overlap text); each list is an
    :class:`ipywidgets.Select` with the classes ``nv-list``, ``nv-list-correlation`` or
    ``nv-list-precision``.
    """

    def __init__(self) -> None:
        self._on_select = _Callbacks()
        self._quiet = _Quiet()
        self.lists: dict[tuple[str, str], W.Select] = {}
        self.overlap = W.HTML(value="")
        self.overlap.add_class("nv-overlap")
        self.rows = W.VBox([])
        self.widget = W.VBox([W.HTML("<b>top-k selections</b>"), self.overlap, self.rows],
                             layout=W.Layout(width="390px", margin="0 20px 0 0"))
        self.widget.add_class("nv-selections")

    def on_select(self, fn: SelectCallback) -> None:
        """Call ``fn(layer, channel)`` when the user picks an entry."""
        self._on_select.add(fn)

    def set_scores(self, scores: NeuronScores, k: int) -> None:
        """Fill the lists with each layer's top ``k`` of both metrics."""
        top_c, top_p = scores.top("correlation", k), scores.top("precision", k)
        ov, jac = overlap(top_c, top_p), overlap(top_c, top_p, kind="jaccard")
        self.overlap.value = (
            f"overlap {_fmt_overlap(ov)} <span style='color:#666'>(paper's measure, max 0.5)</span> · "
            f"Jaccard {_fmt_overlap(jac)} · <span style='color:{BOTH_COLOUR}'>◆</span> chosen by both"
        )
        rows = []
        with self._quiet:
            self.lists = {}
            for i, layer in enumerate(scores.layers):
                both = set(top_c[layer]) & set(top_p[layer])
                cols = []
                for metric, chosen in (("correlation", top_c[layer]), ("precision", top_p[layer])):
                    values = scores.metric(metric)[layer]
                    sel = W.Select(
                        options=[(f"{'◆' if c in both else ' '} ch {c:<4d} {format_score(metric, float(values[c]))}", c)
                                 for c in chosen],
                        value=None, rows=max(1, min(k, 10)), description="", layout=W.Layout(width="170px"),
                    )
                    sel.add_class("nv-list")
                    sel.add_class(f"nv-list-{metric}")
                    sel.observe(self._picked(layer), names="value")
                    self.lists[(layer, metric)] = sel
                    cols.append(W.VBox([W.HTML(f"<span style='font-size:11px'>by {metric}</span>"), sel]))
                layer_ov = overlap({layer: top_c[layer]}, {layer: top_p[layer]})
                head = W.HTML(
                    f"<span style='color:{layer_colour(i)};font-size:15px'>●</span> <b>{html.escape(layer)}</b> "
                    f"<span style='font-size:11px;color:#555'>overlap {_fmt_overlap(layer_ov)}</span>"
                )
                rows.append(W.VBox([head, W.HBox(cols)]))
        self.rows.children = rows

    def set_selected(self, neuron: Neuron | None) -> None:
        """Highlight ``neuron`` in the lists that hold it (without calling the callbacks)."""
        with self._quiet:
            for (layer, _metric), sel in self.lists.items():
                values = [v for _label, v in sel.options]
                want = neuron[1] if neuron is not None and neuron[0] == layer and neuron[1] in values else None
                if sel.value != want:
                    sel.value = want

    def pick(self, layer: str, metric: str, channel: int) -> None:
        """Act as a user picking ``channel`` in a list (what the browser does)."""
        self.lists[(layer, metric)].value = channel

    def _picked(self, layer: str) -> Callable[[dict], None]:
        def handler(change: dict) -> None:
            if not self._quiet and change["new"] is not None:
                self._on_select(layer, int(change["new"]))

        return handler


def _fmt_overlap(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.3f}"


# ---------------------------------------------------------------------------------------------
# one neuron in detail


class NeuronDetail:
    """One neuron's activation (channel mean) against the output over the perturbed samples, and samples.

    The figure's first mark holds one point per perturbed sample; its second rings the
    samples shown in the strip below. The strip shows those samples with the neuron's map
    over them (when per-sample maps are given).

    DOM classes: ``nv-detail`` (the bqplot Figure), ``nv-strip`` (the strip box).

    Parameters
    ----------
    width, height : int
        Size of the figure in pixels.
    thumb : int
        Displayed width of each sample in the strip.
    """

    def __init__(self, width: int = 380, height: int = 280, thumb: int = 96) -> None:
        self.x_scale, self.y_scale = bqplot.LinearScale(), bqplot.LinearScale()
        scales = {"x": self.x_scale, "y": self.y_scale}
        tooltip = bqplot.Tooltip(fields=["index", "x", "y"], formats=["", ".4g", ".4g"],
                                 labels=["copy", "activation", "output"])
        self.points_mark = bqplot.Scatter(x=[], y=[], scales=scales, default_size=24, colors=[layer_colour(0)],
                                          opacities=[0.75], stroke="white", stroke_width=0.5,
                                          interactions={"hover": "tooltip"}, tooltip=tooltip)
        self.shown_mark = bqplot.Scatter(x=[], y=[], scales=scales, default_size=90, colors=["black"], fill=False,
                                         stroke_width=1.6)
        self.x_axis = bqplot.Axis(scale=self.x_scale, label="channel activation (mean over positions)", tick_format=".3g")
        self.y_axis = bqplot.Axis(scale=self.y_scale, side="left", label="output", tick_format=".3g",
                                  label_offset="45px")
        self.figure = bqplot.Figure(marks=[self.points_mark, self.shown_mark], axes=[self.x_axis, self.y_axis],
                                    title="no neuron selected", title_style={"font-size": "13px"},
                                    fig_margin={"top": 40, "bottom": 50, "left": 65, "right": 15},
                                    layout=W.Layout(width=f"{width}px", height=f"{height}px"), animation_duration=0)
        self.figure.add_class("nv-detail")
        self.thumb = thumb
        self.strip = W.HBox([])
        self.strip.add_class("nv-strip")
        self.widget = W.VBox([self.figure, W.HTML("<span style='font-size:12px'>perturbed copies</span>"), self.strip])
        self.scores: NeuronScores | None = None
        self.samples: list[np.ndarray] = []
        self.sample_indices: list[int] = []
        self.sample_maps: dict[str, torch.Tensor] | None = None
        self._images: list[W.Image] = []
        self._captions: list[W.HTML] = []

    def set_run(
        self,
        scores: NeuronScores,
        samples: Sequence[np.ndarray],
        sample_indices: Sequence[int],
        sample_maps: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Take a run's results: scores with ``channel_means``, a few perturbed samples and their maps.

        Parameters
        ----------
        scores : NeuronScores
            Computed with ``keep_channel_means=True``.
        samples : sequence of numpy.ndarray
            (H, W, 3) float images in [0, 1] of the samples ``sample_indices``.
        sample_indices : sequence of int
            Which perturbed copies they are.
        sample_maps : dict of str to torch.Tensor, optional
            Per layer, (n, C, h, w) maps of the samples.
        """
        self.scores = scores
        self.samples, self.sample_indices = list(samples), [int(i) for i in sample_indices]
        self.sample_maps = sample_maps
        self._images = [W.Image(format="png", layout=W.Layout(width=f"{self.thumb}px")) for _ in self.samples]
        self._captions = [W.HTML(layout=W.Layout(width=f"{self.thumb + 4}px")) for _ in self.samples]
        self.strip.children = [W.VBox([im, cap]) for im, cap in zip(self._images, self._captions)]
        out = {"probability": "probability", "logit": "logit"}.get(scores.output, "target value")
        self.y_axis.label = f"output ({out})"

    def show(self, neuron: Neuron | None, opacity: float = 0.6) -> None:
        """Plot ``neuron``'s activation against the output and its maps on the samples."""
        scores = self.scores
        if scores is None or neuron is None or scores.channel_means is None:
            with self.points_mark.hold_sync():
                self.points_mark.x, self.points_mark.y = np.zeros(0), np.zeros(0)
            self.figure.title = "no neuron selected"
            self._show_strip(None, opacity)
            return
        layer, channel = neuron
        a = scores.channel_means[layer][:, channel].double().numpy()
        o = scores.outputs.double().numpy()
        with self.points_mark.hold_sync():
            self.points_mark.x, self.points_mark.y = a, o
            self.points_mark.colors = [layer_colour(scores.layers.index(layer))]
        idx = [i for i in self.sample_indices if 0 <= i < len(o)]
        with self.shown_mark.hold_sync():
            self.shown_mark.x, self.shown_mark.y = a[idx], o[idx]
        r = _pearson(a, o)
        self.figure.title = f"{layer} ch {channel} · r(mean, out) = {'n/a' if math.isnan(r) else f'{r:.2f}'}"
        self._show_strip(neuron, opacity)

    def _show_strip(self, neuron: Neuron | None, opacity: float) -> None:
        outputs = self.scores.outputs if self.scores is not None else None
        maps = None
        if neuron is not None and self.sample_maps is not None:
            m = self.sample_maps.get(neuron[0])
            if m is not None and m.dim() == 4 and m.shape[2] * m.shape[3] > 1:
                maps = m[:, neuron[1]]
        for j, (img, im, cap) in enumerate(zip(self.samples, self._images, self._captions)):
            heat = upsample_map(maps[j], img.shape[:2]) if maps is not None else None
            im.value = encode_png(blend_overlay(img, heat, opacity))
            i = self.sample_indices[j]
            out = f"{float(outputs[i]):.3g}" if outputs is not None and i < len(outputs) else "?"
            cap.value = f"<span style='font-size:11px'>copy {i}<br>output {out}</span>"


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else math.nan


# ---------------------------------------------------------------------------------------------
# base of a view


class BackgroundView(W.VBox):
    """A VBox that computes in one background thread and reports through a :class:`RunBar`.

    Subclasses build their panels, call :meth:`_submit` with the work, and implement
    :meth:`_apply` (show a result; runs in the worker thread under ``self.lock``) and
    :meth:`_static_png` (a PNG of the current view for notebook exports). Everything a
    subclass does to its widgets from the main thread should hold ``self.lock`` too.

    The view is an ordinary ipywidgets box: put it in an :class:`ipywidgets.Tab` with others
    to build an app (``W.Tab(children=views, titles=[v.title for v in views])``). Its display data holds the widget and a static PNG of the view, so
    pages rendered without a kernel (GitHub, nbviewer, HTML exports) show a picture; a
    display made before the first result is updated once that result arrives.

    Attributes
    ----------
    status : str
        ``"idle"``, ``"running"``, ``"done"``, ``"cancelled"`` or ``"error"`` (a traitlet:
        ``view.observe(fn, "status")``).
    error : str or None
        The last run's error message (None after a successful run).
    """

    status = traitlets.Unicode("idle")
    error = traitlets.Unicode(None, allow_none=True)
    #: Short name of the view, e.g. for the tab that holds it in an app.
    title = "view"

    def __init__(self, *, worker_name: str = "neuronviz-worker", run_label: str = "Run", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._worker = Worker(worker_name)
        self.lock = self._worker.lock
        self.run_bar = RunBar(self._run_clicked, self.cancel, run_label=run_label)
        self._pending_displays: list[Any] = []
        self._png_cache: tuple[int, bytes] | None = None
        self._view_version = 0  # bump whenever what the static picture shows changes
        self._has_result = False

    # -- what subclasses provide

    def _apply(self, result: Any) -> None:
        """Show a finished run's result (worker thread, lock held)."""
        raise NotImplementedError

    def _static_png(self) -> bytes | None:
        """A PNG of the current view, or None."""
        return None

    def _run_clicked(self) -> None:
        """The Run button: subclasses start their run here."""
        raise NotImplementedError

    # -- running

    def _submit(self, work: Callable[[Job], Any], text: str = "running") -> Job:
        """Run ``work(job)`` in the worker, cancelling the current run; the run bar follows it."""
        with self.lock:
            job = self._worker.submit(work, on_progress=self._progress, on_finish=self._finished)
            self.error = None
            self.status = "running"
            self.run_bar.running(text)
        return job

    def _progress(self, job: Job, done: int, total: int) -> None:
        self.run_bar.set_progress(done, total)

    def _finished(self, job: Job) -> None:
        if job.state == "done":
            try:
                self._apply(job.result)
            except Exception as err:  # noqa: BLE001 - a failure to show a result is an error of the run
                self._show_failure(err)
                return
            self._view_version += 1
            self._has_result = True
            self._refresh_pending_displays()
            self.error = None
            self.run_bar.finished("done", self._done_text())
            self.status = "done"
        elif job.state == "cancelled":
            self.run_bar.finished("cancelled")
            self.status = "cancelled"
        else:
            self._show_failure(job.error)

    def _done_text(self) -> str:
        return "done"

    def _waiting(self) -> None:
        """Say in the widget that the run waits for another view's run on the same model."""
        with self.lock:
            latest = self._worker.latest
            if latest is None or not latest.cancelled:
                self.run_bar.status.value = "waiting: another view is running this model"

    def _show_failure(self, err: BaseException | None) -> None:
        message = _error_message(err)
        self.error = message
        self.run_bar.show_error(message)
        self.run_bar.finished("error", "error (see below)")
        self.status = "error"

    def report_error(self, err: BaseException) -> None:
        """Show an error raised by a button or other callback in the error area and in :attr:`error`."""
        with self.lock:
            message = _error_message(err)
            self.error = message
            self.run_bar.show_error(message)

    def cancel(self) -> None:
        """Cancel the running computation (no effect when none runs); the current results stay."""
        self._worker.cancel()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current run ended and its results are shown (for scripts and tests).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most.

        Raises
        ------
        TimeoutError
            The run is still going after ``timeout`` seconds.
        """
        self._worker.wait(timeout)

    def close(self) -> None:
        """Stop the worker thread and close the widgets."""
        worker = getattr(self, "_worker", None)  # absent when the constructor failed early
        if worker is not None:
            worker.close()
        super().close()

    # -- display

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        data = super()._repr_mimebundle_(**kwargs)
        if data is None:
            return data
        png = self._cached_png()
        if png is not None:
            data["image/png"] = base64.b64encode(png).decode("ascii")
        return data

    def _ipython_display_(self) -> None:
        from IPython.display import display

        bundle = self._repr_mimebundle_()
        with self.lock:
            handle = display(bundle, raw=True, display_id=True)
            if handle is not None and not self._has_result:
                self._pending_displays.append(handle)  # updated once the first result is shown

    def _cached_png(self) -> bytes | None:
        cached = self._png_cache
        if cached is not None and cached[0] == self._view_version:
            return cached[1]
        try:
            png = self._static_png()
        except Exception:  # noqa: BLE001 - a missing picture must never break the display of the widget
            png = None
        if png is not None:
            self._png_cache = (self._view_version, png)
        return png

    def _refresh_pending_displays(self) -> None:
        handles, self._pending_displays = self._pending_displays, []
        if not handles:
            return
        try:
            bundle = self._repr_mimebundle_()
            for handle in handles:
                handle.update(bundle, raw=True)
        except Exception:  # noqa: BLE001 - only the static picture of a notebook export is at stake
            pass


def _error_message(err: BaseException | None) -> str:
    if err is None:
        return "unknown error"
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# ---------------------------------------------------------------------------------------------
# shared by several views


class ClassChoices:
    """The classes a view can explain, most probable first, named for 1000-class (ImageNet) models.

    Parameters
    ----------
    probabilities : sequence of float or torch.Tensor
        (classes,) probability of every class (on one image, or averaged over a set).
    names : sequence of str, optional
        Class names; default the ImageNet names for 1000 classes, else ``"class i"``.
    """

    def __init__(self, probabilities: Sequence[float] | torch.Tensor, names: Sequence[str] | None = None) -> None:
        probs = torch.as_tensor(probabilities, dtype=torch.float64).reshape(-1)
        self.n_classes = int(probs.numel())
        if names is None and self.n_classes == 1000:
            from ..data import imagenet_categories  # the 1000 ImageNet names, bundled

            names = imagenet_categories()
        self.names = list(names) if names is not None else None
        self.probabilities = {i: float(p) for i, p in enumerate(probs.tolist())}
        self.ranked = sorted(self.probabilities, key=lambda c: (-self.probabilities[c], c))

    @property
    def predicted(self) -> int:
        """The most probable class."""
        return self.ranked[0]

    def name(self, c: int | None) -> str:
        """``"Egyptian cat (285)"`` for ImageNet, ``"class 3"`` otherwise."""
        if c is None:
            return "a callable target"
        if self.names is not None:
            return f"{self.names[c]} ({c})"
        return f"class {c}"

    def options(self, extra: Sequence[int] = (), k: int = 5) -> list[tuple[str, int]]:
        """Dropdown options: the ``k`` most probable classes, then ``extra`` ones, with their probabilities."""
        chosen = list(dict.fromkeys(self.ranked[:k] + [int(c) for c in extra]))
        return [(f"{self.name(c)}  p={self.probabilities[c]:.3f}", c) for c in chosen]

    def check(self, value: object) -> int:
        """``value`` as a class index, or a :class:`NeuronvizError` naming the range."""
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < self.n_classes:
            raise NeuronvizError(
                f"target must be a class index in 0..{self.n_classes - 1} (the model has {self.n_classes} classes), "
                f"got {value!r}"
            )
        return int(value)

    def pick(self, dropdown: W.Dropdown, value: object) -> int:
        """Set ``dropdown`` to class ``value`` (checked), adding it to the options when missing."""
        value = self.check(value)
        current = [v for _label, v in dropdown.options]
        if value not in current:
            dropdown.options = self.options(current + [value], k=0)
        dropdown.value = value
        return value


class ExportRow:
    """A file name, an Export button and a message; the button calls ``on_export(path)``.

    DOM classes: ``nv-export-path``, ``nv-export``, ``nv-export-message``.

    Parameters
    ----------
    on_export : callable
        ``on_export(path) -> pathlib.Path`` writes the file; an exception goes to ``on_error``.
    on_error : callable
        ``on_error(exception)``, e.g. :meth:`BackgroundView.report_error`.
    filename : str
        The name offered at first.
    """

    def __init__(self, on_export: Callable[[str], Path], on_error: Callable[[BaseException], None],
                 filename: str = "view.png") -> None:
        self._on_export, self._on_error = on_export, on_error
        self.path = W.Text(value=filename, description="file", layout=W.Layout(width="260px"),
                           style={"description_width": "40px"})
        self.path.add_class("nv-export-path")
        self.button = W.Button(description="Export", icon="download", tooltip="save the view as PNG, SVG or PDF")
        self.button.add_class("nv-export")
        self.message = W.HTML("")
        self.message.add_class("nv-export-message")
        self.button.on_click(lambda _b: self.export())
        self.widget = W.HBox([self.path, self.button, self.message], layout=W.Layout(align_items="center"))

    def export(self) -> None:
        """What a click does: write the named file and say so, or report the error."""
        try:
            path = Path(self._on_export(self.path.value.strip()))
            self.message.value = f"saved <code>{html.escape(str(path))}</code> ({path.stat().st_size // 1024} kB)"
        except Exception as err:  # noqa: BLE001 - shown in the widget, not lost in a callback log
            self.message.value = ""
            self._on_error(err)


def check_dpi(dpi: object) -> int:
    """``dpi`` as an int in [10, 1200], or a :class:`NeuronvizError`."""
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not 10 <= dpi <= 1200:
        raise NeuronvizError(f"dpi must be a number between 10 and 1200, got {dpi!r}")
    return int(dpi)


def figure_png(fig: Any, dpi: int) -> bytes:
    """A matplotlib figure as a PNG of 256 colours, the picture beside a widget in its display data.

    256 colours keep notebooks small; the picture is a preview, the views' ``export`` is the
    print version.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    quantized = Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    quantized.save(out, format="PNG")
    return out.getvalue()


def model_lock(model: Any) -> Any:
    """The model's lock; the one of :func:`neuronviz.core.locks.model_lock`, shared with every public function."""
    return _core_locks.model_lock(model)


@contextlib.contextmanager
def hold_model(
    model: Any,
    job: Job | None = None,
    *,
    on_wait: Callable[[], None] | None = None,
    timeout: float | None = None,
) -> Iterator[None]:
    """Hold the model's lock (:func:`neuronviz.core.locks.hold_model`); ``job`` stays cancellable while waiting.

    Raises
    ------
    JobCancelled
        ``job`` was cancelled while waiting.
    NeuronvizError
        ``timeout`` passed.
    """
    with _core_locks.hold_model(model, check=None if job is None else job.check, on_wait=on_wait, timeout=timeout):
        yield
