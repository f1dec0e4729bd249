"""Guided feature inversion with default arguments on torchvision classifiers of every family (random weights)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuronviz.methods.inversion import default_inversion_layers, guided_feature_inversion

torchvision = pytest.importorskip("torchvision")
models = torchvision.models

# (builder, input size): a few in the default run, the rest marked slow
FAST = {
    "mobilenet_v3_small": (lambda: models.mobilenet_v3_small(weights=None), 64),
    "shufflenet_v2_x0_5": (lambda: models.shufflenet_v2_x0_5(weights=None), 64),
    "squeezenet1_0": (lambda: models.squeezenet1_0(weights=None), 64),
}
SLOW = {
    "densenet121": (lambda: models.densenet121(weights=None), 64),
    "efficientnet_b0": (lambda: models.efficientnet_b0(weights=None), 64),
    "convnext_tiny": (lambda: models.convnext_tiny(weights=None), 64),
    "regnet_y_400mf": (lambda: models.regnet_y_400mf(weights=None), 64),
    "mnasnet0_5": (lambda: models.mnasnet0_5(weights=None), 64),
    "googlenet": (lambda: models.googlenet(weights=None, aux_logits=False, init_weights=False), 64),
    "inception_v3": (lambda: models.inception_v3(weights=None, aux_logits=False, init_weights=False), 96),
    "mobilenet_v2": (lambda: models.mobilenet_v2(weights=None), 64),
    "resnext50_32x4d": (lambda: models.resnext50_32x4d(weights=None), 64),
    "vgg11": (lambda: models.vgg11(weights=None), 64),
    "swin_t": (lambda: models.swin_t(weights=None), 64),
    "maxvit_t": (lambda: models.maxvit_t(weights=None), 224),
}
CASES = [pytest.param(n, *v, id=n) for n, v in FAST.items()]
CASES += [pytest.param(n, *v, id=n, marks=pytest.mark.slow) for n, v in SLOW.items()]


@pytest.mark.parametrize("name, build, size", CASES)
def test_runs_with_default_arguments_and_leaves_the_model_untouched(name, build, size, snapshot):
    torch.manual_seed(0)
    model = build()
    model.train()  # the mode must come back as it was
    x = torch.randn(1, 3, size, size)
    snap = snapshot(model)
    result = guided_feature_inversion(model, x, stage1_steps=2, stage2_steps=2)
    snap.assert_unchanged()
    assert result.mask.shape == (1, size, size)
    assert torch.isfinite(result.mask).all() and (result.mask >= 0).all() and (result.mask <= 1).all()
    assert (result.mask_layer, result.feature_layer) == default_inversion_layers(model, x)
    snap.assert_unchanged()


def test_the_mask_layer_is_post_activation_and_the_feature_layer_the_last_spatial_map():
    torch.manual_seed(0)
    model = models.mobilenet_v3_small(weights=None)
    x = torch.randn(1, 3, 64, 64)
    l1, l0 = default_inversion_layers(model, x)
    modules = dict(model.named_modules())
    assert isinstance(modules[l1], nn.Hardswish) and l1 == "features.12.2"  # after the last conv
    assert l0 == l1  # the last spatial map before the global pool (``features`` returns it too)
    assert default_inversion_layers(model) is None  # without a probe input: unknown


def test_a_network_without_a_spatial_map_has_no_default():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    assert default_inversion_layers(net, torch.rand(1, 3, 8, 8)) is None
