"""Settings declared as data: a frozen dataclass whose fields carry their rule and their control.

A view lists its settings once, as fields of a frozen dataclass made with :func:`setting`::

    @dataclass(frozen=True)
    class Settings:
        n_samples: int = setting(50, Int(3), control="slider", span=(3, 512), label="samples", css="nv-samples")
        seed: int = setting(0, Int(0, 2**31 - 1), control="box", css="nv-seed")
        top_k: int = setting(5, Int(1), control="slider", span=(1, 20), rerun=False, css="nv-topk")

and :class:`~neuronviz.widgets.view.View` builds from that the controls, a validated Python
property per setting (``w.n_samples = 64`` checks with the same rule and moves the slider), the
settings object handed to the computation and the "settings changed" notice.

A rule is a callable ``rule(value, name, view) -> value`` that returns the normalised value or
raises :class:`~neuronviz.core.errors.NeuronvizError` saying what would be right; rules that
need the model (layers, classes, devices) read it from the view. A field whose default is
``None`` gets its value from the view's :meth:`~neuronviz.widgets.view.View.default_for`.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import ipywidgets as W
import torch

from ..core.capture import resolve_layers
from ..core.errors import NeuronvizError
from ..core.model_state import model_device, resolve_device

if TYPE_CHECKING:
    from .view import View

__all__ = [
    "Setting", "setting", "fields_of", "Int", "Float", "OneOf", "Layers", "Layer", "ClassIndex", "Device",
    "device_options", "CONTROLS",
]

Rule = Callable[[Any, str, "View"], Any]

#: The kinds of control a setting can declare (None: a property without a control).
CONTROLS = ("slider", "box", "dropdown", "layers", "layer", "classes", "device")


@dataclass(frozen=True)
class Setting:
    """What one field of a settings dataclass declares besides its default."""

    rule: Rule
    control: str | None = None
    label: str = ""
    span: tuple[float, float] | None = None
    step: float | None = None
    css: str = ""
    rerun: bool = True
    group: int = 0
    tooltip: str = ""
    readout: str | None = None


def setting(
    default: Any,
    rule: Rule,
    *,
    control: str | None = None,
    label: str = "",
    span: tuple[float, float] | None = None,
    step: float | None = None,
    css: str = "",
    rerun: bool = True,
    group: int = 0,
    tooltip: str = "",
    readout: str | None = None,
) -> Any:
    """A dataclass field that declares a view setting.

    Parameters
    ----------
    default : object
        The initial value; None asks the view (:meth:`View.default_for`), e.g. the model's device.
    rule : callable
        ``rule(value, name, view) -> value``: checks and normalises a value.
    control : str, optional
        One of :data:`CONTROLS`; None gives the setting a property but no control.
    label : str
        The control's description; default the field name.
    span : (float, float), optional
        A slider's range; a value set beyond it widens it. Default the rule's bounds.
    step : float, optional
        A slider's step (default 1 for integers, 0.01 for floats).
    css : str
        DOM class of the control (what browser tests find it by).
    rerun : bool
        Whether a change needs a new run (the "settings changed" notice); False for settings
        that only change what is shown (top-k, opacity), which apply at once.
    group : int
        Column of the settings panel the control goes in.
    tooltip : str
        Shown on hover.
    readout : str, optional
        A float slider's readout format (e.g. ``".2f"``).

    Returns
    -------
    dataclasses.Field
    """
    if control is not None and control not in CONTROLS:
        raise ValueError(f"control must be one of {CONTROLS} or None, got {control!r}")
    meta = Setting(rule, control, label, span, step, css, rerun, group, tooltip, readout)
    return dataclasses.field(default=default, metadata={"neuronviz": meta})


def fields_of(settings_class: type) -> dict[str, tuple[Any, Setting]]:
    """``{name: (default, Setting)}`` of a settings dataclass, in declaration order."""
    out = {}
    for f in dataclasses.fields(settings_class):
        meta = f.metadata.get("neuronviz")
        if meta is None:
            raise TypeError(f"{settings_class.__name__}.{f.name} must be declared with setting(...)")
        out[f.name] = (f.default, meta)
    return out


# ---------------------------------------------------------------------------------------------
# rules


@dataclass(frozen=True)
class Int:
    """An integer (numpy integers too) in ``[lo, hi]``; ``hi`` None is unbounded."""

    lo: int | None = None
    hi: int | None = None

    def __call__(self, value: Any, name: str, view: Any = None) -> int:
        """``value`` checked and normalised, or a :class:`NeuronvizError` naming ``name`` and what is right."""
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not ok or (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise NeuronvizError(f"{name} must be an integer {_range(self.lo, self.hi)}, got {value!r}")
        return int(value)


@dataclass(frozen=True)
class Float:
    """A real number (numpy floats and integers too) in ``[lo, hi]``, or ``> lo`` with ``open_lo``."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False

    def __call__(self, value: Any, name: str, view: Any = None) -> float:
        """``value`` checked and normalised, or a :class:`NeuronvizError` naming ``name`` and what is right."""
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
        if ok and self.lo is not None:
            ok = value > self.lo if self.open_lo else value >= self.lo
        if ok and self.hi is not None:
            ok = value <= self.hi
        if not ok:
            low = "" if self.lo is None else (f"> {self.lo:g}" if self.open_lo else f">= {self.lo:g}")
            high = "" if self.hi is None else f"<= {self.hi:g}"
            bounds = " and ".join(b for b in (low, high) if b)
            raise NeuronvizError(f"{name} must be a number{' ' + bounds if bounds else ''}, got {value!r}")
        return float(value)


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values."""

    choices: tuple[Any, ...]

    def __call__(self, value: Any, name: str, view: Any = None) -> Any:
        """``value`` checked and normalised, or a :class:`NeuronvizError` naming ``name`` and what is right."""
        if value not in self.choices:
            raise NeuronvizError(f"{name} must be one of {list(self.choices)}, got {value!r}")
        return value


@dataclass(frozen=True)
class Layers:
    """Names of layers the view can use (``view.layer_options``), at least one unless ``empty_ok``."""

    empty_ok: bool = False

    def __call__(self, value: Any, name: str, view: "View") -> tuple[str, ...]:
        """``value`` checked and normalised, or a :class:`NeuronvizError` naming ``name`` and what is right."""
        if isinstance(value, str):
            value = [value]
        if not self.empty_ok and (value is None or len(value) == 0):
            raise NeuronvizError(
                f"{name}: no layer is picked; choose at least one (for example {view.layer_names[:2]})"
            )
        names = list(resolve_layers(view.model, value)) if value else []  # unknown names: closest ones suggested
        return tuple(_usable(view, n, name) for n in names)


@dataclass(frozen=True)
class Layer:
    """One layer name the view can use."""

    def __call__(self, value: Any, name: str, view: "View") -> str:
        """``value`` checked and normalised, or a :class:`NeuronvizError` naming ``name`` and what is right."""
        if not isinstance(value, str):
            raise NeuronvizError(f"{name} must be a layer name (a string), got {value!r}")
        resolve_layers(view.model, value)
        return _usable(view, value, name)


def _usable(view: "View", layer: str, name: str) -> str:
    if layer not in view.layer_names:
        raise NeuronvizError(
            f"{name}: layer {layer!r} cannot be used here: it must return one tensor of shape (N, C, ...) and run "
            "once per forward pass; nv.layer_summary(model, x) lists the layers that can"
        )
    return layer


@dataclass(frozen=True)
class ClassIndex:
    """A class index of the view's classifier (``view.classes``)."""

    def __call__(self, value: Any, name: str, view: "View") -> int:
        """``value`` checked and normalised, or a :class:`NeuronvizError` naming ``name`` and what is right."""
        n = view.classes.n_classes
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) < n:
            raise NeuronvizError(
                f"{name} must be a class index in 0..{n - 1} (the model has {n} classes), got {value!r}"
            )
        return int(value)


