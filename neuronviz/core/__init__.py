"""The torch-only core: capture, targets, perturbations, streaming statistics, batching."""

from . import perturb
from .capture import ActivationCapture, LayerInfo, capture, layer_summary, resolve_layers
from .errors import CaptureError, LayerNotFoundError, NeuronvizError
from .model_state import preserved_state
from .stats import CoMoments

__all__ = [
    "ActivationCapture",
    "CaptureError",
    "CoMoments",
    "LayerInfo",
    "LayerNotFoundError",
    "NeuronvizError",
    "capture",
    "layer_summary",
    "perturb",
    "preserved_state",
    "resolve_layers",
]
