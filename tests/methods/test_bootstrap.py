"""Bootstrap replicates of the input-resampling scores: a numpy resampling loop, coverage, a planted driver."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import neuronviz as nv
from neuronviz.core.stats import WeightedCoMoments, poisson_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_nets import tiny_cnn  # noqa: E402


def _numpy_replicates(acts: np.ndarray, out: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted |Pearson| (mean over positions) and 1 / mean weighted variance, replicate by replicate, in a loop."""
    n, c = acts.shape[:2]
    a = acts.reshape(n, c, -1)
    var_all = a.var(0)
    corr, prec = np.empty((w.shape[1], c)), np.empty((w.shape[1], c))
    for b in range(w.shape[1]):
        wb = w[:, b]
        ma = np.einsum("i,icp->cp", wb, a) / wb.sum()
        mo = wb @ out / wb.sum()
        da, do = a - ma, out - mo
        var = np.einsum("i,icp->cp", wb, da * da) / wb.sum()
        cov = np.einsum("i,icp->cp", wb * do, da) / wb.sum()
        var_o = wb @ (do * do) / wb.sum()
        flat = (var_all == 0) | (var <= 1e-10 * var_all)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.abs(cov / np.sqrt(var * var_o))
            r[flat] = np.nan
            corr[b] = np.nanmean(r, 1)
            v = np.where(flat, 0.0, var).mean(1)
            prec[b] = np.where(v > 0, 1 / v, np.inf)
    return corr, prec


def test_replicates_equal_a_numpy_resampling_loop_with_the_same_weights():
    net = tiny_cnn().eval()
    torch.manual_seed(3)
    samples = torch.rand(1, 3, 12, 12) * (1 + 0.3 * torch.randn(37, 3, 12, 12))
    scores = nv.score_neurons(net, samples[:1], ["relu1", "relu2"], samples=samples, target=2, bootstrap=24,
                              bootstrap_seed=11, batch_size=8)
    out = scores.outputs.numpy()  # the target's values; what is checked here is the resampling
    with torch.no_grad():
        acts = {"relu1": net[:2](samples), "relu2": net[:5](samples)}
    w = poisson_weights(11, range(37), 24).numpy()
    for layer, a in acts.items():
        corr, prec = _numpy_replicates(a.double().numpy(), out, w)
        np.testing.assert_allclose(scores.replicates["correlation"][layer].numpy(), corr, atol=1e-6, rtol=0)
        got = scores.replicates["precision"][layer].numpy()
        np.testing.assert_allclose(got, prec, rtol=1e-6)


def test_replicates_do_not_depend_on_batching_or_on_a_loader():
    net = tiny_cnn().eval()
    x = torch.rand(1, 3, 12, 12)
    a = nv.score_neurons(net, x, "relu2", n_samples=30, bootstrap=16, batch_size=4)
    b = nv.score_neurons(net, x, "relu2", n_samples=30, bootstrap=16, batch_size=30)
    torch.testing.assert_close(a.replicates["correlation"]["relu2"], b.replicates["correlation"]["relu2"], atol=1e-7,
                               rtol=0)
    copies = nv.perturb.make(None).sample(x.clone(), range(30), seed=0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(copies), batch_size=7)
    c = nv.score_neurons(net, x, "relu2", samples=loader, bootstrap=16)
    torch.testing.assert_close(a.replicates["precision"]["relu2"], c.replicates["precision"]["relu2"], rtol=1e-6,
                               atol=0)


def test_poisson_weights_depend_only_on_seed_and_index():
    w = poisson_weights(5, range(100), 64)
    torch.testing.assert_close(w[40:43], poisson_weights(5, [40, 41, 42], 64))
    assert not torch.equal(w, poisson_weights(6, range(100), 64))
    assert abs(float(w.mean()) - 1) < 0.05 and abs(float(w.var()) - 1) < 0.1  # Poisson(1)
    assert torch.equal(w, w.round())


