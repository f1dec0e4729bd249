"""Guided feature inversion: planted evidence, the loss formulas by hand, batching, model safety, layer defaults."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import neuronviz as nv
from neuronviz.core.errors import LayerNotFoundError, NeuronvizError
from neuronviz.core.perturb import gaussian_blur
from neuronviz.methods.inversion import (
    InversionResult,
    default_inversion_delta,
    default_inversion_layers,
    guided_feature_inversion,
)
from neuronviz.methods.saliency import pointing_hit
from tiny_nets import tiny_cnn

SIZE = 32
PATCH = 8


# ---------------------------------------------------------------------------------------------
# a network whose class evidence sits where the stripes are


def stripe_net() -> nn.Sequential:
    """Class 0 = how much vertical stripe texture, class 1 = horizontal stripes, class 2 = neither.

    ``conv`` channel 0 is a horizontal second derivative of the red channel (fires on vertical
    stripes), channel 1 the vertical one (horizontal stripes), channels 2 and 3 smooth
    brightness maps that carry no class evidence. Blurring destroys the stripes.
    """
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(3, 4, 3, padding=1))
    net.add_module("relu", nn.ReLU())
    net.add_module("pool", nn.MaxPool2d(2))
    net.add_module("mix", nn.Conv2d(4, 4, 1))
    net.add_module("relu2", nn.ReLU())
    net.add_module("gap", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(4, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        d2 = torch.tensor([-1.0, 2.0, -1.0])
        net.conv.weight[0, 0] = d2.view(1, 3).expand(3, 3)
        net.conv.weight[1, 0] = d2.view(3, 1).expand(3, 3)
        net.conv.bias[:2] = -2.0  # silence the noise
        net.conv.weight[2] = 1.0 / 27
        net.conv.bias[2] = 1.0
        net.conv.weight[3, 1] = 0.2
        net.conv.bias[3] = 0.5
        net.mix.weight[:, :, 0, 0] = torch.eye(4)
        net.fc.weight[0, 0] = 3.0
        net.fc.weight[1, 1] = 3.0
        net.fc.bias[2] = 1.5
    return net.eval()


def stripe_image(patches: list[tuple[str, tuple[int, int]]], seed: int = 0) -> torch.Tensor:
    """Faint noise with 8x8 stripe patches ("v" or "h") at the given (row, col) corners."""
    g = torch.Generator().manual_seed(seed)
    x = 0.05 * torch.randn(1, 3, SIZE, SIZE, generator=g)
    s = (torch.arange(PATCH) % 2 * 2 - 1).float()
    for kind, (r, c) in patches:
        pattern = s.view(1, -1).expand(PATCH, PATCH) if kind == "v" else s.view(-1, 1).expand(PATCH, PATCH)
        x[0, 0, r : r + PATCH, c : c + PATCH] += 1.5 * pattern
    return x


def box(corner: tuple[int, int]) -> tuple[int, int, int, int]:
    r, c = corner
    return c, r, c + PATCH - 1, r + PATCH - 1


LAYERS = dict(mask_layer="pool", feature_layer="relu2")
CORNERS = [(3, 4), (4, 21), (20, 3), (21, 22)]


@pytest.fixture(scope="module")
def net() -> nn.Sequential:
    return stripe_net()


def test_stage2_mask_points_at_the_quadrant_holding_the_class_evidence(net):
    # one batch of four images, the vertical stripes in a different quadrant of each
    x = torch.cat([stripe_image([("v", corner)], seed=i) for i, corner in enumerate(CORNERS)])
    result = guided_feature_inversion(net, x, target=0, **LAYERS)
    assert result.target == [0, 0, 0, 0]
    for mask, corner in zip(result.mask, CORNERS):
        assert pointing_hit(mask, box(corner))
        # and the mask is brighter on the patch than elsewhere
        inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        inside[corner[0] : corner[0] + PATCH, corner[1] : corner[1] + PATCH] = True
        assert mask[inside].mean() > 2 * mask[~inside].mean()


def test_two_classes_in_one_image_get_masks_pointing_at_their_own_regions(net):
    vertical, horizontal = (4, 4), (20, 20)
    x = stripe_image([("v", vertical), ("h", horizontal)])
    with torch.no_grad():
        probs = torch.softmax(net(x), 1)[0]
    assert probs[0] > 0.3 and probs[1] > 0.3  # both classes present, neither dominant
    result = guided_feature_inversion(net, x, target=[0, 1], **LAYERS)
    assert result.mask.shape == (2, SIZE, SIZE) and result.target == [0, 1]
    assert pointing_hit(result.mask[0], box(vertical)) and not pointing_hit(result.mask[0], box(horizontal))
    assert pointing_hit(result.mask[1], box(horizontal)) and not pointing_hit(result.mask[1], box(vertical))
    # stage 2 keeps the target's own evidence channel and drops the other class's
    assert result.weights[0, 0] > 0 and result.weights[0, 1] == 0
    assert result.weights[1, 1] > 0 and result.weights[1, 0] == 0


@pytest.mark.parametrize("background", ["mean", "noise"])
def test_other_backgrounds_also_find_the_evidence(net, background):
    x = stripe_image([("v", (4, 20))])
    result = guided_feature_inversion(net, x, target=0, background=background, **LAYERS)
    assert pointing_hit(result.mask[0], box((4, 20)))


# ---------------------------------------------------------------------------------------------
# the formulas, recomputed by hand


def hand_mask(w: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    m = (w[:, :, None, None] * feats).sum(1)  # combine
    out = []
    for mi in m:
        mi = (mi - mi.min()) / (mi.max() - mi.min() + 1e-8)  # normalise
        out.append(F.interpolate(mi[None, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0])
    return torch.stack(out)[:, None]  # upsample, (B, 1, H, W)


def parts(net: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask-layer features ``pool``, feature-layer ``relu2``) by running the Sequential's slices."""
    return net[:3](x), net[:5](x)


