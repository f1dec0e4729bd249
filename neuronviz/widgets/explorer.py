"""NeuronExplorer: the input-resampling scores of one image as linked interactive panels, and ``demo()``."""

from __future__ import annotations

import csv
import html
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import ipywidgets as W
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..core.capture import LayerSummary, layer_summary, resolve_layers
from ..core.errors import NeuronvizError
from ..core.model_state import model_device, resolve_device
from ..core.perturb import Perturbation
from ..core.targets import top_predictions
from ..core.validation import check_image
from ..methods.resampling import NeuronScores, score_neurons
from ..render.explorer import ExplorerView, render_explorer
from ..render.figure import check_path
from ..render.maps import activation_maps, batch_maps
from ..render.pcace import display_images
from .colab import enable_colab_widgets
from .controls import STRENGTHS, RunSettings, SettingsPanel, check_kind, check_strength, perturbation_for
from .jobs import Job
from .legacy_panels import BackgroundView, NeuronDetail, check_dpi, figure_png, hold_model, NeuronScatter, OverlayPanel, SelectionLists, encode_png, format_score

__all__ = ["NeuronExplorer", "demo", "default_layers", "DISPLAY_SIZE"]

#: Long side, in pixels, of the image the explorer draws on (small keeps a click fast).
DISPLAY_SIZE = 224
_THUMB_SIZE = 112
_N_STRIP = 5
_STATIC_DPI = 60  # the picture beside the widget in the display data
_CPU_BATCH = 16  # several progress steps (and cancel points) per run on a CPU
_DEMO_LAYERS = ("blocks.10.expand.act", "blocks.15.depthwise.act")  # core.layer_choice.EFFICIENTNET_LITE0_LAYERS

Neuron = tuple[str, int]


def default_layers(model: nn.Module, summary: LayerSummary) -> list[str]:
    """The layers the explorer scores when none are named.

    ``blocks.10`` and ``blocks.15`` for the default model (EfficientNet-Lite0); otherwise
    the last two convolutions with a spatial output, else the last two layers with a
    spatial output, else the last layer listed.

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
        The model has no layer that can be scored.
    """
    from ..models import EfficientNetLite0

    names = set(summary.names())
    if isinstance(model, EfficientNetLite0) and set(_DEMO_LAYERS) <= names:
        return list(_DEMO_LAYERS)
    spatial = [i.name for i in summary if len(i.shape) == 3 and i.positions > 1]
    for candidates in (spatial_convolutions(model, summary), spatial, summary.names()):
        if candidates:
            return candidates[-2:]
    raise NeuronvizError("the model has no layer with a (N, C, ...) output to score; pass layers=[...]")


def spatial_convolutions(model: nn.Module, summary: LayerSummary) -> list[str]:
    """The convolutions of ``summary`` whose output is a (C, H, W) map of more than one position, in order.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    summary : LayerSummary
        Its :func:`neuronviz.layer_summary`.

    Returns
    -------
    list of str
    """
    modules = dict(model.named_modules())
    return [i.name for i in summary
            if len(i.shape) == 3 and i.positions > 1 and isinstance(modules[i.name], nn.modules.conv._ConvNd)]


@dataclass
class _RunResult:
    """Everything a finished run gives the panels."""

    settings: RunSettings
    scores: NeuronScores
    maps: dict[str, torch.Tensor]
    samples: list[np.ndarray]
    sample_indices: list[int]
    sample_maps: dict[str, torch.Tensor]
    seconds: float


