"""The settings of a neuron-scoring run as widgets: perturbation, samples, seed, top-k, layers, target, device.

Sliders update on release only (``continuous_update=False``): nothing is recomputed until the
Run button is pressed, so dragging a slider never starts a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import ipywidgets as W
import torch

from ..core.errors import NeuronvizError
from ..core.perturb import KINDS, Perturbation, make

__all__ = ["Strength", "STRENGTHS", "perturbation_for", "SettingsPanel", "RunSettings"]


@dataclass(frozen=True)
class Strength:
    """The main setting of one perturbation family and the range the slider offers."""

    param: str
    default: float
    min: float
    max: float
    step: float
    integer: bool = False
    label: str = ""


#: Per perturbation kind (``nv.perturb.KINDS``): which parameter "strength" sets, and its range.
STRENGTHS: dict[str, Strength] = {
    "multiplicative": Strength("sigma_step", 0.1, 0.0, 0.5, 0.01, label="noise growth per copy (sigma_step)"),
    "additive": Strength("sigma", 0.5, 0.0, 3.0, 0.05, label="noise std (sigma)"),
    "occlusion": Strength("patch_size", 48, 4, 224, 4, integer=True, label="patch side in pixels (patch_size)"),
    "blur": Strength("sigma_max", 4.0, 0.5, 16.0, 0.5, label="largest blur in pixels (sigma_max)"),
}


def check_kind(kind: object) -> str:
    """``kind`` if it names a perturbation family, else a :class:`NeuronvizError` listing them."""
    if not isinstance(kind, str) or kind not in KINDS or kind not in STRENGTHS:
        raise NeuronvizError(f"perturbation must be one of {sorted(STRENGTHS)}, got {kind!r}")
    return kind


def check_strength(kind: str, strength: object) -> float:
    """``strength`` as a number inside the slider's range for ``kind``.

    Raises
    ------
    NeuronvizError
        Not a number, or outside the range.
    """
    spec = STRENGTHS[check_kind(kind)]
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not spec.min <= strength <= spec.max:
        raise NeuronvizError(
            f"strength of the {kind!r} perturbation ({spec.label}) must be a number in "
            f"[{spec.min:g}, {spec.max:g}], got {strength!r}"
        )
    return float(round(strength)) if spec.integer else float(strength)


def perturbation_for(kind: str, strength: float) -> Perturbation:
    """The :mod:`neuronviz.perturb` object of ``kind`` with its main setting at ``strength``.

    Parameters
    ----------
    kind : str
        One of :data:`STRENGTHS` (the names of ``nv.perturb.KINDS``).
    strength : float
        Value of that family's main parameter (see :data:`STRENGTHS`).

    Returns
    -------
    Perturbation

    Raises
    ------
    NeuronvizError
        Unknown kind or a strength out of range.
    """
    value = check_strength(kind, strength)
    spec = STRENGTHS[kind]
    return make(kind, **{spec.param: int(value) if spec.integer else value})


@dataclass(frozen=True)
class RunSettings:
    """The settings of one run, frozen when it starts."""

    layers: tuple[str, ...]
    kind: str
    strength: float
    n_samples: int
    seed: int
    target: int
    device: str

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict."""
        return {
            "layers": list(self.layers), "perturbation": self.kind, "strength": self.strength,
            "n_samples": self.n_samples, "seed": self.seed, "target": self.target, "device": self.device,
        }


_CLASSES = {
    "kind": "nv-kind", "strength": "nv-strength", "n_samples": "nv-samples", "seed": "nv-seed", "top_k": "nv-topk",
    "layers": "nv-layers", "target": "nv-target", "device": "nv-device",
}


def device_options() -> list[str]:
    """``["cpu"]``, plus ``"cuda"`` when CUDA is available."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class SettingsPanel:
    """The widgets of a run's settings.

    DOM classes: ``nv-kind``, ``nv-strength``, ``nv-samples``, ``nv-seed``, ``nv-topk``,
    ``nv-layers``, ``nv-target``, ``nv-device``.

    Parameters
    ----------
    layer_options : sequence of (str, str)
        ``(label, layer name)`` pairs for the layer picker, e.g. labels with output shapes.
    layers : sequence of str
        The layers picked at first.
    target_options : sequence of (str, int)
        ``(label, class index)`` pairs.
    target : int
        The class picked at first.
    kind, strength, n_samples, seed, top_k, device
        The other initial values (already validated).
    """

    def __init__(
        self,
        *,
        layer_options: Sequence[tuple[str, str]],
        layers: Sequence[str],
        target_options: Sequence[tuple[str, int]],
        target: int,
        kind: str,
        strength: float,
        n_samples: int,
        seed: int,
        top_k: int,
        device: str,
    ) -> None:
        style = {"description_width": "90px"}
        wide, narrow = W.Layout(width="330px"), W.Layout(width="210px")
        spec = STRENGTHS[kind]
        self.kind = W.Dropdown(options=list(STRENGTHS), value=kind, description="perturbation", style=style,
                               layout=narrow)
        self.strength = W.FloatSlider(value=strength, min=spec.min, max=spec.max, step=spec.step, description="strength",
                                      continuous_update=False, style=style, layout=wide, tooltip=spec.label)
        self.n_samples = W.IntSlider(value=n_samples, min=3, max=max(512, n_samples), step=1, description="samples",
                                     continuous_update=False, style=style, layout=wide)
        self.seed = W.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed", continuous_update=False,
                                     style=style, layout=narrow)
        self.top_k = W.IntSlider(value=top_k, min=1, max=max(20, top_k), step=1, description="top-k",
                                 continuous_update=False, style=style, layout=wide)
        self.layers = W.SelectMultiple(options=list(layer_options), value=tuple(layers), rows=6, description="layers",
                                       style=style, layout=W.Layout(width="360px"))
        self.target = W.Dropdown(options=list(target_options), value=target, description="target", style=style,
                                 layout=W.Layout(width="330px"))
        opts = device_options()
        if device not in opts:
            opts.append(device)
        self.device = W.Dropdown(options=opts, value=device, description="device", style=style, layout=narrow)
        for name, css in _CLASSES.items():
            getattr(self, name).add_class(css)
        self.kind.observe(self._kind_changed, names="value")
        self.widget = W.HBox(
            [
                W.VBox([self.kind, self.strength, self.n_samples, self.seed]),
                W.VBox([self.target, self.top_k, self.device]),
                self.layers,
            ],
            layout=W.Layout(flex_flow="row wrap"),
        )

    def _kind_changed(self, change: dict) -> None:
        spec = STRENGTHS[change["new"]]
        s = self.strength
        with s.hold_trait_notifications():
            # widen first so that the new default is never clamped by the old range
            s.max = max(s.max, spec.max)
            s.min = min(s.min, spec.min)
            s.value = spec.default
            s.min, s.max, s.step = spec.min, spec.max, spec.step
        s.tooltip = spec.label

    def watch(self, fn: Any, names: Sequence[str] = ("kind", "strength", "n_samples", "seed", "layers", "target", "device")) -> None:
        """Call ``fn(change)`` when any of the named settings changes."""
        for name in names:
            getattr(self, name).observe(fn, names="value")