def stage1_loss(net, x, w, p, gamma, relative=False):
    feats, ref = parts(net, x)
    m = hand_mask(w, feats)
    f = net[:5](x * m + p * (1 - m))
    err = ((f - ref).double() ** 2).sum(dim=(1, 2, 3))
    if relative:
        err = err / (ref.double() ** 2).sum(dim=(1, 2, 3))
    return err + gamma * w.double().sum(1)


def stage2_loss(net, x, w, p, c, lam, delta):
    feats, _ = parts(net, x)
    m = hand_mask(w, feats)
    keep = torch.softmax(net(x * m + p * (1 - m)).double(), 1)[torch.arange(len(c)), c]
    drop = torch.softmax(net(x * (1 - m) + p * m).double(), 1)[torch.arange(len(c)), c]
    return -keep + lam * drop + delta * w.double().sum(1)


@pytest.mark.parametrize("loss", ["paper", "relative"])
def test_recorded_losses_equal_the_stage_formulas_computed_by_hand(net, loss):
    x = torch.cat([stripe_image([("v", (4, 4)), ("h", (20, 20))], seed=1), stripe_image([("h", (3, 18))], seed=2)])
    gamma, lam, delta = 3.0, 0.7, 2.0
    result = guided_feature_inversion(
        net, x, target=[0, 1], stage1_steps=4, stage2_steps=3, gamma=gamma, lam=lam, delta=delta, loss=loss, **LAYERS
    )
    assert result.losses["stage1"].shape == (2, 4) and result.losses["stage2"].shape == (2, 3)
    p = gaussian_blur(x, 11 * SIZE / 224)
    c = torch.tensor([0, 1])
    with torch.no_grad():
        w0 = torch.full((2, 4), 0.1)
        s1 = stage1_loss(net, x, w0, p, gamma, relative=loss == "relative")
        s2 = stage2_loss(net, x, result.inversion_weights, p, c, lam, delta)
        feats, _ = parts(net, x)
        mask = hand_mask(result.weights, feats)[:, 0]
        inversion_mask = hand_mask(result.inversion_weights, feats)[:, 0]
    torch.testing.assert_close(result.losses["stage1"][:, 0], s1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.losses["stage2"][:, 0], s2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.mask, mask, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.inversion_mask, inversion_mask, rtol=1e-5, atol=1e-6)
    assert (result.weights >= 0).all() and (result.inversion_weights >= 0).all()
    assert 0 <= result.mask.min() and result.mask.max() <= 1


