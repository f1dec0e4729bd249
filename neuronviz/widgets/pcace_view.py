"""PCACEView: the channels of a few layers ranked by PCACE over a set of images, as linked panels."""

from __future__ import annotations

import html
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import bqplot
import ipywidgets as W
import numpy as np
import torch
from PIL import Image
from torch import nn

from ..core.capture import LayerSummary, layer_summary, resolve_layers
from ..core.errors import NeuronvizError
from ..core.model_state import model_device, preserved_state, resolve_device
from ..core.targets import check_class_output
from ..core.validation import check_batch, forward_checked
from ..methods.pcace import MIN_IMAGES, LayerRanking, PCACEScores, rank_layers
from ..render.explorer import blend_overlay
from ..render.maps import batch_maps, upsample_map
from ..render.pcace import display_images, render_layer_ranking, render_pcace
from .colab import enable_colab_widgets
from .controls import device_options
from .explorer import _check_device, _check_int, _check_save_path, _resize, default_layers, spatial_convolutions
from .jobs import Job
from .legacy_panels import BackgroundView, ClassChoices, ExportRow, check_dpi, encode_png, figure_png, hold_model

__all__ = ["PCACEView", "PCACESettings", "ChannelBars", "LayerBars", "pcace_layers", "PARTS"]

#: What :meth:`PCACEView.export` can draw: the shown layer's channels, or every layer side by side.
PARTS = ("layer", "ranking")
#: Colours of the channel bars (top and bottom as in :func:`neuronviz.render_pcace`).
TOP_COLOUR, BOTTOM_COLOUR, BAR_COLOUR, SELECTED_COLOUR = "#2ca02c", "#7f7f7f", "#9ecae1", "#000000"
_SHOWN_LAYER_COLOUR = "#3182bd"
_MAX_COMPONENTS = 8
_GRID_MAX_K = 5  # top and bottom columns of the map grid at most (a wider grid does not fit a notebook)
_STRIP_THUMB, _GRID_THUMB = 150, 76
_CPU_BATCH = 16  # several progress steps (and cancel points) per run on a CPU
_STATIC_DPI = 60
_FEW_IMAGES = 40  # below this ACE's smoothers are noisy (see neuronviz.methods.pcace)
_DEMO_LAYERS = ("blocks.6.expand.act", "blocks.10.expand.act", "blocks.12.expand.act", "blocks.15.depthwise.act")

Neuron = tuple[str, int]


def pcace_layers(model: nn.Module, summary: LayerSummary) -> list[str]:
    """The layers :class:`PCACEView` ranks when none are named.

    ``blocks.6``, ``blocks.10``, ``blocks.13`` and ``blocks.15`` for the default model
    (EfficientNet-Lite0: from 28x28 to 7x7 maps); otherwise the last four convolutions with a
    spatial output, else the explorer's :func:`~neuronviz.widgets.explorer.default_layers`.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    summary : LayerSummary
        Its :func:`neuronviz.layer_summary`.

    Returns
    -------
    list of str

    Raises
    ------
    NeuronvizError
        The model has no layer that can be ranked.
    """
    from ..models import EfficientNetLite0

    names = set(summary.names())
    if isinstance(model, EfficientNetLite0) and set(_DEMO_LAYERS) <= names:
        return list(_DEMO_LAYERS)
    convs = spatial_convolutions(model, summary)
    return convs[-4:] if convs else default_layers(model, summary)


