"""InversionView: guided feature inversion of one image, its stage-1 and stage-2 masks over it."""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bqplot
import ipywidgets as W
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.capture import LayerSummary, layer_summary, resolve_layers
from ..core.errors import NeuronvizError
from ..core.model_state import model_device, resolve_device
from ..core.targets import top_predictions
from ..core.validation import check_image
from ..data import MEAN, STD
from ..methods.inversion import (BACKGROUNDS, LOSSES, InversionResult, default_inversion_delta, default_inversion_layers,
                                 guided_feature_inversion)
from ..render.explorer import blend_overlay
from ..render.inversion import render_inversion
from .colab import enable_colab_widgets
from .controls import device_options
from .explorer import DISPLAY_SIZE, _check_device, _check_int, _check_save_path, _display_picture, _resize
from .jobs import Job
from .legacy_panels import (BackgroundView, ClassChoices, ExportRow, OverlayPanel, check_dpi, encode_png, figure_png,
                     hold_model, to_uint8)

__all__ = ["InversionView", "InversionSettings", "MaskOverlay", "inversion_layers"]

_STATIC_DPI = 60
# slider ranges; a larger value given from Python widens its slider
_STEPS_MAX = {"stage1_steps": 100, "stage2_steps": 300}
_WEIGHT_MAX = {"lam": 10.0, "delta": 20.0}
_STAGE1_COLOUR, _STAGE2_COLOUR = "#1f77b4", "#d62728"


def inversion_layers(model: nn.Module, summary: LayerSummary) -> tuple[str, str]:
    """The mask layer and feature layer :class:`InversionView` uses when none are named.

    :func:`neuronviz.default_inversion_layers` for the architectures it knows (VGG, AlexNet,
    ResNet, the default model); otherwise the last convolution with a spatial output serves as
    both (the paper's AlexNet setting).

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    summary : LayerSummary
        Its :func:`neuronviz.layer_summary`.

    Returns
    -------
    tuple of str
        ``(mask_layer, feature_layer)``.

    Raises
    ------
    NeuronvizError
        An unknown architecture without a spatial layer.
    """
    known = default_inversion_layers(model)
    if known is not None:
        return known
    modules = dict(model.named_modules())
    spatial = [i.name for i in summary if len(i.shape) == 3 and i.positions > 1]
    convs = [n for n in spatial if isinstance(modules[n], nn.modules.conv._ConvNd)]
    for candidates in (convs, spatial):
        if candidates:
            return candidates[-1], candidates[-1]
    raise NeuronvizError(
        f"{type(model).__name__} has no layer with a spatial (C, H, W) output for the mask; pass mask_layer= and "
        "feature_layer= (nv.layer_summary(model, x) lists the layers)"
    )


