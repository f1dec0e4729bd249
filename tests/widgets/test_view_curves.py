"""The PCACE and inversion views draw their faithfulness curves after a run, equal to the direct calls.

The first press of the button computes them; then every run (and shown layer) gets its own.

PCACE: the shown layer's deletion curve of its PCACE ranking (with the correlation and
precision rankings of the same images) against random rankings, the logit on the shown images.
Inversion: the stage-2 mask's deletion and insertion curves against random masks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from explorer_nets import gated_cnn, image

import neuronviz as nv
from neuronviz.widgets import InversionView, PCACEView

LAYERS = ["conv1", "conv2"]
STEPS = {"stage1_steps": 3, "stage2_steps": 4}


def image_set(n: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def view_ks(n: int) -> list[int]:
    """9 points from 0 to min(32, n), as the views draw them."""
    top = min(32, n)
    return sorted({round(i * top / 8) for i in range(9)})


def same_curves(a: nv.FaithfulnessCurves, b: nv.FaithfulnessCurves) -> None:
    assert a.mode == b.mode and a.groups == b.groups and a.rankings == b.rankings
    assert abs(a.original - b.original) < 1e-9
    for ca, cb in zip(a.curves, b.curves):
        assert (ca.ranking, ca.group) == (cb.ranking, cb.group)
        assert np.array_equal(ca.ks, cb.ks)
        assert np.allclose(ca.values, cb.values, atol=1e-6, rtol=0)
        if ca.seeds is not None:
            assert cb.seeds is not None and np.allclose(ca.seeds, cb.seeds, atol=1e-6, rtol=0)


def pcace_direct(net, images, scores, n_shown, criteria=False) -> nv.FaithfulnessCurves:
    """The shown layer's curve computed here, from the documented recipe."""
    layer, n = scores.layer, scores.ranking.numel()
    rankings = {"pcace": {layer: scores.ranking.tolist()}}
    if criteria:
        ns = nv.score_neurons(net, images[:1], [layer], target=scores.target, output="logit", samples=images)
        for metric in ("correlation", "precision"):
            ranked = ns.top(metric, n)[layer]
            if len(ranked) >= min(32, n):
                rankings[metric] = {layer: ranked}
    return nv.deletion_curve(net, images[:1], rankings, ks=view_ks(n), random=3, target=scores.target,
                             output="logit", samples=images[:n_shown])


def test_the_pcace_view_draws_the_shown_layers_deletion_curve_after_a_run(snapshot):
    net, images = gated_cnn(), image_set()
    snap = snapshot(net)
    v = PCACEView(net, images, LAYERS)
    v.wait(60)
    assert v.status == "done", v.error
    assert v.faithfulness.curves is None  # not asked for: the model ran only for the ranking
    v.faithfulness.button.click()
    v.faithfulness.wait(60)
    curves = v.faithfulness.curves
    assert curves is not None, v.faithfulness.status.value
    assert curves.groups == [v.layer] and curves.rankings == ["pcace", "random"]
    assert [f.title for f in v.faithfulness.panel.figures] == [v.layer]
    same_curves(curves, pcace_direct(net, images, v.scores, v.n_shown))
    other = next(layer for layer in LAYERS if layer != v.layer)
    v.layer = other  # another layer shown: its own curve
    v.faithfulness.wait(60)
    assert v.faithfulness.curves is not None and v.faithfulness.curves.groups == [other]
    same_curves(v.faithfulness.curves, pcace_direct(net, images, v.scores, v.n_shown))
    v.close()
    snap.assert_unchanged()


def test_a_new_pcace_run_drops_the_curve_of_the_old_one_and_draws_its_own():
    net, images = gated_cnn(), image_set()
    v = PCACEView(net, images, LAYERS)
    v.wait(60)
    v.faithfulness.start()
    v.faithfulness.wait(60)
    v.n_components = 2
    v.run()
    assert v.faithfulness.curves is None  # cleared at once: the run needs the model
    v.wait(60)
    v.faithfulness.wait(60)
    assert v.faithfulness.curves is not None
    same_curves(v.faithfulness.curves, pcace_direct(net, images, v.scores, v.n_shown))
    v.close()


def test_the_inversion_view_draws_the_masks_deletion_and_insertion_curves_after_a_run(snapshot):
    net, x = gated_cnn(), image()
    snap = snapshot(net)
    v = InversionView(net, x, **STEPS)
    v.wait(60)
    assert v.status == "done", v.error
    assert v.faithfulness.curves is None
    v.faithfulness.button.click()
    v.faithfulness.wait(60)
    curves = v.faithfulness.curves
    assert isinstance(curves, list) and [c.mode for c in curves] == ["deletion", "insertion"], \
        v.faithfulness.status.value
    assert [f.title for f in v.faithfulness.panel.figures] == ["pixels · deletion", "pixels · insertion"]
    for got in curves:
        want = nv.mask_deletion_curve(net, x, v.result, mode=got.mode, steps=10, random=3, background="blur")
        same_curves(got, want)
        assert got.rankings == ["mask", "random"]
    v.close()
    snap.assert_unchanged()


@pytest.mark.parametrize("background, used", [("mean", "mean"), ("noise", "blur")])
def test_the_mask_curves_remove_pixels_as_the_run_did_or_blur_them(background, used):
    net, x = gated_cnn(), image()
    v = InversionView(net, x, background=background, **STEPS)
    v.wait(60)
    v.faithfulness.start()
    v.faithfulness.wait(60)
    curves = v.faithfulness.curves
    assert curves is not None and all(c.how == used for c in curves)
    v.close()


def test_the_explorer_redraws_its_curves_for_a_new_run_once_they_were_asked_for():
    net, x = gated_cnn(), image()
    w = nv.NeuronExplorer(net, x, LAYERS, n_samples=6, live=False)
    w.wait(60)
    w.knockouts.draw_curves()
    w.knockouts.wait(60)
    first = w.knockouts.current_curves()
    assert first is not None
    w.seed = 1
    w.run()
    w.wait(60)
    w.knockouts.wait(60)
    again = w.knockouts.current_curves()
    assert again is not None and again is not first
    same_curves(again, nv.deletion_curve(net, x, w.scores, ks=view_ks(min(
        len(v) for m in ("correlation", "precision") for v in w.scores.top(m, 64).values())), random=3))
    w.close()


def test_a_new_top_k_keeps_the_pcace_curve_and_a_new_layer_is_computed_again():
    net, images = gated_cnn(), image_set()
    v = PCACEView(net, images, LAYERS)
    v.wait(60)
    v.faithfulness.start()
    v.faithfulness.wait(60)
    drawn = v.faithfulness.curves
    v.top_k = 2  # the bars and the grid change, not the ranking
    assert v.faithfulness.curves is drawn
    first = v.layer
    v.layer = next(layer for layer in LAYERS if layer != first)
    v.layer = first  # back: computed again for the shown layer
    v.faithfulness.wait(60)
    assert v.faithfulness.curves is not drawn and v.faithfulness.curves.groups == [first]
    v.close()


def test_the_pcace_recipe_adds_the_criteria_of_the_same_images_on_request():
    from neuronviz.widgets.knockouts import pcace_curves

    net, images = gated_cnn(), image_set()
    scores = nv.pcace(net, images, "conv2", target=1)
    got = pcace_curves(net, images, scores, n_images=2, criteria=True)
    assert got.rankings == ["pcace", "correlation", "precision", "random"]
    same_curves(got, pcace_direct(net, images, scores, 2, criteria=True))
