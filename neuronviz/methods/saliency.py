"""Scoring saliency masks against boxes: the localisation and pointing-game protocols.

* **Weakly supervised localisation** (ImageNet): threshold the mask at ``alpha`` times its
  mean, take the tightest box around the segmented pixels (:func:`box_from_mask`); the image
  is localised when the IoU with a ground-truth box of the class exceeds 0.5 (:func:`iou`).
* **Pointing game** (PASCAL VOC07): a hit when the mask's arg-max falls inside a ground-truth
  box of the class, optionally within a tolerance of 15 px (:func:`pointing_hit`).

Boxes are ``(x0, y0, x1, y1)`` in pixel indices of the mask, both corners inclusive, with
``x`` the column and ``y`` the row.

Running them on your own data
-----------------------------
The data sets are not shipped. ImageNet's validation boxes (``ILSVRC2012_bbox_val_v3.tgz``)
and PASCAL VOC's ``Annotations/*.xml`` share one XML layout, which :func:`read_voc_boxes`
reads (it converts the 1-based coordinates to 0-based). Boxes are in the photo's pixels; if
you resize the photo to the model's input, resize the boxes with :func:`resize_box`::

    from PIL import Image
    import neuronviz as nv
    from neuronviz.methods.inversion import guided_feature_inversion
    from neuronviz.methods.saliency import box_from_mask, iou, pointing_hit, read_voc_boxes, resize_box

    model = nv.default_model()
    photo = Image.open("ILSVRC2012_val_00000001.JPEG").convert("RGB")
    x = nv.preprocess(photo.resize((224, 224)))          # a plain resize keeps boxes mappable
    truth = [resize_box(b, photo.size, (224, 224)) for _, b in read_voc_boxes("ILSVRC2012_val_00000001.xml")]
    result = guided_feature_inversion(model, x, target=true_class)
    box = box_from_mask(result.mask[0], alpha=1.5)
    localised = max(iou(box, t) for t in truth) > 0.5     # the paper reports the error, 1 - mean
    # VOC07 pointing game: delta=10 in the paper; a class's boxes, 15 px tolerance
    hit = pointing_hit(result.mask[0], truth, tolerance=15)

For the pointing game the accuracy is computed per class (hits / (hits + misses)) and then
averaged over the classes.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Any, Sequence, Union, cast

import numpy as np
import torch

from ..core.errors import NeuronvizError

__all__ = ["Box", "box_from_mask", "iou", "pointing_hit", "read_voc_boxes", "resize_box"]

Box = tuple[int, int, int, int]
MaskLike = Union[np.ndarray, torch.Tensor]


def _to_numpy(mask: MaskLike, name: str = "mask") -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask, dtype=np.float64)
    if arr.size == 0:
        raise NeuronvizError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise NeuronvizError(f"{name} contains NaN or infinite values")
    return arr


def _box_of_one(mask: np.ndarray, alpha: float) -> Box:
    segmented = mask > alpha * mask.mean()
    if not segmented.any():
        # nothing above the threshold (e.g. a constant mask): fall back to the maximum's pixels
        segmented = mask == mask.max()
    rows = np.flatnonzero(segmented.any(axis=1))
    cols = np.flatnonzero(segmented.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def box_from_mask(mask: MaskLike, alpha: float = 1.5) -> Box | list[Box]:
    """The tightest box around the pixels where the mask exceeds ``alpha`` times its mean.

    Parameters
    ----------
    mask : numpy.ndarray or torch.Tensor
        (H, W) one mask, or (B, H, W) several.
    alpha : float
        Threshold factor (1.5 in the paper's ImageNet localisation).

    Returns
    -------
    tuple of int or list of tuple
        ``(x0, y0, x1, y1)``, inclusive pixel indices; a list of them for a (B, H, W) input.
        When no pixel exceeds the threshold, the box around the maximal pixels is returned.

    Raises
    ------
    ValueError
        Not 2-D or 3-D, empty, or NaN / infinite values.
    """
    arr = _to_numpy(mask)
    if not math.isfinite(alpha):
        raise NeuronvizError(f"alpha must be a finite number, got {alpha!r}")
    if arr.ndim == 2:
        return _box_of_one(arr, alpha)
    if arr.ndim == 3:
        return [_box_of_one(m, alpha) for m in arr]
    raise NeuronvizError(f"mask must be (H, W) or (B, H, W), got shape {arr.shape}")


def _check_box(box: Sequence[int], name: str) -> tuple[int, int, int, int]:
    try:
        x0, y0, x1, y1 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise NeuronvizError(f"{name} must be (x0, y0, x1, y1), got {box!r}") from None
    if x1 < x0 or y1 < y0:
        raise NeuronvizError(f"{name} {box!r} has x1 < x0 or y1 < y0")
    return x0, y0, x1, y1


def iou(box_a: Sequence[int], box_b: Sequence[int]) -> float:
    """Intersection over union of two boxes with inclusive pixel corners.

    A box ``(x0, y0, x1, y1)`` covers ``(x1 - x0 + 1) * (y1 - y0 + 1)`` pixels.

    Parameters
    ----------
    box_a, box_b : sequence of int
        ``(x0, y0, x1, y1)``.

    Returns
    -------
    float
        In [0, 1].

    Raises
    ------
    ValueError
        A box that is not four numbers or has its corners swapped.
    """
    ax0, ay0, ax1, ay1 = _check_box(box_a, "box_a")
    bx0, by0, bx1, by1 = _check_box(box_b, "box_b")
    iw = min(ax1, bx1) - max(ax0, bx0) + 1
    ih = min(ay1, by1) - max(ay0, by0) + 1
    inter = max(iw, 0) * max(ih, 0)
    area_a = (ax1 - ax0 + 1) * (ay1 - ay0 + 1)
    area_b = (bx1 - bx0 + 1) * (by1 - by0 + 1)
    return inter / (area_a + area_b - inter)


def pointing_hit(mask: MaskLike, boxes: Sequence[int] | Sequence[Sequence[int]], tolerance: float = 0) -> bool:
    """Whether the mask's maximum lies inside (or within ``tolerance`` px of) any of the boxes.

    Parameters
    ----------
    mask : numpy.ndarray or torch.Tensor
        (H, W), or (1, H, W).
    boxes : box or sequence of boxes
        One ``(x0, y0, x1, y1)`` or several (the ground-truth boxes of the class).
    tolerance : float
        Largest Euclidean distance in pixels from the arg-max to a box that still counts as a
        hit (15 in the pointing game); 0 demands the arg-max inside a box.

    Returns
    -------
    bool

    Notes
    -----
    Of several equal maxima, the first in row-major order is the arg-max.

    Raises
    ------
    ValueError
        Bad mask or boxes, negative tolerance.
    """
    arr = _to_numpy(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise NeuronvizError(f"mask must be (H, W), got shape {arr.shape}")
    if not tolerance >= 0:
        raise NeuronvizError(f"tolerance must be >= 0, got {tolerance!r}")
    box_list: list[Any] = list(boxes)
    if not box_list:
        raise NeuronvizError("boxes is empty")
    if not isinstance(box_list[0], (Sequence, np.ndarray, torch.Tensor)):
        box_list = [boxes]  # a single box
    y, x = (int(v) for v in np.unravel_index(int(np.argmax(arr)), arr.shape))
    for i, box in enumerate(box_list):
        x0, y0, x1, y1 = _check_box(box, f"boxes[{i}]")
        dx = max(x0 - x, 0, x - x1)
        dy = max(y0 - y, 0, y - y1)
        if math.hypot(dx, dy) <= tolerance:
            return True
    return False


def read_voc_boxes(path: str) -> list[tuple[str, Box]]:
    """Read the boxes of a PASCAL VOC / ImageNet bounding-box XML annotation.

    Parameters
    ----------
    path : str
        An ``Annotations/*.xml`` file (VOC) or an ImageNet validation box file.

    Returns
    -------
    list of (str, tuple of int)
        ``(name, (x0, y0, x1, y1))`` per object: the class name (a VOC class or an ImageNet
        synset id such as ``n01751748``) and the box in 0-based inclusive pixels.
    """
    root = ET.parse(path).getroot()
    out = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        # the files count pixels from 1
        # a missing coordinate is None, and float(None) raises TypeError
        x0, y0, x1, y1 = (int(round(float(cast(str, bb.findtext(k))))) - 1 for k in ("xmin", "ymin", "xmax", "ymax"))
        out.append((obj.findtext("name", default="").strip(), (x0, y0, x1, y1)))
    return out


def resize_box(box: Sequence[int], from_size: tuple[int, int], to_size: tuple[int, int]) -> Box:
    """Map a box from an image of ``from_size`` to the same image resized to ``to_size``.

    Parameters
    ----------
    box : sequence of int
        ``(x0, y0, x1, y1)``, inclusive.
    from_size, to_size : tuple of int
        ``(width, height)`` before and after (PIL's ``image.size`` order).

    Returns
    -------
    tuple of int
        The box covering the same area, inclusive, clipped to the new image.
    """
    x0, y0, x1, y1 = _check_box(box, "box")
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    # pixel i covers [i, i + 1): scale the covered interval, then take the pixels it touches
    nx0, ny0 = int(math.floor(x0 * sx)), int(math.floor(y0 * sy))
    nx1, ny1 = int(math.ceil((x1 + 1) * sx)) - 1, int(math.ceil((y1 + 1) * sy)) - 1
    clip = lambda v, hi: min(max(v, 0), hi - 1)  # noqa: E731
    return clip(nx0, to_size[0]), clip(ny0, to_size[1]), clip(nx1, to_size[0]), clip(ny1, to_size[1])
