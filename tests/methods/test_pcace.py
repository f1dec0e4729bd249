"""PCACE: planted channels rank where they must, invariances hold, and the pieces match references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import neuronviz as nv
from neuronviz.core.errors import NeuronvizError
from neuronviz.methods.pcace import channel_components, pcace, rank_layers


class Planted(nn.Module):
    """``feat`` channel 0 carries a per-image value s; the class-0 logit is s**2 (non-monotone)."""

    def __init__(self, scale=(1.0, 1.0, 1.0, 1.0)):
        super().__init__()
        self.feat = nn.Conv2d(3, 4, 1)
        with torch.no_grad():
            self.feat.weight.zero_()
            self.feat.bias.zero_()
            self.feat.weight[0, 0] = self.feat.weight[1, 1] = self.feat.weight[2, 2] = 1.0
            self.feat.weight[3, 1] = self.feat.weight[3, 2] = 0.5
        self.register_buffer("scale", torch.tensor(scale).view(1, 4, 1, 1))
        self.scaled = nn.Identity()  # what PCACE sees: each channel times a positive constant
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        a = self.feat(x)
        seen = self.scaled(a * self.scale)
        s = (seen / self.scale)[:, 0].mean(dim=(1, 2))
        return torch.stack([s**2, a[:, 1].mean(dim=(1, 2)), torch.zeros_like(s)], dim=1)


def planted_images(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 6, 6, generator=g) * 0.3
    x[:, 0] += (torch.rand(n, generator=g) * 2 - 1).view(n, 1, 1)  # s ~ U(-1, 1), symmetric
    return x


def test_planted_non_monotone_channel_ranks_first_while_pearson_misses_it():
    model, images = Planted(), planted_images()
    res = pcace(model, images, "scaled", target=0, batch_size=64)
    assert res.top(1) == [0]
    assert res.scores[0] > 0.9
    assert res.scores.shape == (4,) and ((res.scores >= 0) & (res.scores <= 1)).all()
    with torch.no_grad(), nv.capture(model, "scaled") as rec:
        logits = model(images)
        channel_mean = rec["scaled"][:, 0].mean(dim=(1, 2))
    pearson = np.corrcoef(channel_mean.numpy(), logits[:, 0].numpy())[0, 1]
    assert abs(pearson) < 0.3


def test_one_forward_pass_per_batch_never_one_per_channel():
    model = Planted()
    pcace(model, planted_images(100), "scaled", target=0, batch_size=30)
    assert model.calls == 4


def test_multiplying_a_channel_by_a_positive_constant_keeps_its_score():
    images = planted_images()
    plain = pcace(Planted(), images, "scaled", target=0)
    scaled = pcace(Planted(scale=(7.0, 0.2, 1.0, 3.0)), images, "scaled", target=0)
    assert torch.allclose(plain.scores, scaled.scores, atol=1e-6)


def test_score_matches_the_ace_package_on_the_first_principal_component():
    ace_ref = pytest.importorskip("ace.ace")
    model, images = Planted(), planted_images(200, seed=3)
    res = pcace(model, images, "scaled", target=0)
    with torch.no_grad(), nv.capture(model, "scaled") as rec:
        y = model(images)[:, 0].double().numpy()
        acts = rec["scaled"].double().numpy()
    for c in range(4):
        m = acts[:, c].reshape(len(images), -1)
        sd = m.std(0)
        z = (m - m.mean(0)) / np.where(sd > 0, sd, 1)
        u, s, _ = np.linalg.svd(z, full_matrices=False)
        pc1 = u[:, 0] * s[0]
        solver = ace_ref.ACESolver()
        solver.specify_data_set([pc1], y)
        solver.solve()
        rho = abs(np.corrcoef(solver.x_transforms[0], solver.y_transform)[0, 1])
        assert res.scores[c].item() == pytest.approx(rho, abs=0.01)


def test_channel_components_match_numpy_pca():
    torch.manual_seed(0)
    for n, p in ((30, 9), (8, 25)):  # both the Gram and the covariance paths
        maps = torch.randn(3, n, p) * torch.arange(1, p + 1)
        proj, explained = channel_components(maps, n_components=2)
        for c in range(3):
            z = maps[c].double().numpy()
            z = (z - z.mean(0)) / z.std(0)
            u, s, _ = np.linalg.svd(z, full_matrices=False)
            np.testing.assert_allclose(np.abs(proj[c].numpy()), np.abs(u[:, :2] * s[:2]), rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(explained[c].numpy(), s[:2] ** 2 / (s**2).sum(), rtol=1e-6)


def test_authors_variant_scores_only_the_first_component():
    model, images = Planted(), planted_images(200)
    one = pcace(model, images, "scaled", target=0, n_components=1)
    authors = pcace(model, images, "scaled", target=0, n_components=3, variant="authors")
    principled = pcace(model, images, "scaled", target=0, n_components=3)
    assert authors.variant == "authors" and principled.n_components == 3
    assert principled.explained_variance.shape == (4, 3)
    assert not torch.allclose(authors.scores, principled.scores)
    assert authors.top(1) == one.top(1) == [0]


def test_rank_layers_uses_one_pass_and_puts_the_informative_layer_first():
    class TwoLayers(Planted):
        def __init__(self):
            super().__init__()
            self.noise = nn.Conv2d(3, 2, 1)
            with torch.no_grad():
                self.noise.weight.zero_()
                self.noise.weight[:, 1:] = 1.0  # only the unrelated inputs

        def forward(self, x):
            self.noise(x)
            return super().forward(x)

    model = TwoLayers()
    ranking = rank_layers(model, planted_images(), ["noise", "scaled"], target=0, k=1, batch_size=100)
    assert model.calls == 3
    assert ranking.best() == "scaled"
    assert [r["layer"] for r in ranking.summary] == ["scaled", "noise"]
    assert ranking["scaled"].top(1) == [0]
    assert "mean top-1" in repr(ranking)


def test_a_dataloader_of_image_label_pairs_gives_the_same_scores():
    images = planted_images(120)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.zeros(120)), batch_size=50)
    a = pcace(Planted(), images, "scaled", target=0)
    b = pcace(Planted(), loader, "scaled", target=0)
    assert torch.allclose(a.scores, b.scores, atol=1e-6)


def test_non_spatial_layer_counts_each_feature_as_a_channel():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 5), nn.Tanh(), nn.Linear(5, 2))
    res = pcace(net, planted_images(60), "2", target=1)
    assert res.scores.shape == (5,)


def test_float16_storage_gives_nearly_the_same_ranking():
    images = planted_images()
    full = pcace(Planted(), images, "scaled", target=0)
    half = pcace(Planted(), images, "scaled", target=0, store_dtype=torch.float16, offload="cpu")
    assert half.top(1) == full.top(1)
    assert torch.allclose(full.scores, half.scores, atol=0.02)


def test_model_is_left_untouched(snapshot):
    model = Planted()
    model.train()
    snap = snapshot(model)
    pcace(model, planted_images(40), "scaled", target=0)
    snap.assert_unchanged()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"images": planted_images(10)}, "at least 20 images"),
        ({"target": 2}, "same on every image"),
        ({"target": 7}, "out of range"),
        ({"target": None}, "needs a target"),
        ({"layer": "scaledd"}, "'scaled'"),
        ({"n_components": 0}, "n_components"),
        ({"variant": "paper"}, "variant"),
        ({"images": torch.randn(30, 3, 6)}, r"\(N, C, H, W\)"),
    ],
)
def test_bad_input_is_refused_clearly(kwargs, message, snapshot):
    model = Planted()
    snap = snapshot(model)
    args = {"images": planted_images(40), "layer": "scaled", "target": 0, **kwargs}
    with pytest.raises(NeuronvizError, match=message):
        pcace(model, args.pop("images"), args.pop("layer"), **args)
    snap.assert_unchanged()


def test_nan_activations_are_refused():
    class Sqrt(nn.Module):
        def forward(self, x):
            return torch.sqrt(x)  # NaN wherever x < 0

    net = nn.Sequential(nn.Conv2d(3, 2, 1), Sqrt(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(NeuronvizError, match="layer '1' produced NaN or infinite activations"):
        pcace(net, planted_images(40), "1", target=0)


def test_infinite_pixels_are_refused_before_the_model_runs():
    images = planted_images(40)
    images[3, 0, 0, 0] = math.inf
    model = Planted()
    with pytest.raises(NeuronvizError, match="images contains 1 NaN or infinite"):
        pcace(model, images, "scaled", target=0)
    assert model.calls == 0


def test_a_request_that_cannot_fit_fails_with_advice(monkeypatch):
    import neuronviz.methods.pcace as module

    monkeypatch.setattr(module, "_available_bytes", lambda device: 1000)
    with pytest.raises(NeuronvizError, match="float16.*offload"):
        pcace(Planted(), planted_images(40), "scaled", target=0)


@pytest.mark.parametrize("streaming", [False, True])
def test_progress_counts_the_images_of_every_forward_pass(streaming):
    calls = []
    rank_layers(Planted(), planted_images(50), ["scaled"], target=0, batch_size=20, streaming=streaming,
                progress=lambda done, total: calls.append((done, total)))
    if streaming:  # two passes over the images
        assert calls == [(20, 100), (40, 100), (50, 100), (70, 100), (90, 100), (100, 100)]
    else:
        assert calls == [(20, 50), (40, 50), (50, 50)]


def test_progress_of_a_loader_of_unknown_length_never_runs_ahead_of_its_total():
    batches = [planted_images(25, seed=s) for s in range(2)]
    calls = []
    pcace(Planted(), iter(batches), "scaled", target=0, streaming=False,
          progress=lambda done, total: calls.append((done, total)))
    assert calls == [(25, 25), (50, 50)]


class Stop(Exception):
    pass


@pytest.mark.parametrize("streaming", [False, True])
def test_raising_from_progress_stops_the_call_and_leaves_no_hook(streaming, snapshot):
    model = Planted()
    model.train()
    snap = snapshot(model)
    calls = []

    def progress(done, total):
        calls.append(done)
        if done >= 40:
            raise Stop("cancelled")

    with pytest.raises(Stop):
        rank_layers(model, planted_images(100), ["scaled", "feat"], target=0, batch_size=20, streaming=streaming,
                    progress=progress)
    assert calls == [20, 40]  # nothing ran after the raise
    assert model.calls == 2
    snap.assert_unchanged()
