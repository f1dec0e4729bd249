"""Class-discriminative saliency masks by guided feature inversion.

Du, Liu, Song & Hu, "Towards Explanation of DNN-based Prediction with Guided Feature
Inversion", KDD 2018, arXiv:1804.00506.

The mask is a non-negative combination of the channels of an intermediate layer ``l1``,
computed once on the original image; only the channel weights ``w`` are optimised. Stage 1
finds the region whose content alone reproduces the representation at layer ``l0`` (every
foreground object); stage 2 starts from there and keeps the part that raises the target
class's probability when kept and lowers it when removed.

Choices where the paper leaves room:

* The mask is combined, min-max normalised (with 1e-8 added to the range, so a constant map
  gives 0), then bilinearly upsampled (``align_corners=False``), in the paper's order; the
  authors' code upsamples first and divides by the maximum only.
* ``w`` is clipped to ``>= 0`` after every Adam step, so ``||w||_1 = sum(w)``; its gradient
  is the penalty weight even at 0, so a channel returns only when the data term outweighs it.
* Stage 2 starts a fresh Adam from the stage-1 weights, with the learning rate halved every 10
  stage-2 steps; the authors' code runs one Adam over 80 steps, halving from the start.
* ``loss="paper"`` is the raw squared error of stage 1; ``loss="relative"`` divides it by
  ``||f^{l0}(x)||^2`` as the authors' code does. By default the penalties are the paper's
  ``gamma ||w||_1`` and ``delta ||w||_1``; ``recipe="authors"`` runs the authors' loop
  instead (their L2 penalties and all, see :func:`guided_feature_inversion`).
* The default background is the image blurred with sigma ``11 * W / 224`` px.
* ``delta`` defaults to the paper's 1 except for the default model, EfficientNet-Lite0, where
  it is 0.01 (:func:`default_inversion_delta`, with the measurements behind it).
"""

from __future__ import annotations

import math
import operator
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence, SupportsIndex, Union, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.archive import Archived, archived
from ..core.capture import ActivationCapture, layer_summary, resolve_layers
from ..core.errors import NeuronvizError, NeuronvizTypeError, NeuronvizWarning
from ..core.locks import runs_model
from ..core.model_state import model_device, on_device, preserved_state, resolve_device
from ..core.perturb import gaussian_blur
from ..core.progress import BACKWARD_COST, ProgressArg, images_of, is_long, reports_progress
from ..core.targets import check_class_output, resolve_target
from ..core.validation import check_batch, forward_checked
from .inversion_authors import (
    AUTHORS,
    AUTHORS_BLUR_SIGMA_AT_224,
    authors_mask,
    check_recipe,
    recipe_defaults,
    run_authors_loop,
)

if TYPE_CHECKING:
    import pandas

__all__ = [
    "InversionResult",
    "guided_feature_inversion",
    "default_inversion_layers",
    "default_inversion_delta",
    "make_mask",
    "make_background",
    "blend",
    "BACKGROUNDS",
    "LOSSES",
]

BACKGROUNDS = ("blur", "mean", "noise")
LOSSES = ("paper", "relative")

#: Blur width of the "blur" background at 224 px (the paper's radius 11; PIL's radius is a sigma).
BLUR_SIGMA_AT_224 = 11.0
#: Stage-2 learning rate is halved after this many steps.
LR_HALVING_STEPS = 10
#: Initial value of every channel weight.
W_INIT = 0.1
#: Added to (max - min) in the min-max normalisation, so a constant map becomes 0, not NaN.
MINMAX_EPS = 1e-8
#: The paper's stage-2 L1 weight (10 for its VOC07 pointing game).
PAPER_DELTA = 1.0
#: Stage-2 L1 weight for EfficientNet-Lite0; see :func:`default_inversion_delta`.
EFFICIENTNET_LITE0_DELTA = 0.01

TargetsSpec = Union[None, int, Sequence[int], torch.Tensor, np.ndarray, Callable[[object], torch.Tensor]]
Background = Union[str, torch.Tensor]