def test_weighted_moments_merge_like_one_batch():
    torch.manual_seed(0)
    a, o = torch.randn(50, 4), torch.randn(50)
    w = poisson_weights(0, range(50), 8)
    whole = WeightedCoMoments.from_batch(a, o, w)
    parts = WeightedCoMoments.from_batch(a[:17], o[:17], w[:17])
    parts.merge(WeightedCoMoments.from_batch(a[17:], o[17:], w[17:]))
    torch.testing.assert_close(parts.correlation(), whole.correlation())
    torch.testing.assert_close(parts.variance(), whole.variance())


class _Identity(nn.Module):
    """(N, 2, h, w) -> the (N, 2) channel means; layer "act" is the input itself."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x).mean((2, 3))


@pytest.mark.slow
def test_a_90_percent_interval_covers_the_true_correlation_85_to_95_percent_of_the_time():
    rho, n, datasets = 0.5, 80, 240
    net = _Identity()
    gen = torch.Generator().manual_seed(0)
    covered = 0
    for d in range(datasets):
        z = torch.randn(n, 2, generator=gen)
        a, o = z[:, 0], rho * z[:, 0] + math.sqrt(1 - rho**2) * z[:, 1]
        samples = torch.stack([a, o], 1)[:, :, None, None].expand(n, 2, 2, 2).contiguous()
        s = nv.score_neurons(net, samples[:1], "act", samples=samples, target=lambda out: out[:, 1], bootstrap=200,
                             bootstrap_seed=d, progress=False)
        lo, hi = s.interval("correlation", 0.9)["act"]
        covered += bool(lo[0] <= rho <= hi[0])
    assert 0.85 <= covered / datasets <= 0.95, covered / datasets


class _Planted(nn.Module):
    """Channel 0 of "mix" drives the logit of class 1; channel 1 a little; the others not at all."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 6, 1, bias=False)
        self.head = nn.Linear(6, 2, bias=False)
        with torch.no_grad():
            self.mix.weight.copy_(torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1], [0, 0, -1], [0, 1, -1.0]])
                                  .view(6, 3, 1, 1))
            self.head.weight.copy_(torch.tensor([[0, 0, 0, 0, 0, 0], [1, 0.5, 0, 0, 0, 0.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(x).mean((2, 3)))


def test_a_planted_driving_channel_has_an_interval_above_every_other_channels():
    net = _Planted()
    torch.manual_seed(1)
    z = torch.randn(120, 3)
    samples = (z[:, :, None, None] + 0.3 * torch.randn(120, 3, 4, 4))
    s = nv.score_neurons(net, samples[:1], "mix", samples=samples, target=1, output="logit", bootstrap=100)
    lo, hi = s.interval("correlation")["mix"]
    assert s.top("correlation", 1)["mix"] == [0]
    assert all(float(lo[0]) > float(hi[c]) for c in range(1, 6))
    assert s.tied("correlation", 1)["mix"] == [False]
    assert s.top("correlation", 1, stable=True)["mix"] == [0]
    rank_lo, rank_hi = s.rank_interval("correlation")["mix"]
    assert float(rank_lo[0]) == float(rank_hi[0]) == 1.0
    # channels 2, 3 and 4 do not drive the output: ranks among them are not distinguishable
    assert s.tied("correlation", 4)["mix"][-1] or s.tied("correlation", 3)["mix"][-1]


def test_ties_intervals_and_stable_top_on_hand_made_replicates():
    reps = torch.tensor([[0.9, 0.50, 0.49, 0.1], [0.8, 0.52, 0.50, 0.2], [0.85, 0.45, 0.55, 0.15],
                         [0.9, 0.48, 0.51, 0.1]], dtype=torch.float64)
    point = torch.tensor([0.86, 0.5, 0.49, 0.15], dtype=torch.float64)
    scores = nv.NeuronScores(correlation={"l": point}, precision={"l": torch.ones(4)},
                             mean_activation={"l": torch.ones(4)}, outputs=torch.zeros(4), target=0,
                             output="probability", shapes={"l": (4,)}, n_samples=4,
                             replicates={"correlation": {"l": reps}, "precision": {"l": 1 / reps}})
    assert scores.top("correlation", 2)["l"] == [0, 1]
    assert scores.tied("correlation", 2, level=0.9)["l"] == [False, True]  # 1 and 2 swap places
    assert scores.top("correlation", 2, stable=True)["l"] == [0]
    assert scores.tied("correlation", 4)["l"] == [False] * 4  # no fifth: nothing to be tied with
    lo, hi = scores.interval("correlation", 0.5)["l"]
    torch.testing.assert_close(lo, torch.quantile(reps, 0.25, dim=0))
    torch.testing.assert_close(hi, torch.quantile(reps, 0.75, dim=0))
    plo, phi = scores.interval("precision", 0.5)["l"]  # precision through its variance
    torch.testing.assert_close(phi, 1 / torch.quantile(reps, 0.25, dim=0))
    rlo, rhi = scores.rank_interval("correlation", 0.98)["l"]
    assert rlo.tolist()[0] == rhi.tolist()[0] == 1 and rlo[3] == rhi[3] == 4
    assert 2 <= float(rlo[1]) < float(rhi[1]) <= 3


def test_scores_without_replicates_say_how_to_get_them_and_bad_arguments_are_refused():
    net = tiny_cnn().eval()
    x = torch.rand(1, 3, 12, 12)
    s = nv.score_neurons(net, x, "relu2", n_samples=6)
    with pytest.raises(nv.NeuronvizError, match="bootstrap=B"):
        s.interval("correlation")
    for bad in (1, -2, True, 2.5):
        with pytest.raises(nv.NeuronvizError, match="bootstrap"):
            nv.score_neurons(net, x, "relu2", n_samples=6, bootstrap=bad)
    s = nv.score_neurons(net, x, "relu2", n_samples=6, bootstrap=4)
    for level in (0, 1, 1.5, "0.9"):
        with pytest.raises(nv.NeuronvizError, match="level"):
            s.interval("precision", level)


def test_on_batch_gets_the_scores_of_the_copies_seen_so_far():
    net = tiny_cnn().eval()
    x = torch.rand(1, 3, 12, 12)
    seen: list[nv.NeuronScores] = []
    final = nv.score_neurons(net, x, "relu2", n_samples=20, batch_size=5, on_batch=seen.append)
    assert [p.n_samples for p in seen] == [5, 10, 15, 20]
    torch.testing.assert_close(seen[-1].correlation["relu2"], final.correlation["relu2"])
    first = nv.score_neurons(net, x, "relu2", n_samples=10, seed=0)
    torch.testing.assert_close(seen[1].precision["relu2"], first.precision["relu2"])


def test_with_on_batch_the_first_batch_is_small_and_the_scores_do_not_change():
    from neuronviz.methods.resampling import FIRST_BATCH

    net = tiny_cnn().eval()
    x = torch.rand(1, 3, 12, 12)
    seen: list[int] = []
    live = nv.score_neurons(net, x, "relu2", n_samples=40, batch_size=16, bootstrap=8, progress=False,
                            on_batch=lambda p: seen.append(p.n_samples))
    assert seen == [*range(FIRST_BATCH, 40, 16), 40]  # a small first batch, then full ones
    plain = nv.score_neurons(net, x, "relu2", n_samples=40, batch_size=16, bootstrap=8, progress=False)
    for metric in ("correlation", "precision"):
        torch.testing.assert_close(live.metric(metric)["relu2"], plain.metric(metric)["relu2"], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(live.replicates[metric]["relu2"], plain.replicates[metric]["relu2"], rtol=1e-6,
                                   atol=1e-7)