@dataclass(frozen=True)
class PCACESettings:
    """The settings of one PCACE run, frozen when it starts."""

    layers: tuple[str, ...]
    target: int
    n_components: int
    device: str

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict."""
        return {"layers": list(self.layers), "target": self.target, "n_components": self.n_components,
                "device": self.device}


@dataclass
class _Run:
    """Everything a finished run gives the panels."""

    settings: PCACESettings
    ranking: LayerRanking
    maps: dict[str, torch.Tensor]  # per layer, (n_shown, C, h, w) maps of the shown images
    seconds: float


# ---------------------------------------------------------------------------------------------
# panels


class ChannelBars:
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
        self.order: list[int] = []
        self.scores = np.zeros(0)
        self._on_select: list[Callable[[int], None]] = []
        self._quiet = 0
        self.x_scale = bqplot.OrdinalScale()
        self.y_scale = bqplot.LinearScale(min=0.0, max=1.05)
        scales = {"x": self.x_scale, "y": self.y_scale}
        tooltip = bqplot.Tooltip(fields=["index", "x", "y"], formats=["", "", ".3f"],
                                 labels=["rank (0 = best)", "channel", "PCACE score"])
        self.bars_mark = bqplot.Bars(x=[], y=[], scales=scales, colors=[BAR_COLOUR], padding=0.15,
                                     stroke_width=0.0, interactions={"click": "select", "hover": "tooltip"},
                                     tooltip=tooltip, selected_style={}, unselected_style={})
        self.selected_mark = bqplot.Scatter(x=[], y=[], scales=scales, marker="triangle-down", default_size=70,
                                            colors=[SELECTED_COLOUR])
        # hundreds of channel numbers would overlap into a black band: the tooltip names each bar instead
        self.x_axis = bqplot.Axis(scale=self.x_scale, label="channels, best first (click a bar)",
                                  tick_style={"display": "none"})
        axes = [self.x_axis,
                bqplot.Axis(scale=self.y_scale, side="left", label="PCACE score", tick_format=".1f",
                            label_offset="40px")]
        self.figure = bqplot.Figure(marks=[self.bars_mark, self.selected_mark], axes=axes, title="no run yet",
                                    fig_margin={"top": 40, "bottom": 35, "left": 55, "right": 15},
                                    layout=W.Layout(width=f"{width}px", height=f"{height}px"), animation_duration=0)
        self.figure.add_class("nv-pcace-bars")
        self.bars_mark.observe(self._clicked, names="selected")
        self.widget = self.figure

    def on_select(self, fn: Callable[[int], None]) -> None:
        """Call ``fn(channel)`` when the user clicks a bar."""
        self._on_select.append(fn)

    def set_scores(self, scores: PCACEScores, k: int, selected: int | None) -> None:
        """Draw ``scores`` in rank order, the top and bottom ``k`` marked, ``selected`` highlighted."""
        self.order = [int(c) for c in scores.ranking.tolist()]
        self.scores = scores.scores.double().numpy()
        self._quiet += 1
        try:
            with self.bars_mark.hold_sync():
                self.bars_mark.selected = None
                self.x_scale.domain = self.order
                self.bars_mark.x = np.asarray(self.order)
                self.bars_mark.y = self.scores[self.order]
            self.figure.title = (f"{scores.layer}: {len(self.order)} channels ranked by PCACE "
                                 f"({scores.n_components} component{'s' if scores.n_components > 1 else ''})")
        finally:
            self._quiet -= 1
        self.mark(k, selected)

    def mark(self, k: int, selected: int | None) -> None:
        """Colour the top and bottom ``k`` and the ``selected`` channel (no callbacks)."""
        n = len(self.order)
        k = min(k, n)
        colours = [BAR_COLOUR] * n
        for i in range(n - k, n):
            colours[i] = BOTTOM_COLOUR
        for i in range(k):
            colours[i] = TOP_COLOUR
        rank = self.order.index(selected) if selected in self.order else None
        if rank is not None:
            colours[rank] = SELECTED_COLOUR
        self.bars_mark.colors = colours
        self._quiet += 1
        try:
            # the mark's selection follows the view's, so that a click on any other bar is a change
            self.bars_mark.selected = None if rank is None else [rank]
        finally:
            self._quiet -= 1
        with self.selected_mark.hold_sync():
            if rank is None:
                self.selected_mark.x, self.selected_mark.y = np.zeros(0, dtype=int), np.zeros(0)
            else:
                self.selected_mark.x = np.asarray([selected])
                self.selected_mark.y = np.asarray([min(1.0, float(self.scores[selected])) + 0.04])

    def click(self, channel: int) -> None:
        """Act as a click on ``channel``'s bar (what the browser does)."""
        self.bars_mark.selected = [self.order.index(int(channel))]

    def _clicked(self, change: dict) -> None:
        sel = change["new"]
        if self._quiet or sel is None or len(sel) == 0:
            return
        i = int(np.asarray(sel).reshape(-1)[-1])
        if 0 <= i < len(self.order):
            for fn in list(self._on_select):
                fn(self.order[i])


