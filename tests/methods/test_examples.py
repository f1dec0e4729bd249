"""top_examples: planted channels find exactly their images, streaming equals in memory, the model is untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import neuronviz as nv
from neuronviz.core.errors import NeuronvizError
from neuronviz.methods.examples import HIST_POSITIONS, top_examples
from neuronviz.render.examples import crop_picture

N, SIDE = 60, 16
CARRIERS = [3, 11, 17, 29, 41, 58]  # the images that carry the planted patch
SPOTS = {3: (2, 2), 11: (8, 5), 17: (13, 13), 29: (5, 10), 41: (1, 12), 58: (10, 1)}  # patch centre per image


def planted_model() -> nn.Sequential:
    """conv1 channel 0 sums a 3x3 window (fires on the patch), channel 1 the negated sum; pool; conv2 keeps it."""
    conv1 = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    conv2 = nn.Conv2d(2, 1, 1, bias=False)
    with torch.no_grad():
        conv1.weight.zero_()
        conv1.weight[0] = 1.0 / 9
        conv1.weight[1] = -1.0 / 9
        conv2.weight.zero_()
        conv2.weight[0, 0] = 1.0
    return nn.Sequential(conv1, nn.ReLU(), nn.MaxPool2d(2), conv2, nn.Flatten(), nn.LazyLinear(2) if False else nn.Identity())


def planted_images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = 0.05 * torch.rand(N, 1, SIDE, SIDE, generator=g)
    for i, (r, c) in SPOTS.items():
        x[i, 0, r - 1 : r + 2, c - 1 : c + 2] = 1.0 + 0.01 * i  # distinct strengths: a known order
    return x


@pytest.fixture(scope="module")
def planted():
    model, x = planted_model(), planted_images()
    return model, x, top_examples(model, x, ["1", "3"], k=len(CARRIERS), progress=False)


def test_a_planted_channel_finds_exactly_the_images_that_carry_the_patch_at_its_centre(planted):
    _, _, ex = planted
    rows = ex["1"][0]
    assert sorted(r.image for r in rows) == CARRIERS
    assert [r.image for r in rows] == sorted(CARRIERS, reverse=True)  # stronger patches first
    for r in rows:
        assert r.position == SPOTS[r.image]
        assert r.value == pytest.approx(1.0 + 0.01 * r.image, rel=1e-5)


def test_the_crop_contains_the_patch(planted):
    model, x, ex = planted
    for layer in ("1", "3"):
        for crop in ex.crops(x, layer, 0, model=model):
            r, c = SPOTS[crop.image]
            t, lft, b, rr = crop.box
            assert t <= r - 1 and b >= r + 2 and lft <= c - 1 and rr >= c + 2, (layer, crop.box)
            assert crop.pixels.shape[-2:] == (b - t, rr - lft)
            assert bool((crop.pixels >= 1.0).any())
            assert crop.heat is not None and crop.heat.shape == crop.pixels.shape[-2:]
    assert ex.receptive_fields["1"].method == "analytic"
    assert ex.crops(x, "1", 0)[0].box == (SPOTS[58][0] - 1, SPOTS[58][1] - 1, SPOTS[58][0] + 2, SPOTS[58][1] + 2)


def test_ties_go_to_the_smaller_image_index_then_the_smaller_position():
    model = planted_model()
    x = torch.zeros(10, 1, SIDE, SIDE)
    x[[7, 2, 5], 0, 4:7, 4:7] = 1.0  # equal patches on three images
    x[5, 0, 10:13, 10:13] = 1.0  # and a second, equal one further on in image 5
    for bs in (1, 3, 10):
        rows = top_examples(model, x, "1", k=4, batch_size=bs, progress=False)["1"][0]
        assert [(r.image, r.position) for r in rows[:3]] == [(2, (5, 5)), (5, (5, 5)), (7, (5, 5))]


def test_streaming_over_a_loader_equals_the_in_memory_result_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(203, 3, 12, 12, generator=g), torch.randint(0, 4, (203,), generator=g)
    layers = ["1", "3", "6"]
    data = torch.utils.data.TensorDataset(x, y)
    # the forward pass itself may round differently per batch size, so each stream is compared
    # with the tensor cut into the same batches: what is left is the merge, which must be exact
    for bs in (17, 50):
        ref = top_examples(model, x, layers, k=7, labels=y, batch_size=bs, progress=False)
        sources = [(torch.utils.data.DataLoader(data, batch_size=bs), {}), (data, {"batch_size": bs}),
                   ([(x[i:i + bs], y[i:i + bs]) for i in range(0, 203, bs)], {})]
        for source, extra in sources:
            got = top_examples(model, source, layers, k=7, progress=False, **extra)
            for name in layers:
                assert torch.equal(got.values[name], ref.values[name])
                assert torch.equal(got.images[name], ref.images[name])
                assert torch.equal(got.positions[name], ref.positions[name])
                g1, g2 = ref.generality(name), got.generality(name)
                assert torch.equal(g1.share, g2.share) and torch.equal(g1.threshold, g2.threshold)
                assert torch.equal(g1.entropy.nan_to_num(-1.0), g2.entropy.nan_to_num(-1.0))


def test_rows_equal_a_numpy_top_k_of_the_per_image_maxima_and_means():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 5, 3), nn.ReLU())
    x = torch.randn(90, 2, 9, 9)
    with torch.no_grad():
        a = model(x).reshape(90, 5, -1).numpy()
    for by, stat in (("max", a.max(2)), ("mean", a.mean(2))):
        ex = top_examples(model, x, "1", k=5, by=by, batch_size=13, progress=False)
        for c in range(5):
            want = np.argsort(-stat[:, c], kind="stable")[:5]
            rows = ex["1"][c]
            assert [r.image for r in rows] == want.tolist()
            np.testing.assert_allclose([r.value for r in rows], stat[want, c], rtol=1e-5)
            if by == "max":
                assert [divmod(int(a[r.image, c].argmax()), 7) for r in rows] == [r.position for r in rows]


def test_generality_share_and_entropy_equal_their_definition_from_the_histogram_threshold():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    x = torch.rand(600, 1, 4, 4)  # 2 x 2 positions: fewer than HIST_POSITIONS, so all are counted
    y = torch.arange(600) % 3
    ex = top_examples(model, x, "1", k=3, labels=y, progress=False)
    gen = ex.generality("1")
    with torch.no_grad():
        a = model(x).reshape(600, 4, -1)
    assert a.shape[2] <= HIST_POSITIONS
    for c in range(4):
        t = float(gen.threshold[c])
        fires = a[:, c].amax(1) >= t
        assert float(gen.share[c]) == pytest.approx(float(fires.double().mean()))
        if fires.any():
            counts = np.bincount(y[fires].numpy(), minlength=3) / int(fires.sum())
            h = -sum(p * math.log2(p) for p in counts if p > 0)
            assert float(gen.entropy[c]) == pytest.approx(h, abs=0.15)  # labels are binned 8x coarser
        # the threshold is the 99th percentile of the activations, to one bin
        top = float(a[:, c].abs().max())
        width = 2 * 2.0 ** (math.frexp(top)[1] if top > 0 else -20) / 512
        assert abs(t - float(torch.quantile(a[:, c].flatten(), 0.99))) <= width


class _InPlaceFrom(nn.Module):
    """ReLU, in place from the ``after``-th call on."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x.relu_() if self.calls >= self.after else x.relu()


