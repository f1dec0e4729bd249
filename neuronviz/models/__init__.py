"""Models that neuronviz ships: EfficientNet-Lite0 (ImageNet-1k) and a small digits CNN."""

from .digits import DigitsCNN, digits_model
from .efficientnet_lite import EfficientNetLite0, default_model

__all__ = ["DigitsCNN", "EfficientNetLite0", "default_model", "digits_model"]
