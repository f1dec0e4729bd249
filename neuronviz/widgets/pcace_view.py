"""PCACEView: the channels of a few layers ranked by PCACE over a set of images, as linked panels."""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import ipywidgets as W
import numpy as np
import torch
from torch import nn

from ..core.archive import archived
from ..core.errors import NeuronvizError
from ..core.layer_choice import pcace_default_layers
from ..core.locks import hold_model
from ..core.validation import check_batch
from ..methods.faithfulness import FaithfulnessCurves
from ..methods.pcace import MIN_IMAGES, LayerRanking, PCACEScores, mean_probabilities, rank_layers, shown_maps
from ..render.formatting import format_score
from ..render.html import pcace_page
from ..render.pcace import display_images, render_layer_ranking, render_pcace_maps
from .classes import ClassChoices
from .examples import ExamplesSection
from .jobs import Job
from .knockouts import CurvesSection, pcace_curves
from .panels.bars import ChannelBars, LayerBars
from .panels.channel_maps import GRID_MAX_K, ChannelStrip, TopBottomGrid
from .panels.examples import how_to_give
from .pictures import encode_png, figure_png, stack_pngs
from .settings import ClassIndex, Device, Int, Layers, setting
from .view import STATIC_DPI, Outcome, View

__all__ = ["PCACEView", "PCACESettings", "PCACEResult", "PCACEFigure", "PARTS"]

#: What :meth:`PCACEView.export` can draw: the shown layer's channels, or every layer side by side.
PARTS = ("layer", "ranking")
_CPU_BATCH = 16  # several progress steps (and cancel points) per run on a CPU
_FEW_IMAGES = 40  # below this ACE's smoothers are noisy (see neuronviz.methods.pcace)
_STYLE = {"description_width": "95px"}

Neuron = tuple[str, int]


@dataclass(frozen=True)
class PCACESettings:
    """The settings of a PCACE run; ``top_k`` applies at once, the others at the next run."""

    layers: tuple[str, ...] = setting(None, Layers(), control="layers", label="layers", css="nv-layers", group=1)
    target: int = setting(None, ClassIndex(), control="classes", label="target", css="nv-target")
    n_components: int = setting(1, Int(1, 8), control="slider", span=(1, 8), label="components", css="nv-components",
                                tooltip="principal components per channel")
    top_k: int = setting(3, Int(1), control="slider", span=(1, 10), label="top-k", rerun=False, css="nv-topk")
    device: str = setting(None, Device(), control="device", label="device", css="nv-device")


@archived("PCACEResult")
@dataclass
class PCACEResult:
    """A finished run: the ranking and, per ranked layer, the (n_shown, C, h, w) maps of the shown images."""

    ranking: LayerRanking
    maps: dict[str, torch.Tensor]


@dataclass(frozen=True)
class PCACEFigure:
    """What a PCACE figure draws, as plain data (:meth:`PCACEView.snapshot`)."""

    part: str
    ranking: LayerRanking
    layer: str
    maps: torch.Tensor  # (n, C, h, w) of the shown layer
    pictures: np.ndarray  # (n, H, W, 3) in [0, 1]
    k: int
    n_classes: int
    channel: int | None = None  # the selected channel of the shown layer
    layer_maps: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # every ranked layer's, for a page
    curves: FaithfulnessCurves | None = None  # the shown layer's deletion curve, once computed


