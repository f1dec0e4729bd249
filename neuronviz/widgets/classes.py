"""The classes a view can explain, most probable first, named for ImageNet models."""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["ClassChoices"]


class ClassChoices:
    """The classes a view can explain, most probable first, named for 1000-class (ImageNet) models.

    Parameters
    ----------
    probabilities : sequence of float or torch.Tensor
        (classes,) probability of every class (on one image, or averaged over a set).
    names : sequence of str, optional
        Class names; default the ImageNet names for 1000 classes, else ``"class i"``.
    """

    def __init__(self, probabilities: Sequence[float] | torch.Tensor, names: Sequence[str] | None = None) -> None:
        probs = torch.as_tensor(probabilities, dtype=torch.float64).reshape(-1)
        self.n_classes = int(probs.numel())
        if names is None and self.n_classes == 1000:
            from ..data import imagenet_categories  # the 1000 ImageNet names, bundled

            names = imagenet_categories()
        self.names = list(names) if names is not None else None
        self.probabilities = {i: float(p) for i, p in enumerate(probs.tolist())}
        self.ranked = sorted(self.probabilities, key=lambda c: (-self.probabilities[c], c))

    @property
    def predicted(self) -> int:
        """The most probable class."""
        return self.ranked[0]

    def name(self, c: int | None) -> str:
        """``"Egyptian cat (285)"`` for ImageNet, ``"class 3"`` otherwise, for class ``c``."""
        if c is None:
            return "a callable target"
        if self.names is not None:
            return f"{self.names[c]} ({c})"
        return f"class {c}"

    def options(self, extra: Sequence[int] = (), k: int = 5) -> list[tuple[str, int]]:
        """Dropdown options: the ``k`` most probable classes, then ``extra`` ones, with their probabilities."""
        chosen = list(dict.fromkeys(self.ranked[:k] + [int(c) for c in extra]))
        return [(f"{self.name(c)}  p={self.probabilities[c]:.3f}", c) for c in chosen]
