"""Interactive views in Jupyter, built from ipywidgets and bqplot on top of the rest of neuronviz.

:class:`NeuronExplorer` (and :func:`demo`) link an image overlay, a correlation-precision
scatter, the top-k selections and one neuron's detail. :class:`PCACEView` ranks the channels
of a few layers by PCACE over a set of images; :class:`InversionView` shows the two masks of
guided feature inversion. :class:`App` (and :func:`app`) holds the three as tabs. The building
blocks of other views are :mod:`.jobs` (one background worker thread: run ids, cancel,
progress) and :mod:`.panels` (reusable panels, and :class:`~.panels.BackgroundView`, the base
of a view that computes in the background). Views are ordinary ipywidgets boxes, so an app is
a tab of them::

    views = [nv.demo(), other_view]
    app = ipywidgets.Tab(children=views, titles=[v.title for v in views])
"""

from .app import App, app
from .explorer import NeuronExplorer, default_layers, demo
from .inversion_view import InversionView
from .jobs import Job, JobCancelled, Worker
from .legacy_panels import BackgroundView
from .pcace_view import PCACEView

__all__ = [
    "App",
    "BackgroundView",
    "InversionView",
    "Job",
    "JobCancelled",
    "NeuronExplorer",
    "PCACEView",
    "Worker",
    "app",
    "default_layers",
    "demo",
]
