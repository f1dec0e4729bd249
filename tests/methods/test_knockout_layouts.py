"""Knock-outs on channels-last and token layers act on the layer's channel axis, as the scores index it.

Planted networks: a layer whose every position holds the constant b_c in channel c (a zero
weight and a bias), read by a linear head, so knocking channel c out moves logit j by exactly
``W[j, c] * b_c`` (times how many times the head reads it), and a channel the head does not
read moves nothing. Axis 1 of these outputs is a row of the map or a token: a knock-out there
would move other amounts.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import neuronviz as nv

C, D, CLASSES = 5, 7, 3
B = torch.tensor([0.5, -1.0, 2.0, 1.5, 0.25, 3.0, -0.75])
HEAD = torch.tensor([[1.0, 2.0, -1.0, 0.0, 0.5, 1.0, 0.0],
                     [0.0, -1.0, 1.0, 0.0, 2.0, 0.0, 1.0],
                     [3.0, 0.5, 0.0, 0.0, -2.0, 1.0, 0.5]])  # column 3 reads nothing: no path


class ChannelsLast(nn.Module):
    """conv -> (N, H, W, C) -> Linear (channels last, constant b_c) -> mean over positions -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, C, 3, padding=1)
        self.proj = nn.Linear(C, C)
        self.head = nn.Linear(C, CLASSES)
        with torch.no_grad():
            self.proj.weight.zero_()
            self.proj.bias.copy_(B[:C])
            self.head.weight.copy_(HEAD[:, :C])
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.proj(self.conv(x).permute(0, 2, 3, 1))  # (N, H, W, C)
        return self.head(a.mean(dim=(1, 2)))