def test_whole_optimisation_equals_a_direct_two_stage_adam_loop(net):
    """Stage 1 Adam from 0.1, clip; stage 2 a fresh Adam, lr halved every 10 steps, clip."""
    x = stripe_image([("v", (4, 4)), ("h", (20, 20))], seed=3)
    steps1, steps2, lr = 5, 23, 0.02
    result = guided_feature_inversion(net, x, target=1, stage1_steps=steps1, stage2_steps=steps2, lr=lr, **LAYERS)

    p = gaussian_blur(x, 11 * SIZE / 224)
    w = torch.full((1, 4), 0.1, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps1):
        opt.zero_grad()
        stage1_loss(net, x, w, p, 10.0).sum().backward()
        opt.step()
        with torch.no_grad():
            w.clamp_(min=0)
    torch.testing.assert_close(result.inversion_weights, w.detach(), rtol=1e-4, atol=1e-6)
    opt = torch.optim.Adam([w], lr=lr)
    for k in range(steps2):
        opt.param_groups[0]["lr"] = lr / 2 ** (k // 10)
        opt.zero_grad()
        stage2_loss(net, x, w, p, torch.tensor([1]), 1.0, 1.0).sum().backward()
        opt.step()
        with torch.no_grad():
            w.clamp_(min=0)
    torch.testing.assert_close(result.weights, w.detach(), rtol=1e-4, atol=1e-6)


def test_zero_steps_keep_the_initial_weights(net):
    x = stripe_image([("v", (4, 4))])
    result = guided_feature_inversion(net, x, stage1_steps=0, stage2_steps=0, **LAYERS)
    assert torch.equal(result.weights, torch.full((1, 4), 0.1))
    assert result.losses["stage1"].shape == (1, 0) and result.losses["stage2"].shape == (1, 0)
    torch.testing.assert_close(result.mask, result.inversion_mask)


def test_constant_mask_map_gives_a_zero_mask_not_nan():
    # a mask layer that is constant over space: min-max has max == min
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.fill_(1.0)
    x = torch.randn(1, 3, 8, 8)
    result = guided_feature_inversion(net, x, mask_layer="1", feature_layer="1", stage1_steps=2, stage2_steps=2)
    assert torch.isfinite(result.mask).all() and (result.mask == 0).all()


# ---------------------------------------------------------------------------------------------
# batching


def test_a_batch_gives_the_masks_of_one_call_per_image(net):
    images = [
        stripe_image([("v", (4, 4)), ("h", (20, 20))], seed=4),
        stripe_image([("h", (2, 18))], seed=5),
        stripe_image([("v", (19, 6))], seed=6),
    ]
    targets = [1, 1, 0]
    batched = guided_feature_inversion(net, torch.cat(images), target=targets, **LAYERS)
    for i, (x, t) in enumerate(zip(images, targets)):
        alone = guided_feature_inversion(net, x, target=t, **LAYERS)
        torch.testing.assert_close(batched.mask[i], alone.mask[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(batched.inversion_mask[i], alone.inversion_mask[0], rtol=0, atol=1e-5)
        # float32 sums over another batch shape round differently; 80 Adam steps carry that to ~5e-6
        torch.testing.assert_close(batched.losses["stage2"][i], alone.losses["stage2"][0], rtol=1e-5, atol=1e-5)


def test_several_targets_for_one_image_equal_separate_calls(net):
    x = stripe_image([("v", (4, 4)), ("h", (20, 20))], seed=7)
    both = guided_feature_inversion(net, x[0], target=torch.tensor([0, 1]), stage2_steps=20, **LAYERS)
    for i, t in enumerate([0, 1]):
        alone = guided_feature_inversion(net, x, target=t, stage2_steps=20, **LAYERS)
        torch.testing.assert_close(both.mask[i], alone.mask[0], rtol=0, atol=1e-5)


def test_default_target_is_each_images_predicted_class(net):
    x = torch.cat([stripe_image([("v", (4, 4))]), stripe_image([("h", (4, 4))]), stripe_image([])])
    result = guided_feature_inversion(net, x, stage1_steps=1, stage2_steps=1, **LAYERS)
    assert result.target == [0, 1, 2]
    with torch.no_grad():
        expected = torch.softmax(net(x).double(), 1).max(1).values
    torch.testing.assert_close(result.probability, expected)


# ---------------------------------------------------------------------------------------------
# the model is left as it was


def prepared_cnn() -> nn.Sequential:
    net = tiny_cnn()  # train mode, batch norm, dropout
    net.conv1.weight.grad = torch.randn_like(net.conv1.weight)
    net.conv2.bias.requires_grad_(False)
    return net


def test_model_is_untouched_after_success(snapshot):
    net = prepared_cnn()
    snap = snapshot(net)
    result = guided_feature_inversion(
        net, torch.randn(2, 3, 12, 12), mask_layer="relu2", feature_layer="relu2", stage1_steps=3, stage2_steps=3
    )
    snap.assert_unchanged()
    for t in [result.mask, result.inversion_mask, result.weights, result.inversion_weights, *result.losses.values()]:
        assert t.device.type == "cpu" and not t.requires_grad and t.grad_fn is None
    assert isinstance(result, InversionResult) and "relu2" in repr(result)


class Boom(Exception):
    pass


class Failing(nn.Module):
    """Wraps a network; raises ``exc`` on forward call number ``fail_at`` (the first call is 1)."""

    def __init__(self, net: nn.Module, fail_at: int, exc: BaseException) -> None:
        super().__init__()
        self.net, self.fail_at, self.exc, self.calls = net, fail_at, exc, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.exc
        return self.net(x)


@pytest.mark.parametrize("exc", [Boom("inside the model"), KeyboardInterrupt()], ids=["error", "interrupt"])
@pytest.mark.parametrize("fail_at", [2, 6], ids=["stage1", "stage2"])
def test_model_is_untouched_when_the_forward_fails_mid_optimisation(snapshot, exc, fail_at):
    model = Failing(prepared_cnn(), fail_at, exc)
    snap = snapshot(model)
    with pytest.raises(type(exc)):
        guided_feature_inversion(
            model, torch.randn(1, 3, 12, 12), mask_layer="net.relu2", feature_layer="net.relu2",
            stage1_steps=3, stage2_steps=3,
        )
    assert model.calls == fail_at
    snap.assert_unchanged()


def test_model_is_untouched_after_a_bad_argument(snapshot):
    net = prepared_cnn()
    snap = snapshot(net)
    with pytest.raises(NeuronvizError):
        guided_feature_inversion(net, torch.randn(1, 3, 12, 12), target=99, mask_layer="relu2", feature_layer="relu2")
    snap.assert_unchanged()


def test_works_when_called_under_no_grad_and_inference_mode(net):
    x = stripe_image([("v", (4, 20))])
    ref = guided_feature_inversion(net, x, target=0, stage2_steps=10, **LAYERS)
    with torch.no_grad():
        a = guided_feature_inversion(net, x, target=0, stage2_steps=10, **LAYERS)
    with torch.inference_mode():
        b = guided_feature_inversion(net, x, target=0, stage2_steps=10, **LAYERS)
    torch.testing.assert_close(a.mask, ref.mask)
    torch.testing.assert_close(b.mask, ref.mask)


# ---------------------------------------------------------------------------------------------
# clear errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target=3), "out of range"),
        (dict(target=[0, 1, 2]), "3 classes for 2 images"),
        (dict(stage1_steps=-1), "stage1_steps"),
        (dict(stage2_steps=2.5), "stage2_steps"),
        (dict(lr=0.0), "lr"),
        (dict(gamma=-1.0), "gamma"),
        (dict(background="grey"), "background"),
        (dict(background=torch.zeros(3, 5, 5)), "does not broadcast"),
        (dict(loss="l2"), "loss"),
        (dict(mask_layer="fc"), "spatial map"),
    ],
)
def test_bad_arguments_raise_clear_errors(net, kwargs, match):
    x = torch.cat([stripe_image([]), stripe_image([], seed=1)])
    args = {**LAYERS, **kwargs}
    with pytest.raises(NeuronvizError, match=match):
        guided_feature_inversion(net, x, **args)


def test_bad_images_raise_clear_errors(net):
    x = stripe_image([])
    bad = x.clone()
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(NeuronvizError, match="NaN"):
        guided_feature_inversion(net, bad, **LAYERS)
    with pytest.raises(NeuronvizError, match="shape"):
        guided_feature_inversion(net, x[0, 0], **LAYERS)
    with pytest.raises(NeuronvizError, match="channel"):
        guided_feature_inversion(net, x[:, :2], **LAYERS)
    with pytest.raises(NeuronvizError, match="float"):
        guided_feature_inversion(net, (x * 10).long(), **LAYERS)


def test_unknown_layer_suggests_the_closest_name(net):
    with pytest.raises(LayerNotFoundError, match="'relu2'"):
        guided_feature_inversion(net, stripe_image([]), mask_layer="pool", feature_layer="relu_2")


def test_a_callable_target_takes_the_place_of_the_class_probability(net):
    x = stripe_image([("v", (4, 4))], seed=3)
    by_class = guided_feature_inversion(net, x, target=1, **LAYERS)
    by_callable = guided_feature_inversion(net, x, target=lambda out: torch.softmax(out, 1)[:, 1], **LAYERS)
    assert by_callable.target == [None]
    torch.testing.assert_close(by_callable.mask, by_class.mask, rtol=0, atol=1e-5)
    torch.testing.assert_close(by_callable.probability, by_class.probability)


def test_non_finite_loss_is_reported():
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    with torch.no_grad():
        net[0].weight.fill_(1e30)  # activations overflow to inf
    with pytest.raises(NeuronvizError, match="NaN or infinite"):
        guided_feature_inversion(net, torch.rand(1, 3, 8, 8) * 1e20, mask_layer="1", stage1_steps=1, stage2_steps=0)


# ---------------------------------------------------------------------------------------------
# layer defaults


def test_an_unknown_cnn_gets_its_last_post_activation_map_by_default():
    result = guided_feature_inversion(tiny_cnn(), torch.randn(1, 3, 12, 12), stage1_steps=1, stage2_steps=1)
    assert (result.mask_layer, result.feature_layer) == ("relu2", "relu2")  # dropout after it is skipped


def test_a_network_without_a_spatial_map_asks_for_the_layers():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 5))
    with pytest.raises(NeuronvizError) as err:
        guided_feature_inversion(net, torch.randn(1, 3, 12, 12))
    message = str(err.value)
    assert "mask_layer=" in message and "feature_layer=" in message


