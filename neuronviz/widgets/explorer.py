"""NeuronExplorer: the input-resampling scores of one image as linked interactive panels, and ``demo()``."""

from __future__ import annotations

import csv
import dataclasses
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
from torch import nn

from ..core.archive import archived
from ..core.errors import NeuronvizError
from ..core.layer_choice import default_layers
from ..core.model_state import resolve_device
from ..core.validation import check_image
from ..methods.resampling import NeuronScores, score_neurons
from ..render.explorer import ExplorerView, render_explorer
from ..render.formatting import format_score
from ..render.html import explorer_page
from ..render.pcace import display_images
from .examples import ExamplesSection, demo_examples
from .knockouts import KnockoutSection
from .panels import NeuronDetail, NeuronScatter, OverlayPanel, SelectionLists
from .panels.examples import GeneralityTable
from .panels.intervals import IntervalPanel, interval_rows
from .perturbation import STRENGTHS, check_strength, perturbation_for
from .pictures import DISPLAY_SIZE, display_picture, encode_png, resize
from .settings import ClassIndex, Device, Int, Layers, OneOf, setting
from .view import Outcome, View

__all__ = [
    "NeuronExplorer", "ExplorerSettings", "ExplorerResult", "demo", "default_layers", "score_rows", "save_scores",
    "copy_pictures", "DISPLAY_SIZE",
]

_THUMB_SIZE = 112
_N_STRIP = 5
_CPU_BATCH = 16  # several progress steps (and cancel points) per run on a CPU
_BOOTSTRAP = 32  # replicates for the intervals, ties and stability, from the same pass
#: Seconds a live run on a CPU leaves the processor to the browser after its first partial picture.
FIRST_PARTIAL_PAUSE_S = 0.1
#: Seconds at least between two later partial pictures of a live run.
PARTIAL_EVERY_S = 2.0

Neuron = tuple[str, int]


@dataclass(frozen=True)
class ExplorerSettings:
    """The explorer's settings: what each one accepts, its control and its DOM class.

    ``strength`` is checked against the range of the perturbation family chosen
    (:data:`neuronviz.widgets.perturbation.STRENGTHS`); its default is the family's.
    """

    perturbation: str = setting("multiplicative", OneOf(tuple(STRENGTHS)), control="dropdown", css="nv-kind")
    strength: float = setting(None, check_strength, control="slider", span=(0.0, 0.5), step=0.01, css="nv-strength")
    n_samples: int = setting(50, Int(3), control="slider", span=(3, 512), label="samples", css="nv-samples")
    seed: int = setting(0, Int(0, 2**31 - 1), control="box", css="nv-seed")
    target: int = setting(None, ClassIndex(), control="classes", css="nv-target", group=1)
    top_k: int = setting(5, Int(1), control="slider", span=(1, 20), rerun=False, label="top-k", css="nv-topk", group=1)
    device: str = setting(None, Device(), control="device", css="nv-device", group=1)
    layers: tuple = setting(None, Layers(), control="layers", css="nv-layers", group=2)


@archived("ExplorerResult", drop=("maps", "sample_maps"))  # the scores hold them: saved once
@dataclass
class ExplorerResult:
    """What a run gives the panels: the scores, the clean maps, a few copies and their maps.

    Attributes
    ----------
    scores : NeuronScores
        With ``channel_means``.
    maps : dict of str to torch.Tensor
        Per layer, the (C, h, w) maps of the unperturbed image (copy 0 of the scoring pass).
    samples : list of numpy.ndarray
        Small (H, W, 3) pictures of the copies ``sample_indices``.
    sample_indices : list of int
        Which copies the strip shows.
    sample_maps : dict of str to torch.Tensor
        Per layer, the (n, C, h, w) maps of those copies (from the scoring pass).
    """

    scores: NeuronScores
    maps: dict[str, torch.Tensor]
    samples: list[np.ndarray]
    sample_indices: list[int]
    sample_maps: dict[str, torch.Tensor]

    @classmethod
    def of(cls, scores: NeuronScores, samples: list[np.ndarray], sample_indices: list[int]) -> "ExplorerResult":
        """The result of ``scores`` run with ``keep_maps=[0, *sample_indices]``: its maps are views of the scores'."""
        out = cls(scores, None, samples, list(sample_indices), None)  # type: ignore[arg-type]
        out._after_load()
        return out

    def _after_load(self) -> None:
        """The maps from the scores' kept maps (copy 0, then the strip's), which a saved result leaves out."""
        if self.maps is None or self.sample_maps is None:
            kept = {layer: m.reshape(m.shape[0], *_chw(m[0]).shape) for layer, m in (self.scores.maps or {}).items()}
            self.maps = {layer: m[0] for layer, m in kept.items()}
            self.sample_maps = {layer: m[1:] for layer, m in kept.items()}


