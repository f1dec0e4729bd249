"""Interactive views in Jupyter, built from ipywidgets and bqplot on top of the rest of neuronviz.

:class:`NeuronExplorer` (and :func:`demo`) link an image overlay, a correlation-precision
scatter, the top-k selections and one neuron's detail. :class:`PCACEView` ranks the channels
of a few layers by PCACE over a set of images; :class:`InversionView` shows the two masks of
guided feature inversion. :class:`App` (and :func:`app`) holds the three as tabs, one entry of
:data:`.app.TABS` each. Every view is a :class:`View` (:mod:`.view`): it declares its settings
as a frozen dataclass of :func:`setting` fields with their rules (:class:`Int`, :class:`Float`,
:class:`OneOf`, :class:`Layers`, :class:`Layer`, :class:`ClassIndex`, :class:`Device`; see
:mod:`.settings`) and the base builds the controls, the validated properties, Run / Cancel,
export and closing; :mod:`.panels` holds the reusable panels and :mod:`.jobs` the background
worker thread. Views are ordinary ipywidgets boxes, so an app is a tab of them::

    views = [nv.demo(), other_view]
    app = ipywidgets.Tab(children=views, titles=[v.title for v in views])
"""

from .app import App, app
from .explorer import NeuronExplorer, default_layers, demo
from .inversion_view import InversionView
from .jobs import Job, JobCancelled, Worker
from .pcace_view import PCACEView
from .settings import ClassIndex, Device, Float, Int, Layer, Layers, OneOf, setting
from .view import View

__all__ = [
    "App",
    "ClassIndex",
    "Device",
    "Float",
    "Int",
    "InversionView",
    "Job",
    "JobCancelled",
    "Layer",
    "Layers",
    "NeuronExplorer",
    "OneOf",
    "PCACEView",
    "View",
    "Worker",
    "app",
    "default_layers",
    "demo",
    "setting",
]
