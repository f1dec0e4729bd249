"""Models that neuronviz ships: EfficientNet-Lite0 with ImageNet-1k weights."""

from .efficientnet_lite import EfficientNetLite0, default_model

__all__ = ["EfficientNetLite0", "default_model"]
