"""Interactive views in Jupyter, built from ipywidgets and bqplot on top of the rest of neuronviz.

:class:`NeuronExplorer` (and :func:`demo`) link an image overlay, a correlation-precision
scatter, the top-k selections and one neuron's detail. The building blocks of other views are
:mod:`.jobs` (one background worker thread: run ids, cancel, progress) and :mod:`.panels`
(reusable panels, and :class:`~.panels.BackgroundView`, the base of a view that computes in the
background). Views are ordinary ipywidgets boxes, so an app is a tab of them::

    views = [nv.demo(), other_view]
    app = ipywidgets.Tab(children=views, titles=[v.title for v in views])
"""

from .explorer import NeuronExplorer, default_layers, demo
from .jobs import Job, JobCancelled, Worker
from .panels import BackgroundView

__all__ = ["BackgroundView", "Job", "JobCancelled", "NeuronExplorer", "Worker", "default_layers", "demo"]
