"""The model-state guard restores modes and flags; devices are checked before any work."""

from __future__ import annotations

import pytest
import torch

import neuronviz as nv
from neuronviz.core.model_state import on_device, preserved_state, resolve_device
from tiny_nets import tiny_cnn


def test_modes_and_requires_grad_are_restored_even_after_an_exception(snapshot):
    net = tiny_cnn()
    net.conv1.eval()  # a mixed state must come back mixed
    net.fc.bias.requires_grad_(False)
    snap = snapshot(net)
    with pytest.raises(RuntimeError):
        with preserved_state(net):
            net.eval()
            for p in net.parameters():
                p.requires_grad_(False)
            raise RuntimeError("inside")
    snap.assert_unchanged()


def test_moving_to_the_current_device_keeps_the_same_tensors():
    net = tiny_cnn()
    before = [p.data.data_ptr() for p in net.parameters()]
    with on_device(net, torch.device("cpu")):
        pass
    assert [p.data.data_ptr() for p in net.parameters()] == before


def test_unavailable_or_invalid_devices_are_refused_with_a_hint():
    net = tiny_cnn()
    with pytest.raises(ValueError, match="not a device"):
        resolve_device(net, "gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            nv.score_neurons(net, torch.rand(1, 3, 8, 8), "conv1", device="cuda")
    assert resolve_device(net, None) == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_moves_the_model_for_the_call_and_back(snapshot):
    net = tiny_cnn()
    snap = snapshot(net)
    x = torch.rand(1, 3, 8, 8)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    scores = nv.score_neurons(net, x, "conv1", n_samples=5, device="cuda")
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before  # nothing kept alive on the GPU
    assert scores.correlation["conv1"].device.type == "cpu"
    snap.assert_unchanged()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_scores_match_cpu_scores():
    net, x = tiny_cnn(), torch.rand(1, 3, 12, 12)
    samples = nv.perturb.MultiplicativeGaussian().sample(x, range(12), seed=0)  # the RNGs differ per device
    cpu = nv.score_neurons(net, x, ["conv1", "fc"], samples=samples)
    gpu = nv.score_neurons(net.cuda(), x.cuda(), ["conv1", "fc"], samples=samples.cuda())
    net.cpu()
    for layer in ("conv1", "fc"):
        assert torch.allclose(cpu.correlation[layer], gpu.correlation[layer], rtol=1e-3, atol=1e-4, equal_nan=True)
