"""Localisation box, IoU and pointing game on synthetic masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronviz.methods.saliency import box_from_mask, iou, pointing_hit, read_voc_boxes, resize_box


def blob(h: int = 40, w: int = 60, top: int = 10, left: int = 20, height: int = 8, width: int = 15) -> np.ndarray:
    mask = np.full((h, w), 0.05)
    mask[top : top + height, left : left + width] = 1.0
    return mask


def test_box_from_mask_is_the_tightest_box_around_a_blob():
    assert box_from_mask(blob()) == (20, 10, 34, 17)  # (x0, y0, x1, y1), inclusive


def test_box_from_mask_thresholds_at_alpha_times_the_mean():
    mask = np.zeros((10, 10))
    mask[2:4, 2:4] = 1.0  # mean 0.04
    mask[6:9, 5:9] = 0.05  # above 1.0 * mean, below 1.5 * mean
    assert box_from_mask(mask, alpha=1.5) == (2, 2, 3, 3)
    assert box_from_mask(mask, alpha=1.0) == (2, 2, 8, 8)


def test_box_from_mask_accepts_torch_and_batches():
    masks = torch.stack([torch.from_numpy(blob()), torch.from_numpy(blob(top=0, left=0, height=3, width=4))])
    assert box_from_mask(masks) == [(20, 10, 34, 17), (0, 0, 3, 2)]
    assert box_from_mask(masks[0].float()) == (20, 10, 34, 17)


def test_box_from_a_constant_mask_covers_the_image():
    assert box_from_mask(np.ones((5, 7))) == (0, 0, 6, 4)
    assert box_from_mask(np.zeros((5, 7))) == (0, 0, 6, 4)


def test_box_from_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        box_from_mask(np.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        box_from_mask(np.full((3, 3), np.nan))


def test_iou_of_known_boxes():
    assert iou((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    assert iou((0, 0, 9, 9), (10, 0, 19, 9)) == 0.0  # touching edges share no pixel
    assert iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 1.0  # one pixel each
    assert iou((0, 0, 3, 3), (1, 1, 2, 2)) == pytest.approx(4 / 16)
    assert iou(np.array([2, 2, 5, 5]), torch.tensor([2, 2, 5, 5])) == 1.0
    with pytest.raises(ValueError, match="x1 < x0"):
        iou((5, 0, 4, 3), (0, 0, 1, 1))


def test_pointing_hit_and_miss():
    mask = np.zeros((20, 30))
    mask[5, 12] = 1.0  # arg-max at x = 12, y = 5
    assert pointing_hit(mask, (10, 3, 14, 7))
    assert pointing_hit(mask, (12, 5, 12, 5))  # inclusive corners
    assert not pointing_hit(mask, (13, 0, 20, 10))
    assert pointing_hit(mask, [(0, 0, 2, 2), (10, 3, 14, 7)])  # any of several boxes
    assert not pointing_hit(mask, [(0, 0, 2, 2), (20, 10, 25, 15)])
    assert pointing_hit(torch.from_numpy(mask)[None], (10, 3, 14, 7))


def test_pointing_tolerance_counts_pixels_within_that_distance():
    mask = np.zeros((50, 50))
    mask[10, 10] = 1.0
    # box 3 px right and 4 px down of the point: distance 5
    assert not pointing_hit(mask, (13, 14, 20, 20), tolerance=4.9)
    assert pointing_hit(mask, (13, 14, 20, 20), tolerance=5)
    assert pointing_hit(mask, (25, 0, 30, 49), tolerance=15)  # 15 px straight right
    assert not pointing_hit(mask, (26, 0, 30, 49), tolerance=15)
    with pytest.raises(ValueError, match="tolerance"):
        pointing_hit(mask, (0, 0, 1, 1), tolerance=-1)


def test_read_voc_boxes_gives_zero_based_inclusive_boxes(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><size><width>500</width><height>375</height></size>"
        "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>11</ymin><xmax>100</xmax><ymax>200</ymax></bndbox></object>"
        "<object><name>n01751748</name><bndbox><xmin>50</xmin><ymin>60</ymin><xmax>70</xmax><ymax>80</ymax></bndbox></object>"
        "</annotation>"
    )
    assert read_voc_boxes(str(xml)) == [("dog", (0, 10, 99, 199)), ("n01751748", (49, 59, 69, 79))]


def test_resize_box_maps_to_the_resized_image():
    assert resize_box((0, 0, 499, 374), (500, 375), (224, 224)) == (0, 0, 223, 223)
    assert resize_box((100, 50, 199, 149), (400, 400), (200, 200)) == (50, 25, 99, 74)
