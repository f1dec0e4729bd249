"""A small CNN for the 8x8 UCI digits, with weights shipped in the package."""

from __future__ import annotations

from importlib import resources

import torch
from torch import nn

__all__ = ["DigitsCNN", "digits_model", "WEIGHTS_FILE"]

WEIGHTS_FILE = "digits_cnn.pt"


class DigitsCNN(nn.Module):
    """Three 3x3 convolutions with ReLU, one 2x2 max-pool, and a linear classifier.

    Layers (see :func:`neuronviz.layer_summary`): ``conv1``/``relu1`` (16x8x8),
    ``conv2``/``relu2`` (32x8x8), ``pool`` (32x4x4), ``conv3``/``relu3`` (32x4x4), ``flatten``,
    ``fc`` (10 logits). Input: (N, 1, 8, 8) in [0, 1] (:func:`neuronviz.data.load_digits`).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes), for images (N, 1, 8, 8)."""
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        x = self.relu3(self.conv3(self.pool(x)))
        return self.fc(self.flatten(x))


def digits_model() -> DigitsCNN:
    """The digits CNN with its trained weights (from the package), in eval mode.

    Trained by ``scripts/train_digits.py`` on the training side of
    ``neuronviz.data.load_digits("train")``; its accuracy on ``load_digits("test")`` is
    recorded in ``benchmarks/RESULTS.md``.

    Returns
    -------
    DigitsCNN
    """
    model = DigitsCNN()
    with resources.files(__package__).joinpath(WEIGHTS_FILE).open("rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
