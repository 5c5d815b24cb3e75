"""spectral_ssl.decode_need: the closed-form decode sizes against brute force (every box the random resized crop can
draw, on a dense grid) and the short side's definition."""

import math

import numpy as np
import pytest

from spectral_ssl import decode_need, transforms


def brute_smallest_box_side(width: int, height: int, scale, ratio) -> float:
    """The smallest side (before rounding) of any box RandomResizedCrop.get_params can return, over a dense grid of
    area fractions and aspects, plus the central fallback box."""
    smallest = math.inf
    area = width * height
    for s in np.linspace(scale[0], scale[1], 41):
        for log_r in np.linspace(math.log(ratio[0]), math.log(ratio[1]), 41):
            w, h = math.sqrt(area * s * math.exp(log_r)), math.sqrt(area * s / math.exp(log_r))
            if w <= width and h <= height:  # an accepted try
                smallest = min(smallest, w, h)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fallback = (width, width / ratio[0])
    elif in_ratio > ratio[1]:
        fallback = (height * ratio[1], height)
    else:
        fallback = (width, height)
    return min(smallest, *fallback)


SIZES = [(500, 375), (1600, 1200), (1200, 1600), (3000, 400), (4000, 3000)]


@pytest.mark.parametrize("scale,ratio", [((0.2, 1.0), (3 / 4, 4 / 3)), ((0.08, 1.0), (3 / 4, 4 / 3)),
                                         ((0.5, 1.0), (0.5, 2.0)), ((0.2, 1.0), (1.5, 2.0))])
@pytest.mark.parametrize("width,height", SIZES)
def test_crop_need_keeps_the_smallest_box_the_crop_can_draw_at_least_the_output_size(width, height, scale, ratio):
    need = decode_need.CropNeed(224, scale, ratio)
    k = need.max_factor(width, height)
    assert k * 224 <= brute_smallest_box_side(width, height, scale, ratio) + 1e-6  # the closed form is a lower bound
    w, h = need(width, height)
    if k <= 1:
        assert (w, h) == (width, height)  # too small to reduce: decoded whole, as before
    else:  # at that size the smallest box is still >= 224 px, and the bound is tight within the grid's step
        assert brute_smallest_box_side(w, h, scale, ratio) >= 224 - 1e-6
        assert brute_smallest_box_side(width, height, scale, ratio) / k < 224 * 1.1


@pytest.mark.parametrize("width,height", SIZES + [(100, 50), (224, 300)])
def test_short_side_need_keeps_the_short_side_at_least_the_output_size_and_never_upscales(width, height):
    w, h = decode_need.ShortSideNeed(224)(width, height)
    assert (w, h) == (width, height) if min(width, height) <= 224 else min(w, h) >= 224
    assert w <= width and h <= height and math.isclose(w / h, width / height, rel_tol=0.02)


def test_views_need_covers_both_views_crops():
    views = transforms.augment_preset("byol", 96)  # two views with their own crop settings
    need = decode_need.views_need(96, views)
    assert need.crop_scale[0] == min(v.crop_scale[0] for v in views)
    assert need.crop_ratio == (min(v.crop_ratio[0] for v in views), max(v.crop_ratio[1] for v in views))
    assert transforms.TwoViewTransform(96, views=views).decode_need == need