@dataclass(frozen=True)
class Device:
    """``"cpu"``, ``"cuda"`` (when available) or ``"cuda:i"``."""

    def __call__(self, value: Any, name: str, view: "View") -> str:
        """``value`` checked and normalised, or a :class:`NeuronvizError` naming ``name`` and what is right."""
        if value is None:
            return model_device(view.model).type
        if not isinstance(value, str):
            raise NeuronvizError(f"{name} must be 'cpu' or 'cuda', got {value!r}")
        try:
            return resolve_device(view.model, value).type
        except ValueError as err:
            raise NeuronvizError(str(err)) from None


def _range(lo: int | None, hi: int | None) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f">= {lo}"
    if lo is None:
        return f"<= {hi}"
    return f"in [{lo}, {hi}]"


def device_options() -> list[str]:
    """``["cpu"]``, plus ``"cuda"`` when CUDA is available."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------------------------------------
# controls

_STYLE = {"description_width": "95px"}


def make_control(name: str, meta: Setting, value: Any, view: "View") -> W.Widget:
    """The widget of one declared setting, showing ``value``."""
    label = meta.label or name
    common: dict[str, Any] = {"description": label, "style": _STYLE}
    kind = meta.control
    if kind == "slider":
        lo, hi = meta.span or (getattr(meta.rule, "lo", 0) or 0, getattr(meta.rule, "hi", 1) or 1)
        if isinstance(value, int) and isinstance(meta.rule, Int):
            widget: W.Widget = W.IntSlider(value=value, min=int(lo), max=int(max(hi, value)), step=int(meta.step or 1),
                                           continuous_update=False, layout=W.Layout(width="340px"), **common)
        else:
            extra = {"readout_format": meta.readout} if meta.readout else {}
            widget = W.FloatSlider(value=value, min=lo, max=max(hi, value), step=meta.step or 0.01,
                                   continuous_update=False, layout=W.Layout(width="340px"), **extra, **common)
    elif kind == "box":
        rule = meta.rule
        lo = getattr(rule, "lo", None)
        hi = getattr(rule, "hi", None)
        if isinstance(rule, Int):
            widget = W.BoundedIntText(value=value, min=-(2**31) if lo is None else lo,
                                      max=2**31 - 1 if hi is None else hi, continuous_update=False,
                                      layout=W.Layout(width="210px"), **common)
        else:
            widget = W.FloatText(value=value, continuous_update=False, layout=W.Layout(width="210px"), **common)
    elif kind == "dropdown":
        choices = getattr(meta.rule, "choices", ())
        widget = W.Dropdown(options=list(choices), value=value, layout=W.Layout(width="240px"), **common)
    elif kind == "device":
        opts = device_options()
        widget = W.Dropdown(options=opts + ([value] if value not in opts else []), value=value,
                            layout=W.Layout(width="210px"), **common)
    elif kind == "classes":
        widget = W.Dropdown(options=view.classes.options([value]), value=value, layout=W.Layout(width="340px"),
                            **common)
    elif kind == "layers":
        widget = W.SelectMultiple(options=view.layer_options, value=tuple(value), rows=6,
                                  layout=W.Layout(width="380px"), **common)
    elif kind == "layer":
        widget = W.Dropdown(options=view.layer_options, value=value, layout=W.Layout(width="340px"), **common)
    else:
        raise ValueError(f"unknown control {kind!r}")
    if meta.tooltip:
        widget.tooltip = meta.tooltip
    if meta.css:
        widget.add_class(meta.css)
    return widget


def show_value(widget: W.Widget, meta: Setting, value: Any, view: "View") -> None:
    """Move ``widget`` to ``value`` (already checked), widening a slider or adding an option when needed."""
    if meta.control == "slider":
        if value > widget.max:
            widget.max = value
        if value < widget.min:
            widget.min = value
    elif meta.control == "classes":
        current = [v for _label, v in widget.options]
        if value not in current:
            widget.options = view.classes.options(current + [value], k=0)
    elif meta.control == "device" and value not in widget.options:
        widget.options = list(widget.options) + [value]
    widget.value = tuple(value) if meta.control == "layers" else value


def control_value(widget: W.Widget, meta: Setting) -> Any:
    """A control's value as the setting holds it."""
    return tuple(widget.value) if meta.control == "layers" else widget.value