@archived('InversionResult')
@dataclass
class InversionResult(Archived):
    """Saliency masks of guided feature inversion, one per explained image.

    Attributes
    ----------
    mask : torch.Tensor
        (B, H, W) in [0, 1]: the class-discriminative mask after stage 2, at input size.
    inversion_mask : torch.Tensor
        (B, H, W) in [0, 1]: the class-agnostic mask after stage 1 (all salient objects).
    target : list of int or None
        The explained class of each image (None for a callable target).
    probability : torch.Tensor
        (B,) float64 softmax probability of the target class on the unmasked image.
    losses : dict of str to torch.Tensor
        ``{"stage1": (B, stage1_steps), "stage2": (B, stage2_steps)}`` float64: each image's
        loss at every step, evaluated at the weights before that step's update.
    weights : torch.Tensor
        (B, C) final channel weights (after stage 2), all >= 0.
    inversion_weights : torch.Tensor
        (B, C) channel weights after stage 1, where stage 2 starts.
    mask_layer : str
        The layer ``l1`` whose channels make up the mask.
    feature_layer : str
        The layer ``l0`` whose representation stage 1 inverts.
    background : str
        ``"blur"``, ``"mean"``, ``"noise"`` or ``"tensor"``.
    loss : str
        ``"paper"`` or ``"relative"``.
    delta : float
        The stage-2 penalty weight that was used (the default's value when ``delta=None``).
    recipe : str
        ``"paper"`` or ``"authors"`` (see :func:`guided_feature_inversion`).
    """

    mask: torch.Tensor
    inversion_mask: torch.Tensor
    target: list[int | None]
    probability: torch.Tensor
    losses: dict[str, torch.Tensor]
    weights: torch.Tensor
    inversion_weights: torch.Tensor
    mask_layer: str
    feature_layer: str
    background: str = "blur"
    loss: str = "paper"
    delta: float = PAPER_DELTA
    recipe: str = "paper"

    def as_rows(self) -> list[dict]:
        """One dict per image: ``image`` (its index in the batch), ``target``, ``probability``,
        ``mask_mean`` and ``inversion_mask_mean`` (the masks' mean, the salient fraction of the
        image), ``loss_stage1`` and ``loss_stage2`` (the loss at each stage's last step).

        Returns
        -------
        list of dict
            Ready for ``csv.DictWriter`` or ``pandas.DataFrame``.
        """
        def last(losses: torch.Tensor, b: int) -> float:
            return float(losses[b, -1]) if losses.shape[-1] else math.nan

        return [
            {"image": b, "target": _class_or_none(self.target[b]), "probability": float(self.probability[b]),
             "mask_mean": float(self.mask[b].mean()), "inversion_mask_mean": float(self.inversion_mask[b].mean()),
             "loss_stage1": last(self.losses["stage1"], b), "loss_stage2": last(self.losses["stage2"], b)}
            for b in range(self.mask.shape[0])
        ]

    def to_frame(self) -> "pandas.DataFrame":
        """:meth:`as_rows` as a pandas DataFrame.

        Returns
        -------
        pandas.DataFrame

        Raises
        ------
        NeuronvizError
            pandas is not installed.
        """
        from ..core.tables import rows_to_frame

        columns = ["image", "target", "probability", "mask_mean", "inversion_mask_mean", "loss_stage1", "loss_stage2"]
        return rows_to_frame(self.as_rows(), columns)

    def __repr__(self) -> str:
        b, h, w = self.mask.shape
        return (
            f"InversionResult({b} mask(s) {h}x{w}, target {self.target}, mask_layer={self.mask_layer!r}, "
            f"feature_layer={self.feature_layer!r}, {self.weights.shape[1]} channel weights, "
            f"steps {self.losses['stage1'].shape[1]}+{self.losses['stage2'].shape[1]})"
        )


# ---------------------------------------------------------------------------------------------
# default layers


def _last_index(seq: nn.Sequential, kind: type) -> int | None:
    found = [i for i, m in enumerate(seq) if isinstance(m, kind)]
    return found[-1] if found else None


def _vgg_like_layers(features: nn.Module) -> tuple[str, str] | None:
    """(l1, l0) in a ``features`` Sequential: the activation after the last conv, the last max-pool."""
    if not isinstance(features, nn.Sequential):
        return None
    conv = _last_index(features, nn.Conv2d)
    pool = _last_index(features, nn.MaxPool2d)
    if conv is None or pool is None:
        return None
    relu = next((i for i in range(conv + 1, len(features)) if isinstance(features[i], nn.ReLU)), conv)
    return f"features.{relu}", f"features.{pool}"


@runs_model
def default_inversion_layers(model: nn.Module, x: torch.Tensor | None = None) -> tuple[str, str] | None:
    """The mask layer ``l1`` and feature layer ``l0`` used when none are named.

    Detected by class:

    * torchvision ``VGG`` (any depth, with or without batch norm): ``l1`` is the ReLU after
      the last convolution (conv5_4 of VGG-19, ``features.35``; 14x14 at 224 px, non-negative),
      ``l0`` the last max-pool (pool5, ``features.36``), as in the paper. Indices are read from
      ``model.features``, so VGG-11/13/16/19 all resolve.
    * torchvision ``AlexNet``: ``l0 = l1 =`` pool5 (``features.12``), as in the paper.
    * torchvision ``ResNet``: ``l0 = "layer4"`` (7x7, the last spatial map before the global
      pool; the paper's "pool5") and ``l1 = "layer4.<n-2>"``, the output of the next-to-last
      block of ``layer4``, i.e. the input of the last block (7x7x512 for ResNet-18, post-ReLU so
      non-negative). The paper's "next-to-last conv layer" sits inside the last block, where its
      ReLU module is shared by two calls and cannot be hooked, and its convolution output is
      pre-activation (negative values); the block output is the closest hookable non-negative map.
    * neuronviz ``EfficientNetLite0`` (the default model): ``l0 = l1 = "head"``, the last
      convolution (1280x7x7 at 224 px, after ReLU6, so non-negative) and the last spatial map
      before the global pool, as the paper's AlexNet setting and the authors' code use one layer
      for both. Chosen by measurement on two bundled photos side by side (each preprocessed to
      224 px, a 224x448 image; cat | coffee, targets 285 Egyptian cat and 967 espresso, 10 + 70
      steps): the share of each stage-2 mask's mass in its own photo's half was, cat / espresso,
      0.92 / 0.89 for ``head``, 0.90 / 0.72 with ``l1 = "blocks.15.expand"`` (1152x7x7),
      0.81 / 0.69 for ``blocks.15`` (320x7x7, the last block's output; signed, no ReLU),
      0.81 / 0.69 for ``blocks.14``, and 0.61 / 0.54, 0.69 / 0.60, 0.63 / 0.62 for the 14x14
      maps ``blocks.11.expand`` (672 channels), ``blocks.10.expand`` and ``blocks.10`` (all with
      ``l0 = "head"``; ``delta = 1``). With the model's ``delta = 0.01`` and 10 + 30 steps,
      ``head`` gave 0.86 / 0.71 there and 0.57 / 0.71 on coffee | astronaut (967 espresso, 450
      bobsled), both arg-maxima in their own half; ``blocks.15``, ``blocks.14`` and
      ``blocks.11.expand`` missed one or both arg-maxima on coffee | astronaut, and
      ``blocks.15.expand`` (0.87 / 0.74 and 0.53 / 0.59) was no better than ``head``. The
      network has no 14x14 map as wide as VGG's conv5_4, and its 14x14 maps gave noisier masks
      that put less of their mass on the explained object.

    The stage-2 L1 weight for these models is :func:`default_inversion_delta`.

    Any other network, given a probe input ``x`` (one forward pass; the model is restored and no
    hook stays): ``l1`` is the last post-activation map with a spatial (C, h, w) output, found as
    :func:`neuronviz.core.layer_choice.activation_layers` finds them (an activation module after
    a convolution, a block that rectifies its output, a convolution whose output is then
    rectified), else the last convolution with a spatial output; ``l0`` is the last spatial map
    the network computes from ``l1`` on (the last (C, h, w) output before global pooling,
    dropout and identity modules skipped), as pool5 on VGG. Many networks end on a small map at
    a small input (2 x 2 at 64 px for most ImageNet classifiers): the mask is then coarse.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    x : torch.Tensor, optional
        A probe input as the model takes it (e.g. the images to explain), for architectures not
        listed above.

    Returns
    -------
    tuple of str or None
        ``(mask_layer, feature_layer)``, or None for an architecture not listed above when ``x``
        is not given or the network has no layer with a spatial (C, h, w) output.
    """
    tv = sys.modules.get("torchvision.models")  # a torchvision model implies torchvision is imported
    if tv is not None:
        if isinstance(model, tv.VGG):
            return _vgg_like_layers(model.features)
        if isinstance(model, tv.AlexNet):
            found = _vgg_like_layers(model.features)
            return (found[1], found[1]) if found else None
        if isinstance(model, tv.ResNet):
            n = len(model.layer4)
            return (f"layer4.{n - 2}" if n >= 2 else "layer3"), "layer4"
    from ..models.efficientnet_lite import EfficientNetLite0

    if isinstance(model, EfficientNetLite0):
        return "head", "head"
    if x is None:
        return None
    return _any_cnn_layers(model, x)


