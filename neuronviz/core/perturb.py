"""Perturbation families for input resampling, sampled on the image's device and reproducible by seed.

Sample ``i`` of a perturbation depends only on ``(seed, i)``, never on the batch it is drawn in,
so changing the batch size (or backing off after an out-of-memory error) gives the same set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import NeuronvizError, NeuronvizTypeError

__all__ = [
    "Perturbation",
    "MultiplicativeGaussian",
    "AdditiveGaussian",
    "Occlusion",
    "GaussianBlur",
    "KINDS",
    "make",
]


def _generator(device: torch.device, seed: int, index: int) -> torch.Generator:
    g = torch.Generator(device=device)
    # a large odd multiplier keeps (seed, index) pairs apart
    g.manual_seed((int(seed) * 1_000_003 + int(index)) % (2**63 - 1))
    return g


class Perturbation:
    """Base class: subclasses implement :meth:`perturb_one` for one copy of the image.

    Attributes
    ----------
    first_is_original : bool
        Whether copy 0 is the unperturbed image.
    """

    first_is_original: bool = False

    def perturb_one(self, x: torch.Tensor, index: int, generator: torch.Generator) -> torch.Tensor:
        """Return copy ``index`` of ``x`` (3, H, W), drawing randomness from ``generator`` only."""
        raise NotImplementedError

    def sample(self, x: torch.Tensor, indices: range | list[int], seed: int = 0) -> torch.Tensor:
        """Draw the copies ``indices`` of the image ``x``.

        Parameters
        ----------
        x : torch.Tensor
            The image, (1, C, H, W) or (C, H, W); copies are made on its device and dtype.
        indices : range or list of int
            Which copies.
        seed : int
            Seed of the whole set.

        Returns
        -------
        torch.Tensor
            (len(indices), C, H, W).
        """
        img = x[0] if x.dim() == 4 else x
        out = torch.empty((len(indices),) + tuple(img.shape), dtype=img.dtype, device=img.device)
        for row, i in enumerate(indices):
            out[row] = self.perturb_one(img, int(i), _generator(img.device, seed, int(i)))
        return out

    @property
    def strength(self) -> float:
        """The family's main setting (noise scale, patch size, blur width)."""
        raise NotImplementedError


@dataclass
class MultiplicativeGaussian(Perturbation):
    """The input-resampling paper's scheme: ``x_i = x * (1 + eps_i)``, ``eps_i ~ N(0, (sigma_step * i)^2)``.

    Noise is i.i.d. per pixel and channel; its scale grows linearly with the copy index, so
    copy 0 is the unperturbed image.

    Parameters
    ----------
    sigma_step : float
        Growth of the noise standard deviation per copy (0.1 in the paper).
    """

    sigma_step: float = 0.1
    first_is_original = True

    def __post_init__(self) -> None:
        if not self.sigma_step >= 0:
            raise NeuronvizError(f"sigma_step must be >= 0, got {self.sigma_step}")

    def perturb_one(self, x: torch.Tensor, index: int, generator: torch.Generator) -> torch.Tensor:
        """Return copy ``index`` of ``x``: ``x * (1 + eps)`` with noise of scale ``sigma_step * index``."""
        if index == 0 or self.sigma_step == 0:
            return x
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x * (1 + eps * (self.sigma_step * index))

    @property
    def strength(self) -> float:
        """The noise growth per copy, ``sigma_step``."""
        return self.sigma_step


@dataclass
class AdditiveGaussian(Perturbation):
    """``x_i = x + eps_i`` with ``eps_i ~ N(0, sigma^2)`` per pixel; copy 0 is the unperturbed image.

    Parameters
    ----------
    sigma : float
        Noise standard deviation, in the units of the (normalised) input.
    """

    sigma: float = 0.5
    first_is_original = True

    def __post_init__(self) -> None:
        if not self.sigma >= 0:
            raise NeuronvizError(f"sigma must be >= 0, got {self.sigma}")

    def perturb_one(self, x: torch.Tensor, index: int, generator: torch.Generator) -> torch.Tensor:
        """Return copy ``index`` of ``x``: ``x`` plus Gaussian noise of standard deviation ``sigma``."""
        if index == 0:
            return x
        return x + self.sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    @property
    def strength(self) -> float:
        """The noise standard deviation, ``sigma``."""
        return self.sigma


