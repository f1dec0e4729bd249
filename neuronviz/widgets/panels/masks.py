"""Saliency masks in [0, 1] over an image: one overlay, and the two stages of guided feature inversion side by side."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import numpy as np
import torch
import torch.nn.functional as F

from ...render.explorer import blend_overlay
from ..pictures import to_uint8
from .overlay import OverlayPanel

__all__ = ["MaskOverlay", "StageMasks", "resize_mask"]


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (h, w) mask resized bilinearly to ``size``, its values kept (clipped to [0, 1], not rescaled).

    Parameters
    ----------
    mask : torch.Tensor
        (h, w) mask with values in [0, 1].
    size : (int, int)
        The (H, W) to resize to.

    Returns
    -------
    torch.Tensor
        (H, W) float mask on the CPU.
    """
    m = mask.detach().float().cpu()
    if tuple(m.shape) == tuple(size):
        return m
    return F.interpolate(m[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)


class MaskOverlay(OverlayPanel):
    """An image with a saliency mask in [0, 1] blended over it, and an opacity slider.

    Unlike :class:`~neuronviz.widgets.panels.OverlayPanel` the mask is drawn as it is (no
    min-max scaling, so a faint mask looks faint) and without a box; a mask of another size
    than the image is resized to it (:func:`resize_mask`).

    DOM classes: ``nv-overlay`` and ``nv-mask`` (the image), ``nv-opacity`` (the slider).

    Parameters
    ----------
    image : numpy.ndarray
        (H, W, 3) float image in [0, 1], shown at its own size.
    opacity : float
        Initial opacity of the mask.
    width : int
        Displayed width in pixels.
    """

    def __init__(self, image: np.ndarray, opacity: float = 0.6, width: int = 260) -> None:
        super().__init__(image, opacity=opacity, width=width)
        self.picture.add_class("nv-mask")

    def show(self, amap: torch.Tensor | None, caption: str = "") -> None:
        """Overlay one (h, w) mask (None: the plain image) and set the caption (HTML)."""
        if amap is not None and amap.dim() == 2:
            amap = resize_mask(amap, self.image.shape[:2])
        super().show(amap, caption)

    def render(self) -> np.ndarray:
        """The current picture as a uint8 (H, W, 3) array."""
        self.box = None
        mask = self.amap
        if mask is None or mask.dim() != 2:
            return to_uint8(self.image)
        heat = np.clip(np.nan_to_num(mask.detach().float().cpu().numpy()), 0.0, 1.0)
        return to_uint8(blend_overlay(self.image, heat, float(self.opacity.value)))


class StageMasks:
    """The image with the stage-1 mask of guided feature inversion and, beside it, with the stage-2 mask.

    DOM classes: ``nv-mask-stage1`` and ``nv-mask-stage2`` (the images), as well as those of
    :class:`MaskOverlay`.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W, 3) float image in [0, 1].
    width : int
        Displayed width of each picture in pixels.

    Attributes
    ----------
    stage1, stage2 : MaskOverlay
        The two overlays.
    widgets : list of ipywidgets.Widget
        A headed column per stage, to put in any box.
    """

    def __init__(self, image: np.ndarray, width: int = 260) -> None:
        self.stage1 = MaskOverlay(image, width=width)
        self.stage2 = MaskOverlay(image, width=width)
        self.stage1.picture.add_class("nv-mask-stage1")
        self.stage2.picture.add_class("nv-mask-stage2")
        self.widgets = [
            W.VBox([W.HTML("<b>stage 1</b>: all salient objects"), self.stage1.widget]),
            W.VBox([W.HTML("<b>stage 2</b>: the target class"), self.stage2.widget]),
        ]

    def show(self, result: Any | None, name: str = "") -> None:
        """Show the masks of image 0 of an :class:`~neuronviz.InversionResult` (None: the plain image).

        Parameters
        ----------
        result : InversionResult or None
            The result; each caption gives the stage's step count and the mask's mean.
        name : str
            The explained class as it is to be read (plain text).
        """
        if result is None:
            self.stage1.show(None, _small("no run yet"))
            self.stage2.show(None, "")
            return
        stage1, stage2 = result.inversion_mask[0], result.mask[0]
        steps1, steps2 = result.losses["stage1"].shape[1], result.losses["stage2"].shape[1]
        self.stage1.show(stage1, _small(f"after {steps1} steps · mean {float(stage1.mean()):.2f}"))
        self.stage2.show(stage2, _small(f"{html.escape(name)} · after {steps2} more steps · mean "
                                        f"{float(stage2.mean()):.2f}"))


def _small(text: str) -> str:
    return f"<span style='font-size:11px'>{text}</span>"