class LayerBars:
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
        self.layers: list[str] = []
        self._on_select: list[Callable[[str], None]] = []
        self._quiet = 0
        self.x_scale = bqplot.OrdinalScale()
        self.y_scale = bqplot.LinearScale(min=0.0, max=1.05)
        scales = {"x": self.x_scale, "y": self.y_scale}
        tooltip = bqplot.Tooltip(fields=["x", "y"], formats=["", ".3f"], labels=["layer", "mean top-k score"])
        self.bars_mark = bqplot.Bars(x=[], y=[], scales=scales, colors=[BAR_COLOUR], padding=0.2,
                                     interactions={"click": "select", "hover": "tooltip"}, tooltip=tooltip,
                                     selected_style={}, unselected_style={})
        self.max_mark = bqplot.Scatter(x=[], y=[], scales=scales, marker="diamond", default_size=40,
                                       colors=["#444444"])
        self.figure = bqplot.Figure(
            marks=[self.bars_mark, self.max_mark],
            axes=[bqplot.Axis(scale=self.x_scale, label="layer (click a bar to show it)"),
                  bqplot.Axis(scale=self.y_scale, side="left", tick_format=".1f", label="score", label_offset="35px")],
            title="which layers carry the class", fig_margin={"top": 40, "bottom": 45, "left": 50, "right": 10},
            layout=W.Layout(width=f"{width}px", height=f"{height}px"), animation_duration=0,
        )
        self.figure.add_class("nv-layer-ranking")
        self.table = W.HTML("")
        self.table.add_class("nv-ranking-table")
        self.bars_mark.observe(self._clicked, names="selected")
        self.widget = W.VBox([self.figure, self.table])

    def on_select(self, fn: Callable[[str], None]) -> None:
        """Call ``fn(layer)`` when the user clicks a layer's bar."""
        self._on_select.append(fn)

    def set_ranking(self, ranking: LayerRanking, shown: str | None) -> None:
        """Draw ``ranking`` (its ``k`` sets the mean top-k), the ``shown`` layer darker."""
        self.layers = list(ranking.layers)
        rows = {r["layer"]: r for r in ranking.summary}
        self._quiet += 1
        try:
            with self.bars_mark.hold_sync():
                self.bars_mark.selected = None
                self.x_scale.domain = self.layers
                self.bars_mark.x = self.layers
                self.bars_mark.y = np.asarray([rows[name]["mean_top_k"] for name in self.layers])
            with self.max_mark.hold_sync():
                self.max_mark.x = self.layers
                self.max_mark.y = np.asarray([rows[name]["max"] for name in self.layers])
            self.bars_mark.colors = [_SHOWN_LAYER_COLOUR if name == shown else BAR_COLOUR for name in self.layers]
            # the mark's selection follows the shown layer, so that a click on any other bar is a change
            self.bars_mark.selected = [self.layers.index(shown)] if shown in self.layers else None
            self.figure.title = f"mean top-{ranking.k} per layer (◆ best)"
        finally:
            self._quiet -= 1
        best = ranking.best()
        cells = "".join(
            f"<tr style='{'font-weight:bold' if r['layer'] == shown else ''}'>"
            f"<td>{i + 1}</td><td>{html.escape(r['layer'])}{' ★' if r['layer'] == best else ''}</td>"
            f"<td style='text-align:right'>{r['channels']}</td><td style='text-align:right'>{r['mean_top_k']:.3f}</td>"
            f"<td style='text-align:right'>{r['max']:.3f}</td><td style='text-align:right'>{r['mean']:.3f}</td></tr>"
            for i, r in enumerate(ranking.summary)
        )
        self.table.value = (
            "<table style='font-size:12px;border-collapse:collapse' cellpadding='3'>"
            f"<tr style='border-bottom:1px solid #ccc'><th>#</th><th>layer</th><th>channels</th>"
            f"<th>mean top-{ranking.k}</th><th>max</th><th>mean</th></tr>{cells}</table>"
        )

    def click(self, layer: str) -> None:
        """Act as a click on ``layer``'s bar (what the browser does)."""
        self.bars_mark.selected = [self.layers.index(layer)]

    def _clicked(self, change: dict) -> None:
        sel = change["new"]
        if self._quiet or sel is None or len(sel) == 0:
            return
        i = int(np.asarray(sel).reshape(-1)[-1])
        if 0 <= i < len(self.layers):
            for fn in list(self._on_select):
                fn(self.layers[i])


def _thumb(picture: np.ndarray, amap: torch.Tensor | None, opacity: float) -> bytes:
    """PNG of ``picture`` with one channel's map blended over it (a map of one cell shows the picture)."""
    heat = None
    if amap is not None and amap.dim() == 2 and amap.numel() > 1:
        heat = upsample_map(amap, picture.shape[:2])
    return encode_png(blend_overlay(picture, heat, opacity))


# ---------------------------------------------------------------------------------------------
# the view