def _any_cnn_layers(model: nn.Module, x: torch.Tensor) -> tuple[str, str] | None:
    """(l1, l0) of any network with a spatial map: the last post-activation map, the last spatial map."""
    from ..core.layer_choice import activation_layers, spatial_convolutions

    x = x if x.dim() == 4 else x.unsqueeze(0)
    summary = layer_summary(model, x[:1].to(model_device(model)))
    modules = dict(model.named_modules())
    spatial = [i.name for i in summary if len(i.shape) == 3 and i.positions > 1]
    convs = spatial_convolutions(model, summary)
    # conv outputs and maps rectified after a conv are channels first, as the mask needs
    found = [n for n in activation_layers(model, summary, x[:1]) if n in spatial] or convs
    if not found:
        return None
    mask_layer = found[-1]
    skip = (nn.modules.dropout._DropoutNd, nn.Identity, nn.Flatten)
    after = spatial[spatial.index(mask_layer):]
    order = summary.names()
    shape = {i.name: i.shape for i in summary}

    def same_as_last_child(n: str) -> bool:
        # a container returning its last submodule's output: name the submodule itself
        k = order.index(n)
        return k > 0 and order[k - 1].startswith(n + ".") and shape[order[k - 1]] == shape[n]

    later = [n for n in after if not isinstance(modules[n], skip) and not same_as_last_child(n)]  # any layout
    return mask_layer, (later[-1] if later else mask_layer)


@runs_model
def default_inversion_delta(model: nn.Module) -> float:
    """The stage-2 L1 weight ``delta`` used when none is given.

    The paper's ``delta = 1`` for every architecture, except neuronviz ``EfficientNetLite0``
    (the default model), which gets 0.01.

    Why: the mask is min-max normalised, so it does not change when all weights are scaled
    together, and the class terms' gradient has no component along ``w``; what resists
    ``delta ||w||_1`` is only the class probabilities' gradient across channels, which is small
    where the target's probability is small (a few percent for each object of a two-object
    image on this model, whose 1280 mask channels start at ``||w||_1 = 128``). With ``delta = 1``
    that gradient is below ``delta`` for every channel, and Adam, which steps every weight by
    about the learning rate whatever the size of its gradient, shrinks all weights alike: the
    channels go in the order of their stage-1 weights, whatever the class, until the weights
    are about a thousand times smaller and the class gradient catches up in the last steps.
    Measured on two bundled photos side by side (each preprocessed to 224 px, a 224x448
    image), 10 + 70 steps, ``l0 = l1 = "head"``, as the share of each stage-2 mask's mass in
    its own photo's half and whether the mask's arg-max falls in that half:

    * cat | coffee (285 Egyptian cat, 967 espresso; probabilities 0.03 and 0.06 on the
      composite): ``delta = 1`` ended at 0.90 / 0.88, but the cat's mask had 27% of its mass
      in the cat's half after 40 stage-2 steps and 23% after 55 (most of it on the cup), and
      moved to the cat only in the last 5 steps; ``delta = 0.01`` gave 0.93 / 0.71, with both
      arg-maxima in their own half from step 5 on and 0.72 / 0.68 after 20 steps.
      ``delta = 0.1`` and ``0.03`` sent the cat's arg-max to the cup's half too, and kept
      both in their own half only from step 40 and step 25 on.
    * coffee | astronaut (967, 450 bobsled): ``delta = 1`` 0.36 / 0.52, both arg-maxima in the
      other half; ``delta = 0.01`` 0.62 / 0.71, both in their own half.
    * coffee | cat: 0.92 / 0.92 and 0.81 / 0.91; cat | rocket (285, 540 drilling platform):
      0.87 / 0.80 and 0.87 / 0.57 (``delta = 1`` and 0.01; all arg-maxima in their own half).

    On the photos alone (probabilities 0.43 and 0.88), stage 2 ends with similar
    probabilities of the kept and the removed part: cat 0.49 / 0.24 with ``delta = 1`` and
    0.41 / 0.28 with 0.01, coffee 0.85 / 0.14 and 0.85 / 0.07. ``delta = 1`` gives sparser
    masks when it ends well, but on this model it separated the classes on three of the four
    pairs and only in its last steps; 0.01 did on all four, within 20 to 30 steps.

    Parameters
    ----------
    model : torch.nn.Module
        The network.

    Returns
    -------
    float
    """
    from ..models.efficientnet_lite import EfficientNetLite0

    return EFFICIENTNET_LITE0_DELTA if isinstance(model, EfficientNetLite0) else PAPER_DELTA


