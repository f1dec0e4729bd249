"""CoMoments: streaming merges agree with numpy on the whole data, whatever the batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronviz.core.stats import CoMoments


def _streamed(a: torch.Tensor, o: torch.Tensor, cuts: list[int]) -> CoMoments:
    m = CoMoments(a.shape[1])
    bounds = [0, *cuts, a.shape[0]]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        m.update(a[lo:hi], o[lo:hi])
    return m


@pytest.mark.parametrize("cuts", [[], [1], [5, 6, 30], list(range(1, 40))])
def test_streamed_moments_match_numpy_on_all_samples(cuts):
    rng = np.random.default_rng(0)
    a = rng.normal(1000.0, 0.01, size=(40, 7))  # large mean, tiny spread: naive sums would fail
    o = rng.normal(size=40) + a[:, 0] * 50
    m = _streamed(torch.from_numpy(a).float().double(), torch.from_numpy(o), cuts)
    a = torch.from_numpy(a).float().double().numpy()  # the same values that were streamed
    assert m.n == 40
    np.testing.assert_allclose(m.mean.numpy(), a.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.variance().numpy(), a.var(0), rtol=1e-7)
    expected_r = [np.corrcoef(a[:, j], o)[0, 1] for j in range(7)]
    np.testing.assert_allclose(m.correlation().numpy(), expected_r, rtol=1e-7, atol=1e-9)


def test_constant_features_have_exactly_zero_variance_and_undefined_correlation():
    a = torch.tensor([[0.1, 3.0], [0.1, 4.0], [0.1, 5.0]])  # 0.1 is not exact in binary
    o = torch.tensor([1.0, 2.0, 4.0])
    m = _streamed(a, o, [1, 2])
    assert m.variance()[0].item() == 0.0
    assert torch.isnan(m.correlation()[0]) and not torch.isnan(m.correlation()[1])


def test_constant_output_makes_every_correlation_undefined():
    m = _streamed(torch.randn(10, 3), torch.ones(10), [4])
    assert torch.isnan(m.correlation()).all()


def test_merging_two_accumulators_equals_streaming_all():
    torch.manual_seed(0)
    a, o = torch.randn(30, 4), torch.randn(30)
    left, right = _streamed(a[:12], o[:12], [5]), _streamed(a[12:], o[12:], [])
    left.merge(right)
    whole = _streamed(a, o, [])
    for name in ("mean", "m2", "comoment", "minimum", "maximum"):  # batches are summed in float32
        assert torch.allclose(getattr(left, name), getattr(whole, name), rtol=1e-6, atol=1e-6)


def test_float32_batches_with_a_large_offset_keep_their_small_variance():
    rng = np.random.default_rng(1)
    a32 = (1000.0 + rng.normal(0, 0.01, size=(64, 5))).astype(np.float32)
    o = rng.normal(size=64)
    m = _streamed(torch.from_numpy(a32), torch.from_numpy(o), [32])
    a = a32.astype(np.float64)
    np.testing.assert_allclose(m.variance().numpy(), a.var(0), rtol=1e-4)
    np.testing.assert_allclose(m.mean.numpy(), a.mean(0), rtol=1e-9)
