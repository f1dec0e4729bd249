"""PCACE figures: drawn from data (no model), valid files, the ranked channels titled, bad input refused.

``nv.render_pcace(result, model, images)`` computes the maps with one forward pass and draws
them with the data-only :func:`render_pcace_maps`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neuronviz as nv
from neuronviz.methods.pcace import pcace, rank_layers, shown_maps
from neuronviz.render.pcace import display_images, render_layer_ranking, render_pcace_maps


@pytest.fixture(scope="module")
def digits():
    model = nv.digits_model()
    x, y = nv.load_digits()
    return model, x[y == 3][:45]


@pytest.fixture(scope="module")
def relu2(digits):
    model, images = digits
    return pcace(model, images, "relu2", target=3)


def hooked_maps(model, images, layer) -> torch.Tensor:
    """The layer's output with a plain forward hook in eval mode (independent of neuronviz)."""
    store = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: store.setdefault("a", o.detach()))
    was = model.training
    model.eval()
    with torch.no_grad():
        model(images)
    model.train(was)
    handle.remove()
    return store["a"]


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_render_pcace_maps_draws_from_data_alone(digits, relu2, tmp_path):
    model, images = digits
    maps = hooked_maps(model, images[:2], "relu2")
    fig = render_pcace_maps(relu2, maps, display_images(images[:2]), k=2, path=tmp_path / "p.png", dpi=50)
    for channel in relu2.top(2) + relu2.bottom(2):
        assert f"ch {channel}\n{float(relu2.scores[channel]):.3f}" in titles(fig)
    assert len(fig.axes) == 1 + 2 * (1 + 2 * 2)  # the scores, then 2 rows of image + 4 maps
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert fig._repr_png_()[:4] == b"\x89PNG"


def test_nv_render_pcace_is_one_forward_pass_then_the_same_figure(digits, relu2, snapshot):
    model, images = digits
    snap = snapshot(model)
    passes = []
    handle = model.register_forward_pre_hook(lambda m, a: passes.append(a[0].shape[0]))
    try:
        fig = nv.render_pcace(relu2, model, images, k=2, n_images=2, dpi=50)
    finally:
        handle.remove()
    assert passes == [2]
    direct = render_pcace_maps(relu2, hooked_maps(model, images[:2], "relu2"), display_images(images[:2]), k=2, dpi=50)
    assert titles(fig) == titles(direct) and fig._suptitle.get_text() == direct._suptitle.get_text()
    snap.assert_unchanged()


def test_shown_maps_are_every_layers_maps_from_one_pass(digits, snapshot):
    model, images = digits
    snap = snapshot(model)
    maps, output = shown_maps(model, images[:3], ["relu1", "relu3"])
    for layer in ("relu1", "relu3"):
        expected = hooked_maps(model, images[:3], layer)
        torch.testing.assert_close(maps[layer], expected.reshape(*expected.shape[:2], *maps[layer].shape[2:]))
    assert output.shape == (3, 10)
    snap.assert_unchanged()


def test_render_layer_ranking_has_one_column_per_layer(digits, tmp_path):
    model, images = digits
    ranking = rank_layers(model, images, ["relu1", "relu3"], target=3, k=3)
    fig = nv.render_layer_ranking(ranking, path=tmp_path / "r.pdf")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["relu1", "relu3"]
    assert (tmp_path / "r.pdf").read_bytes()[:4] == b"%PDF"
    assert render_layer_ranking is nv.render_layer_ranking


def test_maps_of_another_layer_size_are_refused(digits, relu2):
    model, images = digits
    res = pcace(model, images, "relu1", target=3)  # 16 channels
    with pytest.raises(nv.NeuronvizError, match="16"):
        render_pcace_maps(res, hooked_maps(model, images[:1], "relu2"), display_images(images[:1]))
    res.layer = "relu2"  # 32 channels on the model
    with pytest.raises(nv.NeuronvizError, match="16"):
        nv.render_pcace(res, model, images)


def test_bad_requests_fail_before_the_forward_pass(digits, relu2):
    model, images = digits
    maps = hooked_maps(model, images[:2], "relu2")
    with pytest.raises(nv.NeuronvizError, match="pictures"):
        render_pcace_maps(relu2, maps, display_images(images[:3]))
    with pytest.raises(nv.NeuronvizError, match="k"):
        render_pcace_maps(relu2, maps, display_images(images[:2]), k=0)
    passes = []
    handle = model.register_forward_pre_hook(lambda m, a: passes.append(1))
    try:
        for kwargs, message in [({"k": 0}, "k"), ({"n_images": 0}, "n_images"), ({"path": "p.jpg"}, r"\.png")]:
            with pytest.raises(nv.NeuronvizError, match=message):
                nv.render_pcace(relu2, model, images, **kwargs)
        with pytest.raises(nv.NeuronvizError, match="PCACEScores"):
            nv.render_pcace(model, relu2, images)
    finally:
        handle.remove()
    assert passes == []


def test_grey_images_are_scaled_per_image_for_display():
    imgs = torch.stack([torch.zeros(1, 4, 4), torch.full((1, 4, 4), 5.0)])
    imgs[1, 0, 0, 0] = 7.0
    shown = display_images(imgs)
    assert shown.shape == (2, 4, 4, 3)
    assert shown[0].max() == 0 and shown[1].max() == 1 and shown[1].min() == 0
    assert np.isfinite(shown).all()
