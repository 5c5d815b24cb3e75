"""What size an image must keep when it is decoded: the smallest decoded size that loses no resolution downstream.

A ``DecodeNeed`` is ``need(width, height) -> (w, h)``; ``spectral_ssl.data.jpeg`` decodes a JPEG to the smallest size
its library offers at or above it. The needs live here, apart from the decoders, so that ``transforms`` can say what
its crops need without importing the data package (which imports ``transforms``).

Sizes needed (derived in ``CropNeed``/``ShortSideNeed``; W x H the full size, S the output side):

- ``ShortSideNeed(S)`` (``to_uint8``: the short side resized to S, centre-cropped): a downscale by k keeps
  min(W, H) / k >= S, so k <= min(W, H) / S.
- ``CropNeed(S, (s_min, s_max), (r_min, r_max))`` (``RandomResizedCrop``, which draws its box as fractions of the
  image it is given: area s * W'H', aspect r): a box's sides are sqrt(W'H' s r) and sqrt(W'H' s / r), at least
  sqrt(W'H' s_min rho) with rho = min(r_min, 1 / r_max); the central fallback box after ten failed tries is the
  whole image, or (W', W' / r_min) when W'/H' < r_min, or (H' r_max, H') when W'/H' > r_max (the same fraction of
  the image at any scale). With W' >= W / k and H' >= H / k (decoders round up), every box the crop can draw keeps
  both sides >= S (rounding to whole pixels keeps x >= S at >= S) when
  k <= min(sqrt(WH s_min rho), the full-size fallback's short side) / S. Smaller images are decoded at full size:
  their small crops are upsampled exactly as in a full decode, never more.

The crop distribution is unchanged: the crop's fractions are drawn as before, only on a smaller image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


class DecodeNeed(Protocol):
    """``need(width, height) -> (w, h)``: the smallest decoded size an image of full size (width, height) must keep
    for what follows to lose no resolution (the full size when it cannot be reduced)."""

    def __call__(self, width: int, height: int) -> tuple[int, int]: ...


def _reduced(width: int, height: int, factor: float) -> tuple[int, int]:
    """(width, height) downscaled by ``factor`` (> 1) rounded up; the full size for factor <= 1."""
    if factor <= 1:
        return width, height
    return max(1, math.ceil(width / factor)), max(1, math.ceil(height / factor))


@dataclass(frozen=True)
class ShortSideNeed:
    """The short side stays >= ``image_size`` (``to_uint8``: resize the short side, centre crop)."""

    image_size: int

    def __call__(self, width: int, height: int) -> tuple[int, int]:
        return _reduced(width, height, min(width, height) / self.image_size)


@dataclass(frozen=True)
class CropNeed:
    """Every box ``RandomResizedCrop(image_size, scale=crop_scale, ratio=crop_ratio)`` can draw stays >=
    ``image_size`` px on both sides (derivation in the module docstring)."""

    image_size: int
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def max_factor(self, width: int, height: int) -> float:
        """The largest downscale k of a (width, height) image that keeps every crop >= image_size px."""
        r_min, r_max = self.crop_ratio
        rho = min(r_min, 1 / r_max)
        smallest_box = math.sqrt(width * height * self.crop_scale[0] * rho)
        in_ratio = width / height  # the central fallback box (whole image, or its aspect clamped into the range)
        fallback = ((width, width / r_min) if in_ratio < r_min else (height * r_max, height) if in_ratio > r_max
                    else (width, height))
        smallest_fallback = min(fallback)
        return min(smallest_box, smallest_fallback) / self.image_size

    def __call__(self, width: int, height: int) -> tuple[int, int]:
        return _reduced(width, height, self.max_factor(width, height))


def views_need(image_size: int, views) -> CropNeed:
    """The ``CropNeed`` of two-view augmentations (``transforms.AugmentConfig`` pair): the smallest area fraction
    and the widest aspect range of both views, so that both views' crops are covered by one decode."""
    return CropNeed(image_size, (min(v.crop_scale[0] for v in views), 1.0),
                    (min(v.crop_ratio[0] for v in views), max(v.crop_ratio[1] for v in views)))