@dataclass
class Occlusion(Perturbation):
    """Random square patches set to ``value``; copy 0 is the unperturbed image.

    Parameters
    ----------
    patch_size : int
        Side of each patch in pixels.
    n_patches : int
        Patches per copy (placed uniformly at random, may overlap).
    value : float
        Fill value in the units of the input (0 is the data-set mean after normalisation).
    """

    patch_size: int = 48
    n_patches: int = 2
    value: float = 0.0
    first_is_original = True

    def __post_init__(self) -> None:
        if self.patch_size < 1 or self.n_patches < 1:
            raise NeuronvizError(f"patch_size and n_patches must be >= 1, got {self.patch_size}, {self.n_patches}")

    def perturb_one(self, x: torch.Tensor, index: int, generator: torch.Generator) -> torch.Tensor:
        """Return copy ``index`` of ``x`` with ``n_patches`` random square patches set to ``value``."""
        if index == 0:
            return x
        h, w = x.shape[-2:]
        p = min(self.patch_size, h, w)
        out = x.clone()
        corners = torch.rand((self.n_patches, 2), generator=generator, device=x.device)
        for top, left in corners.tolist():
            t, lft = int(top * (h - p + 1)), int(left * (w - p + 1))
            out[..., t : t + p, lft : lft + p] = self.value
        return out

    @property
    def strength(self) -> float:
        """The patch side in pixels, ``patch_size``."""
        return float(self.patch_size)


@dataclass
class GaussianBlur(Perturbation):
    """Gaussian blur of a random width drawn uniformly from ``[sigma_min, sigma_max]`` pixels per copy.

    Copy 0 is the unperturbed image.

    Parameters
    ----------
    sigma_max : float
        Largest blur standard deviation, in pixels.
    sigma_min : float
        Smallest blur standard deviation, in pixels.
    """

    sigma_max: float = 4.0
    sigma_min: float = 0.5
    first_is_original = True

    def __post_init__(self) -> None:
        if not 0 <= self.sigma_min <= self.sigma_max:
            raise NeuronvizError(f"need 0 <= sigma_min <= sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def perturb_one(self, x: torch.Tensor, index: int, generator: torch.Generator) -> torch.Tensor:
        """Return copy ``index`` of ``x`` blurred with a width drawn from ``[sigma_min, sigma_max]``."""
        if index == 0:
            return x
        u = float(torch.rand((), generator=generator, device=x.device))
        sigma = self.sigma_min + u * (self.sigma_max - self.sigma_min)
        return gaussian_blur(x, sigma)

    @property
    def strength(self) -> float:
        """The largest blur standard deviation, ``sigma_max``."""
        return self.sigma_max


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur (..., C, H, W) with a separable Gaussian of ``sigma`` pixels, reflecting at the borders.

    Parameters
    ----------
    x : torch.Tensor
        Image(s), 3-D or 4-D.
    sigma : float
        Standard deviation in pixels; below 0.1 the image is returned unchanged.

    Returns
    -------
    torch.Tensor
        Same shape as ``x``.
    """
    if sigma < 0.1:
        return x
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    batched = x if x.dim() == 4 else x.unsqueeze(0)
    c = batched.shape[1]
    y = F.pad(batched, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y if x.dim() == 4 else y[0]


KINDS: dict[str, type[Perturbation]] = {
    "multiplicative": MultiplicativeGaussian,
    "additive": AdditiveGaussian,
    "occlusion": Occlusion,
    "blur": GaussianBlur,
}


def make(kind: str | Perturbation | None, **settings: float) -> Perturbation:
    """Build a perturbation from its kind name (or return an instance as is).

    Parameters
    ----------
    kind : str, Perturbation or None
        One of ``KINDS`` (``None`` is the paper's multiplicative scheme) or an instance.
    **settings
        Passed to the class.

    Returns
    -------
    Perturbation

    Raises
    ------
    ValueError
        Unknown kind name.
    TypeError
        ``kind`` is neither a name nor a :class:`Perturbation`.
    """
    if kind is None:
        return MultiplicativeGaussian(**settings)
    if isinstance(kind, Perturbation):
        return kind
    if isinstance(kind, str):
        if kind not in KINDS:
            raise NeuronvizError(f"unknown perturbation {kind!r}; choose one of {sorted(KINDS)}")
        return KINDS[kind](**settings)
    raise NeuronvizTypeError(
        f"perturbation must be a name {sorted(KINDS)} or an nv.perturb object, got {type(kind).__name__}"
    )
