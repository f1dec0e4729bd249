"""Scores streamed from a DataLoader equal the in-memory ones, and memory does not grow with the data."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
from torch import nn

import neuronviz as nv
from neuronviz.core.errors import NeuronvizError
from neuronviz.core.stats import PositionCovariance
from test_pcace import Planted, planted_images


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: on a busy machine every multi-threaded op would wait for a time slice."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def relu_net() -> nn.Module:
    """Conv maps with dead (constant zero) positions, a strided conv, and a linear layer."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )


def loader_of(images: torch.Tensor, batch_size: int = 32, **kwargs) -> torch.utils.data.DataLoader:
    data = torch.utils.data.TensorDataset(images, torch.zeros(len(images)))
    return torch.utils.data.DataLoader(data, batch_size=batch_size, **kwargs)


# ---------------------------------------------------------------------------------------------
# the statistics


@pytest.mark.parametrize("cuts", [[], [1], [7, 8, 30]])
def test_position_covariance_matches_numpy_whatever_the_batching(cuts):
    rng = np.random.default_rng(0)
    a = rng.normal(50.0, 0.1, size=(40, 3, 5))  # an offset that naive sums of squares would lose
    a[:, 1, 2] = 0.3  # a constant position
    t = torch.from_numpy(a)
    cov = PositionCovariance(3, 5)
    bounds = [0, *cuts, 40]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        cov.update(t[lo:hi])
    assert cov.n == 40
    np.testing.assert_allclose(cov.mean.numpy(), a.mean(0), rtol=1e-13)
    for c in range(3):
        d = a[:, c] - a[:, c].mean(0)
        np.testing.assert_allclose(cov.m2[c].numpy(), d.T @ d, rtol=1e-9, atol=1e-12)
    assert cov.constant[1, 2] and cov.std()[1, 2] == 0 and cov.constant.sum() == 1
    corr = cov.correlation()
    z = (a[:, 0] - a[:, 0].mean(0)) / a[:, 0].std(0)
    np.testing.assert_allclose(corr[0].numpy(), z.T @ z / 40, rtol=1e-9)
    assert (corr[1, 2] == 0).all() and (corr[1, :, 2] == 0).all()

    halves = PositionCovariance(3, 5), PositionCovariance(3, 5)
    halves[0].update(t[:13])
    halves[1].update(t[13:])
    halves[0].merge(halves[1])
    torch.testing.assert_close(halves[0].m2, cov.m2, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# PCACE


@pytest.mark.parametrize("n_components, variant", [(1, "principled"), (3, "principled"), (3, "authors")])
def test_streamed_pcace_equals_the_in_memory_scores(n_components, variant):
    images = planted_images(150)
    held = nv.pcace(Planted(), images, "scaled", target=0, n_components=n_components, variant=variant)
    streamed = nv.pcace(Planted(), loader_of(images, 32), "scaled", target=0, n_components=n_components,
                        variant=variant)
    assert streamed.ranking.tolist() == held.ranking.tolist()
    torch.testing.assert_close(streamed.scores, held.scores, rtol=0, atol=1e-9)
    torch.testing.assert_close(streamed.explained_variance, held.explained_variance, rtol=0, atol=1e-12)
    torch.testing.assert_close(streamed.target_values, held.target_values)


@pytest.mark.parametrize("layer", ["1", "3", "6"])
def test_streamed_pcace_handles_dead_positions_and_linear_layers_like_the_in_memory_path(layer):
    net, images = relu_net(), torch.randn(120, 3, 10, 10)
    held = nv.pcace(net, images, layer, target=1)
    streamed = nv.pcace(net, images, layer, target=1, streaming=True, batch_size=25)
    assert streamed.ranking.tolist() == held.ranking.tolist()
    torch.testing.assert_close(streamed.scores, held.scores, rtol=0, atol=1e-9)
    torch.testing.assert_close(streamed.explained_variance, held.explained_variance, rtol=0, atol=1e-12)


def test_streaming_reads_the_images_twice_and_the_first_pass_stops_after_the_layers():
    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = relu_net()
            self.heads = 0
            self.net[6].register_forward_hook(self._count)  # the classifier: runs only on whole passes

        def _count(self, *args):
            self.heads += 1

        def forward(self, x):
            return self.net(x)

    model, images = Counting(), torch.randn(100, 3, 10, 10)
    ranking = nv.rank_layers(model, loader_of(images, 20), ["net.0", "net.2"], target=0)
    # 5 batches: first pass whole for the first batch only, second pass whole for every batch
    assert model.heads == 1 + 5
    held = nv.rank_layers(model, images, ["net.0", "net.2"], target=0)
    assert [r["layer"] for r in ranking.summary] == [r["layer"] for r in held.summary]
    for name in ("net.0", "net.2"):
        torch.testing.assert_close(ranking[name].scores, held[name].scores, rtol=0, atol=1e-9)


def test_solving_ace_a_few_channels_at_a_time_gives_the_same_scores(monkeypatch):
    import neuronviz.methods.pcace as module

    net, images = relu_net(), torch.randn(60, 3, 10, 10)
    whole = nv.pcace(net, images, "0", target=1, streaming=True)
    monkeypatch.setattr(module, "_ACE_ELEMENTS", {"cpu": 3 * 60})  # 3 channels per call
    blocks = nv.pcace(net, images, "0", target=1, streaming=True)
    # the problems are independent: only the float64 rounding of a differently shaped batch may differ
    torch.testing.assert_close(blocks.scores, whole.scores, rtol=0, atol=1e-12)
    assert blocks.ranking.tolist() == whole.ranking.tolist()


def test_a_one_shot_generator_is_refused_with_advice_but_streaming_false_takes_it():
    images = planted_images(60)
    with pytest.raises(NeuronvizError, match="one-shot iterator.*DataLoader"):
        nv.pcace(Planted(), (b for b in images.split(20)), "scaled", target=0)
    held = nv.pcace(Planted(), (b for b in images.split(20)), "scaled", target=0, streaming=False)
    assert held.n_images == 60


def test_images_that_change_between_passes_are_refused():
    class Shrinking:
        def __init__(self):
            self.passes = 0

        def __iter__(self):
            self.passes += 1
            n = 60 if self.passes == 1 else 40
            yield from planted_images(n).split(20)

    with pytest.raises(NeuronvizError, match="60 images on the first pass and 40 on the second"):
        nv.pcace(Planted(), Shrinking(), "scaled", target=0)


def test_covariances_that_do_not_fit_fall_back_to_holding_the_activations_or_fail_clearly(monkeypatch):
    import neuronviz.methods.pcace as module

    images = planted_images(60)
    held = nv.pcace(Planted(), images, "scaled", target=0)
    budget = PositionCovariance.nbytes(4, 36)  # one layer's covariances need more than half of this
    monkeypatch.setattr(module, "_available_bytes", lambda device: budget)
    with pytest.warns(RuntimeWarning, match=r"4 x 36 x 36.*holding the activations instead"):
        fallen = nv.pcace(Planted(), loader_of(images), "scaled", target=0)
    torch.testing.assert_close(fallen.scores, held.scores, rtol=0, atol=1e-6)
    with pytest.raises(NeuronvizError, match="position covariance.*streaming=False"):
        nv.pcace(Planted(), loader_of(images), "scaled", target=0, streaming=True)


def test_model_is_left_untouched_after_streaming_and_after_a_loader_that_fails(snapshot):
    model = Planted()
    model.train()
    snap = snapshot(model)
    nv.pcace(model, loader_of(planted_images(60)), "scaled", target=0)
    snap.assert_unchanged()

    class FailsOnSecondPass:
        def __init__(self):
            self.passes = 0

        def __iter__(self):
            self.passes += 1
            for i, b in enumerate(planted_images(60).split(20)):
                if self.passes == 2 and i == 1:
                    raise OSError("disk gone")
                yield b

    with pytest.raises(OSError, match="disk gone"):
        nv.pcace(model, FailsOnSecondPass(), "scaled", target=0)
    snap.assert_unchanged()


def test_a_bad_batch_in_a_loader_is_refused_clearly():
    images = torch.randn(60, 3, 6, 6)
    bad = [images[:30], images[30:, :2]]
    with pytest.raises(NeuronvizError, match="2 channel.*takes 3"):
        nv.pcace(Planted(), bad, "scaled", target=0)
    with pytest.raises(NeuronvizError, match="2 channel.*takes 3"):
        nv.score_neurons(Planted(), images[0], "scaled", samples=bad)
    with pytest.raises(NeuronvizError, match="must yield image tensors.*got str"):
        nv.score_neurons(Planted(), images[0], "scaled", samples=[images[:5], "cat.jpg"])


# ---------------------------------------------------------------------------------------------
# score_neurons


def test_score_neurons_over_a_loader_equals_the_tensor_path(cnn):
    torch.manual_seed(2)
    images = torch.rand(70, 3, 10, 10)
    layers = ["conv1", "relu2", "fc"]
    ref = nv.score_neurons(cnn, images[0], layers, samples=images, keep_channel_means=True)
    calls = []
    sources = {
        "loader of pairs": loader_of(images, 16),
        "list of tensors": list(images.split(25)),
        "generator": (b for b in images.split(9)),  # one pass: a generator is fine here
    }
    for what, source in sources.items():
        got = nv.score_neurons(cnn, images[0], layers, samples=source, keep_channel_means=True, batch_size=10,
                               progress=lambda done, total: calls.append((what, done, total)))
        assert got.n_samples == 70 and got.target == ref.target, what
        torch.testing.assert_close(got.outputs, ref.outputs, rtol=0, atol=1e-12)
        for name in layers:
            torch.testing.assert_close(got.correlation[name], ref.correlation[name], rtol=0, atol=1e-6,
                                       equal_nan=True)
            torch.testing.assert_close(got.precision[name], ref.precision[name], rtol=1e-6, atol=0, equal_nan=True)
            torch.testing.assert_close(got.channel_means[name], ref.channel_means[name])
    # progress counts images; the total is known for a DataLoader and a list, not a generator
    assert [c for c in calls if c[0] == "loader of pairs"][-1] == ("loader of pairs", 70, 70)
    assert [c[2] for c in calls if c[0] == "list of tensors"][:2] == [70, 70]
    assert [c[1:] for c in calls if c[0] == "generator"][:2] == [(9, 9), (18, 18)]


def test_score_neurons_over_too_few_samples_is_refused(cnn):
    images = torch.rand(2, 3, 10, 10)
    with pytest.raises(NeuronvizError, match="samples holds 2 image.*at least 3"):
        nv.score_neurons(cnn, images[0], "conv1", samples=loader_of(images))


# ---------------------------------------------------------------------------------------------
# memory: what is held does not grow with the number of images


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"
    )]