class PCACEView(View):
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
    * given ``examples=``, the selected channel's data-set examples: its top-9 receptive-field
      crops with their activation and label (:func:`neuronviz.top_examples`, found once per
      layer in the background, as in the explorer);
    * on the button, the shown layer's deletion curve: the logit on the shown images as its
      PCACE top-k channels are knocked out, against random rankings (then again for every run
      and shown layer; in the exported layer figure once computed);
    * the settings (layers, target class, principal components, top-k, device), Run / Cancel,
      a progress bar, a status line and an error area; and Export.

    Computation runs in one background thread: the kernel stays free, a new run cancels the
    running one and stale results are dropped. Changing a setting does not recompute until
    Run is pressed; top-k, the shown layer, the selection and the opacity apply at once. The
    maps are computed once per run (with the ranking), so export draws without the model.

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
    channel : int or None
        The selected channel of the shown layer; settable.
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
    figure(dpi=100, part="layer")
        The same as a matplotlib figure. Both draw from the run's data, without the model.

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
        Layers to rank; default :func:`neuronviz.core.layer_choice.pcace_default_layers`.
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
    examples : torch.Tensor, Dataset or loader, optional
        Images to find the selected channel's data-set examples in (:func:`neuronviz.top_examples`,
        once for the ranked layers, in the background, giving way to the view's runs); without
        them the panel says how to give them.

    Raises
    ------
    NeuronvizError
        Bad images (fewer than 20, wrong shape, NaN), a layer the model does not have (closest
        names suggested) or that gives no single tensor per forward pass, a model whose
        output is not (N, classes), a target, ``n_components``, ``top_k``, ``n_shown`` or
        device out of range.
    """

    Settings = PCACESettings
    title = "PCACE"
    css = "nv-pcace"
    export_name = "pcace.png"
    saved_attributes = ("images", "n_shown", "batch_size", "pictures")  # what save() keeps besides the result
    unsaved_attributes = {"_ranking": None, "_shown_layer": None, "_quiet": False, "_example_source": None}
    saved_widgets = ("opacity", "export_part")

    def __init__(self, model: nn.Module, images: torch.Tensor, layers: Sequence[str] | str | None = None, *,
                 target: int | None = None, n_components: int = 1, top_k: int = 3, n_shown: int = 3,
                 device: str | None = None, batch_size: int | None = None, autorun: bool = True,
                 examples: Any = None) -> None:
        if not isinstance(model, nn.Module):
            raise NeuronvizError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        images = check_batch(images, model, what="images")
        if images.shape[0] < MIN_IMAGES:
            raise NeuronvizError(
                f"PCACE needs at least {MIN_IMAGES} images (40 or more are better), got {images.shape[0]}; "
                "nv.augment(photo, 48) makes random views of one photo"
            )
        self.images = images.detach().to("cpu", torch.float32)  # not copied: a set of images can be large
        self.n_shown = min(Int(1, 8)(n_shown, "n_shown"), self.images.shape[0])
        self.batch_size = None if batch_size is None else Int(1)(batch_size, "batch_size")
        with hold_model(model):  # the layer list and the mean class probabilities: one turn on the model
            self.probe(model, self.images[:1], classify=False)
            try:
                probs = mean_probabilities(model, self.images, batch_size=self.batch_size or _CPU_BATCH)
            except NeuronvizError as err:
                raise NeuronvizError(
                    f"PCACEView explains one class of a classifier that returns (N, classes) scores: {err}. "
                    "For other outputs, use nv.rank_layers(..., target=callable)"
                ) from None
        self.classes = ClassChoices(probs)
        self.pictures = display_images(self.images[: self.n_shown])
        self._ranking: LayerRanking | None = None
        self._shown_layer: str | None = None  # the layer the bars and the grid show now
        self._quiet = False
        self._example_source = examples
        super().__init__(model, autorun=autorun, layers=layers, target=target, n_components=n_components,
                         top_k=top_k, device=device)

    def default_for(self, name: str) -> Any:
        """The model's PCACE layers, and the class most probable over the images."""
        if name == "layers":
            with hold_model(self.model):
                return tuple(pcace_default_layers(self.model, self.summary, x=self.images[:1]))
        if name == "target":
            return self.classes.predicted
        return super().default_for(name)

    def build(self) -> list[W.Widget]:
        """The layer and channel bars, the shown-layer picker and opacity, the strip, the grid, the export part."""
        self.layer_bars, self.channel_bars = LayerBars(), ChannelBars()
        self.layer_picker = W.Dropdown(options=[], description="show layer", style=_STYLE,
                                       layout=W.Layout(width="300px"))
        self.opacity = W.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="opacity",
                                     readout_format=".2f", continuous_update=False, style=_STYLE,
                                     layout=W.Layout(width="300px"))
        self.layer_picker.add_class("nv-show-layer")
        self.opacity.add_class("nv-opacity")
        self.channel_strip, self.top_bottom = ChannelStrip(self.pictures), TopBottomGrid(self.pictures)
        self.export_part = W.Dropdown(options=[("the shown layer", "layer"), ("the layer ranking", "ranking")],
                                      value="layer", description="export", style={"description_width": "50px"},
                                      layout=W.Layout(width="220px"))
        self.exporter.widget.children = (self.export_part, *self.exporter.widget.children)
        self.layer_bars.on_select(self._pick_layer)
        self.channel_bars.on_select(self._pick_channel)
        self.top_bottom.on_select(self._pick_channel)
        self.layer_picker.observe(lambda c: None if self._quiet or c["new"] is None else self._pick_layer(c["new"]),
                                  names="value")
        self.faithfulness = CurvesSection(self._prepare_curves, label="Deletion curve", tooltip=(
            "knock out the shown layer's top-k channels by PCACE and by random rankings; the logit on the shown "
            "images"), key=lambda: self.scores)
        self.side_work.append(self.faithfulness)  # cancelled by a run, waited for on close
        self.opacity.observe(self._opacity_moved, names="value")
        self.examples = ExamplesSection(self, getattr(self, "_example_source", None),
                                        how=how_to_give("nv.PCACEView(model, images, examples=dataset)"))
        wrap = W.Layout(flex_flow="row wrap")
        return [W.HBox([self.layer_bars.widget, W.VBox([W.HBox([self.layer_picker, self.opacity]),
                                                        self.channel_bars.widget])], layout=wrap),
                W.HBox([self.channel_strip.widget, self.top_bottom.widget, self.examples.widget],
                       layout=W.Layout(flex_flow="row wrap")),
                self.faithfulness.widget]

    # ------------------------------------------------------------------ state

    @property
    def ranking(self) -> LayerRanking | None:
        """The latest finished run's ranking, its summary over the current top-k (None before a run)."""
        return self._ranking

    @property
    def scores(self) -> PCACEScores | None:
        """The shown layer's scores (None before a run)."""
        return None if self._ranking is None or self.selected is None else self._ranking[self.selected[0]]

    @property
    def layer(self) -> str | None:
        """The shown layer (None before a run); setting it selects the layer's best channel."""
        return None if self.selected is None else self.selected[0]

    @layer.setter
    def layer(self, value: str) -> None:
        ranking = self._ranked()
        if value not in ranking.layers:
            raise NeuronvizError(f"layer {value!r} is not ranked here; choose one of {list(ranking.layers)}")
        if value != self.layer:
            self.selected = (value, ranking[value].top(1)[0])

    @property
    def channel(self) -> int | None:
        """The selected channel of the shown layer; settable."""
        return None if self.selected is None else self.selected[1]

    @channel.setter
    def channel(self, value: int) -> None:
        self._ranked()
        self.selected = (self.layer, value)

    def _ranked(self) -> LayerRanking:
        if self._ranking is None:
            raise NeuronvizError("no ranking yet: the first run has not finished (call v.wait() first)")
        return self._ranking

    def _neuron(self) -> Neuron:
        self._ranked()
        return self.selected

    def _maps(self, layer: str) -> torch.Tensor:
        if self.outcome is None:
            raise NeuronvizError("no maps yet: the first run has not finished (call v.wait() first)")
        return self.outcome.result.maps[layer]

    def check_selected(self, value: Any) -> Neuron:
        """``value`` as a ranked ``(layer, channel)``, or a :class:`NeuronvizError` saying what would be right."""
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
            raise NeuronvizError(f"selected must be a (layer, channel) pair such as ('blocks.15', 37), got {value!r}")
        ranking = self._ranked()
        layer, channel = value
        if layer not in ranking.layers:
            raise NeuronvizError(f"layer {layer!r} is not ranked here; choose one of {list(ranking.layers)}")
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise NeuronvizError(f"the channel must be an integer, got {channel!r}")
        n = ranking[layer].scores.numel()
        if not 0 <= int(channel) < n:
            raise NeuronvizError(f"layer {layer!r} has {n} channels (0..{n - 1}); got channel {channel}")
        return str(layer), int(channel)

    # ------------------------------------------------------------------ running and showing

    def compute(self, settings: PCACESettings, job: Job) -> PCACEResult:
        """The ranking, then the shown images' maps of every ranked layer (one more forward pass)."""
        batch = self.batch_size or (_CPU_BATCH if settings.device == "cpu" else None)
        ranking = rank_layers(self.model, self.images, list(settings.layers), settings.target, k=settings.top_k,
                              n_components=settings.n_components, device=settings.device, batch_size=batch,
                              progress=job.progress)
        job.check()
        return PCACEResult(ranking, shown_maps(self.model, self.images[: self.n_shown], list(settings.layers))[0])

    def show(self, result: PCACEResult) -> None:
        """Show the run's ranking; the selection stays if the run ranked it, else the best layer's best channel."""
        self._ranking = ranking = LayerRanking(result.ranking.layers, self.top_k)
        neuron = self.selected
        if neuron is None or neuron[0] not in ranking.layers or not 0 <= neuron[1] < ranking[neuron[0]].scores.numel():
            layer = neuron[0] if neuron is not None and neuron[0] in ranking.layers else ranking.best()
            neuron = (layer, ranking[layer].top(1)[0])
        self._shown_layer = None  # the layer's panels are redrawn with the new scores
        if neuron == self.selected:
            self.show_selected()
        else:
            self.selected = neuron

    def show_selected(self) -> None:
        """Bring the bars, the layer picker, the strip and (for a new layer) the grid to the selection."""
        if self._ranking is None or self.selected is None:
            return
        layer, channel = self.selected
        if layer != self._shown_layer:
            self._shown_layer = layer
            self.channel_bars.set_scores(self._ranking[layer], self.top_k, channel)
            self.layer_bars.set_ranking(self._ranking, layer)
            self._quiet = True
            try:
                if list(self.layer_picker.options) != list(self._ranking.layers):
                    self.layer_picker.options = list(self._ranking.layers)
                self.layer_picker.value = layer
            finally:
                self._quiet = False
            self._draw_grid()
            self.faithfulness.refresh()  # the shown layer's deletion curve, once asked for
        else:
            self.channel_bars.mark(self.top_k, channel)
        self._draw_strip()
        self.examples.show(self.selected)  # the channel's data-set examples (found in the background)

    def _draw_strip(self) -> None:
        layer, channel = self._neuron()
        scores = self._ranked()[layer]
        rank = scores.ranking.tolist().index(channel)
        n = scores.n_components
        explains = "component explains" if n == 1 else f"{n} components explain"
        score = format_score("correlation", float(scores.scores[channel]))
        info = (f"<div style='font-size:12px'>PCACE score <b>{score}</b> "
                f"(#{rank + 1} of {scores.scores.numel()}) · its {explains} "
                f"{float(scores.explained_variance[channel].sum()):.0%} of the standardised variance</div>")
        self.channel_strip.show(self._maps(layer)[:, channel], float(self.opacity.value),
                                f"{layer} · channel {channel}", info)

    def _draw_grid(self) -> None:
        layer = self._neuron()[0]
        scores = self._ranked()[layer]
        k = min(self.top_k, GRID_MAX_K, scores.scores.numel())
        self.top_bottom.show(layer, scores.top(k), scores.bottom(k), scores.scores, self._maps(layer),
                             float(self.opacity.value))

    def setting_changed(self, name: str, value: Any) -> None:
        """A new top-k re-ranks the layers' summary and redraws the marks and the grid at once."""
        if name == "top_k" and self._ranking is not None:
            self._ranking = LayerRanking(self._ranking.layers, value)
            self._shown_layer = None
            self.show_selected()

    def _prepare_curves(self) -> Any:
        """The shown layer's deletion curve (:func:`.knockouts.pcace_curves`), or None before a run."""
        scores = self.scores
        if scores is None:
            return None
        model, images, n = self.require_model(), self.images, self.n_shown
        return lambda progress: pcace_curves(model, images, scores, n_images=n, progress=progress)

    def _opacity_moved(self, _change: dict) -> None:
        with self.lock:
            if self._ranking is not None and self.selected is not None:
                self._draw_strip()
                self._draw_grid()

    def _pick_layer(self, layer: str) -> None:
        try:
            self.layer = layer
        except Exception as err:  # noqa: BLE001 - shown in the widget
            self.report_error(err)

    def _pick_channel(self, channel: int) -> None:
        self.select_from_ui((self.layer, channel))

    def header_html(self) -> str:
        """The model, the explained class and the number of images; the class most probable over them."""
        n, done = self.images.shape[0], self.outcome
        run = "" if done is None else (
            f" · explaining the logit of <b>{html.escape(self.classes.name(done.settings.target))}</b> "
            f"over {n} images, {done.settings.n_components} component(s)")
        few = (f" · <span style='color:#a05a00'>{n} images: fewer than {_FEW_IMAGES} make the scores noisy</span>"
               if n < _FEW_IMAGES else "")
        best = self.classes.predicted
        return (f"<div style='font-size:14px'><b>PCACE</b> · {html.escape(self.model_name)}{run}</div>"
                f"<div style='font-size:11px;color:#555'>most probable over the images: "
                f"{html.escape(self.classes.name(best))}, mean p = {self.classes.probabilities[best]:.2f}"
                f" · each channel's maximal correlation between the principal components of its maps and the class "
                f"logit (Casacuberta et al. 2021){few}</div>")

    def done_text(self, outcome: Outcome) -> str:
        """``done · 40 images in 1.2 s``."""
        return f"done · {self.images.shape[0]} images in {outcome.seconds:.1f} s"

    # ------------------------------------------------------------------ figures

    def snapshot(self, part: str = "layer", **options: Any) -> PCACEFigure:
        """The ranking and the shown layer's maps, scores and top-k, as plain data for :meth:`draw`.

        ``part`` is ``"layer"`` (:func:`neuronviz.render_pcace` of the shown layer) or ``"ranking"``
        (:func:`neuronviz.render_layer_ranking`); :meth:`figure` and :meth:`export` pass it on.
        """
        if part not in PARTS or options:
            raise NeuronvizError(f"part must be one of {PARTS} (the only option here), got {part!r} {options or ''}")
        layer, channel = self._neuron()
        curves = self.faithfulness.curves  # drawn once computed for the shown layer
        return PCACEFigure(part, self._ranked(), layer, self._maps(layer), self.pictures, self.top_k,
                           self.classes.n_classes, channel, {la: self._maps(la) for la in self._ranked().layers},
                           curves=curves if isinstance(curves, FaithfulnessCurves) and layer in curves.groups else None)

    def draw(self, record: PCACEFigure, *, dpi: int, path: Path | None = None) -> Any:
        """``record`` drawn by :func:`~neuronviz.render.pcace.render_pcace_maps` or ``render_layer_ranking``."""
        if record.part == "ranking":
            return render_layer_ranking(record.ranking, path=path, dpi=dpi)
        return render_pcace_maps(record.ranking[record.layer], record.maps, record.pictures, k=record.k,
                                 n_classes=record.n_classes, curves=record.curves, path=path, dpi=dpi)

    def page(self, record: PCACEFigure) -> str:
        """The ranking and every layer's channels as one HTML page (:func:`neuronviz.render.html.pcace_page`)."""
        return pcace_page(record.ranking, record.layer_maps or {record.layer: record.maps}, record.pictures,
                          selected=(record.layer, record.channel) if record.channel is not None else None,
                          k=record.k, settings=self.page_settings(), model_name=self.model_name,
                          n_classes=record.n_classes, opacity=float(self.opacity.value), curves=record.curves)

    def export_options(self) -> dict[str, Any]:
        """The part chosen beside the Export button."""
        return {"part": self.export_part.value}

    def static_png(self) -> bytes | None:
        """The layer ranking above the shown layer's figure (5 top and bottom channels at most), or the first image."""
        if self.outcome is None or self.selected is None:
            return encode_png(self.channel_strip.pictures[0])
        record = self.snapshot()
        figures = [self.draw(dataclasses.replace(record, part="ranking"), dpi=STATIC_DPI),
                   self.draw(dataclasses.replace(record, k=min(record.k, GRID_MAX_K)), dpi=STATIC_DPI)]
        return stack_pngs([figure_png(fig, STATIC_DPI) for fig in figures])


    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, selected={self.selected!r})"
