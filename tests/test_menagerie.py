"""Every torchvision classification architecture, random weights, small inputs: the methods run with defaults.

For each architecture: ``layer_summary``, ``score_neurons`` on the explorer's default layers,
``pcace`` on the last of them, ``guided_feature_inversion`` with its default layers, and the
explorer built on it (``autorun=False``); the model is checked untouched after each call
(parameters, buffers, modes, ``requires_grad``, no hook).

A small subset runs by default; the rest is marked ``slow`` and ``menagerie`` and left out unless asked for
(``pytest -m menagerie tests/test_menagerie.py``).
"""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm

import neuronviz as nv
from neuronviz.core.layer_choice import default_layers

ARCHITECTURES = sorted(tvm.list_models(module=tvm))
DEFAULT_RUN = ["mobilenet_v3_small", "resnet18", "shufflenet_v2_x0_5", "squeezenet1_1"]

# the smallest input each architecture takes (its default otherwise: 64 x 64)
SIZES = {"inception_v3": 96, "maxvit_t": 224, "alexnet": 128}  # alexnet: a 3 x 3 map at features.12
OPTIONS = {
    "inception_v3": {"aux_logits": False, "init_weights": False},
    "googlenet": {"aux_logits": False, "init_weights": False},
}
for _name in ARCHITECTURES:
    if _name.startswith("vit_"):
        patch = int(_name.rsplit("_", 1)[1])
        SIZES[_name] = 2 * patch  # a 2 x 2 patch grid
        OPTIONS[_name] = {"image_size": 2 * patch}


def build(name: str) -> tuple[torch.nn.Module, int]:
    torch.manual_seed(0)
    net = tvm.get_model(name, weights=None, num_classes=10, **OPTIONS.get(name, {}))
    if name.startswith("vit_"):  # torchvision zero-initialises the ViT head: every image would score the same
        torch.nn.init.normal_(net.heads.head.weight, std=0.02)
    return net, SIZES.get(name, 64)


def params() -> list:
    out = []
    for name in ARCHITECTURES:
        marks = [] if name in DEFAULT_RUN else [pytest.mark.slow, pytest.mark.menagerie]
        out.append(pytest.param(name, id=name, marks=marks))
    return out


@pytest.mark.parametrize("name", params())
def test_the_methods_run_with_defaults_on_a_torchvision_architecture_and_leave_it_untouched(name, snapshot):
    net, size = build(name)
    net.eval()  # random BatchNorm statistics in train mode would make the explanations noise; modes are checked
    snap = snapshot(net)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, size, size, generator=gen)

    summary = nv.layer_summary(net, x)
    assert len(summary) > 0
    snap.assert_unchanged()

    layers = default_layers(net, summary, x=x)
    assert layers and all(layer in summary.names() for layer in layers)
    scores = nv.score_neurons(net, x, layers, n_samples=6)
    assert set(scores.correlation) == set(layers) and 0 <= scores.target < 10
    snap.assert_unchanged()

    images = torch.randn(20, 3, size, size, generator=gen)
    ranked = nv.pcace(net, images, layers[-1], target=scores.target, batch_size=10)
    assert ranked.scores.numel() == scores.correlation[layers[-1]].shape[0]
    snap.assert_unchanged()

    try:
        result = nv.guided_feature_inversion(net, x, stage1_steps=1, stage2_steps=1)
    except nv.NeuronvizError as err:
        if "default" in str(err) and "layer" in str(err):
            pytest.skip(f"no default inversion layers for {name} yet: {err}")
        raise
    finally:
        snap.assert_unchanged()
    assert result.mask.shape == (1, size, size) and torch.isfinite(result.mask).all()

    view = nv.NeuronExplorer(net, x, autorun=False)
    view.close()
    snap.assert_unchanged()