def _unknown_architecture(model: nn.Module, x: torch.Tensor) -> NeuronvizError:
    try:
        rows = [r for r in layer_summary(model, x[:1].to(model_device(model)), max_depth=3) if len(r.shape) == 3]
    except Exception:  # noqa: BLE001 - whatever the model raises, the error must still be raised, without the table
        rows = []
    listing = "\n".join(f"  {r}" for r in rows[-12:]) if rows else "  (none found: see nv.layer_summary(model, x))"
    example = ""
    if rows:
        # a 14x14-ish map for the mask and the last spatial map for the inversion, as for VGG
        last = rows[-1]
        finer = next((r for r in reversed(rows) if r.positions > last.positions), last)
        example = f" For example mask_layer={finer.name!r}, feature_layer={last.name!r}."
    return NeuronvizError(
        f"no default layers for {type(model).__name__}: pass mask_layer= (l1, a late convolutional layer "
        "with a spatial map, ideally non-negative, e.g. after a ReLU; its channels make up the mask) and "
        "feature_layer= (l0, the representation inverted in stage 1, e.g. the last spatial map before "
        f"global pooling).{example} Layers with a (C, H, W) output, last {min(len(rows), 12)}:\n{listing}"
    )


# ---------------------------------------------------------------------------------------------
# argument checks