def test_unknown_architecture_with_one_layer_uses_it_for_both(net):
    result = guided_feature_inversion(net, stripe_image([]), mask_layer="pool", stage1_steps=1, stage2_steps=1)
    assert result.mask_layer == result.feature_layer == "pool"


def test_delta_defaults_to_the_papers_and_the_one_used_is_recorded(net):
    assert default_inversion_delta(net) == 1.0
    x = stripe_image([])
    assert guided_feature_inversion(net, x, stage1_steps=1, stage2_steps=1, **LAYERS).delta == 1.0
    assert guided_feature_inversion(net, x, stage1_steps=1, stage2_steps=1, delta=10, **LAYERS).delta == 10.0


torchvision = pytest.importorskip("torchvision")


def test_vgg_defaults_are_the_relu_after_the_last_conv_and_the_last_pool():
    vgg19 = torchvision.models.vgg19(weights=None)
    assert default_inversion_layers(vgg19) == ("features.35", "features.36")  # conv5_4 + ReLU, pool5
    vgg11 = torchvision.models.vgg11(weights=None)
    assert default_inversion_layers(vgg11) == ("features.19", "features.20")
    bn = torchvision.models.vgg11_bn(weights=None)
    l1, l0 = default_inversion_layers(bn)
    modules = dict(bn.named_modules())
    assert isinstance(modules[l1], nn.ReLU) and isinstance(modules[l0], nn.MaxPool2d)
    assert isinstance(modules[f"features.{int(l1.split('.')[1]) - 2}"], nn.Conv2d)


