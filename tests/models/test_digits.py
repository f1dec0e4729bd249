"""The bundled digits data and CNN: real images, a fixed split, and an accurate shipped model."""

from __future__ import annotations

import pytest
import torch

import neuronviz as nv


def test_digits_are_the_1797_real_images_with_a_disjoint_fixed_split():
    x, y = nv.load_digits()
    assert x.shape == (1797, 1, 8, 8) and y.shape == (1797,)
    assert x.min() == 0 and x.max() == 1 and sorted(y.unique().tolist()) == list(range(10))
    x_tr, y_tr = nv.load_digits("train")
    x_te, y_te = nv.load_digits("test")
    assert len(y_tr) + len(y_te) == 1797 and len(y_te) == 359
    rows = {tuple(r) for r in x.view(1797, -1).tolist()}
    assert len(rows) > 1700  # real data, nearly all distinct
    assert torch.equal(nv.load_digits("test")[0], x_te)  # the split is fixed
    with pytest.raises(nv.NeuronvizError, match="split"):
        nv.load_digits("validation")


def test_shipped_digits_cnn_classifies_held_out_digits():
    model = nv.digits_model()
    assert not model.training
    x, y = nv.load_digits("test")
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy >= 0.97
    names = nv.layer_summary(model, x[:1]).names()
    assert names[:3] == ["conv1", "relu1", "conv2"] and names[-1] == "fc"
