"""A tiny network with a gate, for explorer tests that must stop a run at a known point."""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch import nn

from tiny_nets import tiny_cnn


class Gate(nn.Module):
    """Identity; while ``closed`` it signals ``entered`` and waits for ``open()`` before going on."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self.entered = threading.Event()
        self._open = threading.Event()

    def close(self) -> None:
        self.entered.clear()
        self._open.clear()
        self.closed = True

    def open(self) -> None:
        self.closed = False
        self._open.set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.closed:
            self.entered.set()
            assert self._open.wait(20), "the test never opened the gate"
        return x


def gated_cnn() -> nn.Sequential:
    """tiny_cnn (conv1: 6 x 16 x 16, conv2: 4 x 8 x 8 on a 16-pixel image, 5 classes) behind a Gate."""
    net = tiny_cnn()
    gated = nn.Sequential(OrderedDict([("gate", Gate()), *net.named_children()]))
    gated.train()
    return gated


def image(seed: int = 1, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, size, size, generator=g)
