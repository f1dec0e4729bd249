"""Knock-outs: a planted network whose effects are known by construction, batched = looped, model untouched."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_nets import tiny_cnn
from torch import nn

import neuronviz as nv
from neuronviz.methods.knockout import knockout, knockout_effect

W_DRIVE, W_CONST, CONST = 1.5, -0.8, 0.5


def planted() -> nn.Sequential:
    """feat: channel 0 copies input channel 0 and drives logit 0 (weight W_DRIVE); channel 1 varies but has
    no path to the output; channel 2 is the constant CONST with weight W_CONST; channel 3 copies input 1."""
    net = nn.Sequential()
    net.add_module("feat", nn.Conv2d(3, 4, 1))
    net.add_module("act", nn.Identity())
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(4, 2))
    with torch.no_grad():
        net.feat.weight.zero_()
        net.feat.bias.zero_()
        net.feat.weight[0, 0] = 1.0
        net.feat.weight[1, 2] = 2.0
        net.feat.bias[2] = CONST
        net.feat.weight[3, 1] = 1.0
        net.fc.weight.copy_(torch.tensor([[W_DRIVE, 0.0, W_CONST, 0.3], [0.2, 0.0, 0.1, -0.4]]))
        net.fc.bias.copy_(torch.tensor([0.1, -0.2]))
    return net.train()


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(1, 3, 8, 8) + 0.5


def test_knocking_out_the_driving_channel_moves_the_logit_by_its_contribution(x, snapshot):
    net = planted()
    snap = snapshot(net)
    eff = knockout_effect(net, x, {"feat": [0]}, target=0, output="logit")
    assert eff.effect[0] == pytest.approx(W_DRIVE * float(x[0, 0].mean()), abs=1e-6)
    with torch.no_grad():
        assert eff.original == pytest.approx(float(net.eval()(x)[0, 0]), abs=1e-6)
    net.train()
    snap.assert_unchanged()


def test_a_channel_without_a_path_to_the_output_moves_nothing(x):
    net = planted()
    for how in ("zero", "mean", 3.0):
        eff = knockout_effect(net, x, {"feat": [1]}, target=0, output="logit", how=how, n_samples=8)
        assert eff.effect[0] == pytest.approx(0.0, abs=1e-7), how


def test_the_mean_knockout_of_a_constant_channel_changes_nothing_and_zero_removes_it(x):
    net = planted()
    eff = knockout_effect(net, x, {"mean": {"feat": [2]}}, target=0, output="logit", how="mean", n_samples=8)
    assert eff.effect[0] == pytest.approx(0.0, abs=1e-7)
    eff = knockout_effect(net, x, {"feat": [2]}, target=0, output="logit", how="zero")
    assert eff.effect[0] == pytest.approx(W_CONST * CONST, abs=1e-6)


def test_a_scale_multiplies_the_contribution(x):
    net = planted()
    eff = knockout_effect(net, x, {"feat": [0]}, target=0, output="logit", how=3.0)
    assert eff.effect[0] == pytest.approx(-2.0 * W_DRIVE * float(x[0, 0].mean()), abs=1e-6)


def test_the_context_manager_zeroes_the_named_channels_and_leaves_the_model_as_it_was(x, snapshot):
    net = planted().eval()
    snap = snapshot(net)
    with torch.no_grad():
        before = net(x)
        with knockout(net, {"feat": [0, 2]}) as ko:
            after = net(x)
        again = net(x)
    assert ko.n_forward == 1
    expected = before[0, 0] - W_DRIVE * x[0, 0].mean() - W_CONST * CONST
    assert float(after[0, 0]) == pytest.approx(float(expected), abs=1e-6)
    assert torch.equal(before, again)
    snap.assert_unchanged()


def test_the_mean_context_manager_uses_the_copies_of_x_or_the_given_images(x):
    net = planted().eval()
    ref = torch.rand(6, 3, 8, 8)
    with torch.no_grad(), knockout(net, {"feat": [0]}, how="mean", reference=ref) as ko:
        out = net(x)
    assert torch.allclose(ko.means["feat"][0], ref[:, 0].mean(0), atol=1e-6)
    with torch.no_grad():
        base = net(x)[0, 0] - W_DRIVE * x[0, 0].mean() + W_DRIVE * ref[:, 0].mean()
    assert float(out[0, 0]) == pytest.approx(float(base), abs=1e-5)
    with knockout(net, {"feat": [0]}, how="mean", x=x, n_samples=4) as ko:
        pass
    assert ko.means["feat"].shape == (4, 8, 8)


@pytest.mark.parametrize("ending", [RuntimeError("boom"), KeyboardInterrupt()])
def test_hooks_are_removed_when_the_block_raises(x, snapshot, ending):
    net = planted()
    snap = snapshot(net)
    with pytest.raises(type(ending)):
        with knockout(net, {"feat": [0], "fc": [1]}, how=0.5):
            net(x)
            raise ending
    snap.assert_unchanged()


def test_an_interrupt_during_a_batched_run_leaves_the_model_untouched(x, snapshot):
    net = tiny_cnn()
    snap = snapshot(net)

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        knockout_effect(net, x, [{"conv1": [i]} for i in range(6)], batch_size=2, progress=stop, how="mean",
                        n_samples=4)
    snap.assert_unchanged()


def _count_passes(net: nn.Module) -> tuple[list[int], object]:
    calls: list[int] = []
    handle = net.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    return calls, handle


@pytest.mark.parametrize("how", ["zero", "mean", 0.3])
def test_one_batched_pass_per_batch_equals_a_loop_of_single_knockouts(x, how):
    net = tiny_cnn().double()
    xd = x.double()
    gen = torch.Generator().manual_seed(0)
    sets = []
    for i in range(11):
        s = {"conv1": torch.randperm(6, generator=gen)[: 1 + i % 4].tolist()}
        if i % 3:
            s["relu2"] = [int(torch.randint(4, (), generator=gen)), (1, 2, 3)]
        sets.append(s)
    calls, handle = _count_passes(net)
    try:
        eff = knockout_effect(net, xd, sets, how=how, batch_size=4, n_samples=5)
    finally:
        handle.remove()
    mean_passes = 2 if how == "mean" else 0  # 5 copies in batches of 4
    assert len(calls) == 1 + mean_passes + math.ceil(len(sets) / 4)
    assert calls[-3:] == [4, 4, 3]
    assert eff.n_forward == len(calls)
    net.eval()
    reference = torch.cat([nv.perturb.MultiplicativeGaussian().sample(xd, range(5))])
    for i, s in enumerate(sets):
        with torch.no_grad(), knockout(net, s, how=how, reference=reference if how == "mean" else None):
            alone = torch.softmax(net(xd), 1)[0, eff.target]
        assert float(alone) == pytest.approx(eff.knocked[i], abs=1e-6)


def test_on_copies_and_on_samples_average_over_the_images(x):
    net = tiny_cnn()
    sets = [{"conv1": [0, 1]}, {"relu2": [2]}]
    copies = nv.perturb.MultiplicativeGaussian().sample(x, range(6))
    on_copies = knockout_effect(net, x, sets, on="copies", n_samples=6, batch_size=5)
    on_tensor = knockout_effect(net, x, sets, samples=copies, batch_size=7)
    loader = [(copies[:4], torch.zeros(4)), (copies[4:], torch.zeros(2))]
    on_loader = knockout_effect(net, x, sets, samples=loader, batch_size=3)
    for other in (on_tensor, on_loader):
        assert other.knocked == pytest.approx(on_copies.knocked, abs=1e-6)
        assert other.original == pytest.approx(on_copies.original, abs=1e-6)
    assert on_loader.on == "samples" and on_loader.n_images == 6
    per_copy = on_copies.per_image
    assert per_copy.shape == (2, 6) and on_copies.knocked == pytest.approx(per_copy.mean(1))
    assert on_copies.effect == pytest.approx(on_copies.original - on_copies.knocked)


def test_a_unit_knockout_touches_only_its_position(x):
    net = planted().eval()
    with torch.no_grad():
        base = net(x)[0, 0]
        with knockout(net, {"feat": [(0, 2, 5)]}):
            out = net(x)[0, 0]
    assert float(base - out) == pytest.approx(W_DRIVE * float(x[0, 0, 2, 5]) / 64, abs=1e-6)


def test_unknown_layers_get_the_closest_names(x):
    with pytest.raises(nv.LayerNotFoundError, match="conv1"):
        with knockout(tiny_cnn(), {"conv_1": [0]}):
            pass
    with pytest.raises(nv.LayerNotFoundError, match="relu2"):
        knockout_effect(tiny_cnn(), x, {"relu_2": [0]})


def test_channels_out_of_range_are_refused_before_or_at_the_first_pass(x, snapshot):
    net = tiny_cnn()
    snap = snapshot(net)
    with pytest.raises(nv.NeuronvizError, match="channel 6 is out of range .* 6 channels"):
        with knockout(net, {"conv1": [6]}):
            pass
    with pytest.raises(nv.NeuronvizError, match="channel 4 is out of range"):
        ko_net = tiny_cnn().eval()
        with knockout(ko_net, {"relu2": [4]}):  # a ReLU does not say its channel count: checked when it runs
            ko_net(x)
    with pytest.raises(nv.NeuronvizError, match="unit .* out of range"):
        knockout_effect(net, x, {"relu2": [(0, 9, 0)]})
    with pytest.raises(nv.NeuronvizError, match="3-tuple"):
        knockout_effect(net, x, {"relu2": [(0, 1)]})
    snap.assert_unchanged()


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.act(self.conv(self.act(x))).mean((2, 3)))


def test_a_layer_that_runs_twice_is_refused(x, snapshot):
    net = Twice()
    snap = snapshot(net)
    with pytest.raises(nv.CaptureError, match="more than once"):
        knockout_effect(net, x, {"act": [0]})
    with pytest.raises(nv.NeuronvizError, match="more than once"):
        with knockout(net, {"act": [0]}):
            net(x)
    snap.assert_unchanged()


@pytest.mark.parametrize("bad, match", [
    ("half", "how must be"), (float("nan"), "how must be"), (True, "how must be"),
])
def test_a_bad_how_is_refused(x, bad, match):
    with pytest.raises(nv.NeuronvizError, match=match):
        knockout_effect(tiny_cnn(), x, {"conv1": [0]}, how=bad)


def test_bad_sets_are_refused_with_what_would_be_right(x):
    with pytest.raises(nv.NeuronvizError, match="sets must be one set"):
        knockout_effect(tiny_cnn(), x, "conv1")
    with pytest.raises(nv.NeuronvizError, match="must be a mapping"):
        knockout(tiny_cnn(), ["conv1"]).__enter__()
    with pytest.raises(nv.NeuronvizError, match="channel index"):
        knockout_effect(tiny_cnn(), x, {"conv1": [0.5]})
    with pytest.raises(nv.NeuronvizError, match="reference"):
        with knockout(tiny_cnn(), {"conv1": [0]}, how="mean"):
            pass


def test_the_effect_table_and_rows_name_every_set(x):
    eff = knockout_effect(planted(), x, {"drive": {"feat": [0]}, "dead": {"feat": [1]}}, target=0)
    rows = eff.as_rows()
    assert [r["name"] for r in rows] == ["drive", "dead"]
    assert rows[1]["effect"] == pytest.approx(0.0, abs=1e-7) and rows[0]["relative"] > 0
    assert "drive" in eff.table() and "dead" in eff.table()
