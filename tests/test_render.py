"""The static correlation-vs-precision figure, its activation maps and their upsampling."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from tiny_nets import tiny_cnn

import neuronviz as nv
from neuronviz import render_scores
from neuronviz.figures import activation_maps
from neuronviz.render import upsample_map

LAYERS = ["conv1", "relu2", "fc"]


@pytest.fixture
def scored():
    """A tiny CNN, an image and its scores on a spatial, a small (4 channels) and a (N, F) layer."""
    net = tiny_cnn()
    torch.manual_seed(1)
    x = torch.rand(1, 3, 24, 24)
    scores = nv.score_neurons(net, x, LAYERS, target=1, n_samples=12, dead_threshold=-1e9)
    return net, x, scores


def axes_by_label(fig: Figure, prefix: str) -> dict[str, object]:
    return {ax.get_label(): ax for ax in fig.axes if ax.get_label().startswith(prefix)}


def figure_text(fig: Figure) -> str:
    texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text") and callable(a.get_text))]
    return "\n".join(t for t in texts if isinstance(t, str))


# ---------------------------------------------------------------------------------------------
# render_scores


def test_render_scores_returns_a_figure_with_image_neuron_panels_and_scatter(scored):
    net, x, scores = scored
    fig = render_scores(scores, net, x, k=2)
    assert isinstance(fig, Figure)
    labels = [ax.get_label() for ax in fig.axes]
    assert "image" in labels and "scatter" in labels
    neurons = axes_by_label(fig, "neuron:")
    top_c, top_p = scores.top("correlation", 2), scores.top("precision", 2)
    expected = {f"neuron:correlation:{layer}:{c}" for layer in LAYERS for c in top_c[layer]}
    expected |= {f"neuron:precision:{layer}:{c}" for layer in LAYERS for c in top_p[layer]}
    assert set(neurons) == expected
    assert "overlap of the top-2 selections" in figure_text(fig)


def test_render_scores_does_not_register_a_pyplot_figure(scored):
    import matplotlib.pyplot as plt

    net, x, scores = scored
    before = plt.get_fignums()
    render_scores(scores, net, x)
    assert plt.get_fignums() == before


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf", ".PNG"])
def test_render_scores_writes_the_format_its_suffix_names(scored, tmp_path, suffix):
    net, x, scores = scored
    path = tmp_path / f"figure{suffix}"
    render_scores(scores, net, x, path=path, dpi=60)
    data = path.read_bytes()
    kind = suffix.lower()
    if kind == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    elif kind == ".pdf":
        assert data.startswith(b"%PDF")
    else:
        root = ET.fromstring(data)
        assert root.tag.endswith("svg")


def test_render_scores_accepts_a_string_path(scored, tmp_path):
    net, x, scores = scored
    render_scores(scores, net, x, path=str(tmp_path / "f.png"), dpi=50)
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")


def test_unknown_suffix_raises_value_error_naming_accepted_suffixes(scored, tmp_path):
    net, x, scores = scored
    with pytest.raises(ValueError, match=r"\.png.*\.svg.*\.pdf"):
        render_scores(scores, net, x, path=tmp_path / "figure.jpg")
    assert not (tmp_path / "figure.jpg").exists()


def test_per_unit_scores_raise_value_error():
    net = tiny_cnn()
    x = torch.rand(1, 3, 16, 16)
    scores = nv.score_neurons(net, x, "conv2", target=0, n_samples=5, per_unit=True)
    with pytest.raises(ValueError, match="per_unit"):
        render_scores(scores, net, x)


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_bad_k_raises_value_error(scored, k):
    net, x, scores = scored
    with pytest.raises(ValueError, match="k must be"):
        render_scores(scores, net, x, k=k)


def test_layer_where_every_channel_has_nan_precision_still_renders(tmp_path):
    net = tiny_cnn()
    x = torch.rand(1, 3, 16, 16)
    # a threshold no activation reaches: every channel is left out of the precision selection
    scores = nv.score_neurons(net, x, ["conv1", "conv2"], target=0, n_samples=6, dead_threshold=1e9)
    assert scores.excluded["conv1"].all()
    fig = render_scores(scores, net, x, k=3, path=tmp_path / "nan.png", dpi=50)
    assert not any(layer.startswith("neuron:precision:") for layer in (ax.get_label() for ax in fig.axes))
    assert len(axes_by_label(fig, "empty:precision:")) == 2 * 3
    assert len(axes_by_label(fig, "neuron:correlation:")) == 2 * 3
    assert f"{6 + 4} channel(s) left out of\nthe precision selection" in figure_text(fig)
    assert (tmp_path / "nan.png").stat().st_size > 0


def test_layer_with_fewer_valid_neurons_than_k_gets_placeholders(scored):
    net, x, scores = scored
    fig = render_scores(scores, net, x, k=5)  # relu2 has 4 channels
    assert len(axes_by_label(fig, "neuron:correlation:relu2:")) == 4
    assert set(axes_by_label(fig, "empty:")) == {"empty:correlation:relu2:4", "empty:precision:relu2:4"}


def test_non_spatial_layer_shows_the_image_without_an_overlay(scored):
    net, x, scores = scored
    fig = render_scores(scores, net, x, k=2)
    for label, ax in axes_by_label(fig, "neuron:").items():
        n_images = len(ax.get_images())
        assert n_images == (1 if ":fc:" in label else 2), label
    assert "no spatial map" in figure_text(fig)


def test_overlays_are_the_upsampled_maps_and_differ_between_neurons(scored):
    net, x, scores = scored
    fig = render_scores(scores, net, x, k=3)
    maps = activation_maps(net, x, "conv1")["conv1"]
    drawn = {}
    for label, ax in axes_by_label(fig, "neuron:correlation:conv1:").items():
        c = int(label.rsplit(":", 1)[1])
        overlay = np.asarray(ax.get_images()[1].get_array())
        np.testing.assert_allclose(overlay, upsample_map(maps[c], (24, 24)), atol=1e-6)
        drawn[c] = overlay
    assert len(drawn) == 3
    a, b, *_ = drawn.values()
    assert not np.allclose(a, b)


def test_neurons_both_metrics_select_get_a_coloured_frame(scored):
    net, x, scores = scored
    k = 3
    fig = render_scores(scores, net, x, k=k)
    top_c, top_p = scores.top("correlation", k), scores.top("precision", k)
    n_both = 0
    for label, ax in axes_by_label(fig, "neuron:").items():
        _, _, layer, c = label.split(":")
        both = int(c) in set(top_c[layer]) & set(top_p[layer])
        n_both += both
        width = ax.spines["top"].get_linewidth()
        assert (width > 2) == both, label
    assert n_both > 0  # the tiny CNN's small layers make both metrics agree somewhere
    assert f"selected by both ({n_both // 2})" in figure_text(fig)


def test_infinite_precision_is_drawn_at_the_top_edge_and_nan_left_out(scored):
    net, x, scores = scored
    scores.precision["conv1"][0] = math.inf
    scores.precision["conv1"][1] = math.nan
    fig = render_scores(scores, net, x, k=2)
    ax = axes_by_label(fig, "scatter")["scatter"]
    edge = ax.get_xaxis_transform()
    at_edge = [c for c in ax.collections if c.get_offset_transform() is edge and len(c.get_offsets())]
    assert at_edge and all(np.allclose(np.asarray(c.get_offsets())[:, 1], 1.0) for c in at_edge)
    # the small dots are every channel with a finite precision and a correlation
    dots = [c for c in ax.collections if c.get_sizes().max() < 20 and c.get_offset_transform() is not edge]
    n_finite = sum(int((~scores.correlation[layer].isnan() & scores.precision[layer].isfinite()).sum())
                   for layer in LAYERS)
    assert sum(len(c.get_offsets()) for c in dots) == n_finite
    assert "∞" in figure_text(fig)


def test_target_is_named_by_imagenet_category_for_a_1000_class_model():
    net = tiny_cnn(num_classes=1000)
    x = torch.rand(1, 3, 16, 16)
    scores = nv.score_neurons(net, x, "conv2", target=285, n_samples=5)
    text = figure_text(render_scores(scores, net, x, k=1))
    assert f"{nv.imagenet_categories()[285]} (class 285)" in text


def test_target_of_a_small_model_is_named_by_its_index(scored):
    net, x, scores = scored
    text = figure_text(render_scores(scores, net, x, k=1))
    assert "class 1" in text and "Egyptian" not in text


def test_given_image_is_drawn_and_maps_follow_its_size(scored):
    net, x, scores = scored
    image = np.full((48, 40, 3), 0.5, dtype=np.float32)
    fig = render_scores(scores, net, x, k=1, image=image)
    ax = axes_by_label(fig, "neuron:correlation:conv1:")
    (panel,) = ax.values()
    base, overlay = panel.get_images()
    np.testing.assert_allclose(np.asarray(base.get_array()), image)
    assert np.asarray(overlay.get_array()).shape == (48, 40)


def test_malformed_image_raises_value_error(scored):
    net, x, scores = scored
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        render_scores(scores, net, x, image=np.zeros((4, 4, 5)))


def test_scores_of_another_model_are_refused(scored):
    _, x, scores = scored
    # same layer names, other channel counts
    renamed = torch.nn.Sequential()
    renamed.add_module("conv1", torch.nn.Conv2d(3, 2, 3))
    renamed.add_module("relu2", torch.nn.ReLU())
    renamed.add_module("fc", torch.nn.Flatten())
    with pytest.raises(ValueError, match="channels on this model"):
        render_scores(scores, renamed, x)


def test_the_figure_is_drawn_from_data_and_render_scores_runs_one_forward_pass(scored):
    from neuronviz.render import render_score_maps

    net, x, scores = scored
    store = {}
    hooks = [dict(net.named_modules())[layer].register_forward_hook(
        lambda m, i, o, layer=layer: store.__setitem__(layer, o.detach()[0])) for layer in LAYERS]
    net.eval()
    with torch.no_grad():
        net(x)
    net.train()
    for h in hooks:
        h.remove()
    # from plain hooks, not neuronviz
    maps = {layer: a if a.dim() == 3 else a.reshape(-1, 1, 1) for layer, a in store.items()}
    image = np.full((24, 24, 3), 0.5, dtype=np.float32)
    fig = render_score_maps(scores, maps, image, n_classes=5, k=2)  # no model at all
    ax = axes_by_label(fig, f"neuron:correlation:conv1:{scores.top('correlation', 2)['conv1'][0]}")
    (panel,) = ax.values()
    c = scores.top("correlation", 2)["conv1"][0]
    np.testing.assert_allclose(np.asarray(panel.get_images()[1].get_array()), upsample_map(maps["conv1"][c], (24, 24)),
                               atol=1e-6)
    with pytest.raises(nv.NeuronvizError, match="no maps"):
        render_score_maps(scores, {"conv1": maps["conv1"]}, image)

    passes = []
    handle = net.register_forward_pre_hook(lambda m, a: passes.append(1))
    try:
        render_scores(scores, net, x, k=2)
    finally:
        handle.remove()
    assert len(passes) == 1


def test_nothing_in_render_runs_a_model():
    import ast
    import pathlib

    root = pathlib.Path(nv.__file__).parent / "render"
    offenders = []
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[-1]} | {a.name for a in node.names}
                if names & {"capture", "model_state", "locks", "forward_checked", "ActivationCapture", "hooks"}:
                    offenders.append(f"{path.name}: imports {sorted(names)}")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if any(arg.arg == "model" for arg in node.args.args + node.args.kwonlyargs):
                    offenders.append(f"{path.name}: {node.name}(model, ...)")
    assert not offenders, offenders


# ---------------------------------------------------------------------------------------------
# upsample_map


def test_upsample_map_has_the_image_size_and_unit_range():
    torch.manual_seed(0)
    up = upsample_map(torch.randn(7, 5) * 30 + 4, (56, 40))
    assert up.shape == (56, 40)
    assert up.min() == pytest.approx(0.0) and up.max() == pytest.approx(1.0)


def test_upsample_map_of_a_constant_map_is_zeros():
    up = upsample_map(torch.full((4, 4), 3.5), (32, 32))
    assert up.shape == (32, 32)
    assert not up.any()


def test_upsample_map_puts_the_maximum_in_the_matching_region():
    a = torch.zeros(7, 7)
    a[1, 5] = 10.0
    up = upsample_map(a, (70, 70))
    row, col = np.unravel_index(np.argmax(up), up.shape)
    assert 10 <= row < 20 and 50 <= col < 60
    assert up[row, col] == pytest.approx(1.0)


def test_upsample_map_rejects_a_map_that_is_not_2d():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        upsample_map(torch.zeros(2, 3, 3), (8, 8))


# ---------------------------------------------------------------------------------------------
# activation_maps


def test_activation_maps_leave_training_flag_and_no_hooks(snapshot):
    net = tiny_cnn()
    assert net.training
    snap = snapshot(net)
    activation_maps(net, torch.rand(1, 3, 12, 12), LAYERS)
    snap.assert_unchanged()
    assert all(len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0 for m in net.modules())
    net.eval()
    activation_maps(net, torch.rand(3, 12, 12), "conv1")
    assert not any(m.training for m in net.modules())


def test_activation_maps_remove_hooks_when_the_forward_fails(snapshot):
    net = tiny_cnn()
    snap = snapshot(net)
    with pytest.raises(nv.NeuronvizError):
        activation_maps(net, torch.rand(1, 4, 12, 12), "conv1")  # wrong channel count
    snap.assert_unchanged()


def test_activation_maps_are_chw_cpu_tensors_of_the_eval_forward():
    net = tiny_cnn()
    x = torch.rand(1, 3, 12, 12)
    maps = activation_maps(net, x, LAYERS)
    assert maps["conv1"].shape == (6, 12, 12)
    assert maps["relu2"].shape == (4, 6, 6)
    assert maps["fc"].shape == (5, 1, 1)  # (N, F) layer: F channels of one position
    assert all(m.device.type == "cpu" for m in maps.values())
    net.eval()
    with torch.no_grad():
        expected = net(x)[0]
    torch.testing.assert_close(maps["fc"].flatten(), expected)


def test_activation_maps_unknown_layer_suggests_close_names():
    with pytest.raises(nv.LayerNotFoundError, match="conv1"):
        activation_maps(tiny_cnn(), torch.rand(1, 3, 8, 8), "conv_1")


def test_rendered_figure_shows_itself_as_png_without_pyplot():
    from neuronviz.render import StaticFigure

    fig = StaticFigure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    assert fig._repr_png_().startswith(b"\x89PNG")