def _check_steps(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise NeuronvizError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def _check_number(value: object, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise NeuronvizError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or (v <= 0 if positive else v < 0):
        raise NeuronvizError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return v


def _as_index(t: object) -> int:
    if isinstance(t, (bool, np.bool_)):
        raise NeuronvizTypeError("a class index must be an int, not a bool")
    if (isinstance(t, np.ndarray) and t.size == 1) or (isinstance(t, torch.Tensor) and t.numel() == 1):
        t = t.item()
    try:
        return operator.index(cast(SupportsIndex, t))  # anything else raises the TypeError below
    except TypeError:
        raise NeuronvizTypeError(
            f"target must be None, a class index, a list of class indices or a callable, got {type(t).__name__}"
        ) from None


def _class_or_none(c: int | None) -> int | None:
    """``int(c)``, or None for the class of a callable target."""
    return None if c is None else int(c)


def _row_of(logits: torch.Tensor, i: int) -> Callable[[], torch.Tensor]:
    """The prediction of image ``i`` alone, when asked for: ``logits[i : i + 1]``."""
    return lambda: logits[i : i + 1]


def _target_list(target: TargetsSpec, n_images: int) -> list[int | None] | Callable:
    """One class (or None: predicted) per image; a list longer than a 1-image batch expands it.

    A callable target is returned as is.
    """
    if target is None:
        return [None] * n_images
    if callable(target) and not isinstance(target, (torch.Tensor, np.ndarray)):
        return target
    if isinstance(target, (torch.Tensor, np.ndarray)):
        if target.ndim == 0:
            return [_as_index(target)] * n_images
        if target.ndim != 1:
            raise NeuronvizError(f"target must be 1-D (one class per image), got shape {tuple(target.shape)}")
        items = target.tolist()
    elif isinstance(target, (list, tuple)):
        items = list(target)
    else:
        return [_as_index(target)] * n_images
    if not items:
        raise NeuronvizError("target is an empty list: give one class per image, or None for the prediction")
    items = [None if t is None else _as_index(t) for t in items]
    if len(items) != n_images and n_images != 1:
        raise NeuronvizError(
            f"target lists {len(items)} classes for {n_images} images: give one per image, or pass one image "
            "with several classes to explain each of them"
        )
    return items


# ---------------------------------------------------------------------------------------------
# the mask and the blend


def _mask_map(w: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """(B, h, w) min-max normalised ``sum_i w_i f_i``, at the mask layer's resolution."""
    m = torch.einsum("bc,bchw->bhw", w, feats)
    lo = m.amin(dim=(1, 2), keepdim=True)
    hi = m.amax(dim=(1, 2), keepdim=True)
    return (m - lo) / (hi - lo + MINMAX_EPS)


def make_mask(w: torch.Tensor, feats: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The mask of channel weights ``w`` over mask-layer features ``feats``, at input size.

    Combine, normalise, then upsample, in the paper's order: ``m = sum_i w_i f_i`` is min-max
    normalised per image, ``(m - min) / (max - min + 1e-8)`` (a constant map gives 0), and
    resized bilinearly (``align_corners=False``) to ``size``. Bilinear interpolation of values
    in [0, 1] stays in [0, 1].

    Parameters
    ----------
    w : torch.Tensor
        (B, C) channel weights.
    feats : torch.Tensor
        (B, C, h, w) mask-layer activations on the original images.
    size : tuple of int
        (H, W) of the input.

    Returns
    -------
    torch.Tensor
        (B, 1, H, W).
    """
    m = _mask_map(w, feats).unsqueeze(1)
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m, size=size, mode="bilinear", align_corners=False)


def make_background(x: torch.Tensor, background: Background, seed: int = 0) -> torch.Tensor:
    """The background ``p`` that replaces the masked-out pixels.

    Parameters
    ----------
    x : torch.Tensor
        (B, C, H, W) images, normalised as the model expects.
    background : {"blur", "mean", "noise"} or torch.Tensor
        ``"blur"``: ``x`` blurred with a Gaussian of sigma ``11 * W / 224`` px (the paper's,
        11 px at 224; blurring commutes with the per-channel normalisation, so blurring the
        normalised image equals normalising the blurred photo up to border handling).
        ``"mean"``: each image's mean colour. ``"noise"``: Gaussian noise with each image's
        per-channel mean and standard deviation; the noise field depends only on ``seed`` and the
        image size, so an image gets the same background alone or in a batch. A tensor: used as
        is, broadcast to ``x``.
    seed : int
        Seed of the ``"noise"`` background.

    Returns
    -------
    torch.Tensor
        Broadcastable to ``x``, on its device and dtype.
    """
    if isinstance(background, torch.Tensor):
        try:
            torch.broadcast_shapes(background.shape, x.shape)
        except RuntimeError:
            raise NeuronvizError(
                f"background of shape {tuple(background.shape)} does not broadcast to the images' "
                f"{tuple(x.shape)}"
            ) from None
        if not torch.is_floating_point(background) or not torch.isfinite(background).all():
            raise NeuronvizError("a background tensor must be float with finite values")
        return background.to(device=x.device, dtype=x.dtype).clone()  # never the caller's own tensor
    if background == "blur":
        return gaussian_blur(x, BLUR_SIGMA_AT_224 * x.shape[-1] / 224)
    if background == "mean":
        return x.mean(dim=(2, 3), keepdim=True)
    if background == "noise":
        g = torch.Generator(device=x.device)
        g.manual_seed(int(seed))
        eps = torch.randn((1,) + tuple(x.shape[1:]), generator=g, device=x.device, dtype=x.dtype)
        return x.mean(dim=(2, 3), keepdim=True) + x.std(dim=(2, 3), keepdim=True) * eps
    raise NeuronvizError(f"background must be one of {BACKGROUNDS} or a tensor, got {background!r}")


def blend(x: torch.Tensor, mask: torch.Tensor, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Phi(x, m) = x m + p (1 - m)`` and its complement ``x (1 - m) + p m``."""
    keep = x * mask + background * (1 - mask)
    drop = x * (1 - mask) + background * mask
    return keep, drop


# ---------------------------------------------------------------------------------------------
# the method


@runs_model
@reports_progress(
    lambda a: is_long(
        images_of(a.arguments["x"]),
        ((a.arguments["stage1_steps"] or 10) + (a.arguments["stage2_steps"] or 70)) * BACKWARD_COST,
    ),
    unit="step",
)
def guided_feature_inversion(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: TargetsSpec = None,
    mask_layer: str | None = None,
    feature_layer: str | None = None,
    stage1_steps: int | None = None,
    stage2_steps: int | None = None,
    lr: float = 0.01,
    gamma: float | None = None,
    lam: float = 1.0,
    delta: float | None = None,
    background: Background = "blur",
    loss: str | None = None,
    recipe: str = "paper",
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: ProgressArg = None,
) -> InversionResult:
    """Explain classes with guided feature inversion: a mask per image from channel weights.

    The mask of image b is ``m_b = upsample(minmax(sum_i w_bi f_i^{l1}(x_b)))`` with
    ``f^{l1}(x_b)`` computed once on the original image (no gradient through the network);
    only the weights ``w`` (B, C) are optimised, with Adam, and clipped to ``w >= 0`` after every
    step (so ``||w||_1 = sum_i w_i``, whose gradient is the penalty weight even at 0). With
    ``Phi(x, m) = x m + p (1 - m)`` and ``Phi_bg(x, m) = x (1 - m) + p m``:

    * stage 1 (``stage1_steps``, from ``w = 0.1``, learning rate ``lr``):
      ``||f^{l0}(Phi(x, m)) - f^{l0}(x)||^2 + gamma ||w||_1``;
    * stage 2 (``stage2_steps``, from the stage-1 weights, learning rate ``lr`` halved every 10
      steps): ``-p_c(Phi(x, m)) + lam p_c(Phi_bg(x, m)) + delta ||w||_1``, ``p_c`` the softmax
      probability of the target class. Stage 2 uses a fresh Adam: the stage-1 moment estimates
      are of a loss of a different scale and would set the first stage-2 steps' sizes wrongly.

    All images are optimised together in one batch. Each image's loss depends only on its own
    weights, and the per-image losses are summed, so gradients do not mix; Adam acts element by
    element, so one optimiser over the (B, C) weights runs B independent problems, and a batch
    gives the masks of one call per image (to float rounding). In stage 2 the masked and the
    complement images go through the model as one batch of 2B.

    The model is run in eval mode with its parameters frozen; afterwards parameters, their
    ``requires_grad`` flags and ``.grad``, the modes, buffers and device are as before and no
    hook remains, whether the call returns or raises (``KeyboardInterrupt`` included).

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning (N, classes) scores.
    x : torch.Tensor
        (B, C, H, W) or (C, H, W) images, normalised as the model expects.
    target : None, int, sequence of int, or callable
        ``None``: the class predicted on each image; an int: that class for every image; a
        list, 1-D tensor or array: one class per image (``None`` items: predicted). One image
        with a list of K classes is explained once per class (``x`` is repeated K times).
        A callable maps the model output of a batch (whatever the model returns: a tensor,
        tuple, dict or ``ModelOutput``) to one value per image, (N,), which takes the place of
        the class probability ``p_c`` in stage 2 (``target`` of the result is then ``None``
        per image, ``probability`` the callable's value). Class targets read the model's
        (N, classes) scores: the output tensor, its ``logits``, or its first tensor.
    mask_layer : str, optional
        ``l1``, whose channels make up the mask; its output must be (B, C, h, w). Default: see
        :func:`default_inversion_layers`; an unknown architecture without layers raises an error
        listing candidates. When only one of ``mask_layer`` / ``feature_layer`` is given for an
        unknown architecture, the other is the same layer (the paper's AlexNet setting).
    feature_layer : str, optional
        ``l0``, whose representation stage 1 inverts (any shape).
    stage1_steps, stage2_steps : int, optional
        Adam steps of each stage (10 and 70 in the paper, 11 and 69 with ``recipe="authors"``);
        0 skips a stage.
    lr : float
        Learning rate (stage 2 starts at it and halves every 10 steps).
    gamma : float, optional
        Weight of ``||w||_1`` in stage 1 (10, the paper's); with ``recipe="authors"`` of
        ``sum w^2`` (5).
    lam : float
        Weight of the complement's probability in stage 2.
    delta : float, optional
        Weight of ``||w||_1`` in stage 2. Default: :func:`default_inversion_delta`, the
        paper's 1 except 0.01 for the default model (the paper uses 10 for the VOC07 pointing
        game).
    background : {"blur", "mean", "noise"} or torch.Tensor
        What replaces removed pixels; see :func:`make_background`.
    loss : {"paper", "relative"}, optional
        ``"relative"`` divides the stage-1 inversion term of each image by ``||f^{l0}(x)||^2``,
        as the authors' code does; the raw squared error is often orders of magnitude larger
        than ``gamma ||w||_1``. Default ``"paper"``; ``recipe="authors"`` is always relative.
    recipe : {"paper", "authors"}
        ``"paper"``: the method as the paper describes it. ``"authors"``: the loop of the
        authors' public code (``mndu/guided-feature-inversion``), which differs as follows
        (``delta`` there defaults to 2, the weight of ``sum w^2`` in stage 2; ``lr`` and
        ``lam`` are the same):

        ========================  ==============================  ==================================
        what                      ``recipe="paper"`` (default)    ``recipe="authors"``
        ========================  ==============================  ==================================
        layers, when not given    ``l1`` conv5_4 + ReLU, ``l0``   ``l1 = l0 =`` the default ``l0``
                                  pool5 on VGG (see               (pool5 on VGG, ``features.36``
                                  :func:`default_inversion_       for VGG-19)
                                  layers`)
        penalties                 ``10 ||w||_1``, ``delta         ``5 sum w^2``, ``2 sum w^2``
                                  ||w||_1`` (delta 1)
        stage-1 loss              raw squared error (or           divided by ``||f^{l0}(x)||^2``
                                  ``loss="relative"``)
        steps                     10 + 70, a fresh Adam for       11 + 69 in one Adam
                                  stage 2
        learning rate             halved every 10 stage-2 steps   halved after every 10th step
                                                                  from the start
        weights                   clipped to ``>= 0``             clamped to [0, 1e5]
        mask                      ``minmax`` at the layer's       upsampled first
                                  resolution (1e-8 added to the   (``align_corners=True``), then
                                  range), then upsampled          ``(m - min) / max``
                                  (``align_corners=False``)
        ``"blur"`` background     sigma ``11 W / 224`` on the     the photo blurred at full size
                                  input                           (PIL radius 11): sigma
                                                                  ``6.57 W / 224`` on the input
                                                                  (11 px on a 375-px ImageNet
                                                                  photo); exact:
                                                                  ``background=authors_background(
                                                                  photo)``
        ========================  ==============================  ==================================

        A callable ``target`` is not supported there.
    seed : int
        Seed of the ``"noise"`` background (nothing else is random).
    device : str or torch.device, optional
        Where to compute; None is the model's device. A model elsewhere is moved for the call
        and back.
    progress : bool, callable or None
        ``True``: a progress bar (:mod:`neuronviz.core.progress`); ``False``: none; None (the
        default): a bar when the images times the steps reach 200 forward passes, a forward
        and backward pass counting 3 (so with the default 80 steps, always). A callable is
        called as ``progress(done, total)`` after every Adam step (``total = stage1_steps +
        stage2_steps``). An exception it raises (a cancelled job, ``KeyboardInterrupt``) stops
        the call; the model is restored as after any other error.

    Returns
    -------
    InversionResult
        Detached CPU tensors.

    Raises
    ------
    NeuronvizError
        Bad images (shape, dtype, NaN), a class out of range, unknown layer (closest names
        suggested), a mask layer whose output is not 4-D or is a 1x1 map, negative steps,
        ``lr <= 0``, negative weights, unknown ``background`` or ``loss``, no default layers for
        the architecture, a loss that became NaN or infinite.
    NeuronvizTypeError
        ``target`` of an unsupported type (also a ``TypeError``).

    Warns
    -----
    NeuronvizWarning
        A mask came out constant (every weight clipped to 0, e.g. with a far too large ``lr``).

    Examples
    --------
    >>> model = nv.default_model()  # doctest: +SKIP
    >>> x = nv.preprocess(nv.sample_image("cat"))  # doctest: +SKIP
    >>> result = guided_feature_inversion(model, x)  # doctest: +SKIP
    >>> result.mask.shape  # doctest: +SKIP
    torch.Size([1, 224, 224])
    """
    recipe = check_recipe(recipe)
    given_layers = (mask_layer, feature_layer)
    stage1_steps, stage2_steps, gamma, loss = recipe_defaults(recipe, stage1_steps, stage2_steps, gamma, loss)
    if recipe == "authors" and delta is None:
        delta = AUTHORS["delta"]
    steps1 = _check_steps(stage1_steps, "stage1_steps")
    steps2 = _check_steps(stage2_steps, "stage2_steps")
    lr = _check_number(lr, "lr", positive=True)
    gamma = _check_number(gamma, "gamma")
    lam = _check_number(lam, "lam")
    delta = _check_number(default_inversion_delta(model) if delta is None else delta, "delta")
    if loss not in LOSSES:
        raise NeuronvizError(f"loss must be one of {LOSSES}, got {loss!r}")
    if not isinstance(background, torch.Tensor) and background not in BACKGROUNDS:
        raise NeuronvizError(f"background must be one of {BACKGROUNDS} or a tensor, got {background!r}")
    if isinstance(x, torch.Tensor) and x.dim() == 3:
        x = x.unsqueeze(0)
    x = check_batch(x, model, what="x")
    assert not isinstance(progress, bool)  # reports_progress made True/False a callback or None
    wanted = _target_list(target, x.shape[0])
    score_fn = resolve_target(wanted) if callable(wanted) else None  # a callable of the model output
    targets: list[int | None] = [None] * x.shape[0] if callable(wanted) else wanted
    if x.shape[0] == 1 and len(targets) > 1:
        x = x.expand(len(targets), *x.shape[1:])

    if mask_layer is None or feature_layer is None:
        # a probe for an unknown architecture only when neither layer is given
        defaults = default_inversion_layers(model, x if mask_layer is None and feature_layer is None else None)
        if defaults is None:
            if mask_layer is None and feature_layer is None:
                raise _unknown_architecture(model, x)
            given = mask_layer if mask_layer is not None else feature_layer
            assert given is not None
            defaults = (given, given)  # the one given serves as both
        mask_layer = mask_layer if mask_layer is not None else defaults[0]
        feature_layer = feature_layer if feature_layer is not None else defaults[1]
    resolve_layers(model, [mask_layer, feature_layer])  # unknown names fail before any forward pass
    dev = resolve_device(model, device)
    if recipe == "authors":
        return _authors_recipe(model, x, target, targets, given_layers, mask_layer, feature_layer, dev,
                               steps1=steps1, steps2=steps2, lr=lr, gamma=gamma, lam=lam, delta=delta,
                               background=background, seed=seed, progress=progress)

    with preserved_state(model), on_device(model, dev), torch.inference_mode(False):
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)  # gradients flow to w only; no .grad is written
        x = x.to(dev).clone()  # a normal tensor even when called under inference mode
        b, _, height, width = x.shape

        # the original images, once: mask-layer features, l0 reference, prediction
        # channels first whatever the layer's layout (a Swin stage, ViT tokens on their grid)
        with torch.no_grad(), ActivationCapture(model, [mask_layer, feature_layer], layout="auto") as rec:
            raw = forward_checked(model, x)
            clean = check_class_output(raw) if score_fn is None else None
            feats = rec[mask_layer]
            ref = rec[feature_layer]
        if feats.dim() != 4:
            raise NeuronvizError(
                f"mask_layer {mask_layer!r} gives an output of shape {tuple(feats.shape)}; the mask needs a "
                "spatial map (B, C, h, w): choose a convolutional layer"
            )
        if feats.shape[2] * feats.shape[3] < 2:
            raise NeuronvizError(
                f"mask_layer {mask_layer!r} gives a {feats.shape[2]}x{feats.shape[3]} map (shape "
                f"{tuple(feats.shape)}), so every mask would be constant; choose a layer with a spatial map of "
                "at least 2x2, an earlier convolution (nv.layer_summary(model, x) lists the shapes)"
            )
        classes: list[int | None]
        if score_fn is None:
            assert clean is not None  # the class output, checked when the target is not a callable
            classes = [resolve_target(t, "probability", predict=_row_of(clean, i)).class_index
                       for i, t in enumerate(targets)]
            c_index = torch.tensor(classes, device=dev).unsqueeze(1)
            probability = torch.softmax(clean.double(), dim=1).gather(1, c_index)[:, 0]
        else:
            classes = [None] * b
            probability = score_fn(raw).double().detach()
        ref_norm2 = ref.double().pow(2).flatten(1).sum(1)
        p = make_background(x, background, seed)

        w = torch.full((b, feats.shape[1]), W_INIT, device=dev, dtype=feats.dtype, requires_grad=True)
        losses1 = torch.zeros(b, steps1, dtype=torch.float64, device=dev)
        losses2 = torch.zeros(b, steps2, dtype=torch.float64, device=dev)

        with torch.enable_grad():
            # stage 1: guided feature inversion
            if steps1:
                opt = torch.optim.Adam([w], lr=lr)
                # the l0 recording stays attached to the graph: stage 1's gradient flows through it
                with ActivationCapture(model, feature_layer, keep_graph=True, layout="auto") as record:
                    for k in range(steps1):
                        keep, _ = blend(x, make_mask(w, feats, (height, width)), p)
                        record.forward(keep)
                        f = record[feature_layer]
                        inv = (f - ref).double().pow(2).flatten(1).sum(1)
                        if loss == "relative":
                            inv = inv / ref_norm2.clamp_min(torch.finfo(torch.float64).tiny)
                        per_image = inv + gamma * w.double().sum(1)
                        losses1[:, k] = per_image.detach()
                        opt.zero_grad(set_to_none=True)
                        per_image.sum().backward()  # independent images: the sum keeps gradients apart
                        opt.step()
                        with torch.no_grad():
                            w.clamp_(min=0)
                        if progress is not None:
                            progress(k + 1, steps1 + steps2)
                _check_finite(losses1, "stage 1")
            w1 = w.detach().clone()

            # stage 2: class-discriminative mask, fresh Adam, lr halved every 10 steps
            if steps2:
                opt = torch.optim.Adam([w], lr=lr)
                for k in range(steps2):
                    for group in opt.param_groups:
                        group["lr"] = lr * 0.5 ** (k // LR_HALVING_STEPS)
                    keep, drop = blend(x, make_mask(w, feats, (height, width)), p)
                    raw = forward_checked(model, torch.cat([keep, drop]))
                    if score_fn is None:
                        prob = torch.softmax(check_class_output(raw).double(), dim=1)
                        p_keep = prob[:b].gather(1, c_index)[:, 0]
                        p_drop = prob[b:].gather(1, c_index)[:, 0]
                    else:  # the callable's value takes the class probability's place
                        value = score_fn(raw).double()
                        p_keep, p_drop = value[:b], value[b:]
                    per_image = -p_keep + lam * p_drop + delta * w.double().sum(1)
                    losses2[:, k] = per_image.detach()
                    opt.zero_grad(set_to_none=True)
                    per_image.sum().backward()
                    opt.step()
                    with torch.no_grad():
                        w.clamp_(min=0)
                    if progress is not None:
                        progress(steps1 + k + 1, steps1 + steps2)
                _check_finite(losses2, "stage 2")

        with torch.no_grad():
            w2 = w.detach()
            inversion_mask = make_mask(w1, feats, (height, width))[:, 0]
            mask = make_mask(w2, feats, (height, width))[:, 0]
        _warn_empty(mask, inversion_mask, w1, w2, steps1, steps2, lr)

    return InversionResult(
        mask=mask.cpu(),
        inversion_mask=inversion_mask.cpu(),
        target=classes,
        probability=probability.cpu(),
        losses={"stage1": losses1.cpu(), "stage2": losses2.cpu()},
        weights=w2.cpu().clone(),
        inversion_weights=w1.cpu(),
        mask_layer=mask_layer,
        feature_layer=feature_layer,
        background="tensor" if isinstance(background, torch.Tensor) else background,
        loss=loss,
        delta=delta,
    )


def _warn_empty(mask: torch.Tensor, inversion_mask: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                steps1: int, steps2: int, lr: float) -> None:
    """Warn (:class:`NeuronvizWarning`) about masks that say nothing: all weights clipped to 0, or constant."""
    for stage, m, w, steps in (("stage 1", inversion_mask, w1, steps1), ("stage 2", mask, w2, steps2)):
        if not steps:
            continue
        flat = m.flatten(1)
        zero = (w <= 0).all(1)
        flat_map = ((flat.amax(1) - flat.amin(1)) <= 1e-6) & ~zero
        if bool(zero.any()):
            warnings.warn(
                f"the {stage} mask of image(s) {zero.nonzero().flatten().tolist()} is empty: every channel weight "
                f"was clipped to 0, so it shows nothing; lr={lr:g} may be too large (the default is 0.01) or the "
                "sparsity weight (gamma in stage 1, delta in stage 2) too strong",
                NeuronvizWarning,
                stacklevel=4,
            )
        if bool(flat_map.any()):
            warnings.warn(
                f"the {stage} mask of image(s) {flat_map.nonzero().flatten().tolist()} is constant: the weighted "
                "map of mask_layer does not vary over the image; choose another mask_layer",
                NeuronvizWarning,
                stacklevel=4,
            )


def _authors_recipe(model: nn.Module, x: torch.Tensor, target: object, targets: list, given_layers: tuple,
                    mask_layer: str, feature_layer: str, dev: torch.device, *, steps1: int, steps2: int,
                    lr: float, gamma: float, lam: float, delta: float, background: Background, seed: int,
                    progress: object) -> InversionResult:
    """``recipe="authors"``: the authors' loop (:mod:`neuronviz.methods.inversion_authors`), model restored."""
    if callable(target) and not isinstance(target, (torch.Tensor, np.ndarray)):
        raise NeuronvizError(
            "recipe='authors' explains a class's softmax probability: give a class index, not a callable"
        )
    if given_layers == (None, None):
        mask_layer = feature_layer  # the authors' code: one layer (pool5 on VGG) for both
    modules = resolve_layers(model, [mask_layer, feature_layer])
    with preserved_state(model), on_device(model, dev), torch.inference_mode(False):
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        x = x.to(dev).clone()
        _, _, height, width = x.shape
        with torch.no_grad(), ActivationCapture(model, [mask_layer, feature_layer], layout="auto") as rec:
            clean = check_class_output(forward_checked(model, x))
            feats = rec[mask_layer]
            ref = rec[feature_layer]
        if feats.dim() != 4:
            raise NeuronvizError(
                f"mask_layer {mask_layer!r} gives an output of shape {tuple(feats.shape)}; the mask needs a "
                "spatial map (B, C, h, w): choose a convolutional layer"
            )
        classes: list[int | None] = [
            resolve_target(t, "probability", predict=_row_of(clean, i)).class_index for i, t in enumerate(targets)
        ]
        c_index = torch.tensor(classes, device=dev).unsqueeze(1)
        probability = torch.softmax(clean.double(), dim=1).gather(1, c_index)[:, 0]
        if isinstance(background, str) and background == "blur":
            p = gaussian_blur(x, AUTHORS_BLUR_SIGMA_AT_224 * width / 224)
        else:
            p = make_background(x, background, seed)
        with torch.enable_grad():
            w1, w2, losses1, losses2 = run_authors_loop(
                model, modules[feature_layer], x, feats, ref, p, c_index, stage1_steps=steps1, stage2_steps=steps2,
                lr=lr, gamma=gamma, lam=lam, delta=delta, progress=progress if callable(progress) else None)
        with torch.no_grad():
            inversion_mask = authors_mask(w1, feats, (height, width))[:, 0]
            mask = authors_mask(w2, feats, (height, width))[:, 0]
    return InversionResult(
        mask=mask.cpu(),
        inversion_mask=inversion_mask.cpu(),
        target=classes,
        probability=probability.cpu(),
        losses={"stage1": losses1.cpu(), "stage2": losses2.cpu()},
        weights=w2.cpu().clone(),
        inversion_weights=w1.cpu(),
        mask_layer=mask_layer,
        feature_layer=feature_layer,
        background="tensor" if isinstance(background, torch.Tensor) else background,
        loss="relative",
        delta=delta,
        recipe="authors",
    )


def _check_finite(losses: torch.Tensor, stage: str) -> None:
    if not torch.isfinite(losses).all():
        raise NeuronvizError(
            f"the {stage} loss became NaN or infinite: the model's output or the layer's activations are not "
            "finite on masked images; try loss='relative' or a smaller lr"
        )