@pytest.mark.parametrize("after", [1, 3])  # from the first batch on, or from the third
def test_a_layer_changed_in_place_by_a_later_module_is_ranked_as_it_left_its_own_module(after):
    torch.manual_seed(5)
    conv = nn.Conv2d(2, 4, 3)
    model = nn.Sequential(conv, _InPlaceFrom(after), nn.Conv2d(4, 3, 1), nn.ReLU())
    x = torch.randn(70, 2, 7, 7)
    with torch.no_grad():
        pre = conv(x).reshape(70, 4, -1).numpy()  # before the in-place ReLU: negative values kept
    ex = top_examples(model, x, ["0", "3"], k=4, batch_size=16, by="mean", progress=False)
    for c in range(4):
        want = np.argsort(-pre.mean(2)[:, c], kind="stable")[:4]
        assert [r.image for r in ex["0"][c]] == want.tolist()
        np.testing.assert_allclose([r.value for r in ex["0"][c]], pre.mean(2)[want, c], rtol=1e-5, atol=1e-6)


def test_a_shuffled_sampler_gives_the_same_rows_as_the_images_in_order():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU())
    x = torch.rand(150, 1, 6, 6)
    x[[40, 9, 120]] = x[77].clone()  # exact ties, met in shuffled order
    data = torch.utils.data.TensorDataset(x, torch.zeros(150, dtype=torch.int64))
    sampler = torch.utils.data.distributed.DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3)
    ref = top_examples(model, x, "1", k=6, batch_size=1, progress=False)
    got = top_examples(model, torch.utils.data.DataLoader(data, batch_size=1, sampler=sampler), "1", k=6,
                       progress=False)
    assert torch.equal(got.images["1"], ref.images["1"]) and torch.equal(got.positions["1"], ref.positions["1"])
    assert torch.equal(got.values["1"], ref.values["1"])


