"""EfficientNet-Lite0: architecture, module names, pretrained weights and predictions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuronviz.data import preprocess, sample_image
from neuronviz.models import EfficientNetLite0, default_model
from neuronviz.models.efficientnet_lite import (
    InvertedResidual,
    SamePadConv2d,
    load_pretrained_state_dict,
    rename_state_dict,
)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return default_model()


def _top1(model: nn.Module, name: str) -> int:
    with torch.no_grad():
        return int(model(preprocess(sample_image(name))).argmax(1))


def test_cat_photo_is_classified_as_a_cat(model):
    assert _top1(model, "cat") in CAT_CLASSES


def test_coffee_photo_is_classified_as_espresso(model):
    assert _top1(model, "coffee") == ESPRESSO


def test_weight_file_keys_match_the_model_exactly():
    state = load_pretrained_state_dict()
    fresh = EfficientNetLite0()
    assert set(state) == set(fresh.state_dict())
    result = fresh.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_default_model_holds_the_file_weights(model):
    state = load_pretrained_state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_renaming_maps_file_names_to_readable_names():
    names = {
        "_conv_stem.weight": "stem.conv.weight",
        "_bn0.running_mean": "stem.bn.running_mean",
        "_blocks.0._depthwise_conv.weight": "blocks.0.depthwise.conv.weight",
        "_blocks.3._expand_conv.weight": "blocks.3.expand.conv.weight",
        "_blocks.3._bn0.bias": "blocks.3.expand.bn.bias",
        "_blocks.3._bn1.weight": "blocks.3.depthwise.bn.weight",
        "_blocks.15._project_conv.weight": "blocks.15.project.conv.weight",
        "_blocks.15._bn2.running_var": "blocks.15.project.bn.running_var",
        "_conv_head.weight": "head.conv.weight",
        "_bn1.num_batches_tracked": "head.bn.num_batches_tracked",
        "_fc.bias": "classifier.bias",
    }
    t = torch.zeros(1)
    assert rename_state_dict({k: t for k in names}) == {v: t for v in names.values()}


def test_renaming_rejects_a_key_from_another_architecture():
    with pytest.raises(KeyError, match="_blocks.0._se_reduce.weight"):
        rename_state_dict({"_blocks.0._se_reduce.weight": torch.zeros(1)})


@pytest.mark.parametrize("shape", [(2, 3, 224, 224), (1, 3, 256, 256), (1, 3, 200, 200), (1, 3, 225, 171)])
def test_output_is_one_row_of_1000_logits_per_image_for_any_input_size(model, shape):
    with torch.no_grad():
        out = model(torch.rand(shape))
    assert out.shape == (shape[0], 1000)
    assert torch.isfinite(out).all()


def test_same_padding_is_asymmetric_for_stride_two_and_even_input():
    # TensorFlow puts the extra pixel at the bottom/right.
    assert SamePadConv2d.same_padding(224, 3, 2, 1) == (0, 1)
    assert SamePadConv2d.same_padding(225, 3, 2, 1) == (1, 1)
    assert SamePadConv2d.same_padding(14, 5, 2, 1) == (1, 2)
    assert SamePadConv2d.same_padding(7, 5, 1, 1) == (2, 2)


def test_same_padding_gives_ceil_of_input_over_stride():
    conv = SamePadConv2d(2, 2, 5, stride=2)
    for size in (7, 8, 9, 10):
        out = conv(torch.zeros(1, 2, size, size + 1))
        assert out.shape[-2:] == (-(-size // 2), -(-(size + 1) // 2))


def test_default_model_is_in_eval_mode_everywhere(model):
    assert not model.training
    assert not any(m.training for m in model.modules())


def test_documented_module_names_exist(model):
    names = dict(model.named_modules())
    expected = ["stem", "stem.conv", "stem.bn", "stem.act", "head", "head.conv", "head.bn", "head.act"]
    expected += ["pool", "dropout", "classifier", "blocks"] + [f"blocks.{i}" for i in range(16)]
    for name in expected:
        assert name in names, name
    assert "blocks.16" not in names
    assert isinstance(model.blocks, nn.Sequential)
    assert all(isinstance(b, InvertedResidual) for b in model.blocks)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 1000


def test_only_the_first_block_has_no_expand_layer(model):
    children = [dict(block.named_children()) for block in model.blocks]
    assert set(children[0]) == {"depthwise", "project"}
    for c in children[1:]:
        assert set(c) == {"expand", "depthwise", "project"}
    for block in model.blocks:
        assert set(dict(block.project.named_children())) == {"conv", "bn"}  # linear bottleneck


def test_activations_are_separate_non_inplace_relu6(model):
    acts = [m for m in model.modules() if isinstance(m, nn.ReLU6)]
    assert len(acts) == 2 + 16 + 15  # stem, head, one per depthwise, one per expand
    assert len({id(a) for a in acts}) == len(acts)
    assert not any(a.inplace for a in acts)
    assert not any(isinstance(m, (nn.ReLU, nn.SiLU)) for m in model.modules())


def test_residual_connection_only_where_stride_one_and_channels_kept(model):
    with_residual = [i for i, b in enumerate(model.blocks) if b.use_residual]
    assert with_residual == [2, 4, 6, 7, 9, 10, 12, 13, 14]


def test_batch_norm_uses_tensorflow_epsilon(model):
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(bn.eps == 1e-3 for bn in bns)


def test_parameter_count_is_that_of_efficientnet_lite0(model):
    assert sum(p.numel() for p in model.parameters()) == 4_652_008


def test_every_module_runs_exactly_once_per_forward(model):
    calls: dict[str, int] = {}
    handles = []

    def counter(name):
        def hook(module, args, output):
            calls[name] = calls.get(name, 0) + 1

        return hook

    try:
        for name, module in model.named_modules():
            handles.append(module.register_forward_hook(counter(name)))
        with torch.no_grad():
            model(torch.rand(1, 3, 224, 224))
    finally:
        for h in handles:
            h.remove()
    assert set(calls) == {name for name, _ in model.named_modules()}
    assert set(calls.values()) == {1}
    assert not any(m._forward_hooks for m in model.modules())


def test_block_output_is_input_plus_projection_when_residual(model):
    block = model.blocks[2]
    x = torch.randn(1, 24, 56, 56)
    with torch.no_grad():
        expected = x + block.project(block.depthwise(block.expand(x)))
        assert torch.allclose(block(x), expected)


def test_custom_class_count_changes_only_the_classifier():
    net = EfficientNetLite0(num_classes=10).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 96, 96)).shape == (1, 10)
    with pytest.raises(ValueError, match="num_classes"):
        EfficientNetLite0(num_classes=0)
