"""Reusable panels of the views, one concept a module.

A panel owns a few widgets, exposes them as ``panel.widget`` (put it in any box), draws the
plain data it is given and reports a user's pick through a callback. Panels never touch a model
and never start work: a view (:class:`neuronviz.widgets.view.View`) computes and feeds them.
"""

from .detail import NeuronDetail
from .export import ExportRow
from .losses import LossPlot
from .masks import MaskOverlay, StageMasks
from .overlay import OverlayPanel
from .runbar import RunBar
from .scatter import NeuronScatter, scatter_positions
from .selections import SelectionLists

__all__ = [
    "ExportRow", "LossPlot", "MaskOverlay", "NeuronDetail", "NeuronScatter", "OverlayPanel", "RunBar", "SelectionLists",
    "StageMasks", "scatter_positions",
]
