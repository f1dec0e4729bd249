"""PCACE figures: files are valid, the panels show the ranked channels, bad arguments are refused."""

from __future__ import annotations

import pytest
import torch

import neuronviz as nv
from neuronviz.methods.pcace import pcace, rank_layers
from neuronviz.render.pcace import display_images, render_layer_ranking, render_pcace


@pytest.fixture(scope="module")
def digits():
    model = nv.digits_model()
    x, y = nv.load_digits()
    return model, x[y == 3][:45]


def test_render_pcace_titles_the_top_and_bottom_channels_and_saves_png(digits, tmp_path):
    model, images = digits
    res = pcace(model, images, "relu2", target=3)
    fig = render_pcace(res, model, images, k=2, n_images=2, path=tmp_path / "p.png", dpi=50)
    titles = [ax.get_title() for ax in fig.axes]
    for channel in res.top(2) + res.bottom(2):
        assert any(t.startswith(f"ch {channel}\n") for t in titles)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert fig._repr_png_()[:4] == b"\x89PNG"


def test_render_layer_ranking_has_one_column_per_layer(digits, tmp_path):
    model, images = digits
    ranking = rank_layers(model, images, ["relu1", "relu3"], target=3, k=3)
    fig = render_layer_ranking(ranking, path=tmp_path / "r.pdf")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["relu1", "relu3"]
    assert (tmp_path / "r.pdf").read_bytes()[:4] == b"%PDF"


def test_render_pcace_refuses_scores_of_another_layer_size(digits):
    model, images = digits
    res = pcace(model, images, "relu1", target=3)  # 16 channels
    res.layer = "relu2"  # 32 channels on the model
    with pytest.raises(ValueError, match="16"):
        render_pcace(res, model, images)


def test_grey_images_are_scaled_per_image_for_display():
    imgs = torch.stack([torch.zeros(1, 4, 4), torch.full((1, 4, 4), 5.0)])
    imgs[1, 0, 0, 0] = 7.0
    shown = display_images(imgs)
    assert shown.shape == (2, 4, 4, 3)
    assert shown[0].max() == 0 and shown[1].max() == 1 and shown[1].min() == 0