class NeuronExplorer(View):
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
    * per layer, the top-k by correlation beside the top-k by precision, their overlap, and
      how many channels were left out of precision and why;
    * the selected neuron's activation (channel mean) against the output over the perturbed
      copies, and a strip of copies with its map over them;
    * the settings (perturbation, strength, samples, seed, top-k, layers, target class, device),
      Run / Cancel, a progress bar, a status line and an error area; and Export.

    Selecting a neuron anywhere updates every panel. Computation runs in one background
    thread: the kernel stays free, a new run cancels the running one and stale results are
    dropped. Changing a setting does not recompute until Run is pressed (top-k and opacity
    apply at once). One run starts automatically when the explorer is created
    (``autorun=True``). The constructor and a run together cost 1 + ceil(N / B) forward
    passes: one probe pass (layers and class probabilities), then the scoring pass, which
    also keeps the maps of the clean image (copy 0) and of the copies in the strip.

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
        parameter of the perturbation family (:data:`neuronviz.widgets.perturbation.STRENGTHS`);
        setting ``perturbation`` resets it to the family's default.
    settings : dict
        All of the above as a dict.
    status : str
        ``"idle"``, ``"running"``, ``"done"``, ``"cancelled"`` or ``"error"`` (observable).
    error : str or None
        The last error message, also shown in the widget.
    run(), cancel(), wait(timeout=None)
        Start a run in the background; stop it (the previous results stay); block until the
        current run ended and its results are shown (``TimeoutError``).
    export(path, dpi=150), figure(dpi=100)
        The current view as PNG, SVG or PDF (by suffix) / as a matplotlib figure.
    export_scores(path)
        Save one row per channel as CSV or JSON.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning (N, classes) scores. It is run in eval mode without gradients
        and left exactly as it was.
    image : torch.Tensor
        The image, (1, C, H, W) or (C, H, W), normalised as the model expects (for the default
        model, ``nv.preprocess(photo)``).
    layers : sequence of str, optional
        Layers to score; default :func:`neuronviz.core.layer_choice.default_layers`
        (post-activation maps at the last two resolutions).
    autorun : bool
        Start a run at once.
    image_display : PIL.Image.Image or numpy.ndarray, optional
        The picture to draw on (uint8 or [0, 1] float, (H, W, 3)), for models normalised
        differently from the default model; by default ``image`` is un-normalised with
        ``nv.deprocess`` (3 channels) or shown in grey.
    examples : torch.Tensor, Dataset or loader, optional
        Images to find the selected neuron's data-set examples in (:func:`neuronviz.top_examples`,
        once per layer in the background); the detail then shows its top-9 crops with activation
        and label, and a click opens the image in the overlay.
    **settings
        ``target`` (default the predicted class), ``n_samples`` (50, the paper's; at least 3),
        ``perturbation`` (one of ``nv.perturb.KINDS``, default ``"multiplicative"``, the
        paper's), ``strength`` (default the family's), ``seed`` (0), ``top_k`` (5),
        ``device`` (default the model's): see :class:`ExplorerSettings`.

    Raises
    ------
    NeuronvizError
        Bad image, a layer the model does not have (closest names suggested) or that gives no
        single tensor per forward pass, a model whose output is not (N, classes), a target,
        sample count, perturbation, strength, seed, top-k or device out of range.
    """

    Settings = ExplorerSettings
    title = "Neurons"
    css = "nv-explorer"
    export_name = "explorer.png"
    live_auto = True
    saved_attributes = ("x", "image", "_picture")  # what save() keeps besides the settings and the result
    unsaved_attributes = {"_example_source": None}
    saved_widgets = ("overlay.opacity",)

    def __init__(self, model: nn.Module, image: torch.Tensor, layers: Sequence[str] | str | None = None, *,
                 autorun: bool = True, image_display: Any = None, examples: Any = None, **settings: Any) -> None:
        if not isinstance(model, nn.Module):
            raise NeuronvizError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.x = check_image(image, model).detach().clone()
        picture = display_picture(self.x, image_display)
        self.image = resize(picture, DISPLAY_SIZE)
        self._picture = picture if image_display is not None else None  # copies are shown in its colours
        self.probe(model, self.x)
        self._example_source = examples
        super().__init__(model, autorun=autorun, layers=layers, **settings)

    # ------------------------------------------------------------------ settings

    def default_for(self, name: str) -> Any:
        """Defaults that depend on the model: layers, the predicted class, the family's strength."""
        if name == "layers":
            return tuple(default_layers(self.model, self.summary))
        if name == "target":
            return self.classes.predicted
        if name == "strength":
            return STRENGTHS[self.perturbation].default
        return super().default_for(name)

    def setting_changed(self, name: str, value: Any) -> None:
        """A new perturbation resets the strength to its default and range; top-k applies at once."""
        if name == "perturbation":
            self._strength_range(value, reset=True)
        elif name == "top_k" and self.scores is not None:
            self.scatter.set_top(self.scores, value)
            self.lists.set_scores(self.scores, value)
            self._show_generality()
            self.intervals.show(self.scores, value)
            self.lists.set_selected(self.selected)

    def _strength_range(self, kind: str, reset: bool) -> None:
        spec, slider = STRENGTHS[kind], self.controls["strength"]
        with slider.hold_trait_notifications():
            # widen first so that the new default is never clamped by the old range
            slider.max, slider.min = max(slider.max, spec.max), min(slider.min, spec.min)
            if reset:
                slider.value = spec.default
            slider.min, slider.max, slider.step = spec.min, spec.max, spec.step
        slider.tooltip = spec.label

    # ------------------------------------------------------------------ panels

    def build(self) -> list[W.Widget]:
        """The overlay, scatter, selections and detail panels, and a Scores button in the Export row."""
        self._strength_range(self.perturbation, reset=False)
        self.overlay = OverlayPanel(self.image)
        self.scatter, self.lists, self.detail = NeuronScatter(), SelectionLists(), NeuronDetail(thumb=96)
        self.selected_label = W.Label("no neuron selected")
        self.selected_label.add_class("nv-selected")
        self.selected_info = W.HTML("")
        self.intervals = IntervalPanel(self.scatter)
        box = self.lists.widget
        box.children = (*box.children[:2], self.intervals.stability, *box.children[2:])  # beside the overlap
        for panel in (self.scatter, self.lists):
            panel.on_select(lambda layer, channel: self.select_from_ui((layer, channel)))
        self.overlay.opacity.observe(self._opacity_changed, names="value")
        self.scores_button = W.Button(description="Scores", icon="table",
                                      tooltip="save every channel's scores as CSV or JSON (name.csv / name.json)")
        self.scores_button.add_class("nv-export-scores")
        self.scores_button.on_click(lambda _b: self._export_scores_clicked())
        row = self.exporter.widget
        row.children = (*row.children[:-1], self.scores_button, row.children[-1])
        self.examples = ExamplesSection(self, self._example_source)
        self.generality_table = GeneralityTable()  # and the scatter's colour-by, once the examples are found
        self.generality_table.on_select(lambda layer, channel: self.select_from_ui((layer, channel)))
        self.examples.on_found(self._examples_found)
        self.knockouts = KnockoutSection(self)  # knock-out toggle and deletion curves
        left = W.VBox([self.overlay.widget, self.selected_label, self.selected_info, self.examples.widget],
                      layout=W.Layout(width="320px"))
        return [W.HBox([left, self.scatter.widget]),
                W.HBox([self.lists.widget, self.intervals.widget, self.detail.widget, self.knockouts.widget,
                        self.generality_table.widget], layout=W.Layout(flex_flow="row wrap"))]

    def header_html(self) -> str:
        """The model, the explained class and the last run's settings, and the predicted class."""
        names, out = self.classes, self.outcome
        run = ""
        if out is not None:
            scores = out.result.scores
            run = (
                f" · explaining the {scores.output} of <b>{html.escape(names.name(scores.target))}</b>"
                f" · last run: {scores.n_samples} copies, {html.escape(out.settings.perturbation)} "
                f"perturbation, seed {out.settings.seed}"
            )
        return (
            f"<div style='font-size:14px'><b>Neuron explorer</b> · {html.escape(self.model_name)}{run}</div>"
            f"<div style='font-size:11px;color:#555'>predicted: {html.escape(names.name(names.predicted))}, "
            f"p = {names.probabilities[names.predicted]:.2f} · each channel's correlation with the output against "
            "its activation precision over perturbed copies (Lengerich et al. 2017)</div>"
        )

    def done_text(self, outcome: Outcome) -> str:
        """``done · N copies in T s``."""
        return f"done · {outcome.result.scores.n_samples} copies in {outcome.seconds:.1f} s"

    # ------------------------------------------------------------------ a run

    @property
    def scores(self) -> NeuronScores | None:
        """The latest finished run's scores (None before the first run finishes)."""
        return None if self.outcome is None else self.outcome.result.scores

    def compute(self, settings: ExplorerSettings, job: Any) -> ExplorerResult:
        """Score the layers; the clean maps and the strip's maps come from the same pass."""
        s = settings
        perturbation = perturbation_for(s.perturbation, s.strength)
        dev = resolve_device(self.model, s.device)
        strip = sorted({int(round(v)) for v in np.linspace(0, s.n_samples - 1, min(_N_STRIP, s.n_samples))})
        # copy 0 of every family offered is the image itself (first_is_original): its maps are the clean maps
        scores = score_neurons(
            self.model, self.x, list(s.layers), target=s.target, n_samples=s.n_samples, perturbation=perturbation,
            seed=s.seed, device=dev, batch_size=_CPU_BATCH if dev.type == "cpu" else None, progress=job.progress,
            keep_channel_means=True, keep_maps=[0, *strip], bootstrap=_BOOTSTRAP,
            on_batch=_Partials(job, s.n_samples, lambda: dev.type == "cpu" and self.live),
        )
        job.check()
        copies = perturbation.sample(self.x, strip, seed=s.seed)
        return ExplorerResult.of(scores, copy_pictures(copies, self.x, self._picture), strip)

    def show(self, result: ExplorerResult) -> None:
        """Fill the panels with a run's result; the selection stays if the new scores hold it."""
        scores, k = result.scores, self.top_k
        self.scatter.set_scores(scores, k)
        self.scatter.figure.title = "every channel"
        self.lists.set_scores(scores, k)
        self._show_generality()
        self.intervals.show(scores, k)
        self.detail.set_run(scores, result.samples, result.sample_indices, result.sample_maps)
        neuron = self.selected
        if neuron is None or neuron[0] not in scores.layers or neuron[1] >= scores.correlation[neuron[0]].numel():
            best = scores.top("correlation", 1)[scores.layers[0]]  # the first layer's best (channel 0 if all NaN)
            neuron = (scores.layers[0], int(best[0]) if best else 0)
        if neuron == self.selected:
            self.show_selected()
        else:
            self.selected = neuron

    @property
    def generality(self) -> dict[str, Any]:
        """Each scored layer's :class:`~neuronviz.methods.examples.Generality`, once its data-set examples are found."""
        out = {}
        for layer in self.scores.layers if self.scores is not None else self.layers:
            ex = self.examples.cache.get(layer)
            if ex is not None and ex.generality_available(layer):
                out[layer] = ex.generality(layer)
        return out

    def _examples_found(self) -> None:
        with self.lock:
            self._show_generality()

    def _show_generality(self) -> None:
        """The scatter's colour-by and the generality table, for the layers whose examples are found."""
        scores, gens = self.scores, self.generality
        if scores is None or not gens:
            return
        self.scatter.set_generality({layer: g.share.numpy() for layer, g in gens.items()})
        k = self.top_k
        self.generality_table.set({"correlation": scores.top("correlation", k),
                                   "precision": scores.top("precision", k)}, gens)

    def show_partial(self, scores: NeuronScores) -> None:
        """A live run's scores of the copies so far: the scatter and the lists refine; intervals come at the end."""
        self.scatter.set_scores(scores, self.top_k, partial=True)
        self.scatter.figure.title = f"every channel · {scores.n_samples} copies so far"
        self.lists.set_scores(scores, self.top_k)
        self.intervals.clear(f"intervals after the run ({scores.n_samples} copies so far)")
        self.scatter.set_selected(self.selected)

    def estimate_seconds(self, outcome: Outcome) -> float:
        """The last run's time scaled to the current number of copies."""
        return outcome.seconds * self.n_samples / max(1, outcome.result.scores.n_samples)

    # ------------------------------------------------------------------ selection

    def check_selected(self, value: Any) -> Neuron | None:
        """``value`` as a scored ``(layer, channel)``, or a :class:`NeuronvizError` saying what is scored."""
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
        n = scores.correlation[layer].numel() if scores is not None else next(i.channels for i in self.summary
                                                                              if i.name == layer)
        if not 0 <= int(channel) < n:
            raise NeuronvizError(f"layer {layer!r} has {n} channels (0..{n - 1}); got channel {channel}")
        return str(layer), int(channel)

    def show_selected(self) -> None:
        """Bring every panel to the selected neuron."""
        neuron, outcome = self.selected, self.outcome
        self.examples.show(neuron)  # the data-set examples (and the explained image back in the overlay)
        self.knockouts.select(neuron)
        self.scatter.set_selected(neuron)
        self.lists.set_selected(neuron)
        if neuron is None or outcome is None:
            self.selected_label.value = "no neuron selected" if neuron is None else f"{neuron[0]} · channel {neuron[1]}"
            self.selected_info.value = ""
            self.overlay.show(None)
            self.detail.show(None)
            return
        layer, channel = neuron
        self.selected_label.value = f"{layer} · channel {channel}"
        scores, m = outcome.result.scores, outcome.result.maps[layer]
        amap = m[channel] if m.shape[1] * m.shape[2] > 1 else None
        note = "box: the map cell of the strongest activation" if amap is not None else "this layer has no spatial map"
        self.overlay.show(amap, f"<span style='font-size:11px'>{note}</span>")
        self.selected_info.value = _neuron_info(scores, layer, channel)
        self.detail.show(neuron, float(self.overlay.opacity.value))

    def _opacity_changed(self, _change: dict) -> None:
        with self.lock:
            self._view_version += 1
            if self.scores is not None and self.selected is not None:
                self.detail.show(self.selected, float(self.overlay.opacity.value))

    # ------------------------------------------------------------------ figures and files

    def snapshot(self, **options: Any) -> ExplorerView:
        """The current view as plain data for :func:`neuronviz.render.explorer.render_explorer`."""
        assert self.outcome is not None  # the base asks only once a run has finished
        r = self.outcome.result
        return ExplorerView(
            scores=r.scores, maps=r.maps, image=self.image, selected=self.selected, k=self.top_k,
            opacity=float(self.overlay.opacity.value), samples=np.stack(r.samples) if r.samples else None,
            sample_indices=list(r.sample_indices), sample_maps=r.sample_maps, n_classes=self.classes.n_classes,
            curves=self.knockouts.current_curves(), knockout=self.knockouts.effect,
        )

    def draw(self, record: ExplorerView, *, dpi: int, path: Path | None = None) -> Any:
        """The explorer's figure: overlay, scatter, selections, detail and copies, from data."""
        return render_explorer(record, path=path, dpi=dpi)

    def page(self, record: ExplorerView) -> str:
        """The explorer as one interactive HTML page (:func:`neuronviz.render.html.explorer_page`)."""
        return explorer_page(record, settings=self.page_settings(), model_name=self.model_name)

    def static_png(self) -> bytes | None:
        """The image before the first run, the whole view after it."""
        return encode_png(self.overlay.render()) if self.outcome is None else super().static_png()

    def export_scores(self, path: str | Path) -> Path:
        """Save one row per scored channel to CSV or JSON (by the suffix); see :func:`save_scores`.

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
        if path.suffix.lower() not in (".csv", ".json"):
            raise NeuronvizError(f"cannot save scores as {path.name!r}: the file name must end in .csv or .json")
        with self.lock:
            outcome, k = self.outcome, self.top_k
        if outcome is None:
            raise NeuronvizError("no scores yet: the first run has not finished (call w.wait() first)")
        settings = {n: list(v) if isinstance(v, tuple) else v for n, v in dataclasses.asdict(outcome.settings).items()}
        return save_scores(path, outcome.result.scores, k, settings)

    def _export_scores_clicked(self) -> None:
        row = self.exporter
        try:
            name = Path(row.path.value.strip() or "scores")
            path = self.export_scores(name if name.suffix.lower() in (".csv", ".json") else name.with_suffix(".csv"))
            row.message.value = f"saved <code>{html.escape(str(path))}</code>"
        except Exception as err:  # noqa: BLE001 - shown in the widget, not lost in a callback log
            row.message.value = ""
            self.report_error(err)


# ---------------------------------------------------------------------------------------------
# module helpers


def _neuron_info(scores: NeuronScores, layer: str, channel: int) -> str:
    """HTML: the neuron's two scores with their ranks, and its mean activation."""
    parts = []
    for metric in ("correlation", "precision"):
        values = scores.metric(metric)[layer]
        rank = scores.top(metric, values.numel())[layer]
        where = f" (#{rank.index(channel) + 1} of {len(rank)})" if channel in rank else ""
        parts.append(f"{metric} <b>{format_score(metric, float(values[channel]))}</b>{where}")
    excluded = getattr(scores, "excluded", {}).get(layer)
    if excluded is not None and bool(excluded.reshape(-1)[channel]):
        parts[-1] += " · left out of the precision selection"
    parts.append(f"mean activation {float(scores.mean_activation[layer][channel]):.3g}")
    return "<div style='font-size:12px'>" + "<br>".join(parts) + "</div>"


class _Partials:
    """What a live run publishes of its partial scores: the first at once, then at most one per :data:`PARTIAL_EVERY_S`.

    Each picture costs the browser a redraw of every point, taken from the run's processor, so
    they are spaced out, and none comes in the last half of the ``n`` copies (the whole result
    follows soon). On a CPU the scoring fills every core, and the browser draws a picture only once
    it gets one: while ``pause()`` (live, on a CPU) the run leaves it :data:`FIRST_PARTIAL_PAUSE_S`
    after the first.
    """

    def __init__(self, job: Any, n: int, pause: Any) -> None:
        self.job, self.n, self.pause = job, n, pause
        self.last: float | None = None  # when the last partial picture was published

    def __call__(self, partial: NeuronScores) -> None:
        publish = getattr(self.job, "publish", None)
        now = time.monotonic()
        if publish is None or self.n - partial.n_samples < self.n / 2:
            return
        if self.last is not None and now - self.last < PARTIAL_EVERY_S:
            return
        publish(partial)
        first, self.last = self.last is None, time.monotonic()
        if first and self.pause() and not self.job.cancelled:
            time.sleep(FIRST_PARTIAL_PAUSE_S)


def _chw(a: torch.Tensor) -> torch.Tensor:
    """One sample's activation as (C, h, w): (F,) -> (F, 1, 1), (C, L) -> (C, 1, L), depth stacked into rows."""
    return a.reshape(-1, 1, 1) if a.dim() == 1 else a.reshape(a.shape[0], -1, a.shape[-1])


def copy_pictures(copies: torch.Tensor, x: torch.Tensor, picture: np.ndarray | None = None,
                  size: int = _THUMB_SIZE) -> list[np.ndarray]:
    """Perturbed copies as small [0, 1] pictures, coloured like the picture of the clean image.

    Parameters
    ----------
    copies : torch.Tensor
        (n, C, H, W) copies as the model takes them.
    x : torch.Tensor
        (1, C, H, W) the clean image.
    picture : numpy.ndarray, optional
        The (H', W', 3) picture given for ``x``: the user's normalisation is unknown, so each
        channel is mapped affinely so that the clean image's range lands on the picture's.
        None un-normalises as the default model's images (``nv.deprocess``), or draws grey.
    size : int
        Long side of the pictures in pixels.

    Returns
    -------
    list of numpy.ndarray
    """
    copies = copies.detach().float().cpu()
    if picture is not None and copies.shape[1] == 3:
        ref = x[0].detach().float().cpu().flatten(1)
        lo_x, hi_x = ref.min(1).values, ref.max(1).values
        flat = torch.from_numpy(np.asarray(picture, dtype=np.float32).reshape(-1, 3))
        lo_d, hi_d = flat.min(0).values, flat.max(0).values
        scale = (hi_d - lo_d) / torch.where(hi_x > lo_x, hi_x - lo_x, torch.ones_like(hi_x))
        pics = ((copies - lo_x.view(1, 3, 1, 1)) * scale.view(1, 3, 1, 1) + lo_d.view(1, 3, 1, 1)).clamp(0, 1)
        pictures = pics.permute(0, 2, 3, 1).numpy()
    else:
        pictures = display_images(copies)
    return [resize(p, size) for p in pictures]


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
    intervals = interval_rows(scores, k)  # empty without bootstrap replicates
    rows = []
    for layer in scores.layers:
        corr = scores.correlation[layer].reshape(-1).tolist()
        prec = scores.precision[layer].reshape(-1).tolist()
        mean = scores.mean_activation[layer].reshape(-1).tolist()
        tc, tp = set(top_c[layer]), set(top_p[layer])
        for c, (r, p, m) in enumerate(zip(corr, prec, mean)):
            rows.append({"layer": layer, "channel": c, "correlation": r, "precision": p, "mean_activation": m,
                         "top_by_correlation": c in tc, "top_by_precision": c in tp, **intervals.get((layer, c), {})})
    return rows


def save_scores(path: Path, scores: NeuronScores, k: int, settings: dict[str, Any]) -> Path:
    """Write :func:`score_rows` to CSV or JSON (by the suffix).

    Columns: ``layer, channel, correlation, precision, mean_activation, top_by_correlation,
    top_by_precision`` (the last two with top-``k``), and with bootstrap replicates the 90 %
    intervals, rank intervals and ties of :func:`neuronviz.widgets.panels.intervals.interval_rows`.
    CSV writes ``nan`` and ``inf`` as such;
    JSON (an object with the run's settings and a ``neurons`` list of rows) writes NaN as
    ``null`` and infinite precision as the string ``"inf"``, so any JSON reader takes it.

    Parameters
    ----------
    path : pathlib.Path
        Ending in ``.csv`` or ``.json``.
    scores : NeuronScores
        Per-channel scores.
    k : int
        Size of each metric's selection.
    settings : dict
        The run's settings, for the JSON header.

    Returns
    -------
    pathlib.Path
    """
    rows = score_rows(scores, k)
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(_ROW_FIELDS))
            writer.writeheader()
            writer.writerows(rows)
    else:
        doc = {"settings": settings, "target": scores.target, "output": scores.output, "n_samples": scores.n_samples,
               "top_k": k, "neurons": [{key: _json_number(v) for key, v in row.items()} for row in rows]}
        path.write_text(json.dumps(doc, indent=1, allow_nan=False))
    return path


def _json_number(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
    return v


def demo(image: str = "cat", layers: Sequence[str] | None = None, **kwargs: Any) -> NeuronExplorer:
    """A :class:`NeuronExplorer` on the default model (EfficientNet-Lite0) and a bundled photo.

    Parameters
    ----------
    image : str
        A bundled photo (``nv.sample_image_names()``); the cat by default.
    layers : sequence of str, optional
        Layers to score; default the explorer's for this model
        (:data:`neuronviz.core.layer_choice.EFFICIENTNET_LITE0_LAYERS`).
    **kwargs
        Passed to :class:`NeuronExplorer` (``n_samples``, ``seed``, ``autorun`` ...).

    Returns
    -------
    NeuronExplorer
        Displays itself; its first run starts at once (50 copies, a few seconds on a CPU).
    """
    from ..data import preprocess, sample_image
    from ..models import default_model

    kwargs.setdefault("examples", demo_examples())  # views of the bundled photos
    return NeuronExplorer(default_model(), preprocess(sample_image(image)), layers, **kwargs)
