"""An image with an activation map blended over it, a box on the strongest cell, and an opacity slider."""

from __future__ import annotations

import ipywidgets as W
import numpy as np
import torch
from PIL import Image, ImageDraw

from ...render.explorer import BOX_COLOUR, blend_overlay, cell_box, strongest_cell
from ...render.maps import upsample_map
from ..pictures import encode_png, to_uint8

__all__ = ["OverlayPanel"]


class OverlayPanel:
    """An image with an activation map blended over it and a box on the map's strongest cell.

    The map is upsampled bilinearly to the image, blended with :func:`neuronviz.render.explorer.blend_overlay`
    and the PNG encoded with PIL, so an update takes a few milliseconds at 224 px. The box
    is the map cell of the strongest activation scaled to the image
    (:func:`neuronviz.render.explorer.cell_box`), an approximate receptive field.

    DOM classes: ``nv-overlay`` (the :class:`ipywidgets.Image`), ``nv-opacity`` (the slider).

    Parameters
    ----------
    image : numpy.ndarray
        (H, W, 3) float image in [0, 1], shown at its own size.
    opacity : float
        Initial overlay opacity.
    width : int
        Displayed width in pixels.
    """

    def __init__(self, image: np.ndarray, opacity: float = 0.6, width: int = 300) -> None:
        self.image = np.asarray(image, dtype=np.float32)
        self.amap: torch.Tensor | None = None
        self.box: tuple[float, float, float, float] | None = None
        self.picture = W.Image(format="png", value=encode_png(self.image), layout=W.Layout(width=f"{width}px"))
        self.picture.add_class("nv-overlay")
        self.opacity = W.FloatSlider(value=opacity, min=0.0, max=1.0, step=0.05, description="opacity",
                                     continuous_update=False, readout_format=".2f", style={"description_width": "55px"},
                                     layout=W.Layout(width=f"{width - 10}px"))
        self.opacity.add_class("nv-opacity")
        self.caption = W.HTML(value="", layout=W.Layout(width=f"{width}px"))
        self.opacity.observe(lambda _c: self.redraw(), names="value")
        self.widget = W.VBox([self.picture, self.opacity, self.caption])

    def show(self, amap: torch.Tensor | None, caption: str = "") -> None:
        """Overlay one (h, w) activation map (None: the plain image) and set the caption (HTML)."""
        self.amap = amap
        self.caption.value = caption
        self.redraw()

    def redraw(self) -> None:
        """Encode the image with the current map and opacity into the Image widget."""
        self.picture.value = encode_png(self.render())

    def render(self) -> np.ndarray:
        """The current picture as a uint8 (H, W, 3) array."""
        img, amap = self.image, self.amap
        if amap is None or amap.dim() != 2 or amap.numel() <= 1:
            self.box = None
            return to_uint8(img)
        heat = upsample_map(amap, img.shape[:2])
        h, w = amap.shape
        self.box = cell_box(strongest_cell(amap), (int(h), int(w)), img.shape[:2])
        pic = Image.fromarray(to_uint8(blend_overlay(img, heat, float(self.opacity.value))))
        top, left, bottom, right = self.box
        draw = ImageDraw.Draw(pic)
        rect = [left, top, right - 1, bottom - 1]
        draw.rectangle(rect, outline=(0, 0, 0), width=3)  # a white frame with a dark halo shows on any image
        draw.rectangle(rect, outline=BOX_COLOUR, width=1)
        return np.asarray(pic)