class PCACEView(BackgroundView):
    """Channels of a CNN ranked by PCACE over a set of images, as linked panels.

    PCACE (:func:`neuronviz.rank_layers`) scores every channel of the chosen layers by the
    maximal correlation between the principal component(s) of its activation maps and the
    logit of the target class, over the images. The panels:

    * the layer ranking: each layer's mean top-k score as a bar (its best channel as a
      diamond) and a table of :attr:`~neuronviz.LayerRanking.summary`; click a bar to show
      that layer;
    * the shown layer's channel scores as bars, best first, the top-k green and the bottom-k
      grey; click a bar to select its channel;
    * the selected channel's activation map over the first few images;
    * the maps of the top-k and bottom-k channels over the same images (at most 5 of each);
      the buttons above the columns select those channels;
    * the settings (layers, target class, principal components, top-k, device), Run / Cancel,
      a progress bar, a status line and an error area; and Export.

    Computation runs in one background thread: the kernel stays free, a new run cancels the
    running one and stale results are dropped. Changing a setting does not recompute until
    Run is pressed; top-k, the shown layer, the selection and the opacity apply at once.

    Python interface
    ----------------
    ranking : LayerRanking or None
        The latest finished run's ranking (its ``k`` follows :attr:`top_k`).
    scores : PCACEScores or None
        The shown layer's scores.
    selected : tuple (str, int) or None
        The selected channel ``(layer, channel)``; settable (the layer is then shown).
    layer : str or None
        The shown layer; settable (its best channel is selected).
    layers, target, n_components, device
        The settings of the next run; settable (validated).
    top_k : int
        Top and bottom channels marked, and the size of the ranking's mean; applies at once.
    settings : dict
        The above as a dict.
    run(), cancel(), wait(timeout=None)
        As for every view.
    export(path, dpi=150, part="layer")
        Save :func:`neuronviz.render_pcace` of the shown layer (``part="layer"``) or
        :func:`neuronviz.render_layer_ranking` (``part="ranking"``) as PNG, SVG or PDF.
    figure(part="layer", dpi=100)
        The same as a matplotlib figure.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning (N, classes) scores. It is run in eval mode without gradients
        and left exactly as it was.
    images : torch.Tensor
        (N, C, H, W) images of one class, normalised as the model expects, at least 20 (40 or
        more give steadier scores); e.g. ``nv.augment(nv.sample_image("coffee"), 48)``, random
        views of one photo. Used as given (not copied), on the CPU. Three-channel images are
        drawn as for the default model's normalisation (:func:`neuronviz.deprocess`), others in
        grey.
    layers : sequence of str, optional
        Layers to rank; default :func:`pcace_layers`.
    target : int, optional
        Class whose logit is explained; default the class most probable on average over the
        images.
    n_components : int
        Principal components per channel (1 to 8).
    top_k : int
        Top and bottom channels marked.
    n_shown : int
        Images the maps are drawn on (1 to 8).
    device : str, optional
        ``"cpu"`` or ``"cuda"``; default the model's device.
    batch_size : int, optional
        Images per forward pass; default 16 on a CPU (a progress step each), automatic on a GPU.
    autorun : bool
        Start a run at once.

    Raises
    ------
    NeuronvizError
        Bad images (fewer than 20, wrong shape, NaN), a layer the model does not have (closest
        names suggested) or that gives no single tensor per forward pass, a model whose
        output is not (N, classes), a target, ``n_components``, ``top_k``, ``n_shown`` or
        device out of range.
    """

    title = "PCACE"

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        layers: Sequence[str] | str | None = None,
        *,
        target: int | None = None,
        n_components: int = 1,
        top_k: int = 3,
        n_shown: int = 3,
        device: str | None = None,
        batch_size: int | None = None,
        autorun: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise NeuronvizError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        images = check_batch(images, model, what="images")
        if images.shape[0] < MIN_IMAGES:
            raise NeuronvizError(
                f"PCACE needs at least {MIN_IMAGES} images (40 or more are better), got {images.shape[0]}; "
                "nv.augment(photo, 48) makes random views of one photo"
            )
        images = images.detach().to("cpu", torch.float32)  # not copied: a set of images can be large
        n_components = _check_int("n_components", n_components, 1, _MAX_COMPONENTS)
        top_k = _check_int("top_k", top_k, 1)
        n_shown = _check_int("n_shown", n_shown, 1, 8)
        device = _check_device(model, device)
        if batch_size is not None:
            batch_size = _check_int("batch_size", batch_size, 1)

        with hold_model(model):  # another view's run on this model would mix its hooks with ours
            try:
                summary = layer_summary(model, images[:1].to(model_device(model)))
            except NeuronvizError:
                raise
            except RuntimeError as err:
                raise NeuronvizError(f"the model failed on the images {tuple(images.shape)}: {err}") from err
            probabilities = _mean_probabilities(model, images, batch_size or _CPU_BATCH)
        self._summary = {info.name: info for info in summary}
        layers = pcace_layers(model, summary) if layers is None else self._check_layers(model, layers)
        self.model, self.images = model, images
        self.n_shown = min(n_shown, images.shape[0])
        self.batch_size = batch_size
        self.classes = ClassChoices(probabilities)
        self.n_classes = self.classes.n_classes
        target = self.classes.predicted if target is None else self.classes.check(target)

        super().__init__(worker_name="neuronviz-pcace")
        enable_colab_widgets()
        self.add_class("nv-pcace")
        self._result: _Run | None = None
        self._ranking: LayerRanking | None = None
        self._selected: Neuron | None = None
        pictures = display_images(images[: self.n_shown])
        self._strip_pictures = [_resize(p, _STRIP_THUMB) for p in pictures]
        self._grid_pictures = [_resize(p, _GRID_THUMB) for p in pictures]

        style = {"description_width": "95px"}
        self.layers_picker = W.SelectMultiple(options=[(f"{i.name}  {tuple(i.shape)}", i.name) for i in summary],
                                              value=tuple(layers), rows=6, description="layers", style=style,
                                              layout=W.Layout(width="380px"))
        self.target_picker = W.Dropdown(options=self.classes.options([target]), value=target, description="target",
                                        style=style, layout=W.Layout(width="340px"))
        self.components = W.IntSlider(value=n_components, min=1, max=_MAX_COMPONENTS, description="components",
                                      continuous_update=False, style=style, layout=W.Layout(width="340px"),
                                      tooltip="principal components per channel")
        self.top_k_slider = W.IntSlider(value=top_k, min=1, max=max(10, top_k), description="top-k",
                                        continuous_update=False, style=style, layout=W.Layout(width="340px"))
        opts = device_options()
        if device not in opts:
            opts.append(device)
        self.device_picker = W.Dropdown(options=opts, value=device, description="device", style=style,
                                        layout=W.Layout(width="200px"))
        self.layer_picker = W.Dropdown(options=[], description="show layer", style=style,
                                       layout=W.Layout(width="300px"))
        self.opacity = W.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="opacity",
                                     continuous_update=False, readout_format=".2f", style=style,
                                     layout=W.Layout(width="300px"))
        for widget, css in ((self.layers_picker, "nv-layers"), (self.target_picker, "nv-target"),
                            (self.components, "nv-components"), (self.top_k_slider, "nv-topk"),
                            (self.device_picker, "nv-device"), (self.layer_picker, "nv-show-layer"),
                            (self.opacity, "nv-opacity")):
            widget.add_class(css)

        self.header = W.HTML("")
        self.layer_bars = LayerBars()
        self.channel_bars = ChannelBars()
        self.selected_label = W.Label("no channel selected")
        self.selected_label.add_class("nv-selected")
        self.selected_info = W.HTML("")
        self._strip_images = [W.Image(format="png", value=encode_png(p), layout=W.Layout(width=f"{_STRIP_THUMB}px"))
                              for p in self._strip_pictures]
        self.strip = W.HBox([W.VBox([im, W.HTML(f"<span style='font-size:11px'>image {i}</span>")])
                             for i, im in enumerate(self._strip_images)])
        self.strip.add_class("nv-channel-maps")
        self.grid = W.VBox([])
        self.grid.add_class("nv-top-bottom")
        self._grid_columns: list[int] = []
        self.export_part = W.Dropdown(options=[("the shown layer", "layer"), ("the layer ranking", "ranking")],
                                      value="layer", description="export", style={"description_width": "50px"},
                                      layout=W.Layout(width="220px"))
        self.exporter = ExportRow(lambda path: self.export(path, part=self.export_part.value), self.report_error,
                                  filename="pcace.png")

        self.layer_bars.on_select(self._layer_from_ui)
        self.channel_bars.on_select(self._channel_from_ui)
        self.layer_picker.observe(self._layer_picked, names="value")
        self.top_k_slider.observe(self._top_k_changed, names="value")
        self.opacity.observe(self._opacity_changed, names="value")
        for widget in (self.layers_picker, self.target_picker, self.components, self.device_picker):
            widget.observe(self._settings_changed, names="value")
        self._update_header()

        controls = W.HBox([W.VBox([self.target_picker, self.components, self.top_k_slider, self.device_picker]),
                           self.layers_picker], layout=W.Layout(flex_flow="row wrap"))
        selected = W.VBox([W.HTML("<b>selected channel</b> on the first images"), self.selected_label,
                           self.selected_info, self.strip])
        self.children = [
            self.header,
            controls,
            self.run_bar.widget,
            W.HBox([self.layer_bars.widget, W.VBox([W.HBox([self.layer_picker, self.opacity]), self.channel_bars.widget])],
                   layout=W.Layout(flex_flow="row wrap")),
            W.HBox([selected, W.VBox([W.HTML("<b>top and bottom channels</b> (the buttons select them)"), self.grid])],
                   layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.export_part, self.exporter.widget], layout=W.Layout(align_items="center")),
        ]
        if autorun:
            self.run()

    # ------------------------------------------------------------------ state

    @property
    def ranking(self) -> LayerRanking | None:
        """The latest finished run's ranking, its summary over the current top-k (None before a run)."""
        return self._ranking

    @property
    def scores(self) -> PCACEScores | None:
        """The shown layer's scores (None before a run)."""
        if self._ranking is None or self._selected is None:
            return None
        return self._ranking[self._selected[0]]

    @property
    def selected(self) -> Neuron | None:
        """The selected channel ``(layer, channel)``, or None."""
        return self._selected

    @selected.setter
    def selected(self, value: Sequence) -> None:
        neuron = self._check_neuron(value)
        with self.lock:
            self._select(neuron)

    @property
    def layer(self) -> str | None:
        """The shown layer (None before a run); setting it selects the layer's best channel."""
        return None if self._selected is None else self._selected[0]

    @layer.setter
    def layer(self, value: str) -> None:
        ranking = self._ranking
        if ranking is None:
            raise NeuronvizError("no ranking yet: the first run has not finished (call v.wait() first)")
        if value not in ranking.layers:
            raise NeuronvizError(f"layer {value!r} is not ranked here; choose one of {list(ranking.layers)}")
        with self.lock:
            if self._selected is None or self._selected[0] != value:
                self._select((value, ranking[value].top(1)[0]))

    @property
    def channel(self) -> int | None:
        """The selected channel of the shown layer; settable."""
        return None if self._selected is None else self._selected[1]

    @channel.setter
    def channel(self, value: int) -> None:
        if self._selected is None:
            raise NeuronvizError("no layer is shown yet: the first run has not finished (call v.wait() first)")
        self.selected = (self._selected[0], value)

    @property
    def layers(self) -> list[str]:
        """The layers the next run ranks."""
        return list(self.layers_picker.value)

    @layers.setter
    def layers(self, value: Sequence[str] | str) -> None:
        self.layers_picker.value = tuple(self._check_layers(self.model, value))

    @property
    def target(self) -> int:
        """The class whose logit the next run explains."""
        return int(self.target_picker.value)

    @target.setter
    def target(self, value: int) -> None:
        self.classes.pick(self.target_picker, value)

    @property
    def n_components(self) -> int:
        """Principal components per channel in the next run."""
        return int(self.components.value)

    @n_components.setter
    def n_components(self, value: int) -> None:
        self.components.value = _check_int("n_components", value, 1, _MAX_COMPONENTS)

    @property
    def top_k(self) -> int:
        """Top and bottom channels marked; the ranking's mean is over the top-k."""
        return int(self.top_k_slider.value)

    @top_k.setter
    def top_k(self, value: int) -> None:
        value = _check_int("top_k", value, 1)
        self.top_k_slider.max = max(self.top_k_slider.max, value)
        self.top_k_slider.value = value

    @property
    def device(self) -> str:
        """Where runs compute, ``"cpu"`` or ``"cuda"``."""
        return str(self.device_picker.value)

    @device.setter
    def device(self, value: str) -> None:
        value = _check_device(self.model, value)
        if value not in self.device_picker.options:
            self.device_picker.options = list(self.device_picker.options) + [value]
        self.device_picker.value = value

    @property
    def settings(self) -> dict[str, Any]:
        """The settings of the next run (layers, target, n_components, device) and top_k."""
        return {**self._run_settings().as_dict(), "top_k": self.top_k}

    # ------------------------------------------------------------------ running

    def run(self) -> Job:
        """Start a run with the current settings in the background (cancelling a running one).

        Returns
        -------
        Job
            The run; :meth:`wait` blocks until it ended.

        Raises
        ------
        NeuronvizError
            No layer picked.
        """
        settings = self._run_settings()
        if not settings.layers:
            raise NeuronvizError("no layer is picked: choose at least one in the layer list (or set v.layers)")
        return self._submit(lambda job: self._compute(job, settings), text=f"running: 0/{self.images.shape[0]}")

    def _run_settings(self) -> PCACESettings:
        return PCACESettings(layers=tuple(self.layers_picker.value), target=int(self.target_picker.value),
                             n_components=int(self.components.value), device=str(self.device_picker.value))

    def _compute(self, job: Job, s: PCACESettings) -> _Run:
        """The run, in the worker thread: the ranking, then the shown images' maps of every ranked layer."""
        start = time.perf_counter()
        dev = resolve_device(self.model, s.device)
        batch = self.batch_size or (_CPU_BATCH if dev.type == "cpu" else None)
        with hold_model(self.model, job, on_wait=self._waiting):
            ranking = rank_layers(self.model, self.images, list(s.layers), s.target, k=self.top_k,
                                  n_components=s.n_components, device=dev, batch_size=batch, progress=job.progress)
            maps = {}
            for layer in s.layers:
                job.check()
                maps[layer] = batch_maps(self.model, self.images[: self.n_shown], layer)[0]
        return _Run(s, ranking, maps, time.perf_counter() - start)

    def _run_clicked(self) -> None:
        try:
            self.run()
        except Exception as err:  # noqa: BLE001 - shown in the widget, not lost in a callback log
            self.report_error(err)

    def _apply(self, result: _Run) -> None:
        self._result = result
        self._ranking = LayerRanking(result.ranking.layers, self.top_k)
        ranking, neuron = self._ranking, self._selected
        if neuron is None or neuron[0] not in ranking.layers or not 0 <= neuron[1] < ranking[neuron[0]].scores.numel():
            layer = neuron[0] if neuron is not None and neuron[0] in ranking.layers else ranking.best()
            neuron = (layer, ranking[layer].top(1)[0])
        self._selected = None  # so that _select redraws the layer's panels
        self._select(neuron)
        self._update_header()

    def _done_text(self) -> str:
        r = self._result
        return "done" if r is None else f"done · {self.images.shape[0]} images in {r.seconds:.1f} s"

    # ------------------------------------------------------------------ selection

    def _select(self, neuron: Neuron) -> None:
        """Show ``neuron``'s layer and channel in every panel (caller holds the lock)."""
        ranking = self._ranking
        if ranking is None:
            return
        self._view_version += 1
        layer, channel = neuron
        new_layer = self._selected is None or self._selected[0] != layer
        self._selected = (layer, channel)
        scores = ranking[layer]
        if new_layer:
            self.channel_bars.set_scores(scores, self.top_k, channel)
            self.layer_bars.set_ranking(ranking, layer)
            self._set_layer_picker(ranking, layer)
            self._build_grid()
        else:
            self.channel_bars.mark(self.top_k, channel)
        self._show_channel()

    def _show_channel(self) -> None:
        result, (layer, channel) = self._result, self._selected
        scores = self._ranking[layer]
        rank = scores.ranking.tolist().index(channel)
        self.selected_label.value = f"{layer} · channel {channel}"
        explained = float(scores.explained_variance[channel].sum())
        self.selected_info.value = (
            f"<div style='font-size:12px'>PCACE score <b>{float(scores.scores[channel]):.3f}</b> "
            f"(#{rank + 1} of {scores.scores.numel()}) · its "
            f"{'component explains' if scores.n_components == 1 else f'{scores.n_components} components explain'} "
            f"{explained:.0%} of the standardised variance</div>"
        )
        maps = result.maps[layer]
        opacity = float(self.opacity.value)
        for j, (im, pic) in enumerate(zip(self._strip_images, self._strip_pictures)):
            im.value = _thumb(pic, maps[j, channel], opacity)

    def _build_grid(self) -> None:
        """The top and bottom channels' maps: a button per column, a row per shown image."""
        layer = self._selected[0]
        scores, maps = self._ranking[layer], self._result.maps[layer]
        k = min(self.top_k, _GRID_MAX_K, scores.scores.numel())
        top, bottom = scores.top(k), scores.bottom(k)
        self._grid_columns = top + bottom
        buttons = []
        for c in self._grid_columns:
            b = W.Button(description=f"ch {c} · {float(scores.scores[c]):.2f}",
                         tooltip=f"select channel {c} of {layer}",
                         layout=W.Layout(width=f"{_GRID_THUMB}px", padding="0px"),
                         style={"button_color": "#dff0d8" if c in top else "#eeeeee", "font_size": "10px"})
            b.add_class("nv-grid-channel")
            b.on_click(lambda _b, c=c: self._channel_from_ui(c))
            buttons.append(b)
        opacity = float(self.opacity.value)
        rows = [W.HBox(buttons)]
        for j, pic in enumerate(self._grid_pictures):
            rows.append(W.HBox([W.Image(format="png", value=_thumb(pic, maps[j, c], opacity),
                                        layout=W.Layout(width=f"{_GRID_THUMB}px")) for c in self._grid_columns]))
        legend = (f"<span style='font-size:11px'><span style='color:{TOP_COLOUR}'>■</span> top {k} &nbsp; "
                  f"<span style='color:{BOTTOM_COLOUR}'>■</span> bottom {k} of {html.escape(layer)}</span>")
        self.grid.children = [W.HTML(legend)] + rows

    def _set_layer_picker(self, ranking: LayerRanking, layer: str) -> None:
        self._quiet_picker = True
        try:
            options = list(ranking.layers)
            if list(self.layer_picker.options) != options:
                self.layer_picker.options = options
            self.layer_picker.value = layer
        finally:
            self._quiet_picker = False

    def _layer_from_ui(self, layer: str) -> None:
        try:
            self.layer = layer
        except Exception as err:  # noqa: BLE001
            self.report_error(err)

    def _channel_from_ui(self, channel: int) -> None:
        try:
            self.channel = channel
        except Exception as err:  # noqa: BLE001
            self.report_error(err)

    def _layer_picked(self, change: dict) -> None:
        if getattr(self, "_quiet_picker", False) or change["new"] is None:
            return
        self._layer_from_ui(change["new"])

    def _top_k_changed(self, _change: dict) -> None:
        with self.lock:
            result = self._result
            if result is None:
                return
            self._ranking = LayerRanking(result.ranking.layers, self.top_k)
            neuron, self._selected = self._selected, None
            self._select(neuron)

    def _opacity_changed(self, _change: dict) -> None:
        with self.lock:
            if self._result is None or self._selected is None:
                return
            self._view_version += 1
            self._show_channel()
            self._build_grid()

    def _settings_changed(self, _change: dict) -> None:
        if self.status == "done" and self._result is not None and self._run_settings() != self._result.settings:
            self.run_bar.status.value = f"{self._done_text()} · settings changed: press Run"

    def _check_neuron(self, value: object) -> Neuron:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
            raise NeuronvizError(f"selected must be a (layer, channel) pair such as ('blocks.15', 37), got {value!r}")
        ranking = self._ranking
        if ranking is None:
            raise NeuronvizError("no ranking yet: the first run has not finished (call v.wait() first)")
        layer, channel = value
        if layer not in ranking.layers:
            raise NeuronvizError(f"layer {layer!r} is not ranked here; choose one of {list(ranking.layers)}")
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise NeuronvizError(f"the channel must be an integer, got {channel!r}")
        n = ranking[layer].scores.numel()
        if not 0 <= int(channel) < n:
            raise NeuronvizError(f"layer {layer!r} has {n} channels (0..{n - 1}); got channel {channel}")
        return str(layer), int(channel)

    def _check_layers(self, model: nn.Module, layers: Sequence[str] | str) -> list[str]:
        names = list(resolve_layers(model, layers))  # unknown names: closest ones suggested
        bad = [n for n in names if n not in self._summary]
        if bad:
            raise NeuronvizError(
                f"layer(s) {bad} cannot be ranked: each must return one tensor of shape (N, C, ...) and run "
                "once per forward pass; nv.layer_summary(model, x) lists the layers that can"
            )
        return names

    # ------------------------------------------------------------------ export

    def figure(self, part: str = "layer", dpi: int = 100):
        """The current view drawn with matplotlib.

        Parameters
        ----------
        part : {"layer", "ranking"}
            :func:`neuronviz.render_pcace` of the shown layer (its top and bottom ``top_k``
            channels' maps over the shown images), or :func:`neuronviz.render_layer_ranking`.
        dpi : int
            Resolution.

        Returns
        -------
        matplotlib.figure.Figure

        Raises
        ------
        NeuronvizError
            Another ``part``, or no finished run yet.
        """
        return self._draw(part, None, check_dpi(dpi))

    def export(self, path: str | Path, dpi: int = 150, part: str = "layer") -> Path:
        """Save the current view as a print-quality PNG, SVG or PDF (by the suffix), drawn in the kernel.

        Parameters
        ----------
        path : str or pathlib.Path
            File name ending in ``.png``, ``.svg`` or ``.pdf``.
        dpi : int
            Resolution of a PNG (and of the images embedded in SVG and PDF).
        part : {"layer", "ranking"}
            What to draw (see :meth:`figure`).

        Returns
        -------
        pathlib.Path

        Raises
        ------
        NeuronvizError
            Another suffix or ``part``, a bad ``dpi``, no finished run yet, or a model busy with
            another view's run for more than a minute.
        """
        path = _check_save_path(path)
        self._draw(part, path, check_dpi(dpi))
        return path

    def _draw(self, part: str, path: Path | None, dpi: int):
        if part not in PARTS:
            raise NeuronvizError(f"part must be one of {PARTS}, got {part!r}")
        with self.lock:
            ranking, neuron = self._ranking, self._selected
        if ranking is None or neuron is None:
            raise NeuronvizError("nothing to export yet: the first run has not finished (call v.wait() first)")
        if part == "ranking":
            return render_layer_ranking(ranking, path=path, dpi=dpi)
        # render_pcace draws the maps with one forward pass of the shown images: take the model's turn
        with hold_model(self.model, timeout=60):
            return render_pcace(ranking[neuron[0]], self.model, self.images, k=self.top_k, n_images=self.n_shown,
                                path=path, dpi=dpi)

    def _static_png(self) -> bytes | None:
        with self.lock:
            ranking, neuron = self._ranking, self._selected
            first = self._strip_pictures[0]
        if ranking is None or neuron is None:
            return encode_png(first)
        pngs = [figure_png(render_layer_ranking(ranking, dpi=_STATIC_DPI), _STATIC_DPI)]
        try:
            # the layer figure runs the model: drawn only when no run holds it (never wait in a display)
            with hold_model(self.model, timeout=0):
                fig = render_pcace(ranking[neuron[0]], self.model, self.images, k=min(self.top_k, _GRID_MAX_K),
                                   n_images=self.n_shown, dpi=_STATIC_DPI)
            pngs.append(figure_png(fig, _STATIC_DPI))
        except NeuronvizError:
            pass
        return _stack_pngs(pngs)

    # ------------------------------------------------------------------ helpers

    def _update_header(self) -> None:
        result = self._result
        n = self.images.shape[0]
        run = "" if result is None else (
            f" · explaining the logit of <b>{html.escape(self.classes.name(result.settings.target))}</b> "
            f"over {n} images, {result.settings.n_components} component(s)"
        )
        few = (f" · <span style='color:#a05a00'>{n} images: fewer than {_FEW_IMAGES} make the scores noisy</span>"
               if n < _FEW_IMAGES else "")
        predicted = self.classes.predicted
        self.header.value = (
            f"<div style='font-size:14px'><b>PCACE</b> · {html.escape(type(self.model).__name__)}{run}</div>"
            f"<div style='font-size:11px;color:#555'>most probable over the images: "
            f"{html.escape(self.classes.name(predicted))}, mean p = {self.classes.probabilities[predicted]:.2f}"
            f" · each channel's maximal correlation between the principal components of its maps and the class "
            f"logit (Casacuberta et al. 2021){few}</div>"
        )

    def __repr__(self) -> str:
        return f"PCACEView(status={self.status!r}, layers={self.layers}, selected={self._selected})"


def _mean_probabilities(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(classes,) softmax probabilities averaged over ``images``; refuses a model that is not a classifier."""
    dev = model_device(model)
    total = None
    with preserved_state(model), torch.no_grad():
        model.eval()
        for lo in range(0, images.shape[0], batch_size):
            try:
                out = check_class_output(forward_checked(model, images[lo : lo + batch_size].to(dev)))
            except NeuronvizError as err:
                raise NeuronvizError(
                    f"PCACEView explains one class of a classifier that returns (N, classes) scores: {err}. "
                    "For other outputs, use nv.rank_layers(..., target=callable)"
                ) from None
            p = torch.softmax(out.double(), dim=1).sum(0).cpu()
            total = p if total is None else total + p
    return total / images.shape[0]


def _stack_pngs(pngs: list[bytes]) -> bytes:
    """PNGs one above the other on white, as one PNG."""
    pictures = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    width = max(p.width for p in pictures)
    out = Image.new("RGB", (width, sum(p.height for p in pictures)), "white")
    y = 0
    for p in pictures:
        out.paste(p, (0, y))
        y += p.height
    buf = io.BytesIO()
    out.quantize(256, method=Image.Quantize.FASTOCTREE).save(buf, format="PNG")
    return buf.getvalue()
