"""The perturbation families a view offers and the one "strength" setting of each.

Each family of :mod:`neuronviz.perturb` has one main parameter (noise growth, noise std, patch
side, largest blur); a view shows it as one "strength" slider whose range follows the family
chosen. :data:`STRENGTHS` says which parameter that is and its range; :func:`check_strength`
is the setting's rule and :func:`perturbation_for` makes the perturbation of a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import NeuronvizError
from ..core.perturb import Perturbation, make

__all__ = ["Strength", "STRENGTHS", "check_strength", "perturbation_for"]


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


def check_strength(value: Any, name: str = "strength", view: Any = None, *, kind: str | None = None) -> float:
    """``value`` as a strength inside the range of the perturbation family (a setting rule).

    Parameters
    ----------
    value : object
        The proposed strength.
    name : str
        The setting's name, for the message.
    view : object, optional
        A view whose ``perturbation`` names the family (when ``kind`` is not given).
    kind : str, optional
        The family; default ``view.perturbation``.

    Returns
    -------
    float
        Rounded for a family whose parameter is an integer.

    Raises
    ------
    NeuronvizError
        Not a number, or outside the family's range.
    """
    kind = kind if kind is not None else view.perturbation
    spec = STRENGTHS[kind]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not spec.min <= value <= spec.max:
        raise NeuronvizError(
            f"{name} of the {kind!r} perturbation ({spec.label}) must be a number in "
            f"[{spec.min:g}, {spec.max:g}], got {value!r}"
        )
    return float(round(value)) if spec.integer else float(value)


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
    if kind not in STRENGTHS:
        raise NeuronvizError(f"perturbation must be one of {sorted(STRENGTHS)}, got {kind!r}")
    value = check_strength(strength, kind=kind)
    spec = STRENGTHS[kind]
    return make(kind, **{spec.param: int(value) if spec.integer else value})
