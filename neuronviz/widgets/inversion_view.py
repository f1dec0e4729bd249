"""InversionView: guided feature inversion of one image, its stage-1 and stage-2 masks over it."""

from __future__ import annotations

import dataclasses
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as W
import torch
from torch import nn

from ..core.capture import LayerSummary
from ..core.errors import NeuronvizError
from ..core.validation import check_image
from ..methods.inversion import (
    BACKGROUNDS,
    LOSSES,
    InversionResult,
    default_inversion_delta,
    default_inversion_layers,
    guided_feature_inversion,
)
from ..methods.inversion_authors import AUTHORS, recipe_defaults
from ..render.html import inversion_page
from ..render.inversion import render_inversion
from .jobs import Job
from .knockouts import CurvesSection, mask_curves
from .panels.losses import LossPlot
from .panels.masks import MaskOverlay, StageMasks
from .pictures import DISPLAY_SIZE, display_picture, encode_png, resize
from .settings import ClassIndex, Device, Float, Int, Layer, OneOf, setting
from .view import Outcome, View

__all__ = ["InversionView", "InversionSettings", "MaskOverlay", "inversion_layers"]


def inversion_layers(model: nn.Module, summary: LayerSummary, x: torch.Tensor | None = None) -> tuple[str, str]:
    """The mask layer and feature layer :class:`InversionView` uses when none are named.

    :func:`neuronviz.default_inversion_layers` (with the probe ``x``: for any CNN, as
    :func:`neuronviz.guided_feature_inversion` chooses them); when it has none, the last
    convolution with a spatial output serves as both (the paper's AlexNet setting), or else the
    last layer with a spatial output.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    summary : LayerSummary
        Its :func:`neuronviz.layer_summary`.
    x : torch.Tensor, optional
        A probe input (the image explained).

    Returns
    -------
    tuple of str
        ``(mask_layer, feature_layer)``.

    Raises
    ------
    NeuronvizError
        An unknown architecture without a spatial layer.
    """
    known = default_inversion_layers(model, x)
    if known is not None:
        return known
    modules = dict(model.named_modules())
    spatial = [i.name for i in summary if len(i.shape) == 3 and i.positions > 1]
    convs = [n for n in spatial if isinstance(modules.get(n), nn.modules.conv._ConvNd)]
    for candidates in (convs, spatial):
        if candidates:
            return candidates[-1], candidates[-1]
    raise NeuronvizError(
        f"{type(model).__name__} has no layer with a spatial (C, H, W) output for the mask; pass mask_layer= and "
        "feature_layer= (nv.layer_summary(model, x) lists the layers)"
    )


@dataclass(frozen=True)
class _Finite(Float):
    """A finite real number in the bounds of :class:`~neuronviz.widgets.settings.Float`."""

    def __call__(self, value: Any, name: str, view: Any = None) -> float:
        out = super().__call__(value, name, view)
        if not math.isfinite(out):
            raise NeuronvizError(f"{name} must be a finite number, got {value!r}")
        return out


#: The recipes of :func:`neuronviz.guided_feature_inversion`.
RECIPES = ("paper", "authors")


def _loss(value: Any, name: str, view: "InversionView") -> str:
    """A stage-1 loss; the authors' recipe has only the relative one."""
    value = OneOf(LOSSES)(value, name, view)
    if view.recipe == "authors" and value != "relative":
        raise NeuronvizError(f"{name} must be 'relative' with recipe='authors' (the authors' loss), got {value!r}")
    return value


def _mask_layer(value: Any, name: str, view: "InversionView") -> str:
    """A layer with a spatial (C, h, w) output, whose channels can make a mask."""
    layer = Layer()(value, name, view)
    shape = next(i.shape for i in view.summary if i.name == layer)
    if len(shape) != 3:
        raise NeuronvizError(
            f"{name} {layer!r} gives an output of shape {tuple(shape)} per image; the mask needs a spatial map "
            "(C, h, w): choose a convolutional layer"
        )
    return layer


