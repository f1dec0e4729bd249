"""The rendering layer: matplotlib figures of results, for export and headless use."""

from .figure import SAVE_FORMATS, StaticFigure, class_label
from .maps import upsample_map
from .resampling import render_score_maps

__all__ = ["SAVE_FORMATS", "StaticFigure", "class_label", "render_score_maps", "upsample_map"]
