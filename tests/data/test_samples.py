"""Bundled photos, ImageNet class names, preprocess and deprocess."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import torch
from PIL import Image

import neuronviz.data as data
from neuronviz.data import (
    MEAN,
    STD,
    deprocess,
    imagenet_categories,
    preprocess,
    sample_image,
    sample_image_names,
)


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return sample_image("cat")


# ---------------------------------------------------------------- sample photos


def test_sample_names_are_the_four_bundled_photos():
    assert sample_image_names() == ["cat", "coffee", "rocket", "astronaut"]


@pytest.mark.parametrize("name", ["cat", "coffee", "rocket", "astronaut"])
def test_each_sample_is_a_small_rgb_photo(name):
    image = sample_image(name)
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert min(image.size) <= 256 and min(image.size) >= 224
    file = resources.files(data).joinpath(f"{name}.jpg")
    assert len(file.read_bytes()) < 60_000


def test_each_sample_photo_is_credited():
    credits = resources.files(data).joinpath("CREDITS.md").read_text(encoding="utf-8")
    for name in sample_image_names():
        assert f"{name}.jpg" in credits


def test_sample_image_returns_an_independent_copy():
    a = sample_image("cat")
    original = a.getpixel((0, 0))
    a.putpixel((0, 0), (1, 2, 3) if original != (1, 2, 3) else (4, 5, 6))
    assert sample_image("cat").getpixel((0, 0)) == original
    names = sample_image_names()
    names.clear()
    assert len(sample_image_names()) == 4


def test_unknown_sample_name_lists_names_and_suggests_the_closest():
    with pytest.raises(ValueError, match=r"available: cat, coffee, rocket, astronaut; did you mean 'coffee'\?"):
        sample_image("cofee")
    with pytest.raises(ValueError, match="did you mean 'cat'"):
        sample_image("cta")
    with pytest.raises(ValueError, match="available"):
        sample_image(3)


# ---------------------------------------------------------------- class names


def test_categories_are_the_1000_imagenet_classes_in_standard_order():
    names = imagenet_categories()
    assert len(names) == 1000
    assert len(set(names)) == 1000
    assert names[0] == "tench"
    assert names[285] == "Egyptian cat"
    assert names[967] == "espresso"
    assert names[999] == "toilet tissue"


def test_mutating_the_returned_categories_does_not_change_later_calls():
    names = imagenet_categories()
    names[285] = "dog"
    names.clear()
    assert imagenet_categories()[285] == "Egyptian cat"


# ---------------------------------------------------------------- preprocess


def test_normalisation_constants_are_tensorflow_lite_pixel_scaling():
    assert len(MEAN) == 3 and len(STD) == 3
    x = preprocess(np.full((224, 224, 3), 127, np.uint8))
    assert torch.allclose(x, torch.zeros_like(x), atol=1e-6)  # (127 - 127) / 128
    x = preprocess(np.full((224, 224, 3), 255, np.uint8))
    assert torch.allclose(x, torch.ones_like(x), atol=1e-6)  # (255 - 127) / 128


def _accepted_inputs(cat: Image.Image) -> dict[str, object]:
    rgb = np.asarray(cat)
    tensor = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255
    return {
        "pil": cat,
        "pil_grey": cat.convert("L"),
        "pil_rgba": cat.convert("RGBA"),
        "uint8_rgb": rgb,
        "uint8_grey": rgb[:, :, 0].copy(),
        "uint8_rgba": np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
        "float_chw": tensor,
        "float_1chw": tensor[None],
        "float64_chw": tensor.double(),
    }


@pytest.mark.parametrize(
    "kind",
    ["pil", "pil_grey", "pil_rgba", "uint8_rgb", "uint8_grey", "uint8_rgba", "float_chw", "float_1chw", "float64_chw"],
)
def test_every_accepted_input_kind_gives_one_float32_224_square(cat, kind):
    x = preprocess(_accepted_inputs(cat)[kind])
    assert x.shape == (1, 3, 224, 224)
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()


def test_pil_and_uint8_array_give_the_same_tensor(cat):
    assert torch.equal(preprocess(cat), preprocess(np.asarray(cat)))


def test_float_tensor_in_unit_range_matches_the_uint8_path(cat):
    inputs = _accepted_inputs(cat)
    assert torch.allclose(preprocess(inputs["float_chw"]), preprocess(inputs["uint8_rgb"]), atol=1e-5)


def test_grey_input_gives_three_equal_channels(cat):
    x = preprocess(np.asarray(cat.convert("L")))
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])


def test_rgba_input_drops_alpha(cat):
    inputs = _accepted_inputs(cat)
    assert torch.equal(preprocess(inputs["uint8_rgba"]), preprocess(inputs["uint8_rgb"]))


def test_output_size_follows_the_size_argument(cat):
    assert preprocess(cat, size=160).shape == (1, 3, 160, 160)
    assert preprocess(np.zeros((50, 80, 3), np.uint8), size=96).shape == (1, 3, 96, 96)  # upscaled


def test_preprocess_leaves_its_input_unchanged(cat):
    t = _accepted_inputs(cat)["float_chw"]
    before = t.clone()
    preprocess(t)
    assert torch.equal(t, before)


def test_deprocess_of_preprocess_gives_back_the_centre_crop(cat):
    rgb = np.asarray(cat)[:224, :300]  # short side already 224: no resampling, only the crop
    out = deprocess(preprocess(rgb))
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    left = (300 - 224) // 2
    expected = rgb[:, left : left + 224].astype(np.float32) / 255
    assert np.abs(out - expected).max() <= 2 / 255


def test_deprocess_accepts_an_unbatched_image_and_clips_to_unit_range():
    x = torch.full((3, 4, 5), 100.0)
    x[0] = -100.0
    out = deprocess(x)
    assert out.shape == (4, 5, 3)
    assert out.min() == 0.0 and out.max() == 1.0


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.zeros((10, 10, 3), np.float64), ValueError, "uint8"),
        (np.zeros((10, 10, 2), np.uint8), ValueError, r"\(H, W, 3\) RGB"),
        (np.zeros((2, 10, 10, 3), np.uint8), ValueError, r"shape \(2, 10, 10, 3\)"),
        (torch.zeros(3, 10, 10, dtype=torch.uint8), ValueError, "must be float"),
        (torch.zeros(4, 10, 10), ValueError, "one RGB image"),
        (torch.zeros(2, 3, 10, 10), ValueError, "one RGB image"),
        (torch.zeros(10, 10), ValueError, "one RGB image"),
        (torch.full((3, 10, 10), float("nan")), ValueError, "NaN"),
        (torch.linspace(-2, 2, 300).view(3, 10, 10), ValueError, "already normalised"),
        (torch.linspace(0, 255, 300).view(3, 10, 10), ValueError, "divide by 255"),
        ([[0, 1], [2, 3]], ValueError, "got an object of type list; accepted: a PIL image"),
        ("cat.jpg", ValueError, "accepted"),
    ],
)
def test_bad_input_is_rejected_with_what_was_received_and_what_is_accepted(bad, error, message):
    with pytest.raises(error, match=message):
        preprocess(bad)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bad_size_is_rejected(cat, size):
    with pytest.raises(ValueError, match="size must be a positive int"):
        preprocess(cat, size=size)


@pytest.mark.parametrize("bad", [np.zeros((3, 8, 8)), torch.zeros(2, 3, 8, 8), torch.zeros(1, 8, 8)])
def test_deprocess_rejects_anything_but_one_rgb_tensor(bad):
    with pytest.raises(ValueError, match="deprocess"):
        deprocess(bad)
