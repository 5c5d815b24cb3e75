"""Decoding: an undecoded image value (bytes, a path, a PIL image) -> an 8-bit RGB PIL image, or a fixed-size uint8
tensor for augmentations on the training device.

JPEGs are decoded at the size needed when the caller says what it needs (``need``, a ``jpeg.DecodeNeed``: DCT-domain
downscaling, see ``spectral_ssl.data.jpeg``); a transform declares its own as ``decode_need`` (``decode_need_of``).

16-bit and 32-bit images are scaled to 8 bits by their type's range or refused; transparency is composited on
white; every other mode is converted to RGB.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import NoneType
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from spectral_ssl.data.jpeg import decode_jpeg_at_least, is_jpeg
from spectral_ssl.decode_need import DecodeNeed, ShortSideNeed

# what a corrupt or unusable row raises: PIL's decompression bomb error (an image over twice
# ``Image.MAX_IMAGE_PIXELS``) subclasses Exception itself
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, TypeError, Image.DecompressionBombError)


class UndecodableImageError(ValueError):
    """A row's image cannot be decoded and ``skip_corrupt`` is off. One line naming the row (and its file, when the
    row has one) and the fix; the recipes stop on it in one line."""

    @classmethod
    def of(cls, row: dict[str, Any], error: BaseException) -> UndecodableImageError:
        value = row.get("image")
        path = value.get("path") if isinstance(value, dict) else None
        where = f"idx {row.get('idx')}" + (f" ({path})" if path else "")
        return cls(f"image at {where} cannot be decoded ({type(error).__name__}: {error}); fix or drop that row, or "
                   "pass --skip_corrupt=true to skip undecodable images.")

    @staticmethod
    def one_line(error: BaseException) -> str:
        """The message, also when a DataLoader worker re-raised it with the worker's traceback inside."""
        text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        prefix = f"{UndecodableImageError.__module__}.{UndecodableImageError.__qualname__}: "
        return text.removeprefix(prefix)


def decode_image(value: Any, need: DecodeNeed | None = None, backend: str = "auto") -> Image.Image:
    """PIL RGB image from a datasets ``Image(decode=False)`` value (``{"bytes", "path"}``), a PIL image, bytes or a
    path.

    With a ``need`` a JPEG is decoded at the smallest size the JPEG ``backend`` offers that keeps ``need(W, H)``
    (``jpeg.decode_jpeg_at_least``); other formats and ``need=None`` decode at full size.

    Raises a ``DECODE_ERRORS`` error for a row it cannot use: ValueError for a missing image (None, a null image in
    parquet, a webdataset sample without an image member) or a value of another type, PIL's errors for a corrupt
    file or a decompression bomb.
    """
    if isinstance(value, Image.Image):
        image = value
    else:
        data, path = _file_of(value)
        if need is not None and data is None and path is not None and Path(path).suffix.lower() in (".jpg", ".jpeg"):
            data = Path(path).read_bytes()
        if need is not None and data is not None and is_jpeg(data):
            image = decode_jpeg_at_least(bytes(data), need, backend)
        else:
            image = Image.open(io.BytesIO(data)) if data is not None else Image.open(path)
            image.load()
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _to_8_bit(image)
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "P", "PA"):  # composite transparency on white, like a viewer
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        image = image.convert("RGB")
    return image


def _file_of(value: Any) -> tuple[bytes | bytearray | memoryview | None, str | None]:
    """(bytes, path) of an undecoded image value, one of them not None, or a ValueError saying what the row holds."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (str, Path)):
        data, path = None, value
    else:
        data, path = value, None
    if data is None and path is None:
        raise ValueError("the row has no image (None)")
    if not isinstance(data, (bytes, bytearray, memoryview, NoneType)) or not isinstance(path, (str, Path, NoneType)):
        raise ValueError(f"the image is a {type(value).__name__} ({value!r:.60}), not an image file's bytes, a path "
                         "or a PIL image")
    return data, None if path is None else str(path)


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer/float images as 8-bit grayscale, scaled by their type's range: 16-bit integers
    (and 32-bit integers whose values fit 16 bits) by 65535, floats in [0, 1] by 1, floats in [0, 255] as they are.
    Anything else has no known range and is refused (converting it would clip or wash it out silently)."""
    pixels = np.asarray(image, dtype=np.float64)
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if image.mode == "F":
        scale = 1.0 if low >= 0 and high <= 1 else 255.0 if low >= 0 and high <= 255 else None
    else:
        scale = 255.0 if image.mode == "I" and low >= 0 and high <= 255 else 65535.0 if low >= 0 and high <= 65535 \
            else None
    if scale is None:
        raise ValueError(f"a {image.mode}-mode image with values in [{low:g}, {high:g}] has no known 8-bit scale; "
                         "convert the images to 8-bit (or to floats in [0, 1]) first")
    return Image.fromarray(np.round(pixels * (255.0 / scale)).clip(0, 255).astype(np.uint8), "L")


def to_uint8(image: Image.Image, size: int) -> torch.Tensor:
    """(3, size, size) uint8 tensor: the centred square of side min(W, H) (whole pixels), resized to ``size``
    (bilinear, antialiased): the crop comes before the resize, so only the square is resampled. What
    ``make_loader(transform="uint8")`` yields for augmentations on the training device."""
    width, height = image.size
    if (width, height) != (size, size):
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def decode_need_of(transform: Any) -> DecodeNeed | None:
    """What ``transform`` needs from the decoder: its ``decode_need`` attribute (``Uint8Transform``: the short side;
    ``transforms.TwoViewTransform``: its two views' random resized crops); None (full size) for anything else."""
    return getattr(transform, "decode_need", None)


class Uint8Transform:
    """Decode-only transform: ``to_uint8`` at ``image_size`` (collated into one uint8 batch). Its ``decode_need``
    (the short side >= image_size) lets the loader decode JPEGs at that size.

    ``jpeg_on_device=True`` (``decode=device``): the loader passes JPEG files through undecoded (1-D uint8 tensors,
    collated as a list with the other formats' ``to_uint8`` images) for ``jpeg.decode_jpeg_batch`` on the device.
    """

    def __init__(self, image_size: int, *, jpeg_on_device: bool = False) -> None:
        self.image_size = image_size
        self.decode_need = ShortSideNeed(image_size)
        self.jpeg_on_device = jpeg_on_device

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_uint8(image, self.image_size)
