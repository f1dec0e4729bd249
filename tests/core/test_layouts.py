"""Channels-last and token layers: detected, turned channels first, and scored on the right axis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import neuronviz as nv
from neuronviz.core.capture import ActivationCapture
from neuronviz.core.errors import NeuronvizError
from neuronviz.core.layouts import Layout, detect_layout, token_grid, token_maps
from neuronviz.core.perturb import make as make_perturbation

torchvision = pytest.importorskip("torchvision")


class ToChannelsLast(nn.Module):  # no known type: detected by shape alone
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


class FromChannelsLast(nn.Module):
    def forward(self, x):
        return x.permute(0, 3, 1, 2)


class ToTokens(nn.Module):
    """(N, C, H, W) -> (N, 1 + H*W, C), a class token first, as a vision transformer's tokens."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, channels))

    def forward(self, x):
        t = x.flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1)


class MeanTokens(nn.Module):
    def forward(self, t):
        return t.mean(1)


def _nets():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 7, 3, stride=2, padding=1)  # 7 channels: no grid of 7, 6 or 5 tokens
    last = nn.Sequential()
    last.add_module("conv", conv)
    last.add_module("act", nn.ReLU())
    last.add_module("nhwc", ToChannelsLast())
    last.add_module("back", FromChannelsLast())
    last.add_module("pool", nn.AdaptiveAvgPool2d(1))
    last.add_module("flat", nn.Flatten())
    last.add_module("fc", nn.Linear(7, 4))
    tokens = nn.Sequential()
    tokens.add_module("conv", conv)
    tokens.add_module("act", nn.ReLU())
    tokens.add_module("tokens", ToTokens(7))
    tokens.add_module("mean", MeanTokens())
    tokens.add_module("fc", nn.Linear(7, 4))
    return last.eval(), tokens.eval()