@dataclass(frozen=True)
class InversionSettings:
    """The settings of one inversion run (the arguments of :func:`neuronviz.guided_feature_inversion`)."""

    target: int = setting(None, ClassIndex(), control="classes", css="nv-target")
    # before the settings whose defaults it sets: the rules and defaults run in this order
    recipe: str = setting("paper", OneOf(RECIPES), control="dropdown", css="nv-recipe", group=2,
                          tooltip="the method as the paper describes it, or the loop of the authors' code")
    lam: float = setting(1.0, _Finite(0), control="slider", span=(0.0, 10.0), step=0.1, css="nv-lam",
                         tooltip="weight of the class probability with the mask removed (stage 2)")
    # steps of 0.01: the default model's delta is 0.01 (see default_inversion_delta)
    delta: float = setting(None, _Finite(0), control="slider", span=(0.0, 20.0), step=0.01, readout=".2f",
                           css="nv-delta", tooltip="weight of the mask's size, ||w||_1 (stage 2)")
    stage1_steps: int = setting(None, Int(0), control="slider", span=(0, 100), label="stage-1 steps", css="nv-stage1",
                                group=1)
    stage2_steps: int = setting(None, Int(0), control="slider", span=(0, 300), label="stage-2 steps", css="nv-stage2",
                                group=1)
    background: str = setting("blur", OneOf(BACKGROUNDS), control="dropdown", css="nv-background", group=2,
                              tooltip="what replaces the removed pixels")
    device: str = setting(None, Device(), control="device", css="nv-device", group=2)
    mask_layer: str = setting(None, _mask_layer)
    feature_layer: str = setting(None, Layer())
    lr: float = setting(0.01, _Finite(0, open_lo=True))
    gamma: float = setting(None, _Finite(0))
    loss: str = setting(None, _loss)
    seed: int = setting(0, Int(0, 2**31 - 1))

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict."""
        return dataclasses.asdict(self)


#: The controls under the names they had before settings were declared.
_CONTROL_NAMES = {"target_picker": "target", "lam_slider": "lam", "delta_slider": "delta",
                  "stage1_slider": "stage1_steps", "stage2_slider": "stage2_steps",
                  "background_picker": "background", "device_picker": "device", "recipe_picker": "recipe"}
#: The settings whose default the recipe sets; a change of recipe moves those still at the old one's.
_FOLLOW_RECIPE = ("stage1_steps", "stage2_steps", "gamma", "loss", "delta", "mask_layer", "feature_layer")


class InversionView(View):
    """Guided feature inversion (Du et al. 2018) of one image as an interactive view.

    The mask is a non-negative combination of the channels of a mask layer, found in two
    stages (:func:`neuronviz.guided_feature_inversion`): stage 1 keeps whatever reproduces the
    image's representation at the feature layer (all salient objects), stage 2 keeps the part
    that raises the target class's probability when kept and lowers it when removed. The panels:

    * the image with the stage-1 mask and, beside it, with the stage-2 mask, each with an
      opacity slider;
    * the loss of every step of both stages (stage 1 on the left axis, stage 2 on the right);
    * on the button, the stage-2 mask's deletion and insertion curves against random masks
      (:func:`neuronviz.mask_deletion_curve`; then again for every run; in the exported figure
      once computed);
    * the settings (target class among the top predictions, ``lam``, ``delta``, the steps of
      each stage, the recipe, the background that replaces removed pixels, device), Run / Cancel, a
      progress bar (one step per Adam step), a status line and an error area; and Export.

    Computation runs in one background thread: the kernel stays free, a new run cancels the
    running one and stale results are dropped. Moving a slider does not recompute until Run
    is pressed.

    Python interface
    ----------------
    result : InversionResult or None
        The latest finished run.
    target, lam, delta, stage1_steps, stage2_steps, recipe, background, device
        The settings of the next run (settable, validated; the widgets follow). A new
        ``recipe`` moves the settings still at the old recipe's defaults to the new one's
        (:meth:`recipe_defaults`).
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
        Default :func:`inversion_layers` (the authors' recipe: its feature layer for both).
    lam : float
        Weight of the complement's probability in stage 2.
    delta : float, optional
        Weight of ``||w||_1`` in stage 2; default :func:`neuronviz.methods.inversion.default_inversion_delta`
        (the paper's 1; 0.01 for the default model), or the authors' 2 (of ``sum w^2``).
    stage1_steps, stage2_steps : int, optional
        Adam steps of each stage; default the recipe's (10 and 70 in the paper, 11 and 69 in the
        authors' code).
    recipe : {"paper", "authors"}
        The method as the paper describes it, or the loop of the authors' code (see
        :func:`neuronviz.guided_feature_inversion`); it sets the defaults of the steps,
        ``gamma``, ``delta``, ``loss`` and the layers.
    background : {"blur", "mean", "noise"}
        What replaces removed pixels.
    lr, gamma, loss, seed
        As in :func:`neuronviz.guided_feature_inversion` (``gamma`` and ``loss`` default to the
        recipe's).
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

    Settings = InversionSettings
    title = "Inversion"
    css = "nv-inversion"
    export_name = "inversion.png"
    saved_attributes = ("x", "picture", "image", "n_classes", "_layers", "_model_delta")  # kept by save()
    _followed: dict[str, Any]  # the values the recipe set, to tell them from the user's

    def __init__(self, model: nn.Module, image: torch.Tensor, *, autorun: bool = True, image_display: Any = None,
                 **settings: Any) -> None:
        if not isinstance(model, nn.Module):
            raise NeuronvizError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.x = check_image(image, model).detach().float().cpu().clone()
        self.picture = display_picture(self.x, image_display)  # at the input's size, as the masks are
        self.image = resize(self.picture, DISPLAY_SIZE)
        self.probe(model, self.x)
        self.n_classes = self.classes.n_classes
        self._layers = inversion_layers(model, self.summary, self.x)
        self._model_delta = default_inversion_delta(model)  # the paper recipe's delta for this model
        super().__init__(model, autorun=autorun, **settings)

    def default_for(self, name: str) -> Any:
        """The predicted class, the recipe's defaults (:meth:`recipe_defaults`), the model's device."""
        if name == "target":
            return self.classes.predicted
        if name in _FOLLOW_RECIPE:
            return self.recipe_defaults(self.recipe)[name]
        return super().default_for(name)

    def recipe_defaults(self, recipe: str) -> dict[str, Any]:
        """The steps, penalty weights, loss and layers :func:`neuronviz.guided_feature_inversion` takes for ``recipe``.

        The paper's: 10 + 70 steps, ``gamma`` 10, the ``"paper"`` loss, ``delta`` of
        :func:`~neuronviz.methods.inversion.default_inversion_delta`, the layers of
        :func:`inversion_layers`; the authors': 11 + 69 steps, 5 and 2, the relative loss, the
        feature layer as the mask layer too.
        """
        steps1, steps2, gamma, loss = recipe_defaults(recipe, None, None, None, None)
        authors = recipe == "authors"
        delta = AUTHORS["delta"] if authors else self._model_delta
        mask_layer, feature_layer = self._layers
        return {"stage1_steps": steps1, "stage2_steps": steps2, "gamma": gamma, "loss": loss, "delta": delta,
                "mask_layer": feature_layer if authors else mask_layer, "feature_layer": feature_layer}

    def setting_changed(self, name: str, value: Any) -> None:
        """A new recipe moves the settings still at the old recipe's defaults to the new one's."""
        if name != "recipe":
            return
        old, self._followed = self._followed, self.recipe_defaults(value)
        for n, default in self._followed.items():
            if getattr(self, n) == old[n]:
                setattr(self, n, default)

    def build(self) -> list[W.Widget]:
        """The two masks, the loss plot and a summary of the run."""
        for attribute, name in _CONTROL_NAMES.items():
            setattr(self, attribute, self.controls[name])
        self._followed = self.recipe_defaults(self.recipe)
        self.masks = StageMasks(self.image)
        self.stage1, self.stage2 = self.masks.stage1, self.masks.stage2
        self.loss_plot = LossPlot()
        self.losses, self.stage1_line, self.stage2_line = (self.loss_plot.figure, self.loss_plot.stage1_line,
                                                           self.loss_plot.stage2_line)
        self.info = W.HTML("")
        self.info.add_class("nv-inversion-info")
        self.masks.show(None)
        self.faithfulness = CurvesSection(self._prepare_curves, label="Deletion curves", tooltip=(
            "remove (insert) the pixels in the order of the stage-2 mask, against random masks"),
            key=lambda: self.result)
        self.side_work.append(self.faithfulness)  # cancelled by a run, waited for on close
        return [W.HBox([*self.masks.widgets, W.VBox([self.losses, self.info])], layout=W.Layout(flex_flow="row wrap")),
                self.faithfulness.widget]

    @property
    def result(self) -> InversionResult | None:
        """The latest finished run (None before the first finishes)."""
        return None if self.outcome is None else self.outcome.result

    # ------------------------------------------------------------------ running and showing

    def compute(self, settings: InversionSettings, job: Job) -> InversionResult:
        """One call of :func:`neuronviz.guided_feature_inversion` with the settings (worker thread)."""
        return guided_feature_inversion(self.model, self.x, **settings.as_dict(), progress=job.progress)

    def show(self, result: InversionResult) -> None:
        """Both masks, the losses of every step and the run's summary."""
        s = self.outcome.settings if self.outcome is not None else self.current_settings()
        name = self.classes.name(result.target[0])
        self.masks.show(result, name)
        self.loss_plot.show(result.losses["stage1"][0].numpy(), result.losses["stage2"][0].numpy())
        kept2, kept1 = int((result.weights[0] > 0).sum()), int((result.inversion_weights[0] > 0).sum())
        self.info.value = (
            f"<div style='font-size:12px'>explaining <b>{html.escape(name)}</b>, p = "
            f"{float(result.probability[0]):.3f} on the image<br>mask layer <code>{html.escape(result.mask_layer)}"
            f"</code> ({result.weights.shape[1]} channels), feature layer <code>{html.escape(result.feature_layer)}"
            f"</code><br>channels in the mask: {kept1} after stage 1, {kept2} after stage 2<br>background "
            f"{html.escape(result.background)}, lam {s.lam:g}, delta {s.delta:g}, {html.escape(result.loss)} loss</div>"
        )
        self.faithfulness.refresh()  # the mask's deletion and insertion curves, once asked for

    def _prepare_curves(self) -> Any:
        """The result's deletion and insertion curves (:func:`.knockouts.mask_curves`), or None before a run."""
        result = self.result
        if result is None:
            return None
        model, x = self.require_model(), self.x
        return lambda progress: mask_curves(model, x, result, progress=progress)


    def done_text(self, outcome: Outcome) -> str:
        """``done · 10+70 steps in 3.2 s``."""
        s = outcome.settings
        return f"done · {s.stage1_steps}+{s.stage2_steps} steps in {outcome.seconds:.1f} s"

    def header_html(self) -> str:
        """The method's name, the model and its prediction."""
        predicted = self.classes.predicted
        return (
            f"<div style='font-size:14px'><b>Guided feature inversion</b> · {html.escape(self.model_name)}"
            f"</div><div style='font-size:11px;color:#555'>predicted: {html.escape(self.classes.name(predicted))}, "
            f"p = {self.classes.probabilities[predicted]:.2f} · stage 1 keeps what reproduces the image's features, "
            "stage 2 the part that the target class needs (Du et al. 2018)</div>"
        )

    # ------------------------------------------------------------------ figures

    def snapshot(self, **options: Any) -> dict[str, Any]:
        """The result, the picture as drawn here and the class names: what :func:`render_inversion` takes."""
        assert self.outcome is not None  # the base asks for a snapshot only once a run finished
        names = self.classes.names or [f"class {i}" for i in range(self.n_classes)]
        return {"result": self.outcome.result, "pictures": [self.picture], "categories": names,
                "curves": self.faithfulness.curves}  # the mask's deletion and insertion curves, once computed

    def draw(self, record: dict[str, Any], *, dpi: int, path: Path | None = None) -> Any:
        """:func:`neuronviz.render_inversion` of a :meth:`snapshot`."""
        return render_inversion(**record, dpi=dpi, path=path)

    def page(self, record: dict[str, Any]) -> str:
        """Both masks over the image and the losses as one HTML page (:func:`neuronviz.render.html.inversion_page`)."""
        return inversion_page(record["result"], record["pictures"], categories=record["categories"],
                              settings=self.page_settings(), model_name=self.model_name,
                              opacity=float(self.stage2.opacity.value), curves=record["curves"])

    def static_png(self) -> bytes | None:
        """The figure of the result, or the plain picture before the first run."""
        if self.outcome is None:
            return encode_png(self.stage2.render())
        return super().static_png()
