"""score_neurons against numpy on the same activations, on planted neurons, and on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import neuronviz as nv
from neuronviz.core.errors import NeuronvizError
from tiny_nets import tiny_cnn


# ---------------------------------------------------------------------------------------------
# an independent numpy reference, unit by unit, straight from the paper's definitions


def numpy_scores(acts: np.ndarray, out: np.ndarray, dead: float = 0.1, per_unit: bool = False):
    """Correlation, precision and excluded mask; the exclusion rule as NeuronScores documents it."""
    n = acts.shape[0]
    a = acts.reshape(n, acts.shape[1], -1).astype(np.float64)  # (N, C, P)
    c, p = a.shape[1:]
    corr_unit = np.full((c, p), np.nan)
    var_unit = np.zeros((c, p))
    for k in range(c):
        for j in range(p):
            col = a[:, k, j]
            var_unit[k, j] = np.var(col)  # ddof = 0
            if np.ptp(col) > 0:
                corr_unit[k, j] = abs(np.corrcoef(col, out)[0, 1])
    signed = (a < 0).any()
    if per_unit:
        prec = np.where(var_unit > 0, 1 / np.where(var_unit > 0, var_unit, 1), np.inf)
        constant = np.ptp(a, axis=0) == 0
        if signed:
            excluded = constant | (np.abs(a).max(0) < dead)
        else:
            excluded = a.mean(0) < dead
        prec[excluded & constant] = np.nan
        shape = acts.shape[1:]
        return corr_unit.reshape(shape), prec.reshape(shape), excluded.reshape(shape)
    with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        corr = np.nanmean(corr_unit, axis=1)
    mean_var = var_unit.mean(1)
    prec = np.where(mean_var > 0, 1 / np.where(mean_var > 0, mean_var, 1), np.inf)
    constant = (np.ptp(a, axis=0) == 0).all(1)
    if signed:
        excluded = constant | (np.abs(a).max(axis=(0, 2)) < dead)
    else:
        excluded = a.mean(axis=(0, 2)) < dead
    prec[excluded & constant] = np.nan
    return corr, prec, excluded


def record(model, samples, layers, target_fn):
    model.eval()
    with torch.no_grad(), nv.capture(model, layers) as rec:
        out = model(samples)
        acts = rec.outputs()
    return {k: v.numpy() for k, v in acts.items()}, target_fn(out).double().numpy()


@pytest.mark.parametrize("per_unit", [False, True])
def test_scores_match_numpy_on_the_same_activations(per_unit):
    net = tiny_cnn()
    torch.manual_seed(3)
    samples = torch.randn(23, 3, 10, 10)
    layers = ["conv1", "relu2", "fc"]
    scores = nv.score_neurons(net, samples[0], layers, target=2, samples=samples, batch_size=23, per_unit=per_unit)
    acts, out = record(net, samples, layers, lambda o: torch.softmax(o.double(), 1)[:, 2])
    np.testing.assert_allclose(scores.outputs.numpy(), out, rtol=1e-6)
    for layer in layers:
        corr, prec, excluded = numpy_scores(acts[layer], out, per_unit=per_unit)
        np.testing.assert_allclose(scores.correlation[layer].numpy(), corr, rtol=1e-6, atol=1e-7, equal_nan=True)
        np.testing.assert_allclose(scores.precision[layer].numpy(), prec, rtol=1e-6, equal_nan=True)
        np.testing.assert_array_equal(scores.excluded[layer].numpy(), excluded)
        assert scores.shapes[layer] == acts[layer].shape[1:]
    assert scores.correlation["fc"].shape == (5,)  # (N, F) layer: F channels of one position


def test_kept_channel_means_are_each_samples_position_averaged_activation():
    net = tiny_cnn()
    torch.manual_seed(5)
    samples = torch.randn(11, 3, 10, 10)
    layers = ["conv1", "fc"]
    scores = nv.score_neurons(net, samples[0], layers, samples=samples, batch_size=4, keep_channel_means=True)
    acts, _ = record(net, samples, layers, lambda o: o[:, 0])
    for layer in layers:
        a = np.asarray(acts[layer], dtype=np.float64)
        expected = a.reshape(a.shape[0], a.shape[1], -1).mean(2)
        np.testing.assert_allclose(scores.channel_means[layer].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert nv.score_neurons(net, samples[0], layers, samples=samples).channel_means is None


def test_generated_perturbations_equal_the_same_samples_passed_in():
    net = tiny_cnn()
    x = torch.rand(1, 3, 12, 12)
    pert = nv.perturb.MultiplicativeGaussian(sigma_step=0.2)
    generated = nv.score_neurons(net, x, "conv2", n_samples=17, perturbation=pert, seed=4, batch_size=4)
    given = nv.score_neurons(net, x, "conv2", samples=pert.sample(x, range(17), seed=4), batch_size=17)
    assert torch.allclose(generated.correlation["conv2"], given.correlation["conv2"], rtol=1e-5, equal_nan=True)
    assert torch.allclose(generated.precision["conv2"], given.precision["conv2"], rtol=1e-5, equal_nan=True)
    assert generated.target == given.target


def test_results_do_not_depend_on_batch_size():
    net, x = tiny_cnn(), torch.rand(1, 3, 12, 12)
    a = nv.score_neurons(net, x, ["conv1", "fc"], n_samples=30, batch_size=1)
    b = nv.score_neurons(net, x, ["conv1", "fc"], n_samples=30, batch_size=64)
    for layer in ("conv1", "fc"):  # float32 convolutions may round differently per batch size
        assert torch.allclose(a.correlation[layer], b.correlation[layer], rtol=1e-5, equal_nan=True)
        assert torch.allclose(a.precision[layer], b.precision[layer], rtol=1e-5, equal_nan=True)


def test_default_target_is_the_class_predicted_on_the_clean_image():
    net, x = tiny_cnn(), torch.rand(1, 3, 12, 12)
    net.eval()
    predicted = int(net(x).argmax())
    scores = nv.score_neurons(net, x, "conv1", n_samples=5)
    assert scores.target == predicted and scores.output == "probability"
    # copy 0 of the paper's scheme is x itself, so its output is the clean probability
    assert scores.outputs[0].item() == pytest.approx(torch.softmax(net(x), 1)[0, predicted].item(), rel=1e-6)


def test_logit_and_callable_targets_give_those_outputs():
    net, x = tiny_cnn(), torch.rand(1, 3, 12, 12)
    samples = nv.perturb.MultiplicativeGaussian().sample(x, range(6), seed=0)
    net.eval()
    with torch.no_grad():
        logits = net(samples)
    by_logit = nv.score_neurons(net, x, "conv1", samples=samples, target=1, output="logit")
    assert torch.allclose(by_logit.outputs, logits[:, 1].double(), rtol=1e-6)
    by_fn = nv.score_neurons(net, x, "conv1", samples=samples, target=lambda out: out[:, 0] - out[:, 3])
    assert torch.allclose(by_fn.outputs, (logits[:, 0] - logits[:, 3]).double(), rtol=1e-5)
    assert by_fn.target is None and by_fn.output == "callable"


# ---------------------------------------------------------------------------------------------
# planted neurons: the true ranking is known by construction


class Planted(nn.Module):
    """Channels of ``feat``: 0 drives the output, 1 is constant, 2 is dead, 3 is unrelated noise."""

    def __init__(self):
        super().__init__()
        self.feat = nn.Conv2d(3, 4, 1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.feat.weight.zero_()
            self.feat.bias.copy_(torch.tensor([0.0, 5.0, -1.0, 0.0]))
            self.feat.weight[0, 0] = 1.0  # channel 0 copies input channel 0
            self.feat.weight[3, 1] = 1.0  # channel 3 copies input channel 1
            self.fc.weight.zero_()
            self.fc.bias.zero_()
            self.fc.weight[0, 0] = 2.0  # class 0 evidence: mean of channel 0

    def forward(self, x):
        a = self.act(self.feat(x))
        return self.fc(a.mean(dim=(2, 3)))


def planted_samples(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.full((n, 3, 6, 6), 2.0)
    shift = torch.rand(n, 1, 1, generator=g)  # one value per image: channel 0 moves as a whole
    base[:, 0] += shift
    base[:, 1] += torch.rand(n, 6, 6, generator=g) * 3  # large, output-independent noise
    return base


def test_planted_driver_ranks_first_by_correlation_and_constant_first_by_precision():
    samples = planted_samples()
    # post-ReLU: the paper's rule, channel 2 (always 0) is dead, channel 1 (always 5) is constant
    scores = nv.score_neurons(
        Planted(), samples[0], "act", samples=samples, target=0, output="logit", dead_threshold=0.1
    )
    corr, prec = scores.correlation["act"], scores.precision["act"]
    assert scores.exclusion_rule["act"] == "mean" and scores.excluded["act"].tolist() == [False, False, True, False]
    assert scores.top("correlation", k=4)["act"][0] == 0
    assert corr[0] > 0.999 and corr[3] < 0.5
    assert math.isinf(prec[1]) and scores.top("precision", k=1)["act"] == [1]
    assert math.isnan(prec[2]) and 2 not in scores.top("precision", k=4)["act"]
    assert math.isnan(corr[2]) and 2 not in scores.top("correlation", k=4)["act"]  # constant: no Pearson
    assert math.isnan(corr[1])


def test_on_a_signed_layer_only_constant_or_tiny_channels_are_excluded():
    samples = planted_samples()
    samples[:, 1] -= 3.5  # channel 3 copies input channel 1: now signed, mean about -0.0
    scores = nv.score_neurons(Planted(), samples[0], "feat", samples=samples, target=0, output="logit")
    assert scores.exclusion_rule["feat"] == "dead"
    # the paper's rule would drop channel 2 (constant -1) and channel 3 (negative mean, varying)
    assert float(scores.mean_activation["feat"][3]) < 0.1 and float(scores.mean_activation["feat"][2]) < 0
    assert scores.excluded["feat"].tolist() == [False, True, True, False]  # 1 and 2: constant over the copies
    assert scores.n_excluded() == {"feat": 2}
    prec = scores.precision["feat"]
    assert math.isnan(prec[1]) and math.isnan(prec[2]) and math.isfinite(prec[3])
    assert sorted(scores.top("precision", k=4)["feat"]) == [0, 3]


def test_on_a_signed_layer_a_channel_never_above_the_threshold_in_magnitude_is_excluded():
    samples = planted_samples()
    net = Planted()
    with torch.no_grad():
        net.feat.weight[3, 1] = 0.01  # channel 3: varies, but |value| stays under 0.1
        net.feat.bias[3] = -0.05
    scores = nv.score_neurons(net, samples[0], "feat", samples=samples, target=0, output="logit")
    assert scores.exclusion_rule["feat"] == "dead" and bool(scores.excluded["feat"][3])
    assert math.isfinite(scores.precision["feat"][3])  # it varies: its precision is still given
    assert 3 not in scores.top("precision", k=4)["feat"]
    wide = nv.score_neurons(net, samples[0], "feat", samples=samples, target=0, output="logit", dead_threshold=0.01)
    assert not bool(wide.excluded["feat"][3])


def test_per_unit_top_returns_positions():
    samples = planted_samples()
    scores = nv.score_neurons(Planted(), samples[0], "feat", samples=samples, target=0, per_unit=True)
    assert scores.correlation["feat"].shape == (4, 6, 6)
    top = scores.top("correlation", k=3)["feat"]
    assert all(len(t) == 3 and t[0] == 0 for t in top)


def test_top_never_selects_nan_and_puts_infinite_precision_first():
    nan, inf = math.nan, math.inf
    s = nv.NeuronScores(
        correlation={"l": torch.tensor([0.2, nan, 0.9, 0.2], dtype=torch.float64)},
        precision={"l": torch.tensor([3.0, inf, nan, 7.0], dtype=torch.float64)},
        mean_activation={"l": torch.ones(4)},
        outputs=torch.zeros(3),
        target=0,
        output="probability",
        shapes={"l": (4,)},
        n_samples=3,
    )
    assert s.top("correlation", k=10) == {"l": [2, 0, 3]}
    assert s.top("precision", k=2) == {"l": [1, 3]}
    with pytest.raises(ValueError, match="metric"):
        s.top("variance")


def test_overlap_is_the_papers_measure_with_a_jaccard_variant():
    a = {"l1": [1, 2, 3], "l2": [4, 5]}
    b = {"l1": [3, 2, 9], "l2": [7, 8]}
    assert nv.overlap(a, b) == pytest.approx(2 / 10)
    assert nv.overlap(a, b, kind="jaccard") == pytest.approx(2 / 8)
    assert nv.overlap(a, a) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="different layers"):
        nv.overlap(a, {"l1": [1]})


# ---------------------------------------------------------------------------------------------
# the model is never harmed


def test_model_is_left_untouched_after_scoring(snapshot):
    net = tiny_cnn()
    net.fc.weight.requires_grad_(False)
    snap = snapshot(net)
    nv.score_neurons(net, torch.rand(1, 3, 12, 12), ["conv1", "bn2"], n_samples=6)
    snap.assert_unchanged()


class BreaksOnCall(nn.Module):
    def __init__(self, when: int, exc: BaseException):
        super().__init__()
        self.net, self.calls, self.when, self.exc = tiny_cnn(), 0, when, exc

    def forward(self, x):
        self.calls += 1
        h = self.net.relu1(self.net.conv1(x))
        if self.calls == self.when:
            raise self.exc
        return self.net[2:](h)


@pytest.mark.parametrize("exc", [RuntimeError("device lost"), KeyboardInterrupt()])
def test_model_is_left_untouched_when_the_forward_raises_half_way(snapshot, exc):
    model = BreaksOnCall(when=2, exc=exc)
    snap = snapshot(model)
    expected = NeuronvizError if isinstance(exc, RuntimeError) else KeyboardInterrupt
    with pytest.raises(expected):
        nv.score_neurons(model, torch.rand(1, 3, 12, 12), ["net.conv1", "net.fc"], n_samples=9, batch_size=3)
    assert model.calls == 2
    snap.assert_unchanged()


def test_out_of_memory_halves_the_batch_and_gives_the_same_scores():
    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_cnn()

        def forward(self, x):
            if x.shape[0] > 4:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated by this test model)")
            return self.net(x)

    model, x = Small(), torch.rand(1, 3, 12, 12)
    with pytest.warns(RuntimeWarning, match="retrying with batch_size") as caught:
        backed_off = nv.score_neurons(model, x, "net.conv2", n_samples=20, batch_size=16)
    assert [str(w.message)[-12:] for w in caught] == ["batch_size=8", "batch_size=4"]
    direct = nv.score_neurons(model, x, "net.conv2", n_samples=20, batch_size=4)
    assert torch.allclose(backed_off.precision["net.conv2"], direct.precision["net.conv2"], equal_nan=True)


# ---------------------------------------------------------------------------------------------
# bad input gets a clear error, before any harm


@pytest.mark.parametrize(
    "x, kwargs, message",
    [
        (torch.rand(2, 3, 12, 12), {}, r"one image of shape \(1, C, H, W\)"),
        (torch.rand(12, 12), {}, "shape"),
        (torch.rand(1, 4, 12, 12), {}, "4 channel.*takes 3"),
        (torch.full((1, 3, 12, 12), math.nan), {}, "NaN or infinite"),
        (torch.randint(0, 255, (1, 3, 12, 12)), {}, "float tensor"),
        ("cat.jpg", {}, "torch tensor"),
        (torch.rand(1, 3, 12, 12), {"n_samples": 2}, "n_samples must be an integer >= 3"),
        (torch.rand(1, 3, 12, 12), {"target": 5}, "target=5 is out of range.*5 classes"),
        (torch.rand(1, 3, 12, 12), {"target": -1}, "out of range"),
        (torch.rand(1, 3, 12, 12), {"output": "prob"}, "output='prob'"),
        (torch.rand(1, 3, 12, 12), {"samples": torch.rand(2, 3, 12, 12)}, "at least 3"),
        (torch.rand(1, 3, 12, 12), {"samples": torch.randint(0, 255, (5, 3, 12, 12), dtype=torch.uint8)}, "float"),
        (torch.rand(1, 3, 12, 12), {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input_is_refused_with_a_message_that_says_what_is_right(snapshot, x, kwargs, message):
    net = tiny_cnn()
    snap = snapshot(net)
    with pytest.raises(NeuronvizError, match=message):
        nv.score_neurons(net, x, "conv2", **kwargs)
    snap.assert_unchanged()


def test_unknown_layer_suggests_the_closest_names(snapshot):
    net = tiny_cnn()
    snap = snapshot(net)
    with pytest.raises(nv.LayerNotFoundError, match="'conv2'"):
        nv.score_neurons(net, torch.rand(1, 3, 12, 12), ["conv1", "conv_2"])
    snap.assert_unchanged()


def test_model_without_class_scores_needs_a_callable_target():
    class Features(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return self.conv(x)

    net, x = Features(), torch.rand(1, 3, 8, 8)
    with pytest.raises(NeuronvizError, match=r"not \(N, classes\).*target=callable"):
        nv.score_neurons(net, x, "conv")
    scores = nv.score_neurons(net, x, "conv", target=lambda out: out.mean(dim=(1, 2, 3)), n_samples=5)
    assert scores.correlation["conv"].shape == (2,)


def test_a_layer_that_produces_no_output_is_reported():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.unused = tiny_cnn(), nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.net(x)

    with pytest.raises(nv.CaptureError, match="unused.*no output"):
        nv.score_neurons(Skips(), torch.rand(1, 3, 8, 8), ["net.conv1", "unused"], n_samples=4)


def test_constant_target_warns_that_correlations_are_undefined():
    net, x = tiny_cnn(), torch.rand(1, 3, 8, 8)
    with pytest.warns(RuntimeWarning, match="same on every perturbed sample"):
        s = nv.score_neurons(net, x, "conv1", n_samples=4, target=lambda out: out[:, 0] * 0)
    assert torch.isnan(s.correlation["conv1"]).all()