def settings_panel(controls: dict[str, tuple[W.Widget, Setting]]) -> W.Box:
    """The controls laid out in columns by their declared group."""
    columns: dict[int, list[W.Widget]] = {}
    for widget, meta in controls.values():
        columns.setdefault(meta.group, []).append(widget)
    return W.HBox([W.VBox(columns[g]) for g in sorted(columns)], layout=W.Layout(flex_flow="row wrap"))


def as_settings(settings_class: type, values: dict[str, Any]) -> Any:
    """An instance of the settings dataclass holding ``values``."""
    return settings_class(**values)


def check_all(settings_class: type, values: dict[str, Any], view: "View") -> dict[str, Any]:
    """Every declared value checked by its rule, defaults filled from the view; unknown names refused."""
    fields = fields_of(settings_class)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise NeuronvizError(f"unknown setting(s) {unknown}; the settings of this view are {list(fields)}")
    out = {}
    for name, (default, meta) in fields.items():
        value = values.get(name, default)
        if value is None:
            value = view.default_for(name)
        out[name] = meta.rule(value, name, view)
    return out


def needs_rerun(settings_class: type) -> Sequence[str]:
    """The names of the settings whose change needs a new run."""
    return [name for name, (_d, meta) in fields_of(settings_class).items() if meta.rerun]
