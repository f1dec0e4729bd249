"""InversionView: both masks over the image, the losses, its settings, its figure drawn from data.

What every view does (cancel, stale runs, errors, export formats, closing) is tested once for all
views in test_view_contract.py.
"""

from __future__ import annotations

import base64
import io
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from explorer_nets import gated_cnn, image
from PIL import Image
from torch import nn

import neuronviz as nv
from neuronviz.core.locks import hold_model, is_held
from neuronviz.widgets import InversionView

STEPS = {"stage1_steps": 3, "stage2_steps": 4}


@pytest.fixture
def net():
    return gated_cnn()


@pytest.fixture
def x():
    return image()


def finished(net, x, **kwargs) -> InversionView:
    v = InversionView(net, x, **{**STEPS, **kwargs})
    v.wait(60)
    assert v.status == "done", v.error
    return v


def upsampled(mask: torch.Tensor, size) -> torch.Tensor:
    """The mask bilinearly resized to the picture, values kept (no min-max scaling)."""
    return F.interpolate(mask[None, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0, 0]


def direct(net, x, **kwargs) -> nv.InversionResult:
    """The function itself, with its own default layers (the view's are the same)."""
    return nv.guided_feature_inversion(net, x, **{**STEPS, **kwargs})


# ------------------------------------------------------------------------------ a run


def test_the_first_run_starts_by_itself_and_matches_guided_feature_inversion(net, x, snapshot):
    snap = snapshot(net)
    v = InversionView(net, x, **STEPS)
    assert v.status == "running"
    v.wait(60)
    assert v.status == "done" and v.error is None
    assert "done · 3+4 steps" in v.run_bar.status.value
    expected = direct(net, x, target=v.target)
    assert (v.mask_layer, v.feature_layer) == (expected.mask_layer, expected.feature_layer)
    assert v.mask_layer in ("conv2", "relu2")  # the last spatial map of the tiny net
    torch.testing.assert_close(v.result.mask, expected.mask)
    torch.testing.assert_close(v.result.inversion_mask, expected.inversion_mask)
    snap.assert_unchanged()  # parameters, requires_grad, .grad, modes and hooks


def test_both_masks_are_drawn_over_the_image_and_the_losses_plotted(net, x):
    v = InversionView(net, x, autorun=False, **STEPS)
    plain = v.stage2.picture.value
    v.run()
    v.wait(60)
    r = v.result
    size = v.image.shape[:2]
    torch.testing.assert_close(v.stage1.amap, upsampled(r.inversion_mask[0], size))
    torch.testing.assert_close(v.stage2.amap, upsampled(r.mask[0], size))
    assert v.stage2.picture.value != plain and v.stage1.box is None
    picture = np.asarray(Image.open(io.BytesIO(v.stage2.picture.value)).convert("RGB"))
    assert picture.shape == (224, 224, 3)
    np.testing.assert_allclose(v.stage1_line.y, r.losses["stage1"][0].numpy())
    np.testing.assert_allclose(v.stage2_line.y, r.losses["stage2"][0].numpy())
    assert list(v.stage2_line.x) == [4, 5, 6, 7]  # stage 2 continues the step count
    assert "p = " in v.info.value and f"<code>{v.mask_layer}</code>" in v.info.value
    # the opacity slider redraws without a run
    states, before = [], v.stage1.picture.value
    v.observe(lambda c: states.append(c["new"]), "status")
    v.stage1.opacity.value = 0.2
    assert v.stage1.picture.value != before and states == [] and v.result is r


def test_progress_follows_the_adam_steps(net, x):
    seen = []
    v = InversionView(net, x, autorun=False, **STEPS)
    v.run_bar.progress.observe(lambda c: seen.append(c["new"]), names="value")
    v.run()
    v.wait(60)
    assert seen[-1] == 1.0
    assert [round(p * 7) for p in seen if 0 < p < 1] == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------------------ settings and errors


def test_sliders_wait_for_run_and_reach_it(net, x, snapshot):
    v = finished(net, x)
    before = v.result
    snap = snapshot(net)
    v.lam_slider.value = 2.5
    v.delta_slider.value = 0.5
    v.stage1_slider.value = 2
    v.stage2_slider.value = 3
    v.background_picker.value = "mean"
    assert v.result is before and v.status == "done"  # nothing ran
    assert "press Run" in v.run_bar.status.value
    assert all(not s.continuous_update for s in (v.lam_slider, v.delta_slider, v.stage1_slider, v.stage2_slider))
    v.run_bar.run_button.click()
    v.wait(60)
    expected = direct(net, x, target=v.target, lam=2.5, delta=0.5, stage1_steps=2, stage2_steps=3,
                      background="mean")
    torch.testing.assert_close(v.result.mask, expected.mask)
    assert v.result.background == "mean" and v.result.losses["stage1"].shape == (1, 2)
    assert v.settings["lam"] == 2.5 and v.settings["stage2_steps"] == 3
    snap.assert_unchanged()


def test_python_settings_are_validated_and_reach_the_next_run(net, x):
    v = finished(net, x)
    other = (v.target + 1) % 5
    v.target, v.lam, v.delta, v.stage1_steps, v.stage2_steps = other, 0.0, 30.0, 0, 2
    assert v.delta_slider.max >= 30.0  # a value above the slider's range widens it
    v.lr, v.gamma, v.loss, v.seed, v.background = 0.05, 1.0, "relative", 3, "noise"
    v.run()
    v.wait(60)
    expected = direct(net, x, target=other, lam=0.0, delta=30.0, stage1_steps=0, stage2_steps=2, lr=0.05,
                      gamma=1.0, loss="relative", seed=3, background="noise")
    torch.testing.assert_close(v.result.mask, expected.mask)
    assert v.result.target == [other]
    for name, bad in (("lam", -1), ("delta", float("nan")), ("stage1_steps", -1), ("stage2_steps", 1.5),
                      ("background", "white"), ("loss", "l2"), ("lr", 0), ("target", 5), ("seed", -1)):
        with pytest.raises(nv.NeuronvizError, match=name if name != "target" else "0..4"):
            setattr(v, name, bad)
    # the arguments without a control are properties only, and every setting is in .settings
    assert set(v.controls) == {"target", "lam", "delta", "stage1_steps", "stage2_steps", "recipe", "background",
                               "device"}
    assert {k: v.settings[k] for k in ("lr", "gamma", "loss", "seed")} == {"lr": 0.05, "gamma": 1.0,
                                                                          "loss": "relative", "seed": 3}


class NoGradients(nn.Module):
    """A classifier that refuses to run on inputs that need gradients (any optimisation step)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if x.requires_grad:
            raise RuntimeError("this model refuses gradients")
        return self.inner(x)


def test_a_model_failing_in_the_optimisation_shows_the_error_and_gets_its_gradients_back(x, snapshot):
    model = NoGradients(gated_cnn())
    snap = snapshot(model)
    v = InversionView(model, x, **STEPS)
    v.wait(60)
    assert v.status == "error" and v.result is None
    assert "refuses gradients" in v.error and "refuses gradients" in v.run_bar.error.value
    snap.assert_unchanged()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lam": -1.0}, "lam"),
        ({"delta": float("inf")}, "delta"),
        ({"stage1_steps": -1}, "stage1_steps"),
        ({"stage2_steps": 2.5}, "stage2_steps"),
        ({"background": "white"}, "background"),
        ({"loss": "l1"}, "loss"),
        ({"lr": 0.0}, "lr"),
        ({"target": 5}, "target"),
        ({"mask_layer": "fc"}, "spatial"),
        ({"mask_layer": "conv_2"}, "conv2"),
        ({"feature_layer": 3}, "feature_layer"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_arguments_fail_early_with_a_clear_error(net, x, kwargs, message, snapshot):
    snap = snapshot(net)
    with pytest.raises(nv.NeuronvizError, match=message):
        InversionView(net, x, autorun=False, **kwargs)
    snap.assert_unchanged()


def test_bad_images_and_models_are_refused_early(net):
    with pytest.raises(nv.NeuronvizError, match="one|image"):
        InversionView(net, torch.randn(2, 3, 16, 16), autorun=False)
    with pytest.raises(nv.NeuronvizError, match="classes"):
        InversionView(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), image(), autorun=False)


# ------------------------------------------------------------------------------ export and display


def test_the_figure_names_the_class_and_draws_the_picture_shown(net, x, tmp_path):
    v = finished(net, x)
    fig = v.figure(dpi=50)
    titles = [ax.get_title() for ax in fig.axes]
    assert f"stage 2: class {v.target}" in titles  # the tiny net's classes are not named as ImageNet's
    drawn = fig.axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(np.asarray(drawn), v.picture, atol=1e-6)  # the picture the widget draws on
    png = v.export(tmp_path / "inv.png", dpi=60).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_are_drawn_from_the_result_without_running_the_model(net, x, tmp_path, monkeypatch):
    v = finished(net, x)
    ran, mine = [], {id(m) for m in net.modules()}
    real_call = nn.Module.__call__

    def call(self, *a, **k):  # other tests' views may still be running other models in their threads
        if id(self) in mine:
            ran.append(self)
            return None
        return real_call(self, *a, **k)

    monkeypatch.setattr(nn.Module, "__call__", call)
    held, done = threading.Event(), threading.Event()

    def hold():  # another caller holds the model: an export must not need it
        with hold_model(net):
            held.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        assert v.export(tmp_path / "inv.svg").stat().st_size > 0
        assert v.figure(dpi=40).axes
        assert is_held(net) and not done.is_set()  # drawn while the other caller still held the model
    finally:
        done.set()
        holder.join()
    assert ran == []


def test_before_a_run_the_display_data_holds_the_plain_picture_then_the_figure(net, x):
    v = InversionView(net, x, autorun=False, **STEPS)
    bundle = v._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == v.model_id
    before = np.asarray(Image.open(io.BytesIO(base64.b64decode(bundle["image/png"]))).convert("RGB"))
    np.testing.assert_allclose(before, np.clip(v.image * 255 + 0.5, 0, 255).astype(np.uint8), atol=1)
    v.run()
    v.wait(60)
    after = Image.open(io.BytesIO(base64.b64decode(v._repr_mimebundle_()["image/png"])))
    assert after.width > 300  # the three panels of render_inversion


def test_dom_classes_for_browser_tests(net, x):
    v = InversionView(net, x, autorun=False)
    classes = {
        "nv-inversion": v, "nv-run": v.run_bar.run_button, "nv-cancel": v.run_bar.cancel_button,
        "nv-progress": v.run_bar.progress, "nv-status": v.run_bar.status, "nv-mask-stage1": v.stage1.picture,
        "nv-mask-stage2": v.stage2.picture, "nv-losses": v.losses, "nv-target": v.target_picker,
        "nv-lam": v.lam_slider, "nv-delta": v.delta_slider, "nv-stage1": v.stage1_slider,
        "nv-stage2": v.stage2_slider, "nv-background": v.background_picker, "nv-export": v.exporter.button,
        "nv-recipe": v.recipe_picker, "nv-device": v.device_picker,
    }
    for css, widget in classes.items():
        assert css in widget._dom_classes, css


def test_delta_starts_at_the_models_default_and_reaches_the_run(net, x):
    from neuronviz.methods.inversion import default_inversion_delta

    v = InversionView(net, x, autorun=False, **STEPS)
    assert v.delta == default_inversion_delta(net) == 1.0
    v.delta = 0.01  # the default model's value: the slider holds it exactly
    assert v.delta == 0.01
    v.close()


# ------------------------------------------------------------------------------ recipes


def test_the_authors_recipe_sets_its_defaults_and_runs_as_the_function_does(net, x):
    v = InversionView(net, x, recipe="authors", autorun=False)
    assert (v.stage1_steps, v.stage2_steps, v.gamma, v.delta, v.loss) == (11, 69, 5.0, 2.0, "relative")
    assert v.mask_layer == v.feature_layer  # the authors' code uses one layer for both
    v.stage1_steps, v.stage2_steps = 2, 3
    v.run()
    v.wait(60)
    assert v.status == "done", v.error
    expected = nv.guided_feature_inversion(net, x, recipe="authors", target=v.target, stage1_steps=2, stage2_steps=3)
    torch.testing.assert_close(v.result.mask, expected.mask)
    assert v.result.recipe == "authors" and v.settings["recipe"] == "authors"
    with pytest.raises(nv.NeuronvizError, match="relative"):
        v.loss = "paper"
    v.close()


def test_a_new_recipe_moves_only_the_settings_left_at_the_old_recipes_defaults(net, x):
    v = InversionView(net, x, stage1_steps=3, gamma=7.0, autorun=False)
    paper = (v.stage2_steps, v.delta, v.loss, v.mask_layer)
    v.recipe_picker.value = "authors"  # what a pick in the dropdown does
    assert (v.stage1_steps, v.gamma) == (3, 7.0)  # chosen by the user: kept
    assert (v.stage2_steps, v.delta, v.loss) == (69, 2.0, "relative")
    assert v.stage2_slider.value == 69 and v.mask_layer == v.feature_layer
    v.recipe = "paper"
    assert (v.stage2_steps, v.delta, v.loss, v.mask_layer) == paper and (v.stage1_steps, v.gamma) == (3, 7.0)
    with pytest.raises(nv.NeuronvizError, match="recipe"):
        v.recipe = "mine"
    v.close()
