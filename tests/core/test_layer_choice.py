"""Default layers: post-activation maps by module type, by a probe forward, for transformers, and fallbacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_nets import tiny_cnn
from torch import nn

import neuronviz as nv
from neuronviz.core.capture import LayerSummary
from neuronviz.core.errors import NeuronvizError
from neuronviz.core.layer_choice import (
    EFFICIENTNET_LITE0_LAYERS,
    EFFICIENTNET_LITE0_PCACE_LAYERS,
    activation_layers,
    default_layers,
    pcace_default_layers,
)


def summary_of(model, x):
    return nv.layer_summary(model, x)


class FunctionalNet(nn.Module):
    """Activations as functional calls: no activation module anywhere."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(5, 6, 3, padding=1)  # its output is not rectified
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(self.conv3(x).mean((2, 3)))


class BasicConv(nn.Module):
    """conv -> bn -> F.relu inside a block, as torchvision's GoogLeNet/Inception BasicConv2d."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class BlockNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = BasicConv(3, 4)
        self.b = BasicConv(4, 6, stride=2)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(self.b(self.a(x)).mean((2, 3)))


class SharedReluBlock(nn.Module):
    """One ReLU module called twice, as in torchvision's ResNet blocks: the ReLU cannot be hooked."""

    def __init__(self, c, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))))


class SharedReluNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block1 = SharedReluBlock(4)
        self.block2 = SharedReluBlock(4, stride=2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.block2(self.block1(self.stem(x))).mean((2, 3)))


def test_activation_modules_after_convolutions_are_chosen_one_per_resolution():
    net, x = tiny_cnn(), torch.rand(1, 3, 12, 12)
    summary = summary_of(net, x)
    assert activation_layers(net, summary) == ["relu1", "relu2"]
    assert default_layers(net, summary) == ["relu1", "relu2"]  # 12x12 and 6x6
    assert default_layers(net, summary, k=1) == ["relu2"]


def test_an_activation_that_does_not_follow_a_convolution_is_not_chosen():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Unflatten(1, (4, 10, 10)), nn.ReLU(),
                        nn.Flatten(), nn.Linear(400, 2))
    x = torch.rand(1, 3, 12, 12)
    assert activation_layers(net, summary_of(net, x)) == ["1"]


def test_without_a_probe_functional_activations_fall_back_to_the_last_spatial_convolutions():
    net, x = FunctionalNet(), torch.rand(1, 3, 12, 12)
    assert default_layers(net, summary_of(net, x)) == ["conv2", "conv3"]


def test_a_probe_finds_the_convolutions_whose_output_is_then_rectified(snapshot):
    net, x = FunctionalNet(), torch.rand(1, 3, 12, 12)
    net.train()
    snap = snapshot(net)
    summary = summary_of(net, x)
    assert activation_layers(net, summary, x) == ["conv1", "conv2"]  # not conv3: used as it is
    assert default_layers(net, summary, x=x) == ["conv1", "conv2"]
    snap.assert_unchanged()


def test_a_block_that_rectifies_functionally_is_chosen_for_its_output():
    net, x = BlockNet(), torch.rand(1, 3, 12, 12)
    assert default_layers(net, summary_of(net, x), x=x) == ["a", "b"]


def test_blocks_ending_with_a_shared_relu_are_chosen():
    net, x = SharedReluNet(), torch.rand(1, 3, 12, 12)
    summary = summary_of(net, x)
    assert "block1.relu" not in summary.names()  # runs twice: not capturable
    assert default_layers(net, summary, x=x) == ["block1", "block2"]


def test_a_container_and_its_last_activation_count_once():
    torch.manual_seed(0)
    unit = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    net = nn.Sequential(unit, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    x = torch.rand(1, 3, 8, 8)
    assert activation_layers(net, summary_of(net, x), x) == ["0.2"]


def test_chosen_layers_are_scorable_and_fewer_when_the_model_has_fewer():
    net, x = tiny_cnn(), torch.rand(1, 3, 12, 12)
    layers = default_layers(net, summary_of(net, x), k=5)
    assert layers == ["relu1", "relu2"]
    nv.score_neurons(net, x, layers, n_samples=4)


def test_the_fallback_ends_with_the_last_layer_and_no_layer_raises():
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    x = torch.rand(1, 4)
    assert default_layers(net, summary_of(net, x)) == ["0", "1"]
    with pytest.raises(NeuronvizError, match="no layer"):
        default_layers(net, LayerSummary())


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "2"])
def test_k_must_be_a_positive_integer(k):
    net, x = tiny_cnn(), torch.rand(1, 3, 12, 12)
    with pytest.raises(NeuronvizError, match="k must be"):
        default_layers(net, summary_of(net, x), k=k)


def test_default_model_layers_are_the_measured_post_activation_maps():
    model = nv.default_model()
    x = nv.preprocess(nv.sample_image("cat"))
    summary = summary_of(model, x)
    assert default_layers(model, summary) == list(EFFICIENTNET_LITE0_LAYERS)
    assert pcace_default_layers(model, summary) == list(EFFICIENTNET_LITE0_PCACE_LAYERS)
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], nn.ReLU6) for n in EFFICIENTNET_LITE0_LAYERS + EFFICIENTNET_LITE0_PCACE_LAYERS)
    # the general rule on the same model also gives post-activation maps, one per resolution
    general = default_layers(model, summary, k=3)
    assert all(isinstance(modules[n], nn.ReLU6) for n in general)
    shapes = {i.name: i.shape for i in summary}
    assert len({shapes[n][1:] for n in general}) == 3


torchvision = pytest.importorskip("torchvision")


def test_resnet18_gets_its_rectified_block_outputs(snapshot):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    x = torch.randn(1, 3, 64, 64)
    snap = snapshot(model)
    summary = summary_of(model, x)
    assert default_layers(model, summary, x=x) == ["layer3.1", "layer4.1"]
    snap.assert_unchanged()


def test_mobilenet_v3_gets_activation_modules():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None)
    x = torch.randn(1, 3, 64, 64)
    layers = default_layers(model, summary_of(model, x))
    modules = dict(model.named_modules())
    assert len(layers) == 2 and all(isinstance(modules[n], (nn.ReLU, nn.Hardswish)) for n in layers)


@pytest.mark.slow
def test_swin_gets_its_last_stages():
    torch.manual_seed(0)
    model = torchvision.models.swin_t(weights=None)
    x = torch.randn(1, 3, 64, 64)
    assert default_layers(model, summary_of(model, x)) == ["features.5", "features.7"]


@pytest.mark.slow
def test_vit_gets_late_encoder_blocks_before_the_last():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, image_size=32)
    x = torch.randn(1, 3, 32, 32)
    assert default_layers(model, summary_of(model, x)) == ["encoder.layers.encoder_layer_9",
                                                          "encoder.layers.encoder_layer_10"]


def test_the_command_line_default_is_the_default_models_pair():
    from neuronviz.__main__ import _DEFAULT_LAYERS

    assert _DEFAULT_LAYERS == list(EFFICIENTNET_LITE0_LAYERS)
