"""ActivationCapture and layer_summary: what is recorded, and that hooks never outlive the call."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import neuronviz as nv
from neuronviz.core.capture import ActivationCapture
from neuronviz.core.errors import CaptureError, LayerNotFoundError
from tiny_nets import tiny_cnn


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_recorded_output_equals_the_modules_output(cnn):
    x = torch.randn(2, 3, 12, 12)
    cnn.eval()
    with nv.capture(cnn, ["conv1", "relu2"]) as rec:
        cnn(x)
    expected = cnn.relu2(cnn.bn2(cnn.conv2(cnn.relu1(cnn.conv1(x)))))
    assert torch.equal(rec["conv1"], cnn.conv1(x).detach())
    assert torch.allclose(rec["relu2"], expected)
    assert _no_hooks(cnn)


def test_later_inplace_op_does_not_change_the_recording():
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    net = nn.Sequential(conv, nn.ReLU(inplace=True))
    x = torch.ones(1, 1, 2, 2)
    with nv.capture(net, "0") as rec:
        net(x)
    # the ReLU zeroed channel 1 in place after the hook ran; the copy keeps -1
    assert rec["0"][0, 1].eq(-1).all()


def test_a_consumer_reads_each_output_before_a_later_inplace_op_and_nothing_is_kept():
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    net = nn.Sequential(conv, nn.ReLU(inplace=True), nn.Conv2d(2, 1, 1))
    seen = []
    # the consumer sees the module's own tensor (no copy) while it still holds -1
    consume = lambda name, t: seen.append((name, t.min().item(), t.data_ptr()))  # noqa: E731
    ptrs = []
    conv.register_forward_hook(lambda m, a, o: ptrs.append(o.data_ptr()))
    with ActivationCapture(net, ["0", "1"], consume=consume, stop_after_last=True) as rec:
        assert rec.forward(torch.ones(1, 1, 2, 2)) is None
        assert rec.outputs() == {}
    assert seen == [("0", -1.0, ptrs[0]), ("1", 0.0, ptrs[0])]
    conv._forward_hooks.clear()
    assert _no_hooks(net)


def test_module_running_twice_in_one_forward_is_an_error():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.block(self.block(x))

    net = Twice()
    with pytest.raises(CaptureError, match="more than once"):
        with nv.capture(net, "block"):
            net(torch.randn(1, 3, 4, 4))
    assert _no_hooks(net)


def test_repeated_forward_passes_each_start_a_fresh_recording(cnn):
    cnn.eval()
    with nv.capture(cnn, "conv1") as rec:
        cnn(torch.zeros(1, 3, 8, 8))
        first = rec["conv1"]
        cnn(torch.ones(1, 3, 8, 8))
        second = rec["conv1"]
    assert not torch.equal(first, second)


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_hooks_are_removed_when_the_block_raises(cnn, exc):
    with pytest.raises(type(exc)):
        with nv.capture(cnn, ["conv1", "fc"]):
            cnn(torch.randn(1, 3, 8, 8))
            raise exc
    assert _no_hooks(cnn)


def test_hooks_are_removed_when_the_forward_raises_half_way():
    class Breaks(nn.Module):
        def forward(self, x):
            raise KeyboardInterrupt

    net = nn.Sequential(nn.Conv2d(3, 3, 1), Breaks())
    with pytest.raises(KeyboardInterrupt):
        with nv.capture(net, "0"):
            net(torch.randn(1, 3, 4, 4))
    assert _no_hooks(net)


def test_unknown_layer_fails_before_any_forward_and_suggests_close_names(cnn):
    calls = []
    cnn.register_forward_pre_hook(lambda m, a: calls.append(1))
    with pytest.raises(LayerNotFoundError, match=r"'conv2'.*'conv1'|'conv1'.*'conv2'"):
        ActivationCapture(cnn, ["conv1", "conv3"])
    assert calls == []


def test_unknown_layer_error_is_a_value_error_with_a_readable_message(cnn):
    with pytest.raises(ValueError) as info:
        nv.capture(cnn, "relu_2")
    assert "relu2" in str(info.value) and "layer_summary" in str(info.value)
    assert not str(info.value).startswith('"')


def test_layer_that_does_not_run_is_reported():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Conv2d(3, 3, 1)
            self.unused = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.used(x)

    net = Skips()
    with nv.capture(net, ["used", "unused"]) as rec:
        net(torch.randn(1, 3, 4, 4))
        with pytest.raises(CaptureError, match="unused.*no output"):
            rec.outputs()


def test_non_tensor_output_is_refused():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    net = nn.Sequential(Pair())
    with pytest.raises(CaptureError, match="tuple"):
        with nv.capture(net, "0"):
            net(torch.randn(1, 3, 2, 2))


def test_layer_summary_lists_shapes_in_forward_order_and_restores_mode():
    net = tiny_cnn()
    assert net.training
    rows = nv.layer_summary(net, torch.randn(1, 3, 16, 16))
    assert rows.names() == ["conv1", "relu1", "conv2", "bn2", "relu2", "drop", "pool", "flat", "fc"]
    shapes = {r.name: r.shape for r in rows}
    assert shapes["conv2"] == (4, 8, 8) and shapes["fc"] == (5,)
    assert rows[0].type == "Conv2d" and rows[2].positions == 64
    assert "conv2" in str(rows)
    assert net.training and all(m.training for m in net.modules())
    assert _no_hooks(net)


def test_layer_summary_max_depth_keeps_the_outline_only():
    net = nn.Sequential()
    net.add_module("block", nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU()))
    net.add_module("head", nn.Flatten())
    x = torch.randn(1, 3, 4, 4)
    assert nv.layer_summary(net, x).names() == ["block.0", "block.1", "block", "head"]
    assert nv.layer_summary(net, x, max_depth=1).names() == ["block", "head"]


def test_layer_summary_leaves_out_modules_that_run_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = nn.Conv2d(3, 3, 1)
            self.last = nn.Conv2d(3, 1, 1)

        def forward(self, x):
            return self.last(self.shared(self.shared(x)))

    assert nv.layer_summary(Twice(), torch.randn(1, 3, 4, 4)).names() == ["last"]


def test_hooks_run_in_finishing_order_and_are_removed_on_keyboard_interrupt(cnn):
    from neuronviz.core.capture import hooks

    order, starts = [], []
    fns = {name: (lambda m, a, o, name=name: order.append(name)) for name in ["fc", "conv1", "relu2"]}
    with hooks(cnn, fns, before_forward=lambda m, a: starts.append(a[0].shape)):
        cnn(torch.randn(1, 3, 8, 8))
    assert order == ["conv1", "relu2", "fc"] and starts == [(1, 3, 8, 8)]
    with pytest.raises(KeyboardInterrupt):
        with hooks(cnn, {"conv1": lambda m, a, o: None}):
            raise KeyboardInterrupt
    assert _no_hooks(cnn)


def test_hooks_with_an_unknown_name_register_nothing(cnn):
    from neuronviz.core.capture import hooks

    with pytest.raises(LayerNotFoundError, match="conv1"):
        with hooks(cnn, {"conv1": lambda m, a, o: None, "conv_1": lambda m, a, o: None}):
            pass
    assert _no_hooks(cnn)


def test_keep_graph_lets_the_gradient_flow_through_the_recording(cnn):
    cnn.eval()
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    with nv.capture(cnn, "conv1", keep_graph=True) as rec:
        rec.forward(x)
        rec["conv1"].sum().backward()
    # d sum(conv1(x)) / dx is the correlation of ones with the kernels: compare with a direct graph
    x2 = x.detach().clone().requires_grad_(True)
    cnn.conv1(x2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    with nv.capture(cnn, "conv1") as rec:
        cnn(x)
    assert not rec["conv1"].requires_grad
    assert _no_hooks(cnn)


def test_stop_after_last_skips_the_rest_of_the_network(cnn):
    cnn.eval()
    ran = []
    cnn.fc.register_forward_hook(lambda m, a, o: ran.append("fc"))
    x = torch.randn(2, 3, 8, 8)
    with nv.capture(cnn, ["conv1", "relu2"], stop_after_last=True) as rec:
        assert rec.forward(x) is None
        assert rec["relu2"].shape == (2, 4, 4, 4) and ran == []
        rec.stop_after_last = False
        out = rec.forward(x)
    assert out.shape == (2, 5) and ran == ["fc"]
    cnn.fc._forward_hooks.clear()
    assert _no_hooks(cnn)


def test_layout_turns_channels_last_recordings_channels_first():
    class ChannelsLast(nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1)

    net = nn.Sequential(nn.Conv2d(3, 5, 1), ChannelsLast())
    x = torch.randn(2, 3, 6, 6)
    with nv.capture(net, ["0", "1"], layout="auto") as rec:
        net(x)
    assert rec["1"].shape == (2, 5, 6, 6) and rec["1"].is_contiguous()
    assert torch.equal(rec["1"], rec["0"])
    assert str(rec.layouts["1"]) == "channels_last" and str(rec.layouts["0"]) == "channels_first"


def test_pre_hooks_see_a_modules_input_before_it_changes_it_in_place():
    from neuronviz.core.capture import hooks

    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(inplace=True))
    seen = {}

    def before(module, args):  # returns None: a returned value would replace the module's input
        seen["before"] = args[0].clone()

    def after(module, args, output):
        seen["after"] = args[0].clone()

    with hooks(net, {"1": after}, pre={"1": before}):
        net(torch.randn(1, 3, 4, 4))
    assert (seen["before"] < 0).any() and not (seen["after"] < 0).any()  # the ReLU rectified its input in place
    assert _no_hooks(net)


def test_only_core_capture_registers_hooks():
    """Every hook goes through core.capture.hooks, which always removes them: no module registers its own."""
    import re
    from pathlib import Path

    root = Path(nv.__file__).parent
    pattern = re.compile(r"\.register_(forward_pre_hook|forward_hook|full_backward_hook|full_backward_pre_hook)\(")
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "capture.py" and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
