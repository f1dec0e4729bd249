"""Perturbation families: the paper's formula, reproducibility by seed, independence of batching."""

from __future__ import annotations

import pytest
import torch

import neuronviz as nv
from neuronviz.core.perturb import gaussian_blur


@pytest.fixture
def image():
    torch.manual_seed(1)
    return torch.rand(1, 3, 64, 64) + 0.5


def test_multiplicative_copy_zero_is_the_image_and_noise_grows_linearly(image):
    p = nv.perturb.MultiplicativeGaussian(sigma_step=0.1)
    s = p.sample(image, range(0, 6), seed=3)
    assert torch.equal(s[0], image[0])
    eps = s / image[0] - 1  # x_i = x (1 + eps_i)
    for i in range(1, 6):
        assert eps[i].mean().abs() < 0.01 * i
        assert eps[i].std().item() == pytest.approx(0.1 * i, rel=0.03)


def test_same_seed_gives_the_same_set_whatever_the_batching(image):
    p = nv.perturb.MultiplicativeGaussian()
    whole = p.sample(image, range(10), seed=7)
    parts = torch.cat([p.sample(image, range(0, 3), seed=7), p.sample(image, range(3, 10), seed=7)])
    assert torch.equal(whole, parts)
    assert not torch.equal(whole[1:], p.sample(image, range(10), seed=8)[1:])


@pytest.mark.parametrize("kind", sorted(nv.perturb.KINDS))
def test_every_family_keeps_copy_zero_and_changes_the_others(image, kind):
    p = nv.perturb.make(kind)
    s = p.sample(image, range(4), seed=0)
    assert s.shape == (4, 3, 64, 64) and s.dtype == image.dtype and s.device == image.device
    assert torch.equal(s[0], image[0])
    assert all(not torch.equal(s[i], image[0]) for i in (1, 2, 3))
    assert torch.equal(s, p.sample(image, range(4), seed=0))


def test_additive_noise_has_the_asked_standard_deviation(image):
    s = nv.perturb.AdditiveGaussian(sigma=0.3).sample(image, [1, 2], seed=0)
    assert (s - image).std().item() == pytest.approx(0.3, rel=0.03)


def test_occlusion_sets_square_patches_to_the_fill_value(image):
    p = nv.perturb.Occlusion(patch_size=10, n_patches=1, value=-5.0)
    s = p.sample(image, [1], seed=0)[0]
    changed = (s != image[0]).any(0)
    assert changed.sum().item() == 100
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert rows.max() - rows.min() == 9 and cols.max() - cols.min() == 9
    assert (s[:, changed] == -5.0).all()


def test_blur_smooths_and_preserves_the_mean():
    torch.manual_seed(0)
    x = torch.rand(3, 40, 40)
    y = gaussian_blur(x, 2.0)
    assert y.shape == x.shape
    assert y.std() < 0.5 * x.std()
    assert y.mean().item() == pytest.approx(x.mean().item(), abs=0.01)
    assert torch.equal(gaussian_blur(x, 0.0), x)


def test_settings_are_attributes_and_bad_settings_are_refused():
    assert nv.perturb.MultiplicativeGaussian(sigma_step=0.2).sigma_step == 0.2
    assert nv.perturb.Occlusion(patch_size=8).strength == 8
    with pytest.raises(ValueError, match="sigma_step"):
        nv.perturb.MultiplicativeGaussian(sigma_step=-1)
    with pytest.raises(ValueError, match="unknown perturbation 'gauss'.*multiplicative"):
        nv.perturb.make("gauss")
    with pytest.raises(TypeError, match="perturbation must be"):
        nv.perturb.make(3)
