"""Guided feature inversion as the authors' code runs it (``recipe="authors"``).

Du, Liu, Song & Hu's public code (``mndu/guided-feature-inversion``, ``main.py``) differs from
their paper; :func:`neuronviz.guided_feature_inversion` lists the differences in a table. This
module is that loop, batched over images (each image's loss depends only on its own weights and
Adam acts element by element, so a batch gives the masks of one call per image):

* one Adam (lr 0.01) over ``stage1_steps + stage2_steps`` steps (11 + 69), its learning rate
  halved after every 10th step from the start;
* step i < ``stage1_steps``: ``||f^{l0}(Phi(x, m)) - f^{l0}(x)||^2 / ||f^{l0}(x)||^2 + gamma sum w^2``
  (gamma 5); later steps: ``-p_c(Phi(x, m)) + lam p_c(Phi_bg(x, m)) + delta sum w^2`` (lam 1,
  delta 2);
* after every step ``w`` is clamped to [0, 1e5];
* the mask is ``sum_i w_i f_i^{l1}`` upsampled bilinearly with ``align_corners=True`` to the
  input size, then ``(m - min) / max``;
* the background is the photo blurred at full size (PIL ``GaussianBlur(radius=11)``) and then
  preprocessed: :func:`authors_background` does exactly that from a photo; for a tensor input
  the ``"blur"`` background uses sigma ``AUTHORS_BLUR_SIGMA_AT_224 * W / 224``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.capture import ActivationCapture
from ..core.errors import NeuronvizError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["AUTHORS", "AUTHORS_BLUR_SIGMA_AT_224", "authors_mask", "authors_background", "run_authors_loop"]

#: The authors' settings: steps of each part of the one loop, the L2^2 penalty weights, the
#: stage-2 complement weight, the weight clamp and the learning-rate halving period.
AUTHORS = {"stage1_steps": 11, "stage2_steps": 69, "gamma": 5.0, "delta": 2.0, "lam": 1.0, "w_max": 1e5,
           "halving": 10}
#: Their blur (radius 11 on the full-size photo) seen at 224 px, for an ImageNet validation photo
#: of the typical 375 px short side: 11 * 224 / 375.
AUTHORS_BLUR_SIGMA_AT_224 = 11.0 * 224 / 375


def authors_mask(w: torch.Tensor, feats: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The authors' mask: combine, upsample (bilinear, ``align_corners=True``), then ``(m - min) / max``.

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
        (B, 1, H, W); in [0, 1] for a non-negative map. A map whose maximum is 0 gives 0
        (the authors' code would divide by 0).
    """
    m = torch.einsum("bc,bchw->bhw", w, feats).unsqueeze(1)
    m = F.interpolate(m, size=size, mode="bilinear", align_corners=True)
    lo = m.amin(dim=(2, 3), keepdim=True)
    hi = m.amax(dim=(2, 3), keepdim=True)
    return (m - lo) / torch.where(hi == 0, torch.ones_like(hi), hi)


def authors_background(photo: Image.Image | str | os.PathLike[str], size: int = 224) -> torch.Tensor:
    """The authors' background: the photo blurred at full size (PIL radius 11), then preprocessed.

    Parameters
    ----------
    photo : PIL.Image.Image, str or path
        The photo before any resizing (a path is opened).
    size : int
        The side the preprocessing resizes and crops to.

    Returns
    -------
    torch.Tensor
        (1, 3, size, size), normalised as :func:`neuronviz.preprocess` normalises.
    """
    from PIL import Image, ImageFilter

    from ..data import preprocess

    image = photo if isinstance(photo, Image.Image) else Image.open(photo)
    return preprocess(image.convert("RGB").filter(ImageFilter.GaussianBlur(radius=11)), size=size)


