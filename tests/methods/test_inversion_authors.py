"""recipe="authors" against a transcription of the authors' loop (mndu/guided-feature-inversion, main.py).

The reference below is written from their ``invert()`` in plain torch, batch 1, step by step as
they wrote it: one Adam over all the steps, the mask upsampled with ``UpsamplingBilinear2d``
(``align_corners=True``) and then ``(m - min) / max``, the relative squared error plus
``5 sum w^2`` while ``i < 11``, then ``-p_c(keep) + p_c(deleted) + 2 sum w^2``, ``w`` clamped to
[0, 1e5], the learning rate halved after every 10th step.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuronviz.methods.inversion import guided_feature_inversion


def tiny_vgg() -> nn.Module:
    """conv-relu-pool twice, global pooling, a linear classifier: VGG's layout in miniature."""
    torch.manual_seed(0)

    class TinyVGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            )
            self.classifier = nn.Linear(8, 4)

        def forward(self, x):
            return self.classifier(self.features(x).mean((2, 3)))

    return TinyVGG()


def authors_loop(model, image, blurred, layer_module, epochs=80, category=None):
    """Their invert(), minus file I/O and printing; returns the final mask (1, 1, H, W) and w."""
    size = image.shape[-1]
    upsample = nn.UpsamplingBilinear2d(size=(size, size))
    activations = []

    def hook_acts(module, input, output):
        activations.append(output)

    def get_acts(model, input):
        del activations[:]
        _ = model(input)
        assert len(activations) == 1
        return activations[0]

    handle = layer_module.register_forward_hook(hook_acts)
    try:
        logits = model(image)
        probs = torch.softmax(logits, dim=1)
        if category is None:
            category = int(probs[0].argmax())
        ref_acts = get_acts(model, image).detach()
        n = ref_acts.size()[1]
        w = (torch.ones(1, n) / 10).requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=1e-2)

        def build_mask():
            m = w[0, n - 1] * ref_acts[0, n - 1, :, :]
            for j in range(n - 1):
                m = m + w[0, j] * ref_acts[0, j, :, :]
            m = upsample(m[None, None])
            return (m - m.min()) / m.max()

        for i in range(epochs):
            mask = build_mask().expand(1, 3, size, size)
            x_ = image * mask + blurred * (1 - mask)
            x_deleted = image * (1 - mask) + blurred * mask
            acts = get_acts(model, x_)
            loss_term = ((acts - ref_acts) ** 2).sum() / (ref_acts**2).sum()
            norm_term = (w**2).sum()
            highlight = -1 * torch.softmax(model(x_), dim=1)[0][category]
            suppress = torch.softmax(model(x_deleted), dim=1)[0][category]
            if i < 11:
                tot_loss = loss_term + 5 * norm_term
            else:
                tot_loss = highlight + 1 * suppress + 2 * norm_term
            optimizer.zero_grad()
            tot_loss.backward()
            optimizer.step()
            w.data.clamp_(0, 100000)
            if (i + 1) % 10 == 0:
                for group in optimizer.param_groups:
                    group["lr"] *= 0.5
        with torch.no_grad():
            final = build_mask()
    finally:
        handle.remove()
    return final, w.detach()


@pytest.mark.parametrize("epochs", [5, 30])
def test_authors_recipe_equals_the_transcribed_loop(epochs, snapshot):
    model = tiny_vgg().eval()
    torch.manual_seed(1)
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    blurred = torch.nn.functional.avg_pool2d(image, 5, stride=1, padding=2, count_include_pad=False)
    for p in model.parameters():
        p.requires_grad_(False)
    ref_mask, ref_w = authors_loop(model, image, blurred, model.features[5], epochs=epochs)
    for p in model.parameters():
        p.requires_grad_(True)
    stage1, stage2 = min(11, epochs), max(0, epochs - 11)
    model.train()
    snap = snapshot(model)
    result = guided_feature_inversion(model, image, background=blurred, recipe="authors",
                                      stage1_steps=stage1, stage2_steps=stage2)
    snap.assert_unchanged()
    assert result.recipe == "authors" and result.mask_layer == result.feature_layer == "features.5"  # pool5
    torch.testing.assert_close(result.weights, ref_w, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(result.mask, ref_mask[:, 0], rtol=1e-4, atol=1e-5)


def test_the_default_recipe_differs_from_the_authors():
    model = tiny_vgg()
    image = torch.rand(1, 3, 16, 16)
    paper = guided_feature_inversion(model, image, stage1_steps=3, stage2_steps=3)
    authors = guided_feature_inversion(model, image, stage1_steps=3, stage2_steps=3, recipe="authors")
    assert paper.recipe == "paper" and paper.mask_layer != paper.feature_layer
    assert authors.loss == "relative" and authors.delta == 2.0
    assert not torch.allclose(paper.mask, authors.mask)


def test_a_batch_gives_one_call_per_image_with_the_authors_recipe():
    model = tiny_vgg()
    torch.manual_seed(2)
    images = torch.rand(2, 3, 16, 16)
    both = guided_feature_inversion(model, images, recipe="authors", stage1_steps=4, stage2_steps=4)
    for i in range(2):
        alone = guided_feature_inversion(model, images[i : i + 1], recipe="authors", stage1_steps=4, stage2_steps=4)
        torch.testing.assert_close(both.mask[i], alone.mask[0], rtol=0, atol=1e-5)


def test_unknown_recipe_and_a_paper_loss_with_the_authors_recipe_are_refused():
    from neuronviz.core.errors import NeuronvizError

    model, image = tiny_vgg(), torch.rand(1, 3, 16, 16)
    with pytest.raises(NeuronvizError, match="recipe must be"):
        guided_feature_inversion(model, image, recipe="mine")
    with pytest.raises(NeuronvizError, match="relative"):
        guided_feature_inversion(model, image, recipe="authors", loss="paper")


torchvision = pytest.importorskip("torchvision")


def test_on_vgg_the_authors_recipe_uses_pool5_for_both_layers():
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None)
    result = guided_feature_inversion(model, torch.randn(1, 3, 64, 64), recipe="authors", stage1_steps=1,
                                      stage2_steps=1)
    assert result.mask_layer == result.feature_layer == "features.20"
