"""Forward passes counted: the layer list with the class scores in one pass, maps kept from the scoring pass."""

from __future__ import annotations

import math

import torch
from torch import nn

import neuronviz as nv
from neuronviz.core.capture import ActivationCapture
from neuronviz.core.perturb import make as make_perturbation
from tiny_nets import tiny_cnn


class Counter:
    """Counts forward passes of the root model (a forward pre-hook), removed on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.passes = model, 0

    def __enter__(self) -> "Counter":
        self._handle = self.model.register_forward_pre_hook(self._count)
        return self

    def _count(self, module: nn.Module, args: tuple) -> None:
        self.passes += 1

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


def _clean_maps(net: nn.Module, images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    with torch.no_grad(), ActivationCapture(net, layers) as rec:
        net.eval()
        net(images)
    net.train()
    return rec.outputs()


def test_layer_summary_gives_the_layers_and_the_class_scores_in_one_pass():
    net = tiny_cnn()
    x = torch.randn(1, 3, 16, 16)
    with Counter(net) as count:
        summary = nv.layer_summary(net, x)
    assert count.passes == 1
    net.eval()
    with torch.no_grad():
        expected = net(x)
    assert summary.output.device.type == "cpu" and not summary.output.requires_grad
    torch.testing.assert_close(summary.output, expected, rtol=0, atol=1e-6)
    assert summary.names()[0] == "conv1"


def test_score_neurons_keeps_the_maps_of_chosen_copies_without_another_pass():
    net = tiny_cnn()
    x = torch.rand(1, 3, 16, 16)
    layers = ["relu1", "relu2"]
    n, batch = 10, 4
    with Counter(net) as count:
        scores = nv.score_neurons(net, x, layers, n_samples=n, batch_size=batch, keep_maps=[0, 5, 9])
    assert count.passes == math.ceil(n / batch)  # the target and the clean maps come from copy 0
    assert scores.map_indices == [0, 5, 9]

    clean = _clean_maps(net, x, layers)
    copies = make_perturbation(None).sample(x, [5, 9], seed=0)
    perturbed = _clean_maps(net, copies, layers)
    for layer in layers:
        maps = scores.maps[layer]
        assert maps.shape == (3, *scores.shapes[layer]) and maps.dtype == torch.float32 and maps.device.type == "cpu"
        torch.testing.assert_close(maps[0], clean[layer][0], rtol=0, atol=1e-6)
        torch.testing.assert_close(maps[1:], perturbed[layer], rtol=0, atol=1e-6)


def test_explorer_worth_of_passes_is_one_probe_and_the_scoring_batches():
    """What a view needs before its first result: 1 + ceil(N / B) passes in all."""
    net = tiny_cnn()
    x = torch.rand(1, 3, 16, 16)
    n, batch = 20, 8
    with Counter(net) as count:
        summary = nv.layer_summary(net, x)
        probabilities = torch.softmax(summary.output, dim=1)[0]
        target = int(probabilities.argmax())
        layers = [r.name for r in summary if len(r.shape) == 3]
        strip = [0, 6, 13, 19]
        scores = nv.score_neurons(net, x, layers, target=target, n_samples=n, batch_size=batch, keep_maps=strip)
    assert count.passes == 1 + math.ceil(n / batch)
    assert all(scores.maps[layer].shape[0] == len(strip) for layer in layers)