def _malloc_in_use():
    """Bytes currently allocated with malloc (torch's CPU tensors included), or None off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None

    def used() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    return used


class Watched:
    """Fresh random batches (no data set held), noting the bytes in use whenever one is asked for."""

    def __init__(self, n: int, batch: int, used) -> None:
        self.n, self.batch, self.used = n, batch, used
        self.peak = 0

    def __iter__(self):
        for i, lo in enumerate(range(0, self.n, self.batch)):
            self.peak = max(self.peak, self.used())
            yield torch.randn(min(self.batch, self.n - lo), 3, 8, 8, generator=torch.Generator().manual_seed(i))


def _growth(run, n: int, used) -> int:
    data = Watched(n, 32, used)
    base = used()
    run(data)
    return data.peak - base


def test_memory_held_does_not_grow_with_the_number_of_images():
    used = _malloc_in_use()
    if used is None:
        pytest.skip("needs glibc's mallinfo2 to count allocated bytes")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(32, 2))
    # conv "0": 32 x 64 maps, 8 KiB of activations per image, 1.5 MiB more at n=256 than at n=64;
    # the covariances (32 x 64 x 64 float64, 1 MiB) are the same at every n
    per_image = 32 * 64 * 4

    def streamed(data):
        nv.pcace(net, data, "0", target=1)

    def held(data):
        nv.pcace(net, data, "0", target=1, streaming=False)

    def scored(data):
        nv.score_neurons(net, torch.zeros(3, 8, 8), "0", target=1, samples=data)

    small, large = 64, 256
    extra = (large - small) * per_image
    for run in (streamed, scored):
        _growth(run, 48, used)  # warm-up: first-call allocations (caches) are not what is measured
        grown = _growth(run, large, used) - _growth(run, small, used)
        assert grown < 0.1 * extra, f"{run.__name__}: {grown} bytes more for {large - small} more images"
    # the measure can tell: holding the activations grows by about their size
    _growth(held, 48, used)
    grown = _growth(held, large, used) - _growth(held, small, used)
    assert grown > 0.5 * extra