@dataclass(frozen=True)
class InversionSettings:
    """The settings of one inversion run, frozen when it starts."""

    target: int
    lam: float
    delta: float
    stage1_steps: int
    stage2_steps: int
    background: str
    device: str
    mask_layer: str
    feature_layer: str
    lr: float
    gamma: float
    loss: str
    seed: int

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict."""
        return dict(self.__dict__)


class MaskOverlay(OverlayPanel):
    """An image with a saliency mask in [0, 1] blended over it, and an opacity slider.

    Unlike :class:`~neuronviz.widgets.panels.OverlayPanel` the mask is drawn as it is (no
    min-max scaling, so a faint mask looks faint) and without a box.

    DOM classes: ``nv-overlay`` and ``nv-mask`` (the image), ``nv-opacity`` (the slider).
    """

    def __init__(self, image: np.ndarray, opacity: float = 0.6, width: int = 260) -> None:
        super().__init__(image, opacity=opacity, width=width)
        self.picture.add_class("nv-mask")

    def render(self) -> np.ndarray:
        """The current picture as a uint8 (H, W, 3) array."""
        self.box = None
        mask = self.amap
        if mask is None or mask.dim() != 2:
            return to_uint8(self.image)
        heat = np.clip(np.nan_to_num(mask.detach().float().cpu().numpy()), 0.0, 1.0)
        return to_uint8(blend_overlay(self.image, heat, float(self.opacity.value)))


class InversionView(BackgroundView):
    """Guided feature inversion (Du et al. 2018) of one image as an interactive view.

    The mask is a non-negative combination of the channels of a mask layer, found in two
    stages (:func:`neuronviz.guided_feature_inversion`): stage 1 keeps whatever reproduces the
    image's representation at the feature layer (all salient objects), stage 2 keeps the part
    that raises the target class's probability when kept and lowers it when removed. The panels:

    * the image with the stage-1 mask and, beside it, with the stage-2 mask, each with an
      opacity slider;
    * the loss of every step of both stages (stage 1 on the left axis, stage 2 on the right);
    * the settings (target class among the top predictions, ``lam``, ``delta``, the steps of
      each stage, the background that replaces removed pixels, device), Run / Cancel, a
      progress bar (one step per Adam step), a status line and an error area; and Export.

    Computation runs in one background thread: the kernel stays free, a new run cancels the
    running one and stale results are dropped. Moving a slider does not recompute until Run
    is pressed.

    Python interface
    ----------------
    result : InversionResult or None
        The latest finished run.
    target, lam, delta, stage1_steps, stage2_steps, background, device
        The settings of the next run (settable, validated; the widgets follow).
    lr, gamma, loss, seed, mask_layer, feature_layer
        The other arguments of :func:`neuronviz.guided_feature_inversion` (settable, validated).
    settings : dict
        All of the above.
    run(), cancel(), wait(timeout=None)
        As for every view.
    export(path, dpi=150)
        Save :func:`neuronviz.render_inversion` of the result as PNG, SVG or PDF.
    figure(dpi=100)
        The same as a matplotlib figure.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning (N, classes) scores; left exactly as it was (parameters,
        ``requires_grad``, ``.grad``, modes, hooks).
    image : torch.Tensor
        (1, C, H, W) or (C, H, W), normalised as the model expects.
    target : int, optional
        Class to explain; default the predicted class.
    mask_layer, feature_layer : str, optional
        Default :func:`inversion_layers`.
    lam : float
        Weight of the complement's probability in stage 2.
    delta : float, optional
        Weight of ``||w||_1`` in stage 2; default :func:`neuronviz.methods.inversion.default_inversion_delta`
        (the paper's 1; 0.01 for the default model).
    stage1_steps, stage2_steps : int
        Adam steps of each stage (10 and 70 in the paper).
    background : {"blur", "mean", "noise"}
        What replaces removed pixels.
    lr, gamma, loss, seed
        As in :func:`neuronviz.guided_feature_inversion`.
    device : str, optional
        ``"cpu"`` or ``"cuda"``; default the model's device.
    autorun : bool
        Start a run at once.
    image_display : PIL.Image.Image or numpy.ndarray, optional
        The picture to draw on (uint8 or [0, 1] float, (H, W, 3)) for models normalised
        differently from the default model; by default ``image`` is un-normalised with
        ``nv.deprocess`` (3 channels) or shown in grey.

    Raises
    ------
    NeuronvizError
        Bad image, a model whose output is not (N, classes), an unknown layer (closest names
        suggested) or a mask layer without a spatial map, a target, weight, step count,
        background, loss, seed or device out of range.
    """

    title = "Inversion"

    def __init__(
        self,
        model: nn.Module,
        image: torch.Tensor,
        *,
        target: int | None = None,
        mask_layer: str | None = None,
        feature_layer: str | None = None,
        lam: float = 1.0,
        delta: float | None = None,
        stage1_steps: int = 10,
        stage2_steps: int = 70,
        background: str = "blur",
        lr: float = 0.01,
        gamma: float = 10.0,
        loss: str = "paper",
        seed: int = 0,
        device: str | None = None,
        autorun: bool = True,
        image_display: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise NeuronvizError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        x = check_image(image, model).detach().float().cpu().clone()
        lam = _check_weight("lam", lam)
        delta = _check_weight("delta", default_inversion_delta(model) if delta is None else delta)
        gamma = _check_weight("gamma", gamma)
        lr = _check_weight("lr", lr, positive=True)
        steps1 = _check_int("stage1_steps", stage1_steps, 0)
        steps2 = _check_int("stage2_steps", stage2_steps, 0)
        background = _check_choice("background", background, BACKGROUNDS)
        loss = _check_choice("loss", loss, LOSSES)
        seed = _check_int("seed", seed, 0, 2**31 - 1)
        device = _check_device(model, device)

        with hold_model(model):  # another view's run on this model would mix its hooks with ours
            try:
                summary = layer_summary(model, x.to(model_device(model)))
                predictions = top_predictions(model, x, k=10**9)  # every class, most probable first
            except NeuronvizError as err:
                raise NeuronvizError(
                    f"guided feature inversion explains one class of a classifier that returns (N, classes) "
                    f"scores: {err}"
                ) from None
            except RuntimeError as err:
                raise NeuronvizError(f"the model failed on the image {tuple(x.shape)}: {err}") from err
        self._summary = {info.name: info for info in summary}
        self.model, self.x = model, x
        if mask_layer is None or feature_layer is None:
            defaults = inversion_layers(model, summary)
            mask_layer = defaults[0] if mask_layer is None else mask_layer
            feature_layer = defaults[1] if feature_layer is None else feature_layer
        self._mask_layer = self._check_mask_layer(mask_layer)
        self._feature_layer = self._check_feature_layer(feature_layer)
        probabilities = torch.zeros(len(predictions), dtype=torch.float64)
        for c, _name, p in predictions:
            probabilities[c] = p
        self.classes = ClassChoices(probabilities)
        self.n_classes = self.classes.n_classes
        target = self.classes.predicted if target is None else self.classes.check(target)
        self._lr, self._gamma, self._loss, self._seed = lr, gamma, loss, seed

        super().__init__(worker_name="neuronviz-inversion")
        enable_colab_widgets()
        self.add_class("nv-inversion")
        self._result: InversionResult | None = None
        self._run_settings_used: InversionSettings | None = None
        self._seconds = 0.0

        self.picture = _display_picture(x, image_display)  # at the input's size, as the masks are
        self.image = _resize(self.picture, DISPLAY_SIZE)
        self.stage1 = MaskOverlay(self.image)
        self.stage2 = MaskOverlay(self.image)
        self.stage1.picture.add_class("nv-mask-stage1")
        self.stage2.picture.add_class("nv-mask-stage2")

        style = {"description_width": "95px"}
        wide = W.Layout(width="340px")
        self.target_picker = W.Dropdown(options=self.classes.options([target]), value=target, description="target",
                                        style=style, layout=wide)
        self.lam_slider = W.FloatSlider(value=lam, min=0.0, max=max(_WEIGHT_MAX["lam"], lam), step=0.1,
                                        description="lam", continuous_update=False, style=style, layout=wide,
                                        tooltip="weight of the class probability with the mask removed (stage 2)")
        # steps of 0.01: the default model's delta is 0.01 (see default_inversion_delta)
        self.delta_slider = W.FloatSlider(value=delta, min=0.0, max=max(_WEIGHT_MAX["delta"], delta), step=0.01,
                                          readout_format=".2f",
                                          description="delta", continuous_update=False, style=style, layout=wide,
                                          tooltip="weight of the mask's size, ||w||_1 (stage 2)")
        self.stage1_slider = W.IntSlider(value=steps1, min=0, max=max(_STEPS_MAX["stage1_steps"], steps1),
                                         description="stage-1 steps", continuous_update=False, style=style, layout=wide)
        self.stage2_slider = W.IntSlider(value=steps2, min=0, max=max(_STEPS_MAX["stage2_steps"], steps2),
                                         description="stage-2 steps", continuous_update=False, style=style, layout=wide)
        self.background_picker = W.Dropdown(options=list(BACKGROUNDS), value=background, description="background",
                                            style=style, layout=W.Layout(width="240px"),
                                            tooltip="what replaces the removed pixels")
        opts = device_options()
        if device not in opts:
            opts.append(device)
        self.device_picker = W.Dropdown(options=opts, value=device, description="device", style=style,
                                        layout=W.Layout(width="240px"))
        for widget, css in ((self.target_picker, "nv-target"), (self.lam_slider, "nv-lam"),
                            (self.delta_slider, "nv-delta"), (self.stage1_slider, "nv-stage1"),
                            (self.stage2_slider, "nv-stage2"), (self.background_picker, "nv-background"),
                            (self.device_picker, "nv-device")):
            widget.add_class(css)

        self.header = W.HTML("")
        self.info = W.HTML("")
        self.info.add_class("nv-inversion-info")
        self._build_losses()
        self.exporter = ExportRow(self.export, self.report_error, filename="inversion.png")
        for widget in (self.target_picker, self.lam_slider, self.delta_slider, self.stage1_slider,
                       self.stage2_slider, self.background_picker, self.device_picker):
            widget.observe(self._settings_changed, names="value")
        self.stage1.opacity.observe(self._opacity_changed, names="value")
        self.stage2.opacity.observe(self._opacity_changed, names="value")
        self._show_result()

        controls = W.HBox([W.VBox([self.target_picker, self.lam_slider, self.delta_slider]),
                           W.VBox([self.stage1_slider, self.stage2_slider]),
                           W.VBox([self.background_picker, self.device_picker])],
                          layout=W.Layout(flex_flow="row wrap"))
        masks = W.HBox([
            W.VBox([W.HTML("<b>stage 1</b>: all salient objects"), self.stage1.widget]),
            W.VBox([W.HTML("<b>stage 2</b>: the target class"), self.stage2.widget]),
            W.VBox([self.losses, self.info]),
        ], layout=W.Layout(flex_flow="row wrap"))
        self.children = [self.header, controls, self.run_bar.widget, masks, self.exporter.widget]
        if autorun:
            self.run()

    # ------------------------------------------------------------------ state

    @property
    def result(self) -> InversionResult | None:
        """The latest finished run (None before the first finishes)."""
        return self._result

    @property
    def target(self) -> int:
        """The class the next run explains."""
        return int(self.target_picker.value)

    @target.setter
    def target(self, value: int) -> None:
        self.classes.pick(self.target_picker, value)

    @property
    def lam(self) -> float:
        """Weight of the complement's probability in stage 2."""
        return float(self.lam_slider.value)

    @lam.setter
    def lam(self, value: float) -> None:
        _set_slider(self.lam_slider, _check_weight("lam", value))

    @property
    def delta(self) -> float:
        """Weight of ``||w||_1`` in stage 2."""
        return float(self.delta_slider.value)

    @delta.setter
    def delta(self, value: float) -> None:
        _set_slider(self.delta_slider, _check_weight("delta", value))

    @property
    def stage1_steps(self) -> int:
        """Adam steps of stage 1."""
        return int(self.stage1_slider.value)

    @stage1_steps.setter
    def stage1_steps(self, value: int) -> None:
        _set_slider(self.stage1_slider, _check_int("stage1_steps", value, 0))

    @property
    def stage2_steps(self) -> int:
        """Adam steps of stage 2."""
        return int(self.stage2_slider.value)

    @stage2_steps.setter
    def stage2_steps(self, value: int) -> None:
        _set_slider(self.stage2_slider, _check_int("stage2_steps", value, 0))

    @property
    def background(self) -> str:
        """What replaces removed pixels: ``"blur"``, ``"mean"`` or ``"noise"``."""
        return str(self.background_picker.value)

    @background.setter
    def background(self, value: str) -> None:
        self.background_picker.value = _check_choice("background", value, BACKGROUNDS)

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
    def lr(self) -> float:
        """Adam's learning rate (stage 2 halves it every 10 steps)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _check_weight("lr", value, positive=True)

    @property
    def gamma(self) -> float:
        """Weight of ``||w||_1`` in stage 1."""
        return self._gamma

    @gamma.setter
    def gamma(self, value: float) -> None:
        self._gamma = _check_weight("gamma", value)

    @property
    def loss(self) -> str:
        """The stage-1 loss, ``"paper"`` or ``"relative"``."""
        return self._loss

    @loss.setter
    def loss(self, value: str) -> None:
        self._loss = _check_choice("loss", value, LOSSES)

    @property
    def seed(self) -> int:
        """Seed of the ``"noise"`` background."""
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        self._seed = _check_int("seed", value, 0, 2**31 - 1)

    @property
    def mask_layer(self) -> str:
        """The layer whose channels make up the mask."""
        return self._mask_layer

    @mask_layer.setter
    def mask_layer(self, value: str) -> None:
        self._mask_layer = self._check_mask_layer(value)

    @property
    def feature_layer(self) -> str:
        """The layer whose representation stage 1 inverts."""
        return self._feature_layer

    @feature_layer.setter
    def feature_layer(self, value: str) -> None:
        self._feature_layer = self._check_feature_layer(value)

    @property
    def settings(self) -> dict[str, Any]:
        """The settings of the next run."""
        return self._run_settings().as_dict()

    # ------------------------------------------------------------------ running

    def run(self) -> Job:
        """Start a run with the current settings in the background (cancelling a running one).

        Returns
        -------
        Job
            The run; :meth:`wait` blocks until it ended.
        """
        s = self._run_settings()
        return self._submit(lambda job: self._compute(job, s), text=f"running: 0/{s.stage1_steps + s.stage2_steps}")

    def _run_settings(self) -> InversionSettings:
        return InversionSettings(
            target=self.target, lam=self.lam, delta=self.delta, stage1_steps=self.stage1_steps,
            stage2_steps=self.stage2_steps, background=self.background, device=self.device,
            mask_layer=self._mask_layer, feature_layer=self._feature_layer, lr=self._lr, gamma=self._gamma,
            loss=self._loss, seed=self._seed,
        )

    def _compute(self, job: Job, s: InversionSettings) -> tuple[InversionSettings, InversionResult, float]:
        """The run, in the worker thread."""
        start = time.perf_counter()
        dev = resolve_device(self.model, s.device)
        with hold_model(self.model, job, on_wait=self._waiting):
            result = guided_feature_inversion(
                self.model, self.x, target=s.target, mask_layer=s.mask_layer, feature_layer=s.feature_layer,
                stage1_steps=s.stage1_steps, stage2_steps=s.stage2_steps, lr=s.lr, gamma=s.gamma, lam=s.lam,
                delta=s.delta, background=s.background, loss=s.loss, seed=s.seed, device=dev, progress=job.progress,
            )
        return s, result, time.perf_counter() - start

    def _run_clicked(self) -> None:
        try:
            self.run()
        except Exception as err:  # noqa: BLE001 - shown in the widget, not lost in a callback log
            self.report_error(err)

    def _apply(self, outcome: tuple[InversionSettings, InversionResult, float]) -> None:
        self._run_settings_used, self._result, self._seconds = outcome
        self._show_result()

    def _done_text(self) -> str:
        s = self._run_settings_used
        return "done" if s is None else f"done · {s.stage1_steps}+{s.stage2_steps} steps in {self._seconds:.1f} s"

    def _settings_changed(self, _change: dict) -> None:
        if self.status == "done" and self._run_settings_used is not None \
                and self._run_settings() != self._run_settings_used:
            self.run_bar.status.value = f"{self._done_text()} · settings changed: press Run"

    def _opacity_changed(self, _change: dict) -> None:
        with self.lock:
            self._view_version += 1

    # ------------------------------------------------------------------ drawing

    def _build_losses(self) -> None:
        self.loss_x = bqplot.LinearScale()
        self.loss_y1, self.loss_y2 = bqplot.LinearScale(), bqplot.LinearScale()
        self.stage1_line = bqplot.Lines(x=[], y=[], scales={"x": self.loss_x, "y": self.loss_y1},
                                        colors=[_STAGE1_COLOUR], stroke_width=2, labels=["stage 1"],
                                        marker="circle", marker_size=12)
        self.stage2_line = bqplot.Lines(x=[], y=[], scales={"x": self.loss_x, "y": self.loss_y2},
                                        colors=[_STAGE2_COLOUR], stroke_width=2, labels=["stage 2"],
                                        marker="circle", marker_size=12)
        axes = [
            bqplot.Axis(scale=self.loss_x, label="step", tick_format="d"),
            # SI prefixes keep the ticks short: the stage-1 squared error often runs into the thousands
            bqplot.Axis(scale=self.loss_y1, side="left", label="stage-1 loss", tick_format=".3s",
                        color=_STAGE1_COLOUR, label_offset="48px"),
            bqplot.Axis(scale=self.loss_y2, side="right", label="stage-2 loss", tick_format=".3s",
                        color=_STAGE2_COLOUR, label_offset="48px"),
        ]
        self.losses = bqplot.Figure(marks=[self.stage1_line, self.stage2_line], axes=axes, title="loss per step",
                                    fig_margin={"top": 40, "bottom": 45, "left": 65, "right": 65},
                                    layout=W.Layout(width="420px", height="260px"), animation_duration=0)
        self.losses.add_class("nv-losses")

    def _show_result(self) -> None:
        """Bring the overlays, the loss lines, the header and the info to the result (caller holds the lock)."""
        self._view_version += 1
        result, s = self._result, self._run_settings_used
        self._update_header()
        if result is None:
            self.stage1.show(None, "<span style='font-size:11px'>no run yet</span>")
            self.stage2.show(None, "")
            self.info.value = ""
            return
        size = self.image.shape[:2]
        name = html.escape(self.classes.name(result.target[0]))
        for panel, mask, caption in (
            (self.stage1, result.inversion_mask[0], f"after {s.stage1_steps} steps · mean {float(result.inversion_mask[0].mean()):.2f}"),
            (self.stage2, result.mask[0], f"{name} · after {s.stage2_steps} more steps · mean {float(result.mask[0].mean()):.2f}"),
        ):
            panel.show(_resize_mask(mask, size), f"<span style='font-size:11px'>{caption}</span>")
        l1 = result.losses["stage1"][0].numpy()
        l2 = result.losses["stage2"][0].numpy()
        with self.stage1_line.hold_sync():
            self.stage1_line.x, self.stage1_line.y = np.arange(1, len(l1) + 1), l1
        with self.stage2_line.hold_sync():
            self.stage2_line.x, self.stage2_line.y = np.arange(len(l1) + 1, len(l1) + len(l2) + 1), l2
        kept = int((result.weights[0] > 0).sum())
        kept1 = int((result.inversion_weights[0] > 0).sum())
        channels = result.weights.shape[1]
        self.info.value = (
            f"<div style='font-size:12px'>explaining <b>{name}</b>, p = {float(result.probability[0]):.3f} on the image"
            f"<br>mask layer <code>{html.escape(result.mask_layer)}</code> ({channels} channels), feature layer "
            f"<code>{html.escape(result.feature_layer)}</code>"
            f"<br>channels in the mask: {kept1} after stage 1, {kept} after stage 2"
            f"<br>background {html.escape(result.background)}, lam {s.lam:g}, delta {s.delta:g}, "
            f"{html.escape(result.loss)} loss</div>"
        )

    def _update_header(self) -> None:
        predicted = self.classes.predicted
        self.header.value = (
            f"<div style='font-size:14px'><b>Guided feature inversion</b> · {html.escape(type(self.model).__name__)}"
            f"</div><div style='font-size:11px;color:#555'>predicted: {html.escape(self.classes.name(predicted))}, "
            f"p = {self.classes.probabilities[predicted]:.2f} · stage 1 keeps what reproduces the image's features, "
            "stage 2 the part that the target class needs (Du et al. 2018)</div>"
        )

    # ------------------------------------------------------------------ export

    def _render_input(self) -> torch.Tensor:
        """The drawn picture as a default-normalised tensor, so that render_inversion shows it as drawn here."""
        pic = torch.from_numpy(np.ascontiguousarray(self.picture, dtype=np.float32)).permute(2, 0, 1)[None]
        mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
        return (pic - mean) / std

    def _categories(self) -> list[str]:
        return self.classes.names or [f"class {i}" for i in range(self.n_classes)]

    def figure(self, dpi: int = 100):
        """The result drawn with matplotlib (:func:`neuronviz.render_inversion`).

        Parameters
        ----------
        dpi : int
            Resolution.

        Returns
        -------
        matplotlib.figure.Figure

        Raises
        ------
        NeuronvizError
            No run has finished yet.
        """
        dpi = check_dpi(dpi)
        return render_inversion(self._finished_result(), self._render_input(), categories=self._categories(), dpi=dpi)

    def export(self, path: str | Path, dpi: int = 150) -> Path:
        """Save the image with both masks as a print-quality PNG, SVG or PDF (by the suffix).

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
        render_inversion(self._finished_result(), self._render_input(), categories=self._categories(), path=path,
                         dpi=dpi)
        return path

    def _finished_result(self) -> InversionResult:
        with self.lock:
            result = self._result
        if result is None:
            raise NeuronvizError("nothing to export yet: the first run has not finished (call v.wait() first)")
        return result

    def _static_png(self) -> bytes | None:
        with self.lock:
            result = self._result
            picture = self.stage2.render()
        if result is None:
            return encode_png(picture)
        fig = render_inversion(result, self._render_input(), categories=self._categories(), dpi=_STATIC_DPI)
        return figure_png(fig, _STATIC_DPI)

    # ------------------------------------------------------------------ checks

    def _check_mask_layer(self, name: object) -> str:
        layer = self._check_layer(name, "mask_layer")
        if len(self._summary[layer].shape) != 3:
            raise NeuronvizError(
                f"mask_layer {layer!r} gives an output of shape {self._summary[layer].shape} per image; the mask "
                "needs a spatial map (C, h, w): choose a convolutional layer"
            )
        return layer

    def _check_feature_layer(self, name: object) -> str:
        return self._check_layer(name, "feature_layer")

    def _check_layer(self, name: object, what: str) -> str:
        if not isinstance(name, str):
            raise NeuronvizError(f"{what} must be one layer name, got {name!r}")
        resolve_layers(self.model, [name])  # unknown names: closest ones suggested
        if name not in self._summary:
            raise NeuronvizError(
                f"{what} {name!r} cannot be used: it must return one tensor and run once per forward pass; "
                "nv.layer_summary(model, x) lists the layers that can"
            )
        return name

    def __repr__(self) -> str:
        return f"InversionView(status={self.status!r}, target={self.target}, steps={self.stage1_steps}+{self.stage2_steps})"


def _resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (H, W) mask resized bilinearly to ``size``, values kept (no rescaling)."""
    m = mask.detach().float().cpu()
    if tuple(m.shape) == tuple(size):
        return m
    return F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)


def _set_slider(slider: Any, value: float) -> None:
    """Set a slider, widening its range when ``value`` lies above it."""
    if value > slider.max:
        slider.max = value
    slider.value = value


def _check_weight(name: str, value: object, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or (float(value) <= 0 if positive else float(value) < 0):
        raise NeuronvizError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise NeuronvizError(f"{name} must be one of {choices}, got {value!r}")
    return value