def test_vgg11_runs_with_its_defaults(snapshot):
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None)
    snap = snapshot(model)
    result = guided_feature_inversion(model, torch.randn(1, 3, 64, 64), stage1_steps=2, stage2_steps=2)
    snap.assert_unchanged()
    assert (result.mask_layer, result.feature_layer) == ("features.19", "features.20")
    assert result.mask.shape == (1, 64, 64) and result.weights.shape == (1, 512)


def test_resnet18_defaults_are_the_next_to_last_block_and_layer4():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    assert default_inversion_layers(model) == ("layer4.0", "layer4")
    result = guided_feature_inversion(model, torch.randn(1, 3, 64, 64), stage1_steps=2, stage2_steps=2)
    assert result.weights.shape == (1, 512) and result.mask.shape == (1, 64, 64)


def test_alexnet_defaults_are_pool5_for_both():
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None)
    assert default_inversion_layers(model) == ("features.12", "features.12")
    result = guided_feature_inversion(model, torch.randn(1, 3, 128, 128), stage1_steps=1, stage2_steps=1)
    assert result.weights.shape == (1, 256)


@pytest.mark.slow
def test_default_model_explains_the_cat_photo(snapshot):
    model = nv.default_model()
    assert default_inversion_layers(model) == ("head", "head")
    x = nv.preprocess(nv.sample_image("cat"))
    snap = snapshot(model)
    result = guided_feature_inversion(model, x, stage1_steps=2, stage2_steps=3)
    snap.assert_unchanged()
    assert 281 <= result.target[0] <= 285  # a cat class
    assert result.mask.shape == (1, 224, 224) and result.weights.shape == (1, 1280)
    assert 0 <= result.mask.min() and result.mask.max() <= 1
    assert np.isfinite(result.losses["stage2"].numpy()).all()
    assert result.delta == default_inversion_delta(model)


