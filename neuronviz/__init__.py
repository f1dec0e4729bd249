"""neuronviz: explain a convolutional network from the inside.

Score neurons by correlation with the output and by activation precision over perturbed
copies of an image (input resampling), rank channels by PCACE, and draw it all in Jupyter.
"""

from .core import perturb
from .core.capture import ActivationCapture, capture, layer_summary
from .core.errors import CaptureError, LayerNotFoundError, NeuronvizError
from .methods.resampling import NeuronScores, overlap, score_neurons

__version__ = "0.1.0"

__all__ = [
    "ActivationCapture",
    "CaptureError",
    "LayerNotFoundError",
    "NeuronScores",
    "NeuronvizError",
    "capture",
    "layer_summary",
    "overlap",
    "perturb",
    "score_neurons",
]
