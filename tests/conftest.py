"""Shared test helpers: small networks built in code and a check that a model was left untouched."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from tiny_nets import tiny_cnn  # tests/ is on sys.path: pytest inserts the folder of this conftest

os.environ.setdefault("MPLBACKEND", "Agg")


class ModelSnapshot:
    """Everything about a model that neuronviz must leave exactly as it found it."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.params = {k: v.detach().clone() for k, v in model.named_parameters()}
        self.buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        self.training = {k: m.training for k, m in model.named_modules()}
        self.requires_grad = {k: p.requires_grad for k, p in model.named_parameters()}
        self.grads = {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}
        self.devices = {k: v.device for k, v in model.state_dict().items()}

    def assert_unchanged(self) -> None:
        m = self.model
        for name, module in m.named_modules():
            hooks = [module._forward_hooks, module._forward_pre_hooks, module._backward_hooks]
            hooks += [getattr(module, "_backward_pre_hooks", {})]
            assert all(len(h) == 0 for h in hooks), f"hook left on {name or 'the model'}"
        assert {k: mod.training for k, mod in m.named_modules()} == self.training
        assert {k: p.requires_grad for k, p in m.named_parameters()} == self.requires_grad
        for k, p in m.named_parameters():
            assert torch.equal(p.detach(), self.params[k]), f"parameter {k} changed"
            before = self.grads[k]
            assert (p.grad is None) == (before is None) and (before is None or torch.equal(p.grad, before))
        for k, b in m.named_buffers():
            assert torch.equal(b, self.buffers[k]), f"buffer {k} changed"
        assert {k: v.device for k, v in m.state_dict().items()} == self.devices


@pytest.fixture
def snapshot():
    """``snapshot(model)`` records a model's state; ``.assert_unchanged()`` checks it later."""
    return ModelSnapshot


@pytest.fixture
def cnn() -> nn.Sequential:
    return tiny_cnn()