def test_sampled_positions_give_the_quantile_of_every_position_even_where_activity_sits_at_one_edge():
    # a channel that fires only in the last column of a 16 x 16 grid (1/16 of the positions, 6 %
    # of them strongly): a fixed sample of every 32nd position would never see it
    g = torch.Generator().manual_seed(4)
    n = 2000
    x = torch.zeros(n, 1, 16, 16)
    x[:, 0, :, 15] = torch.rand(n, 16, generator=g)
    x += 0.01 * torch.rand(x.shape, generator=g)
    model = nn.Sequential(nn.Identity())
    ex = top_examples(model, x, "0", k=3, progress=False, receptive_fields=False)
    t = float(ex.generality("0").threshold[0])
    rank = float((x.flatten() <= t).double().mean())  # the threshold's quantile among every activation
    assert rank == pytest.approx(0.99, abs=0.003)


def test_a_raising_progress_callback_stops_the_pass_and_leaves_the_model_as_it_was(snapshot):
    model, x = planted_model(), planted_images()
    model.train()
    before = snapshot(model)
    calls = []

    def stop(done, total):
        calls.append(done)
        if done >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        top_examples(model, x, "1", batch_size=10, progress=stop)
    assert calls == [10, 20]
    before.assert_unchanged()
    top_examples(model, x, ["1", "3"], progress=False)
    before.assert_unchanged()


def test_table_rows_and_frame_have_one_row_per_example(planted):
    _, _, ex = planted
    rows = ex.as_rows()
    assert len(rows) == len(CARRIERS) * 3  # layer 1: 2 channels, layer 3: 1 channel
    assert rows[0] == {"layer": "1", "channel": 0, "rank": 0, "image": 58, "row": 10, "col": 1,
                       "value": pytest.approx(1.58, rel=1e-5)}
    assert list(ex.to_frame().columns) == ["layer", "channel", "rank", "image", "row", "col", "value"]


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k"), ({"by": "median"}, "by must be"), ({"quantile": 1.0}, "quantile"),
    ({"labels": [1, 2]}, "labels must be"), ({"layers": "nope"}, "no layer named"),
])
def test_bad_arguments_say_what_would_be_right(kwargs, match):
    model, x = planted_model(), planted_images()
    args = {"layers": "1", **kwargs}
    with pytest.raises(NeuronvizError, match=match):
        top_examples(model, x, progress=False, **args)


def test_a_source_that_is_not_images_is_refused():
    with pytest.raises(NeuronvizError, match="source must be"):
        top_examples(planted_model(), 3.0, "1")


def test_each_neuron_gets_a_row_of_its_crops_best_first_with_value_and_label(tmp_path):
    model, x = planted_model(), planted_images()
    labels = torch.arange(len(x)) % 4
    ex = nv.top_examples(model, x, ["1", "3"], k=len(CARRIERS), labels=labels, progress=False)
    data = torch.utils.data.TensorDataset(x, labels)
    fig = nv.render_examples(ex, data, neurons=[("1", 0), ("3", 0)], path=tmp_path / "ex.png")
    assert (tmp_path / "ex.png").stat().st_size > 0
    axes = fig.axes
    assert len(axes) == 2 * len(CARRIERS)
    first = axes[0].get_title()
    assert first.startswith(f"{ex['1'][0][0].value:.3g}") and f"image {ex['1'][0][0].image}" in first
    assert f"· {58 % 4}" in first
    assert "fires on" in axes[0].get_ylabel()


def test_a_crop_with_an_activation_map_is_drawn_with_it_over_the_crop():
    model, x = planted_model(), planted_images()
    ex = nv.top_examples(model, x, "1", k=2, progress=False)
    plain, = ex.crops(x, "1", 0)[:1]
    heated, = ex.crops(x, "1", 0, model=model)[:1]
    a, b = crop_picture(plain), crop_picture(heated)
    assert a.shape == b.shape == (3, 3, 3)
    assert not (a == b).all()