class Tokens(nn.Module):
    """Patches -> (N, 1 + 4, D) with a class token -> Linear (constant b_d) -> head(class token + mean patch)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, D, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, D))
        self.encoder = nn.Linear(D, D)
        self.head = nn.Linear(D, CLASSES)
        with torch.no_grad():
            self.encoder.weight.zero_()
            self.encoder.bias.copy_(B)
            self.head.weight.copy_(HEAD)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)  # (N, 4, D) on a 2 x 2 grid
        t = self.encoder(torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1))  # (N, 5, D)
        return self.head(t[:, 0] + t[:, 1:].mean(1))


def image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x)[0].double()


def test_a_channels_last_channel_moves_the_logit_by_its_planted_contribution(snapshot):
    net, x = ChannelsLast(), image()
    snap = snapshot(net)
    clean = logits(net, x)
    eff = nv.knockout_effect(net, x, {f"c{c}": {"proj": [c]} for c in range(C)}, target=0, output="logit")
    assert torch.allclose(torch.as_tensor(eff.effect), HEAD[0, :C].double() * B[:C].double(), atol=1e-6)
    assert eff.effect[3] == 0.0  # no path to the output: nothing moves
    assert abs(eff.original - float(clean[0])) < 1e-6
    with nv.knockout(net, {"proj": [2]}):
        knocked = logits(net, x)
    assert torch.allclose(clean - knocked, HEAD[:, 2].double() * float(B[2]), atol=1e-6)
    snap.assert_unchanged()


def test_a_token_feature_is_knocked_out_on_every_token_and_a_unit_on_its_patch_only(snapshot):
    net, x = Tokens(), image(1)
    snap = snapshot(net)
    eff = nv.knockout_effect(net, x, [{"encoder": [d]} for d in range(D)], target=2, output="logit")
    # the class token and the mean patch token both carry b_d: twice the contribution
    assert torch.allclose(torch.as_tensor(eff.effect), 2 * HEAD[2].double() * B.double(), atol=1e-6)
    assert eff.effect[3] == 0.0
    unit = nv.knockout_effect(net, x, {"encoder": [(5, 1, 0)]}, target=2, output="logit")  # patch (1, 0) of 2 x 2
    assert abs(float(unit.effect[0]) - float(HEAD[2, 5] * B[5]) / 4) < 1e-6
    with nv.knockout(net, {"encoder": [5]}):
        knocked = logits(net, x)
    assert torch.allclose(logits(net, x) - knocked, 2 * HEAD[:, 5].double() * float(B[5]), atol=1e-6)
    snap.assert_unchanged()


def test_a_channels_last_unit_is_one_position_of_its_channel():
    net, x = ChannelsLast(), image()
    eff = nv.knockout_effect(net, x, {"proj": [(2, 5, 1)]}, target=0, output="logit")  # channel 2 at (5, 1)
    assert abs(float(eff.effect[0]) - float(HEAD[0, 2] * B[2]) / 64) < 1e-6  # one of 8 x 8 positions


@pytest.mark.parametrize("make", [ChannelsLast, Tokens], ids=["channels_last", "tokens"])
@pytest.mark.parametrize("how", ["zero", "mean", 0.3])
def test_batched_sets_equal_each_set_alone(make, how):
    net, x = make(), image(4)
    with torch.no_grad():  # weights that mix the channels, so each set moves the output its own way
        layer = net.proj if make is ChannelsLast else net.encoder
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=torch.Generator().manual_seed(1)))
    name = "proj" if make is ChannelsLast else "encoder"
    sets = [{name: [0]}, {name: [1, 3]}, {name: [(2, 1, 1)]}, {name: [0, 1, 2, 4]}]
    together = nv.knockout_effect(net, x, sets, target=1, output="logit", how=how, batch_size=3, n_samples=4)
    for i, one in enumerate(sets):
        alone = nv.knockout_effect(net, x, one, target=1, output="logit", how=how, n_samples=4)
        assert abs(float(together.knocked[i]) - float(alone.knocked[0])) < 1e-6


@pytest.mark.parametrize("make", [ChannelsLast, Tokens], ids=["channels_last", "tokens"])
def test_the_mean_knockout_of_a_constant_channel_changes_nothing(make):
    net, x = make(), image(2)
    layer = "proj" if make is ChannelsLast else "encoder"
    eff = nv.knockout_effect(net, x, {layer: [0, 1, 2]}, target=0, output="logit", how="mean", n_samples=4)
    assert abs(float(eff.effect[0])) < 1e-5
    with nv.knockout(net, {layer: [0, 1, 2]}, how="mean", x=x, n_samples=4):
        knocked = logits(net, x)
    assert torch.allclose(knocked, logits(net, x), atol=1e-5)


@pytest.mark.filterwarnings("ignore:the target value is the same")  # the planted output is constant
def test_the_deletion_curve_of_scores_knocks_out_the_ranked_channels():
    net, x = Tokens(), image(3)
    scores = nv.score_neurons(net, x, ["encoder"], n_samples=4, target=2, output="logit")
    assert scores.layouts["encoder"] == "tokens" and scores.correlation["encoder"].numel() == D
    ranking = {"encoder": [5, 0, 4]}
    curve = nv.deletion_curve(net, x, ranking, ks=[0, 1, 2, 3], random=0, target=2, output="logit")
    values = curve.curve("ranking", "encoder").values
    steps = [0.0] + [float(2 * HEAD[2, d] * B[d]) for d in ranking["encoder"]]
    clean = float(logits(net, x)[2])
    assert torch.allclose(torch.as_tensor(values), clean - torch.tensor(steps, dtype=torch.float64).cumsum(0),
                          atol=1e-6)
    # read channels first, "channel" 0 is the class token: all of its features go
    forced = nv.deletion_curve(net, x, {"encoder": [0]}, ks=[0, 1], random=0, target=2, output="logit",
                               layout="channels_first")
    assert abs(float(forced.curve("ranking", "encoder").values[1]) - (clean - float(HEAD[2] @ B))) < 1e-6
    # without layout=, the layouts the scores were computed with
    first = nv.score_neurons(net, x, ["encoder"], n_samples=4, target=2, output="logit", layout="channels_first")
    followed = nv.deletion_curve(net, x, [first, {"mine": {"encoder": [0]}}], metrics=["mine"], ks=[0, 1], random=0,
                                 target=2, output="logit")
    assert abs(float(followed.curve("mine", "encoder").values[1]) - (clean - float(HEAD[2] @ B))) < 1e-6


def test_a_wrong_layout_name_is_refused():
    net, x = ChannelsLast(), image()
    with pytest.raises(nv.NeuronvizError, match="layout"):
        nv.knockout_effect(net, x, {"proj": [0]}, layout="rows")
    with pytest.raises(nv.NeuronvizError, match="layout"):
        with nv.knockout(net, {"proj": [0]}, layout="rows"):
            pass


def _zeroed_by_hand(net: nn.Module, layer: str, x: torch.Tensor, channel: int) -> torch.Tensor:
    """The logits with feature ``channel`` (the last axis) of ``layer`` zeroed by a plain hook (about 2 s each)."""
    def zero(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[..., channel] = 0
        return out

    handle = dict(net.named_modules())[layer].register_forward_hook(zero)
    try:
        return logits(net, x)
    finally:
        handle.remove()


@pytest.mark.parametrize("arch, layer, size", [("swin_t", "features.1", 64),
                                               ("vit_b_16", "encoder.layers.encoder_layer_1", 32)])
def test_torchvision_channels_last_and_token_layers_knock_out_the_last_axis(arch, layer, size, snapshot):
    import torchvision

    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None, **({"image_size": size} if arch == "vit_b_16" else {}))
    net.eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    snap = snapshot(net)
    channel = 17
    eff = nv.knockout_effect(net, x, {layer: [channel]}, target=0, output="logit")
    expected = logits(net, x)[0] - _zeroed_by_hand(net, layer, x, channel)[0]
    assert abs(float(eff.effect[0]) - float(expected)) < 1e-4
    snap.assert_unchanged()
