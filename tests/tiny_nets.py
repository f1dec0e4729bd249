"""Small networks built in code, shared by the tests.

Imported as ``from tiny_nets import ...`` (not from ``conftest``: with more than one conftest.py
in the tree the name ``conftest`` means whichever was loaded last).
"""

from __future__ import annotations

import torch
from torch import nn


def tiny_cnn(num_classes: int = 5, seed: int = 0) -> nn.Sequential:
    """A small random CNN with named stages, in train mode (so tests see the mode restored)."""
    torch.manual_seed(seed)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 6, 3, padding=1))
    net.add_module("relu1", nn.ReLU())
    net.add_module("conv2", nn.Conv2d(6, 4, 3, stride=2, padding=1))
    net.add_module("bn2", nn.BatchNorm2d(4))
    net.add_module("relu2", nn.ReLU())
    net.add_module("drop", nn.Dropout(0.5))
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(4, num_classes))
    with torch.no_grad():  # non-trivial running statistics so eval and train differ
        net.bn2.running_mean.uniform_(-0.2, 0.2)
        net.bn2.running_var.uniform_(0.5, 2.0)
    net.train()
    return net