@pytest.mark.slow
def test_default_model_separates_two_photos_side_by_side_by_class():
    """Stage 1 marks both photos; each class's stage-2 mask lies on its own photo."""
    model = nv.default_model()
    cat, coffee = (nv.preprocess(nv.sample_image(name)) for name in ("cat", "coffee"))
    x = torch.cat([cat, coffee], dim=3)  # 224 x 448: the cat on the left, the espresso on the right
    halves = [(0, 0, 223, 223), (224, 0, 447, 223)]
    left = torch.zeros(224, 448, dtype=torch.bool)
    left[:, :224] = True
    regions = [left, ~left]
    # few steps: the default model's delta lets the class terms steer stage 2 from its first steps
    result = guided_feature_inversion(model, x, target=[285, 967], stage1_steps=10, stage2_steps=20)
    stage1 = result.inversion_mask[0]
    assert all(stage1[r].sum() > 0.3 * stage1.sum() for r in regions)  # both objects
    for k, (mask, own, other) in enumerate(zip(result.mask, regions, regions[::-1])):
        assert pointing_hit(mask, halves[k]) and not pointing_hit(mask, halves[1 - k])
        assert mask[own].sum() > mask[other].sum()


def test_progress_is_called_once_per_step_and_raising_in_it_leaves_the_model_as_it_was():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(1, 3, 12, 12)
    calls = []
    nv.guided_feature_inversion(net, x, mask_layer="1", feature_layer="1", stage1_steps=3, stage2_steps=4,
                                progress=lambda done, total: calls.append((done, total)))
    assert calls == [(k, 7) for k in range(1, 8)]

    before = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [p.requires_grad for p in net.parameters()]

    def stop(done, total):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        nv.guided_feature_inversion(net, x, mask_layer="1", feature_layer="1", stage1_steps=3, stage2_steps=4,
                                    progress=stop)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(not m._forward_hooks for m in net.modules())