def _numpy_correlation(acts: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Mean over positions of |Pearson(activation, output)|, from (N, C, P) maps (the spec's formula);
    constant positions left out."""
    a = acts - acts.mean(0)
    o = out - out.mean()
    ss = (a**2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(ss > 0, (a * o[:, None, None]).sum(0) / np.sqrt(ss * (o**2).sum()), np.nan)
    return np.nanmean(np.abs(r), axis=1)


def test_channels_last_layer_is_scored_as_the_channels_first_layer_it_permutes():
    last, _ = _nets()
    x = torch.rand(1, 3, 16, 16)
    scores = nv.score_neurons(last, x, ["act", "nhwc"], n_samples=12, output="logit")
    assert scores.layouts == {"act": "channels_first", "nhwc": "channels_last"}
    assert scores.shapes["nhwc"] == scores.shapes["act"] == (7, 8, 8)
    torch.testing.assert_close(scores.correlation["nhwc"], scores.correlation["act"], rtol=0, atol=1e-9, equal_nan=True)
    torch.testing.assert_close(scores.precision["nhwc"], scores.precision["act"], rtol=1e-9, atol=0, equal_nan=True)


def test_token_layer_is_scored_on_its_patch_grid_without_the_class_token():
    _, net = _nets()
    x = torch.rand(1, 3, 16, 16)
    scores = nv.score_neurons(net, x, ["act", "tokens"], n_samples=12, output="logit")
    assert scores.layouts["tokens"] == "tokens"
    assert scores.shapes["tokens"] == (7, 8, 8)
    torch.testing.assert_close(scores.correlation["tokens"], scores.correlation["act"], rtol=0, atol=1e-9)
    with torch.no_grad(), nv.capture(net, ["act", "tokens"], layout="auto") as rec:
        net(x)
    assert torch.equal(rec["tokens"], rec["act"])  # the class token left out, the rest on the 8 x 8 grid

    # an independent reference: the spec's formula in numpy on the same copies
    pert = make_perturbation(None)
    copies = pert.sample(x, range(12), seed=0)
    with torch.no_grad(), ActivationCapture(net, "act") as rec:
        out = net(copies)[:, scores.target].double().numpy()
        acts = rec["act"].double().flatten(2).numpy()
    np.testing.assert_allclose(scores.correlation["tokens"].numpy(), _numpy_correlation(acts, out), atol=1e-6)


def test_layout_argument_overrides_the_detection():
    last, _ = _nets()
    x = torch.rand(1, 3, 16, 16)
    raw = nv.score_neurons(last, x, "nhwc", n_samples=5, output="logit", layout="channels_first")
    assert raw.shapes["nhwc"] == (8, 8, 7) and raw.layouts["nhwc"] == "channels_first"
    mapped = nv.score_neurons(last, x, ["nhwc", "act"], n_samples=5, output="logit", layout={"nhwc": "channels_last"})
    assert mapped.shapes == {"nhwc": (7, 8, 8), "act": (7, 8, 8)}


@pytest.mark.parametrize(
    "layout, match",
    [("nhwc", "layout must be one of"), ({"fc2": "tokens"}, "not recorded"), ({"flat": "tokens"}, "needs \\(N, L, D\\)"),
     ({"flat": "channels_last"}, "at least one spatial axis")],
)
def test_bad_layout_is_refused_with_the_choices(layout, match):
    last, _ = _nets()
    with pytest.raises(NeuronvizError, match=match):
        nv.score_neurons(last, torch.rand(1, 3, 16, 16), ["flat"], n_samples=3, layout=layout)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in last.modules())


def test_detection_by_shape_and_by_type():
    assert detect_layout(None, (2, 64, 16, 16), (64, 64)).kind == "channels_first"
    assert detect_layout(None, (2, 16, 16, 96), (64, 64)).kind == "channels_last"
    assert detect_layout(None, (2, 14, 12, 96), (224, 192)).kind == "channels_last"  # the image's aspect
    assert detect_layout(None, (2, 96, 14, 12), (224, 192)).kind == "channels_first"
    assert detect_layout(None, (2, 8, 8, 8), (32, 32)).kind == "channels_first"  # ambiguous: torch's convention
    assert detect_layout(nn.LayerNorm(8), (2, 8, 8, 8), (32, 32)).kind == "channels_last"  # ... unless the type says
    assert detect_layout(None, (2, 197, 768), (224, 224)) == Layout("tokens", (14, 14), 1)
    assert detect_layout(None, (2, 196, 768), (224, 224)) == Layout("tokens", (14, 14), 0)
    assert detect_layout(None, (2, 257, 1024), (224, 224)) == Layout("tokens", (16, 16), 1)  # 1024 = 32 x 32 too
    assert detect_layout(None, (2, 64, 50), (32, 32)).kind == "channels_first"  # (C, L): L is no grid
    assert detect_layout(None, (2, 64, 12)).kind == "tokens"  # 64 = 8 x 8 tokens of 12 features
    assert detect_layout(nn.Conv1d(3, 64, 1), (2, 64, 64)).kind == "channels_first"


def test_token_grid_finds_the_class_token_and_the_images_aspect():
    assert token_grid(5) == (1, (2, 2))
    assert token_grid(4) == (0, (2, 2))
    assert token_grid(198, (224, 224)) == (2, (14, 14))  # class and distillation tokens
    assert token_grid(1 + 14 * 7, (224, 112)) == (1, (14, 7))
    assert token_grid(7) is None


def test_token_maps_lays_tokens_on_the_grid():
    tokens = torch.arange(5 * 3, dtype=torch.float32).reshape(5, 3)  # class token + a 2x2 grid, 3 features
    maps = token_maps(tokens)
    assert maps.shape == (3, 2, 2)
    assert torch.equal(maps[:, 0, 1], tokens[2]) and torch.equal(maps[:, 1, 0], tokens[3])
    assert token_maps(tokens.unsqueeze(0).repeat(2, 1, 1)).shape == (2, 3, 2, 2)
    with pytest.raises(NeuronvizError, match="no patch grid"):
        token_maps(torch.zeros(7, 3))


def _small_vit():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=24, mlp_dim=48,
                            num_classes=5).eval()
    nn.init.normal_(net.heads.head.weight)  # torchvision starts the head at 0: every class score would be equal
    return net


def _small_swin():
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[4, 4],
                           num_classes=5).eval()


def test_torchvision_vit_encoder_layers_are_tokens_on_the_patch_grid():
    net = _small_vit()
    x = torch.randn(1, 3, 32, 32)
    info = {r.name: r for r in nv.layer_summary(net, x)}
    assert info["conv_proj"].layout == "channels_first" and info["conv_proj"].shape == (24, 2, 2)
    layer = info["encoder.layers.encoder_layer_1"]
    assert layer.layout == "tokens" and layer.shape == (24, 2, 2) and layer.channels == 24 and layer.positions == 4
    assert "tokens" in str(layer)
    name = "encoder.layers.encoder_layer_1"
    scores = nv.score_neurons(net, x, name, n_samples=6)
    assert scores.correlation[name].shape == (24,) and scores.layouts[name] == "tokens"
    with torch.no_grad(), ActivationCapture(net, name) as raw, ActivationCapture(net, name, layout="auto") as laid:
        net(x)
    assert raw[name].shape == (1, 5, 24)  # a class token and a 2 x 2 grid of patches
    torch.testing.assert_close(laid[name][0], token_maps(raw[name][0]), rtol=0, atol=0)
    torch.testing.assert_close(laid[name][0, :, 1, 0], raw[name][0, 3], rtol=0, atol=0)  # patch (1, 0): token 1 + 2


def test_torchvision_swin_stages_are_channels_last():
    net = _small_swin()
    x = torch.randn(1, 3, 32, 32)
    info = {r.name: r for r in nv.layer_summary(net, x)}
    assert info["features.0"].layout == "channels_last" and info["features.0"].shape == (16, 8, 8)
    assert info["features.3"].layout == "channels_last" and info["features.3"].shape == (32, 4, 4)
    assert info["permute"].layout == "channels_first" and info["permute"].shape == (32, 4, 4)
    scores = nv.score_neurons(net, x, ["features.3", "permute"], n_samples=6, output="logit")
    assert scores.shapes["features.3"] == (32, 4, 4)
    # features.3 feeds norm then permute: a different layer, but the same channel axis
    assert scores.correlation["features.3"].shape == scores.correlation["permute"].shape == (32,)


def test_pcace_scores_the_channels_of_a_token_layer():
    net = _small_vit()
    images = torch.randn(40, 3, 32, 32)
    result = nv.pcace(net, images, "encoder.layers.encoder_layer_1", 0)
    assert result.scores.shape == (24,)


@pytest.mark.slow
@pytest.mark.parametrize("arch, size, layer, shape", [
    ("vit_b_16", 32, "encoder.layers.encoder_layer_11", (768, 2, 2)),
    ("swin_t", 64, "features.7", (768, 2, 2)),
])
def test_full_size_torchvision_transformers_are_scored_on_the_channel_axis(arch, size, layer, shape):
    torch.manual_seed(0)
    kwargs = {"image_size": size} if arch == "vit_b_16" else {}
    net = getattr(torchvision.models, arch)(num_classes=10, **kwargs).eval()
    head = net.heads.head if arch == "vit_b_16" else net.head
    nn.init.normal_(head.weight)
    x = torch.randn(1, 3, size, size)
    info = {r.name: r for r in nv.layer_summary(net, x)}
    assert info[layer].shape == shape and info[layer].layout != "channels_first"
    scores = nv.score_neurons(net, x, layer, n_samples=4, batch_size=4, output="logit")
    assert scores.shapes[layer] == shape and scores.correlation[layer].shape == (768,)


def test_inversion_weighs_the_channels_of_a_channels_last_mask_layer():
    net = _small_swin()
    result = nv.guided_feature_inversion(net, torch.randn(1, 3, 32, 32), mask_layer="features.3",
                                         feature_layer="features.1", stage1_steps=2, stage2_steps=2)
    assert result.weights.shape == (1, 32)  # the stage's 32 channels, not its 4 columns
    assert result.mask.shape == (1, 32, 32)
