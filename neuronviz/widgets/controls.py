"""Old home of the settings widgets; what other modules still import from here.

The settings of a view are now declared as data (:mod:`neuronviz.widgets.settings`) and the
perturbation strengths live in :mod:`neuronviz.widgets.perturbation`. This module goes once
nothing imports it.
"""

from __future__ import annotations

from .perturbation import STRENGTHS, Strength, perturbation_for
from .settings import device_options

__all__ = ["STRENGTHS", "Strength", "device_options", "perturbation_for"]
