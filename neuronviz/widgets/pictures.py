"""Pictures for the widgets: float images as PNG bytes, resizing, the picture of an input, thumbnails.

Every view draws on small [0, 1] float (H, W, 3) pictures; this module turns tensors and user
pictures into them and them into PNG bytes for ``ipywidgets.Image``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.errors import NeuronvizError
from ..render.explorer import blend_overlay
from ..render.maps import upsample_map
from ..render.pcace import display_images

__all__ = ["to_uint8", "encode_png", "resize", "display_picture", "thumb", "figure_png", "stack_pngs"]

#: Long side, in pixels, of the image a view draws on (small keeps a click fast).
DISPLAY_SIZE = 224


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) float image in [0, 1] as uint8 (values clipped)."""
    return (np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def encode_png(image: np.ndarray | Image.Image) -> bytes:
    """PNG bytes of an image (a uint8 or [0, 1] float (H, W, 3) array, or a PIL image), fast compression."""
    if not isinstance(image, Image.Image):
        arr = np.asarray(image)
        image = Image.fromarray(arr if arr.dtype == np.uint8 else to_uint8(arr))
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # speed over size: a click re-encodes the overlay
    return buf.getvalue()


def resize(pic: np.ndarray, long_side: int) -> np.ndarray:
    """Resize an (H, W, 3) float picture so that its long side is ``long_side`` pixels."""
    h, w = pic.shape[:2]
    scale = long_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size == (h, w):
        return np.ascontiguousarray(pic, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(pic, dtype=np.float32)).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=size, mode="bilinear", antialias=scale < 1, align_corners=False)
    return t[0].permute(1, 2, 0).clamp(0, 1).numpy()


def display_picture(x: torch.Tensor, image_display: Any = None) -> np.ndarray:
    """The (H, W, 3) float picture in [0, 1] a view draws ``x`` as, at its own size.

    Parameters
    ----------
    x : torch.Tensor
        (1, C, H, W) image as the model takes it; three channels are un-normalised as for the
        default model, others drawn in grey.
    image_display : PIL.Image.Image or numpy.ndarray or torch.Tensor, optional
        The picture to draw instead (uint8, or float in [0, 1]; (H, W, 3) or (H, W)).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    NeuronvizError
        ``image_display`` has another shape or range.
    """
    if image_display is None:
        return display_images(x.detach().float().cpu())[0]
    if isinstance(image_display, Image.Image):
        arr = np.asarray(image_display.convert("RGB"))
    elif isinstance(image_display, torch.Tensor):
        arr = image_display.detach().cpu().numpy()
    else:
        arr = np.asarray(image_display)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        raise NeuronvizError(
            "image_display must be a PIL image or an (H, W, 3) array (uint8, or float in [0, 1]), "
            f"got shape {arr.shape}"
        )
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if np.issubdtype(arr.dtype, np.floating) and np.nanmin(arr) >= 0 and np.nanmax(arr) <= 1:
        return arr.astype(np.float32)
    raise NeuronvizError(
        f"image_display must be uint8 or float in [0, 1]; got {arr.dtype} with values in "
        f"[{np.nanmin(arr):.3g}, {np.nanmax(arr):.3g}]"
    )


def thumb(picture: np.ndarray, amap: torch.Tensor | None, opacity: float) -> bytes:
    """PNG of ``picture`` with one channel's (h, w) map blended over it (a map of one cell shows the picture)."""
    heat = None
    if amap is not None and amap.dim() == 2 and amap.numel() > 1:
        heat = upsample_map(amap, picture.shape[:2])
    return encode_png(blend_overlay(picture, heat, opacity))


def figure_png(fig: Any, dpi: int) -> bytes:
    """A matplotlib figure as a PNG of 256 colours, the picture beside a widget in its display data.

    256 colours keep notebooks small; the picture is a preview, a view's ``export`` is the
    print version.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    quantized = Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    quantized.save(out, format="PNG")
    return out.getvalue()


def stack_pngs(pngs: list[bytes]) -> bytes:
    """PNGs one above the other on white, as one PNG of 256 colours."""
    pictures = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    width = max(p.width for p in pictures)
    out = Image.new("RGB", (width, sum(p.height for p in pictures)), "white")
    y = 0
    for p in pictures:
        out.paste(p, (0, y))
        y += p.height
    buf = io.BytesIO()
    out.quantize(256, method=Image.Quantize.FASTOCTREE).save(buf, format="PNG")
    return buf.getvalue()