def run_authors_loop(
    model: nn.Module,
    feature_module: nn.Module,
    x: torch.Tensor,
    feats: torch.Tensor,
    ref: torch.Tensor,
    background: torch.Tensor,
    c_index: torch.Tensor,
    *,
    stage1_steps: int,
    stage2_steps: int,
    lr: float,
    gamma: float,
    lam: float,
    delta: float,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The authors' optimisation loop; the model is already in eval mode with frozen parameters.

    Returns
    -------
    tuple of torch.Tensor
        ``(w after the stage-1 steps, final w, stage-1 losses (B, stage1_steps), stage-2 losses
        (B, stage2_steps))``, losses float64 at the weights before each step.
    """
    b, _, height, width = x.shape
    w = torch.full((b, feats.shape[1]), 0.1, device=x.device, dtype=feats.dtype, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr)
    total = stage1_steps + stage2_steps
    losses1 = torch.zeros(b, stage1_steps, dtype=torch.float64, device=x.device)
    losses2 = torch.zeros(b, stage2_steps, dtype=torch.float64, device=x.device)
    ref_norm2 = ref.double().pow(2).flatten(1).sum(1).clamp_min(torch.finfo(torch.float64).tiny)
    layer = next(name for name, m in model.named_modules() if m is feature_module)

    w1 = w.detach().clone()
    # the feature layer's recording (a copy) stays attached to the graph: stage 1's gradient flows through it
    with ActivationCapture(model, layer, keep_graph=True, layout="auto") as record:
        for i in range(total):
            mask = authors_mask(w, feats, (height, width))
            keep = x * mask + background * (1 - mask)
            if i < stage1_steps:
                record.forward(keep)
                f = record[layer]
                per_image = (f - ref).double().pow(2).flatten(1).sum(1) / ref_norm2 + gamma * w.double().pow(2).sum(1)
                losses1[:, i] = per_image.detach()
            else:
                drop = x * (1 - mask) + background * mask
                out = record.forward(torch.cat([keep, drop]))
                record.clear()
                prob = torch.softmax(out.double(), dim=1)
                p_keep = prob[:b].gather(1, c_index)[:, 0]
                p_drop = prob[b:].gather(1, c_index)[:, 0]
                per_image = -p_keep + lam * p_drop + delta * w.double().pow(2).sum(1)
                losses2[:, i - stage1_steps] = per_image.detach()
            opt.zero_grad(set_to_none=True)
            per_image.sum().backward()
            opt.step()
            with torch.no_grad():
                w.clamp_(0, AUTHORS["w_max"])
            if (i + 1) % AUTHORS["halving"] == 0:
                for group in opt.param_groups:
                    group["lr"] *= 0.5
            if i + 1 == stage1_steps:
                w1 = w.detach().clone()
            if progress is not None:
                progress(i + 1, total)
    for losses, stage in ((losses1, "stage 1"), (losses2, "stage 2")):
        if not torch.isfinite(losses).all():
            raise NeuronvizError(
                f"the {stage} loss became NaN or infinite: the model's output or the layer's activations are "
                "not finite on masked images; try a smaller lr"
            )
    return w1, w.detach(), losses1, losses2


def check_recipe(recipe: object) -> str:
    """``recipe`` must be ``"paper"`` or ``"authors"``."""
    if recipe not in ("paper", "authors"):
        raise NeuronvizError(f"recipe must be 'paper' or 'authors', got {recipe!r}")
    return recipe  # type: ignore[return-value]


def recipe_defaults(recipe: str, stage1_steps: int | None, stage2_steps: int | None, gamma: float | None,
                    loss: str | None) -> tuple[int, int, float, str]:
    """Steps, stage-1 penalty weight and stage-1 loss left as None, filled in by the recipe."""
    fill: tuple[int, int, float, str]
    if recipe == "authors":
        fill = (int(AUTHORS["stage1_steps"]), int(AUTHORS["stage2_steps"]), float(AUTHORS["gamma"]), "relative")
    else:
        fill = (10, 70, 10.0, "paper")
    s1 = fill[0] if stage1_steps is None else stage1_steps
    s2 = fill[1] if stage2_steps is None else stage2_steps
    g = fill[2] if gamma is None else gamma
    lo = fill[3] if loss is None else loss
    if recipe == "authors" and lo != "relative":
        raise NeuronvizError("recipe='authors' uses the authors' relative stage-1 loss; leave loss=None")
    return s1, s2, g, lo