class NeuronExplorer(BackgroundView):
    """Neurons of a CNN scored by correlation and precision over input resampling, as linked panels.

    One image is perturbed ``n_samples`` times and every channel of the chosen layers is
    scored by its correlation with the output and by its activation precision
    (:func:`neuronviz.score_neurons`). The panels:

    * the image with the selected neuron's activation map (unperturbed image) upsampled and
      blended over it, with an opacity slider, and a box on the map cell of its strongest
      activation, scaled to the image (an approximate receptive field: where the neuron fires
      most, not the full theoretical receptive field);
    * every channel's correlation (x) against precision (y, log scale), coloured by layer,
      with each metric's top-k marked and the neurons chosen by both ringed in red; click a
      point (or brush / lasso and pick from the list) to select it;
    * per layer, the top-k by correlation beside the top-k by precision, and their overlap;
    * the selected neuron's activation (channel mean) against the output over the perturbed
      copies, and a strip of copies with its map over them;
    * the settings (perturbation, strength, samples, seed, top-k, layers, target class, device),
      Run / Cancel, a progress bar, a status line and an error area; and Export.

    Selecting a neuron anywhere updates every panel. Computation runs in one background
    thread: the kernel stays free, a new run cancels the running one and stale results are
    dropped. Changing a setting does not recompute until Run is pressed (top-k and opacity
    apply at once). One run starts automatically when the explorer is created
    (``autorun=True``).

    Python interface
    ----------------
    scores : NeuronScores or None
        The latest finished run's scores (with ``channel_means``).
    selected : tuple (str, int) or None
        The selected neuron ``(layer, channel)``; settable. Setting a neuron that is not
        scored (unknown layer, channel out of range) raises :class:`NeuronvizError`.
    layers : list of str
        The layers of the next run; settable (validated).
    top_k : int
        Size of each metric's selection per layer; settable, applies at once.
    n_samples, seed, perturbation, strength, target, device
        The settings of the next run; settable (validated). ``strength`` is the main
        parameter of the perturbation family (:data:`neuronviz.widgets.controls.STRENGTHS`).
    settings : dict
        All of the above as a dict.
    status : str
        ``"idle"``, ``"running"``, ``"done"``, ``"cancelled"`` or ``"error"`` (observable).
    error : str or None
        The last error message, also shown in the widget.
    run()
        Start a run with the current settings in the background; returns at once.
    cancel()
        Stop the running run; the previous results stay.
    wait(timeout=None)
        Block until the current run ended and its results are shown (``TimeoutError``).
    export(path, dpi=150)
        Save the current view as PNG, SVG or PDF (by suffix), drawn with matplotlib.
    export_scores(path)
        Save one row per channel as CSV or JSON.
    figure(dpi=100)
        The current view as a matplotlib figure.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning (N, classes) scores. It is run in eval mode without gradients
        and left exactly as it was.
    image : torch.Tensor
        The image, (1, C, H, W) or (C, H, W), normalised as the model expects (for the default
        model, ``nv.preprocess(photo)``).
    layers : sequence of str, optional
        Layers to score; default :func:`default_layers` (``blocks.10``, ``blocks.15`` for the
        default model, else the last two convolutions).
    target : int, optional
        Class to explain; default the class predicted on the image.
    n_samples : int
        Perturbed copies per run (at least 3).
    perturbation : str
        One of ``nv.perturb.KINDS``: ``"multiplicative"`` (the paper's), ``"additive"``,
        ``"occlusion"``, ``"blur"``.
    strength : float, optional
        Main setting of the perturbation (noise growth per copy, noise std, patch side,
        largest blur); default the family's default.
    seed : int
        Seed of the perturbed set.
    top_k : int
        Neurons per layer in each metric's selection.
    device : str, optional
        ``"cpu"`` or ``"cuda"``; default the model's device.
    autorun : bool
        Start a run at once.
    image_display : PIL.Image.Image or numpy.ndarray, optional
        The picture to draw on (uint8 or [0, 1] float, (H, W, 3)), for models normalised
        differently from the default model; by default ``image`` is un-normalised with
        ``nv.deprocess`` (3 channels) or shown in grey.

    Raises
    ------
    NeuronvizError
        Bad image, a layer the model does not have (closest names suggested) or that gives no
        single tensor per forward pass, a model whose output is not (N, classes), a target,
        sample count, perturbation, strength, seed, top-k or device out of range.
    """

    title = "Neurons"

    def __init__(
        self,
        model: nn.Module,
        image: torch.Tensor,
        layers: Sequence[str] | str | None = None,
        *,
        target: int | None = None,
        n_samples: int = 48,
        perturbation: str = "multiplicative",
        strength: float | None = None,
        seed: int = 0,
        top_k: int = 5,
        device: str | None = None,
        autorun: bool = True,
        image_display: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise NeuronvizError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        x = check_image(image, model).detach().clone()
        kind = check_kind(perturbation)
        strength = check_strength(kind, STRENGTHS[kind].default if strength is None else strength)
        n_samples = _check_int("n_samples", n_samples, 3)
        seed = _check_int("seed", seed, 0, 2**31 - 1)
        top_k = _check_int("top_k", top_k, 1)
        device = _check_device(model, device)

        try:
            with hold_model(model):  # a running view of this model would mix its hooks with ours
                summary = layer_summary(model, x.to(model_device(model)))
        except NeuronvizError:
            raise
        except RuntimeError as err:
            raise NeuronvizError(f"the model failed on the image {tuple(x.shape)}: {err}") from err
        self._summary = {info.name: info for info in summary}
        layers = default_layers(model, summary) if layers is None else self._check_layers(model, layers)
        try:
            with hold_model(model):
                predictions = top_predictions(model, x, k=10**9)  # every class, most probable first
        except NeuronvizError as err:
            raise NeuronvizError(
                f"the explorer explains one class of a classifier that returns (N, classes) scores: {err}. "
                "For other outputs, use nv.score_neurons(..., target=callable)"
            ) from None
        n_classes = len(predictions)
        names = None
        if n_classes == 1000:
            from ..data import imagenet_categories  # the 1000 ImageNet names, bundled

            names = imagenet_categories()
        self.model, self.x, self.n_classes = model, x, n_classes
        self._class_names = names
        self._probabilities = {i: p for i, _name, p in predictions}
        target = int(predictions[0][0]) if target is None else _check_target(target, n_classes)

        super().__init__(worker_name="neuronviz-explorer")
        enable_colab_widgets()
        self.add_class("nv-explorer")
        self._result: _RunResult | None = None
        self._selected: Neuron | None = None
        self.last_update_ms: float | None = None

        picture = _display_picture(x, image_display)
        self.image = _resize(picture, DISPLAY_SIZE)
        # the picture's per-channel range, to show perturbed copies in the same colours (see _display_samples)
        self._display_range = (picture.reshape(-1, 3).min(0), picture.reshape(-1, 3).max(0))
        self._display_override = image_display is not None
        self.overlay = OverlayPanel(self.image)
        self.scatter = NeuronScatter()
        self.lists = SelectionLists()
        self.detail = NeuronDetail(thumb=96)
        self.controls = SettingsPanel(
            layer_options=[(f"{i.name}  {tuple(i.shape)}", i.name) for i in summary],
            layers=layers,
            target_options=self._target_options([target]),
            target=target,
            kind=kind,
            strength=strength,
            n_samples=n_samples,
            seed=seed,
            top_k=top_k,
            device=device,
        )
        self.selected_label = W.Label("no neuron selected")
        self.selected_label.add_class("nv-selected")
        self.selected_info = W.HTML("")
        self.header = W.HTML("")
        self.export_path = W.Text(value="explorer.png", description="file", layout=W.Layout(width="260px"),
                                  style={"description_width": "40px"})
        self.export_path.add_class("nv-export-path")
        self.export_button = W.Button(description="Export", icon="download", tooltip="save the view as PNG, SVG or PDF")
        self.export_button.add_class("nv-export")
        self.export_scores_button = W.Button(description="Scores", icon="table",
                                             tooltip="save every channel's scores as CSV or JSON (name.csv / name.json)")
        self.export_scores_button.add_class("nv-export-scores")
        self.export_message = W.HTML("")
        self.export_message.add_class("nv-export-message")

        self.scatter.on_select(self._select_from_ui)
        self.lists.on_select(self._select_from_ui)
        self.overlay.opacity.observe(self._opacity_changed, names="value")
        self.controls.top_k.observe(self._top_k_changed, names="value")
        self.controls.watch(self._settings_changed)
        self.export_button.on_click(lambda _b: self._export_clicked())
        self.export_scores_button.on_click(lambda _b: self._export_scores_clicked())
        self._update_header()

        left = W.VBox([self.overlay.widget, self.selected_label, self.selected_info], layout=W.Layout(width="320px"))
        self.children = [
            self.header,
            self.controls.widget,
            self.run_bar.widget,
            W.HBox([left, self.scatter.widget]),
            W.HBox([self.lists.widget, self.detail.widget], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.export_path, self.export_button, self.export_scores_button, self.export_message],
                   layout=W.Layout(align_items="center")),
        ]
        if autorun:
            self.run()

    # ------------------------------------------------------------------ state

    @property
    def scores(self) -> NeuronScores | None:
        """The latest finished run's scores (None before the first run finishes)."""
        result = self._result
        return None if result is None else result.scores

    @property
    def selected(self) -> Neuron | None:
        """The selected neuron ``(layer, channel)``, or None."""
        return self._selected

    @selected.setter
    def selected(self, value: Sequence | None) -> None:
        neuron = self._check_neuron(value)
        with self.lock:
            self._selected = neuron
            self._show_selected()

    @property
    def layers(self) -> list[str]:
        """The layers the next run scores."""
        return list(self.controls.layers.value)

    @layers.setter
    def layers(self, value: Sequence[str] | str) -> None:
        self.controls.layers.value = tuple(self._check_layers(self.model, value))

    @property
    def top_k(self) -> int:
        """Neurons per layer in each metric's selection."""
        return int(self.controls.top_k.value)

    @top_k.setter
    def top_k(self, value: int) -> None:
        value = _check_int("top_k", value, 1)
        self.controls.top_k.max = max(self.controls.top_k.max, value)
        self.controls.top_k.value = value

    @property
    def n_samples(self) -> int:
        """Perturbed copies per run."""
        return int(self.controls.n_samples.value)

    @n_samples.setter
    def n_samples(self, value: int) -> None:
        value = _check_int("n_samples", value, 3)
        self.controls.n_samples.max = max(self.controls.n_samples.max, value)
        self.controls.n_samples.value = value

    @property
    def seed(self) -> int:
        """Seed of the perturbed set."""
        return int(self.controls.seed.value)

    @seed.setter
    def seed(self, value: int) -> None:
        self.controls.seed.value = _check_int("seed", value, 0, 2**31 - 1)

    @property
    def perturbation(self) -> str:
        """The perturbation family (a name of ``nv.perturb.KINDS``); setting it resets ``strength``."""
        return str(self.controls.kind.value)

    @perturbation.setter
    def perturbation(self, value: str) -> None:
        self.controls.kind.value = check_kind(value)

    kind = perturbation

    @property
    def strength(self) -> float:
        """The perturbation's main setting (see :data:`~neuronviz.widgets.controls.STRENGTHS`)."""
        return float(self.controls.strength.value)

    @strength.setter
    def strength(self, value: float) -> None:
        self.controls.strength.value = check_strength(self.perturbation, value)

    @property
    def target(self) -> int:
        """The explained class."""
        return int(self.controls.target.value)

    @target.setter
    def target(self, value: int) -> None:
        value = _check_target(value, self.n_classes)
        if value not in [v for _label, v in self.controls.target.options]:
            current = [v for _label, v in self.controls.target.options]
            self.controls.target.options = self._target_options(current + [value])
        self.controls.target.value = value

    @property
    def device(self) -> str:
        """Where runs compute, ``"cpu"`` or ``"cuda"``."""
        return str(self.controls.device.value)

    @device.setter
    def device(self, value: str) -> None:
        value = _check_device(self.model, value)
        if value not in self.controls.device.options:
            self.controls.device.options = list(self.controls.device.options) + [value]
        self.controls.device.value = value

    @property
    def settings(self) -> dict[str, Any]:
        """The settings of the next run: layers, perturbation, strength, n_samples, seed, target, device, top_k."""
        return {**self._run_settings().as_dict(), "top_k": self.top_k}

    # ------------------------------------------------------------------ running

    def run(self) -> Job:
        """Start a run with the current settings in the background (cancelling a running one).

        Returns
        -------
        Job
            The run (its ``id`` is the run id); :meth:`wait` blocks until it ended.

        Raises
        ------
        NeuronvizError
            No layer picked, or a setting out of range.
        """
        settings = self._run_settings()
        if not settings.layers:
            raise NeuronvizError("no layer is picked: choose at least one in the layer list (or set w.layers)")
        perturbation = perturbation_for(settings.kind, settings.strength)
        return self._submit(lambda job: self._compute(job, settings, perturbation),
                            text=f"running: 0/{settings.n_samples}")

    def _run_settings(self) -> RunSettings:
        c = self.controls
        return RunSettings(
            layers=tuple(c.layers.value), kind=str(c.kind.value), strength=float(c.strength.value),
            n_samples=int(c.n_samples.value), seed=int(c.seed.value), target=int(c.target.value),
            device=str(c.device.value),
        )

    def _compute(self, job: Job, s: RunSettings, perturbation: Perturbation) -> _RunResult:
        """The run, in the worker thread: scores, the clean maps, a few copies and their maps."""
        with hold_model(self.model, job, on_wait=self._waiting):  # other views of this model take turns
            return self._compute_held(job, s, perturbation)

    def _compute_held(self, job: Job, s: RunSettings, perturbation: Perturbation) -> _RunResult:
        start = time.perf_counter()
        dev = resolve_device(self.model, s.device)
        scores = score_neurons(
            self.model, self.x, list(s.layers), target=s.target, n_samples=s.n_samples, perturbation=perturbation,
            seed=s.seed, device=dev, batch_size=_CPU_BATCH if dev.type == "cpu" else None,
            progress=job.progress, keep_channel_means=True,
        )
        job.check()
        maps = activation_maps(self.model, self.x, list(s.layers))  # once per run: a click only upsamples
        job.check()
        indices = sorted({int(round(v)) for v in np.linspace(0, s.n_samples - 1, min(_N_STRIP, s.n_samples))})
        copies = perturbation.sample(self.x, indices, seed=s.seed)
        sample_maps = {}
        for layer in s.layers:
            job.check()
            sample_maps[layer] = batch_maps(self.model, copies, layer)[0]
        return _RunResult(s, scores, maps, self._display_samples(copies), indices, sample_maps,
                          time.perf_counter() - start)

    def _run_clicked(self) -> None:
        try:
            self.run()
        except Exception as err:  # noqa: BLE001 - shown in the widget, not lost in a callback log
            self.report_error(err)

    def _apply(self, result: _RunResult) -> None:
        scores, k = result.scores, self.top_k
        self._result = result
        self.scatter.set_scores(scores, k)
        self.lists.set_scores(scores, k)
        self.detail.set_run(scores, result.samples, result.sample_indices, result.sample_maps)
        if not self._valid_for(self._selected, scores):
            self._selected = self._default_neuron(scores)
        self._show_selected()
        self._update_header()

    def _done_text(self) -> str:
        r = self._result
        return "done" if r is None else f"done · {r.scores.n_samples} copies in {r.seconds:.1f} s"

    # ------------------------------------------------------------------ selection

    def _select_from_ui(self, layer: str, channel: int) -> None:
        try:
            self.selected = (layer, channel)
        except Exception as err:  # noqa: BLE001
            self.report_error(err)

    def _show_selected(self) -> None:
        """Bring every panel to the selected neuron (caller holds the lock)."""
        t0 = time.perf_counter()
        result, neuron = self._result, self._selected
        self._view_version += 1
        if neuron is None:
            self.selected_label.value = "no neuron selected"
            self.selected_info.value = ""
            self.overlay.show(None)
            self.scatter.set_selected(None)
            self.lists.set_selected(None)
            self.detail.show(None)
            self.last_update_ms = (time.perf_counter() - t0) * 1000
            return
        layer, channel = neuron
        self.selected_label.value = f"{layer} · channel {channel}"
        amap = None
        if result is not None and layer in result.maps:
            m = result.maps[layer]
            amap = m[channel] if m.dim() == 3 and m.shape[1] * m.shape[2] > 1 else None
        caption = "" if result is None else (
            "<span style='font-size:11px'>box: the map cell of the strongest activation</span>" if amap is not None
            else "<span style='font-size:11px'>this layer has no spatial map</span>"
        )
        self.overlay.show(amap, caption)
        if result is not None:
            self.selected_info.value = self._neuron_info(result.scores, layer, channel)
            self.scatter.set_selected(neuron)
            self.lists.set_selected(neuron)
            self.detail.show(neuron, float(self.overlay.opacity.value))
        self.last_update_ms = (time.perf_counter() - t0) * 1000

    def _neuron_info(self, scores: NeuronScores, layer: str, channel: int) -> str:
        parts = []
        for metric in ("correlation", "precision"):
            values = scores.metric(metric)[layer]
            v = float(values[channel])
            rank = scores.top(metric, values.numel())[layer]
            where = f" (#{rank.index(channel) + 1} of {len(rank)})" if channel in rank else ""
            parts.append(f"{metric} <b>{format_score(metric, v)}</b>{where}")
        parts.append(f"mean activation {float(scores.mean_activation[layer][channel]):.3g}")
        return "<div style='font-size:12px'>" + "<br>".join(parts) + "</div>"

    def _check_neuron(self, value: Sequence | None) -> Neuron | None:
        if value is None:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
            raise NeuronvizError(f"selected must be a (layer, channel) pair such as ('blocks.15', 37), got {value!r}")
        layer, channel = value
        scores = self.scores
        layers = list(scores.layers) if scores is not None else self.layers
        if layer not in layers:
            raise NeuronvizError(f"layer {layer!r} is not scored here; choose one of {layers}")
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise NeuronvizError(f"the channel must be an integer, got {channel!r}")
        n = scores.correlation[layer].numel() if scores is not None else self._summary[layer].channels
        if not 0 <= int(channel) < n:
            raise NeuronvizError(f"layer {layer!r} has {n} channels (0..{n - 1}); got channel {channel}")
        return str(layer), int(channel)

    @staticmethod
    def _valid_for(neuron: Neuron | None, scores: NeuronScores) -> bool:
        return neuron is not None and neuron[0] in scores.layers and 0 <= neuron[1] < scores.correlation[neuron[0]].numel()

    @staticmethod
    def _default_neuron(scores: NeuronScores) -> Neuron:
        """The first layer's best neuron by correlation (channel 0 when every score is NaN)."""
        layer = scores.layers[0]
        best = scores.top("correlation", 1)[layer]
        return layer, int(best[0]) if best else 0

    def _opacity_changed(self, _change: dict) -> None:
        with self.lock:
            self._view_version += 1
            if self._result is not None and self._selected is not None:
                self.detail.show(self._selected, float(self.overlay.opacity.value))

    def _top_k_changed(self, _change: dict) -> None:
        with self.lock:
            result = self._result
            if result is None:
                return
            self._view_version += 1
            self.scatter.set_top(result.scores, self.top_k)
            self.lists.set_scores(result.scores, self.top_k)
            self.lists.set_selected(self._selected)

    def _settings_changed(self, _change: dict) -> None:
        if self.status == "done" and self._result is not None and self._run_settings() != self._result.settings:
            self.run_bar.status.value = f"{self._done_text()} · settings changed: press Run"

    # ------------------------------------------------------------------ export

    def _view(self) -> ExplorerView:
        result = self._result
        if result is None:
            raise NeuronvizError("nothing to export yet: the first run has not finished (call w.wait() first)")
        return ExplorerView(
            scores=result.scores, maps=result.maps, image=self.image, selected=self._selected, k=self.top_k,
            opacity=float(self.overlay.opacity.value), samples=np.stack(result.samples) if result.samples else None,
            sample_indices=list(result.sample_indices), sample_maps=result.sample_maps, n_classes=self.n_classes,
        )

    def figure(self, dpi: int = 100):
        """The current view drawn with matplotlib (image and overlay, scatter, selections, detail).

        Parameters
        ----------
        dpi : int
            Resolution.

        Returns
        -------
        neuronviz.render.StaticFigure
            Displays itself in a notebook; ``savefig`` it or use :meth:`export`.

        Raises
        ------
        NeuronvizError
            No run has finished yet.
        """
        with self.lock:
            view = self._view()
        return render_explorer(view, dpi=dpi)

    def export(self, path: str | Path, dpi: int = 150) -> Path:
        """Save the current view as a print-quality PNG, SVG or PDF (by the suffix), drawn in the kernel.

        Parameters
        ----------
        path : str or pathlib.Path
            File name ending in ``.png``, ``.svg`` or ``.pdf``.
        dpi : int
            Resolution of a PNG (and of the images embedded in SVG and PDF).

        Returns
        -------
        pathlib.Path

        Raises
        ------
        NeuronvizError
            Another suffix, a bad ``dpi``, or no finished run yet.
        """
        path = _check_save_path(path)
        dpi = check_dpi(dpi)
        with self.lock:
            view = self._view()
        render_explorer(view, path=path, dpi=dpi)
        return path

    def export_scores(self, path: str | Path) -> Path:
        """Save one row per scored channel to CSV or JSON (by the suffix).

        Columns: ``layer, channel, correlation, precision, mean_activation, top_by_correlation,
        top_by_precision`` (the last two with the current top-k). CSV writes ``nan`` and ``inf``
        as such; JSON (an object with the run's settings and a ``neurons`` list of rows) writes
        NaN as ``null`` and infinite precision as the string ``"inf"``, so any JSON reader takes it.

        Parameters
        ----------
        path : str or pathlib.Path
            File name ending in ``.csv`` or ``.json``.

        Returns
        -------
        pathlib.Path

        Raises
        ------
        NeuronvizError
            Another suffix, or no finished run yet.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise NeuronvizError(f"cannot save scores as {path.name!r}: the file name must end in .csv or .json")
        with self.lock:
            result, k = self._result, self.top_k
        if result is None:
            raise NeuronvizError("no scores yet: the first run has not finished (call w.wait() first)")
        rows = score_rows(result.scores, k)
        if suffix == ".csv":
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(_ROW_FIELDS))
                writer.writeheader()
                writer.writerows(rows)
        else:
            s = result.scores
            doc = {
                "settings": result.settings.as_dict(), "target": s.target, "output": s.output,
                "n_samples": s.n_samples, "top_k": k,
                "neurons": [{key: _json_number(v) for key, v in row.items()} for row in rows],
            }
            path.write_text(json.dumps(doc, indent=1, allow_nan=False))
        return path

    def _export_clicked(self) -> None:
        try:
            path = self.export(self.export_path.value.strip())
            self.export_message.value = f"saved <code>{html.escape(str(path))}</code> ({path.stat().st_size // 1024} kB)"
        except Exception as err:  # noqa: BLE001
            self.export_message.value = ""
            self.report_error(err)

    def _export_scores_clicked(self) -> None:
        try:
            name = Path(self.export_path.value.strip() or "scores")
            path = self.export_scores(name if name.suffix.lower() in (".csv", ".json") else name.with_suffix(".csv"))
            self.export_message.value = f"saved <code>{html.escape(str(path))}</code>"
        except Exception as err:  # noqa: BLE001
            self.export_message.value = ""
            self.report_error(err)

    def _static_png(self) -> bytes | None:
        with self.lock:
            view = self._view() if self._result is not None else None
            picture = self.overlay.render() if view is None else None
        if view is None:
            return encode_png(picture)
        return figure_png(render_explorer(view, dpi=_STATIC_DPI), _STATIC_DPI)

    # ------------------------------------------------------------------ helpers

    def _update_header(self) -> None:
        result = self._result
        predicted = max(self._probabilities, key=self._probabilities.get)
        run = "" if result is None else (
            f" · explaining the {result.scores.output} of <b>{html.escape(self._class_name(result.scores.target))}</b>"
            f" · last run: {result.scores.n_samples} copies, {html.escape(result.settings.kind)} perturbation, "
            f"seed {result.settings.seed}"
        )
        self.header.value = (
            f"<div style='font-size:14px'><b>Neuron explorer</b> · {html.escape(type(self.model).__name__)}{run}</div>"
            f"<div style='font-size:11px;color:#555'>predicted: {html.escape(self._class_name(predicted))}, "
            f"p = {self._probabilities[predicted]:.2f} · each channel's correlation with the output against its "
            "activation precision over perturbed copies (Lengerich et al. 2017)</div>"
        )

    def _class_name(self, c: int | None) -> str:
        if c is None:
            return "a callable target"
        if self._class_names is not None:
            return f"{self._class_names[c]} ({c})"
        return f"class {c}"

    def _target_options(self, extra: Sequence[int]) -> list[tuple[str, int]]:
        ranked = sorted(self._probabilities, key=lambda c: -self._probabilities[c])
        chosen = list(dict.fromkeys(ranked[:5] + [int(c) for c in extra]))
        return [(f"{self._class_name(c)}  p={self._probabilities[c]:.3f}", c) for c in chosen]

    def _check_layers(self, model: nn.Module, layers: Sequence[str] | str) -> list[str]:
        names = list(resolve_layers(model, layers))  # unknown names: closest ones suggested
        bad = [n for n in names if n not in self._summary]
        if bad:
            raise NeuronvizError(
                f"layer(s) {bad} cannot be scored: each must return one tensor of shape (N, C, ...) and run "
                "once per forward pass; nv.layer_summary(model, x) lists the layers that can"
            )
        return names

    def _display_samples(self, copies: torch.Tensor) -> list[np.ndarray]:
        """Perturbed copies as small [0, 1] pictures, un-normalised like the main image."""
        copies = copies.detach().float().cpu()
        if self._display_override and copies.shape[1] == 3:
            # the user's normalisation is unknown: map each channel affinely so the clean image's
            # range lands on the range of the picture given for it
            x = self.x[0].detach().float().cpu()
            lo_x, hi_x = x.flatten(1).min(1).values, x.flatten(1).max(1).values
            lo_d, hi_d = (torch.from_numpy(np.asarray(v, dtype=np.float32)) for v in self._display_range)
            scale = (hi_d - lo_d) / torch.where(hi_x > lo_x, hi_x - lo_x, torch.ones_like(hi_x))
            pics = ((copies - lo_x.view(1, 3, 1, 1)) * scale.view(1, 3, 1, 1) + lo_d.view(1, 3, 1, 1)).clamp(0, 1)
            pics = pics.permute(0, 2, 3, 1).numpy()
        else:
            pics = display_images(copies)
        return [_resize(p, _THUMB_SIZE) for p in pics]

    def __repr__(self) -> str:
        return f"NeuronExplorer(status={self.status!r}, layers={self.layers}, selected={self._selected})"


# ---------------------------------------------------------------------------------------------
# module helpers

_ROW_FIELDS = ("layer", "channel", "correlation", "precision", "mean_activation", "top_by_correlation",
               "top_by_precision")


def score_rows(scores: NeuronScores, k: int) -> list[dict[str, Any]]:
    """One dict per channel: layer, channel, both scores, mean activation, and whether each top-``k`` holds it.

    Parameters
    ----------
    scores : NeuronScores
        Per-channel scores.
    k : int
        Size of each metric's selection.

    Returns
    -------
    list of dict
    """
    top_c, top_p = scores.top("correlation", k), scores.top("precision", k)
    rows = []
    for layer in scores.layers:
        corr = scores.correlation[layer].reshape(-1).tolist()
        prec = scores.precision[layer].reshape(-1).tolist()
        mean = scores.mean_activation[layer].reshape(-1).tolist()
        tc, tp = set(top_c[layer]), set(top_p[layer])
        for c, (r, p, m) in enumerate(zip(corr, prec, mean)):
            rows.append({"layer": layer, "channel": c, "correlation": r, "precision": p, "mean_activation": m,
                         "top_by_correlation": c in tc, "top_by_precision": c in tp})
    return rows


def _json_number(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
    return v


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise NeuronvizError(f"{name} must be an integer {rng}, got {value!r}")
    return int(value)


def _check_target(value: object, n_classes: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < n_classes:
        raise NeuronvizError(
            f"target must be a class index in 0..{n_classes - 1} (the model has {n_classes} classes), got {value!r}"
        )
    return int(value)


def _check_device(model: nn.Module, device: object) -> str:
    if device is None:
        return model_device(model).type
    if not isinstance(device, str):
        raise NeuronvizError(f"device must be 'cpu' or 'cuda', got {device!r}")
    try:
        return resolve_device(model, device).type
    except ValueError as err:
        raise NeuronvizError(str(err)) from None


def _check_save_path(path: str | Path) -> Path:
    try:
        return check_path(path)
    except ValueError as err:
        raise NeuronvizError(str(err)) from None


def _display_picture(x: torch.Tensor, image_display: Any) -> np.ndarray:
    """The (H, W, 3) float picture in [0, 1] the explorer draws on, at its own size."""
    if image_display is None:
        pic = display_images(x.detach().float().cpu())[0]
    else:
        if isinstance(image_display, Image.Image):
            arr = np.asarray(image_display.convert("RGB"))
        elif isinstance(image_display, torch.Tensor):
            arr = image_display.detach().cpu().numpy()
        else:
            arr = np.asarray(image_display)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
            raise NeuronvizError(
                f"image_display must be a PIL image or an (H, W, 3) array (uint8, or float in [0, 1]), got shape {arr.shape}"
            )
        if arr.dtype == np.uint8:
            pic = arr.astype(np.float32) / 255.0
        elif np.issubdtype(arr.dtype, np.floating) and np.nanmin(arr) >= 0 and np.nanmax(arr) <= 1:
            pic = arr.astype(np.float32)
        else:
            raise NeuronvizError(
                f"image_display must be uint8 or float in [0, 1]; got {arr.dtype} with values in "
                f"[{np.nanmin(arr):.3g}, {np.nanmax(arr):.3g}]"
            )
    return pic


def _resize(pic: np.ndarray, long_side: int) -> np.ndarray:
    """Resize an (H, W, 3) float picture so that its long side is ``long_side`` pixels."""
    h, w = pic.shape[:2]
    scale = long_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size == (h, w):
        return np.ascontiguousarray(pic, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(pic, dtype=np.float32)).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=size, mode="bilinear", antialias=scale < 1, align_corners=False)
    return t[0].permute(1, 2, 0).clamp(0, 1).numpy()


def demo(image: str = "cat", layers: Sequence[str] = _DEMO_LAYERS, **kwargs: Any) -> NeuronExplorer:
    """A :class:`NeuronExplorer` on the default model (EfficientNet-Lite0) and a bundled photo.

    Parameters
    ----------
    image : str
        A bundled photo (``nv.sample_image_names()``); the cat by default.
    layers : sequence of str
        Layers to score.
    **kwargs
        Passed to :class:`NeuronExplorer` (``n_samples``, ``seed``, ``autorun`` ...).

    Returns
    -------
    NeuronExplorer
        Displays itself; its first run starts at once (about 48 copies, a few seconds on a CPU).
    """
    from ..data import preprocess, sample_image
    from ..models import default_model

    return NeuronExplorer(default_model(), preprocess(sample_image(image)), list(layers), **kwargs)
