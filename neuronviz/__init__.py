"""neuronviz: explain a convolutional network from the inside.

Score neurons by correlation with the output and by activation precision over perturbed
copies of an image (input resampling), rank channels by PCACE, and draw it all in Jupyter.
"""

from .core import perturb
from .core.archive import load
from .core.capture import ActivationCapture, capture, layer_summary
from .core.errors import CaptureError, LayerNotFoundError, NeuronvizError, NeuronvizTypeError, NeuronvizWarning
from .core.receptive_field import ReceptiveField, receptive_field
from .core.targets import top_predictions
from .data import augment, deprocess, imagenet_categories, load_digits, preprocess, sample_image, sample_image_names
from .figures import render_layer_ranking, render_pcace, render_scores
from .methods import saliency
from .methods.ace import AceResult, ace, maximal_correlation
from .methods.baselines import BaselineScores, baseline_scores
from .methods.examples import TopExamples, top_examples
from .methods.faithfulness import FaithfulnessCurves, deletion_curve, mask_deletion_curve
from .methods.inversion import (
    InversionResult,
    default_inversion_delta,
    default_inversion_layers,
    guided_feature_inversion,
)
from .methods.knockout import KnockoutEffect, knockout, knockout_effect
from .methods.pcace import LayerRanking, PCACEScores, pcace, rank_layers
from .methods.resampling import NeuronScores, overlap, score_neurons
from .methods.stability import SelectionStability, selection_stability
from .models import default_model, digits_model
from .render.examples import render_examples
from .render.faithfulness import render_faithfulness
from .render.inversion import render_inversion
from .widgets import App, InversionView, NeuronExplorer, PCACEView, app, demo

__version__ = "0.1.0"

__all__ = [
    "NeuronExplorer",
    "demo",
    "InversionResult",
    "default_inversion_delta",
    "default_inversion_layers",
    "guided_feature_inversion",
    "saliency",
    "BaselineScores",
    "baseline_scores",
    "AceResult",
    "LayerRanking",
    "PCACEScores",
    "ace",
    "maximal_correlation",
    "pcace",
    "rank_layers",
    "render_inversion",
    "render_layer_ranking",
    "render_pcace",
    "ActivationCapture",
    "CaptureError",
    "LayerNotFoundError",
    "NeuronScores",
    "NeuronvizError",
    "NeuronvizTypeError",
    "NeuronvizWarning",
    "augment",
    "capture",
    "default_model",
    "digits_model",
    "deprocess",
    "imagenet_categories",
    "layer_summary",
    "load",
    "load_digits",
    "overlap",
    "perturb",
    "preprocess",
    "render_scores",
    "sample_image",
    "sample_image_names",
    "score_neurons",
    "selection_stability",
    "SelectionStability",
    "top_predictions",
    "TopExamples",
    "top_examples",
    "ReceptiveField",
    "receptive_field",
    "FaithfulnessCurves",
    "KnockoutEffect",
    "deletion_curve",
    "knockout",
    "knockout_effect",
    "mask_deletion_curve",
    "render_faithfulness",
    "render_examples",
    "App",
    "InversionView",
    "PCACEView",
    "app",
]
