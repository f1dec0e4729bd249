"""Sample photos, ImageNet class names, and the pre/post-processing of the default model.

The photos ship inside the package (see ``CREDITS.md`` next to this file for their origin and
licences), so nothing is downloaded at run time.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.errors import NeuronvizError, closest_names

__all__ = [
    "MEAN",
    "STD",
    "augment",
    "deprocess",
    "imagenet_categories",
    "load_digits",
    "preprocess",
    "sample_image",
    "sample_image_names",
]

# The default model's weights come from TensorFlow's EfficientNet-Lite, trained on
# (pixel - 127) / 128 with pixels in 0..255. On [0, 1] pixels that is this mean and std.
# (torchvision's ImageNet mean/std also "works", but gives less confident predictions on the
# sample photos and a stem whose batch-norm statistics match the training ones less well.)
MEAN: tuple[float, float, float] = (127.0 / 255.0,) * 3
STD: tuple[float, float, float] = (128.0 / 255.0,) * 3

# Public name -> file in this folder; the order is the one sample_image_names() lists.
_SAMPLES = {
    "cat": "cat.jpg",
    "coffee": "coffee.jpg",
    "rocket": "rocket.jpg",
    "astronaut": "astronaut.jpg",
}

_TOLERANCE = 1e-3

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor]

_ACCEPTED = (
    "a PIL image, a uint8 numpy array (H, W) or (H, W, 3/4), "
    "or a float torch tensor (3, H, W) or (1, 3, H, W) with values in [0, 1]"
)


def sample_image_names() -> list[str]:
    """Names of the bundled sample photos.

    Returns
    -------
    list of str
        ``["cat", "coffee", "rocket", "astronaut"]``; a new list on each call.
    """
    return list(_SAMPLES)


def sample_image(name: str) -> Image.Image:
    """One of the bundled sample photos.

    Parameters
    ----------
    name : str
        One of :func:`sample_image_names`.

    Returns
    -------
    PIL.Image.Image
        A new RGB image (short side 256 px), independent of the file.

    Raises
    ------
    NeuronvizError
        (a ``ValueError``) for an unknown name; the message lists the names and the closest one.
    """
    if not isinstance(name, str) or name not in _SAMPLES:
        names = list(_SAMPLES)
        close = closest_names(name, names) if isinstance(name, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise NeuronvizError(f"no sample image named {name!r}; available: {', '.join(names)}{hint}")
    with resources.files(__name__).joinpath(_SAMPLES[name]).open("rb") as f:
        with Image.open(f) as image:
            # convert() loads the pixels, so the file can be closed and the result is a copy.
            return image.convert("RGB")


@functools.lru_cache(maxsize=1)
def _categories() -> tuple[str, ...]:
    text = resources.files(__name__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:  # a damaged install would otherwise mislabel every class silently
        raise RuntimeError(f"imagenet_classes.txt should list 1000 classes, found {len(names)}")
    return names


def imagenet_categories() -> list[str]:
    """Human-readable names of the 1000 ImageNet-1k classes, in the standard class order.

    Returns
    -------
    list of str
        ``imagenet_categories()[i]`` names output ``i`` of the default model, e.g. index 285
        is ``"Egyptian cat"`` and 967 is ``"espresso"``. A new list on each call.
    """
    return list(_categories())


def _describe(x: object) -> str:
    if isinstance(x, (np.ndarray, torch.Tensor)):
        kind = "numpy array" if isinstance(x, np.ndarray) else "torch tensor"
        return f"a {kind} of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, Image.Image):
        return f"a PIL image in mode {x.mode!r}"
    return f"an object of type {type(x).__name__}"


def _array_to_tensor(a: np.ndarray) -> torch.Tensor:
    """uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> float (1, 3, H, W) in [0, 1]."""
    if a.dtype != np.uint8:
        raise NeuronvizError(
            f"preprocess() got {_describe(a)}; numpy arrays must be uint8 (0..255). "
            "For float pixels in [0, 1] pass torch.from_numpy(a).permute(2, 0, 1) instead. "
            f"Accepted: {_ACCEPTED}"
        )
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise NeuronvizError(
            f"preprocess() got {_describe(a)}; a numpy image must be (H, W) grey, (H, W, 3) RGB "
            "or (H, W, 4) RGBA"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise NeuronvizError(f"preprocess() got an empty image, {_describe(a)}")
    a = a[:, :, :3]  # RGBA -> RGB: the alpha channel is dropped
    # copy(): the array may be read-only (e.g. from PIL), and torch wants writable memory.
    x = torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1).unsqueeze(0)
    x = x.float().div_(255.0)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _check_tensor(x: torch.Tensor) -> torch.Tensor:
    """Float (3, H, W) or (1, 3, H, W) in [0, 1] -> float32 (1, 3, H, W)."""
    if not torch.is_floating_point(x):
        raise NeuronvizError(
            f"preprocess() got {_describe(x)}; a tensor must be float with values in [0, 1] "
            "(for 0..255 integers use x.float() / 255). "
            f"Accepted: {_ACCEPTED}"
        )
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise NeuronvizError(
            f"preprocess() got {_describe(x)}; a tensor must be one RGB image, (3, H, W) or (1, 3, H, W)"
        )
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise NeuronvizError(f"preprocess() got an empty image, {_describe(x)}")
    x = x.detach().float()
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise NeuronvizError(f"preprocess() got a tensor with {bad} NaN or infinite value(s)")
    lo, hi = float(x.min()), float(x.max())
    # A hair of slack for float round-off (e.g. 255 / 255 computed in float16).
    if lo < -_TOLERANCE or hi > 1.0 + _TOLERANCE:
        if lo < -_TOLERANCE:
            why = "it looks already normalised: pass it to the model directly"
        else:
            why = "it looks like 0..255 pixels: divide by 255"
        raise NeuronvizError(
            f"preprocess() expects tensor values in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; {why}"
        )
    return x.clamp(0.0, 1.0)


def preprocess(image: ImageLike, size: int = 224) -> torch.Tensor:
    """Turn an image into the default model's input.

    The short side is resized to ``size`` (bilinear, antialiased), the centre
    ``size x size`` square is cropped, pixels are scaled to [0, 1] and normalised with
    :data:`MEAN` and :data:`STD`.

    Parameters
    ----------
    image : PIL.Image.Image, numpy.ndarray or torch.Tensor
        A PIL image (any mode; converted to RGB), a uint8 array (H, W) grey or (H, W, 3) RGB or
        (H, W, 4) RGBA (alpha dropped), or a float tensor (3, H, W) or (1, 3, H, W) with values
        in [0, 1].
    size : int
        Side of the square output.

    Returns
    -------
    torch.Tensor
        float32, shape (1, 3, size, size); on the input tensor's device, else on the CPU.

    Raises
    ------
    NeuronvizError
        (a ``ValueError``) for another type, dtype, shape or channel count, NaN or infinite
        values, or a tensor outside [0, 1] (e.g. one that is already normalised).
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise NeuronvizError(f"size must be a positive int, got {size!r}")
    size = int(size)

    if isinstance(image, Image.Image):
        # PIL and uint8-array inputs share one path so that they give identical tensors.
        x = _array_to_tensor(np.asarray(image.convert("RGB")))
    elif isinstance(image, np.ndarray):
        x = _array_to_tensor(image)
    elif isinstance(image, torch.Tensor):
        x = _check_tensor(image)
    else:
        raise NeuronvizError(f"preprocess() got {_describe(image)}; accepted: {_ACCEPTED}")

    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):  # skipping the no-op resize keeps pixels exact
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[:, :, top : top + size, left : left + size]

    mean = torch.tensor(MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def deprocess(x: torch.Tensor) -> np.ndarray:
    """Undo :func:`preprocess`'s normalisation, for display.

    Parameters
    ----------
    x : torch.Tensor
        One normalised image, (1, 3, H, W) or (3, H, W).

    Returns
    -------
    numpy.ndarray
        float32, shape (H, W, 3), clipped to [0, 1] (e.g. for ``matplotlib.pyplot.imshow``).

    Raises
    ------
    NeuronvizError
        (a ``ValueError``) for a non-tensor or a shape other than one 3-channel image.
    """
    if not isinstance(x, torch.Tensor):
        raise NeuronvizError(f"deprocess() expects a torch tensor (1, 3, H, W), got {_describe(x)}")
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise NeuronvizError(
            f"deprocess() expects one normalised RGB image, (1, 3, H, W) or (3, H, W); got shape {tuple(x.shape)}"
        )
    x = x.detach().to("cpu", torch.float32)
    mean = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(3, 1, 1)
    return (x * std + mean).clamp_(0.0, 1.0).permute(1, 2, 0).numpy().copy()


#: Fraction of the digits held out for testing, and the seed of the split.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


def load_digits(split: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """The UCI handwritten digits (1,797 real 8x8 images, as bundled with scikit-learn).

    Parameters
    ----------
    split : {"all", "train", "test"}
        The whole set, or one side of a fixed random split (20 % test, seed 0) — the split
        the bundled digits CNN was trained and evaluated on.

    Returns
    -------
    images : torch.Tensor
        (N, 1, 8, 8) float32 in [0, 1] (the raw 0..16 counts divided by 16).
    labels : torch.Tensor
        (N,) int64 digit labels.

    Raises
    ------
    NeuronvizError
        Unknown ``split``.
    """
    if split not in ("all", "train", "test"):
        raise NeuronvizError(f"split must be 'all', 'train' or 'test', got {split!r}")
    with resources.files(__name__).joinpath("digits.npz").open("rb") as f:
        data = np.load(f)
        images, labels = data["images"], data["labels"]
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    if split == "all":
        return x, y
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_test = int(round(DIGITS_TEST_FRACTION * len(y)))
    idx = order[:n_test] if split == "test" else order[n_test:]
    return x[idx], y[idx]


def augment(image: ImageLike, n: int, *, size: int = 224, seed: int = 0, min_scale: float = 0.35) -> torch.Tensor:
    """Random views of one photo: crops, flips and small colour changes, as the model's input.

    A set of images of one class, made from one photo, for methods that need many images
    (PCACE): each view is a random crop covering ``min_scale`` to all of the short side,
    anywhere in the photo, flipped left-right with probability 1/2, with brightness and
    contrast scaled by up to ±20 %, resized to ``size`` and normalised like
    :func:`preprocess`.

    Parameters
    ----------
    image : PIL.Image.Image, numpy.ndarray or torch.Tensor
        As accepted by :func:`preprocess`.
    n : int
        Number of views.
    size : int
        Side of each view.
    seed : int
        The views depend only on it.
    min_scale : float
        Smallest crop side, as a fraction of the photo's short side (0 < min_scale <= 1).

    Returns
    -------
    torch.Tensor
        (n, 3, size, size) float32.

    Raises
    ------
    NeuronvizError
        Bad image, ``n < 1`` or ``min_scale`` outside (0, 1].
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise NeuronvizError(f"n must be a positive int, got {n!r}")
    if not 0 < min_scale <= 1:
        raise NeuronvizError(f"min_scale must be in (0, 1], got {min_scale!r}")
    full = preprocess(image, size=max(size, 256))  # normalised; keep some resolution to crop from
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    pixels = full * std + mean  # back to [0, 1] for the colour changes
    g = torch.Generator().manual_seed(int(seed))
    side = pixels.shape[-1]
    views = []
    for _ in range(n):
        r = torch.rand(6, generator=g).tolist()
        crop = max(8, int(side * (min_scale + (1 - min_scale) * r[0])))
        top, left = int((side - crop) * r[1]), int((side - crop) * r[2])
        v = pixels[:, :, top : top + crop, left : left + crop]
        if r[3] < 0.5:
            v = v.flip(-1)
        v = F.interpolate(v, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        brightness, contrast = 0.8 + 0.4 * r[4], 0.8 + 0.4 * r[5]
        v = ((v - v.mean()) * contrast + v.mean() * brightness).clamp(0, 1)
        views.append((v - mean) / std)
    return torch.cat(views)
