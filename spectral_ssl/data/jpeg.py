"""JPEG decoded at the size needed: DCT-domain downscaling on the CPU, batched nvJPEG on a GPU.

A JPEG can be decoded directly at 1/2, 1/4 or 1/8 of its size (PIL's ``Image.draft``; libjpeg-turbo through
``simplejpeg`` also has the steps n/8 in between) for a fraction of a full decode. A ``DecodeNeed`` says how large
the decoded image must stay for what follows not to lose resolution; ``decode_jpeg_at_least`` decodes to the
smallest such size the library offers.

The sizes needed (``ShortSideNeed``, ``CropNeed``, ``views_need``) are derived in ``spectral_ssl.decode_need``.

Backends (``JPEG_BACKENDS``): ``simplejpeg`` when installed (the ``jpeg`` extra; any n/8 scale, so a 500x375 photo
needing 224 px decodes at 5/8), else PIL's ``draft`` (scales 1, 1/2, 1/4, 1/8). Measured (decode + ``to_uint8`` at
224 px, ms per image, best of 9 rounds of 30 photo-like q90 JPEGs, one thread, on a 2-core x86_64 CPU shared with
other jobs): 500x375: PIL full 2.15, PIL draft 2.22 (no 1/2 step keeps 224 px), simplejpeg 1.92 (5/8); 1600x1200:
PIL full 16.2, PIL draft 7.0, simplejpeg 7.2 (both 1/4). SimCLR crops (area >= 0.2) at 224 px cannot reduce a
500x375 photo at all (its smallest crop is 168 px); at 1600x1200 both decode at 1/2 (9.1 vs 9.5 ms). So ``auto``
takes simplejpeg when installed and PIL's draft otherwise. CMYK/YCCK JPEGs, and whatever simplejpeg refuses, go to
PIL (which raises the error a corrupt file deserves); anything that is not a JPEG is decoded by PIL at full size.

``decode=device`` (``decode_on_device``): the loader hands JPEG files over undecoded (``undecoded_jpeg``: 1-D uint8
tensors, collated as a list) and ``decode_jpeg_batch`` decodes a batch of them on the device with
``torchvision.io.decode_jpeg`` (nvJPEG, batched, on CUDA; libjpeg on the CPU, which is how it is tested here), each
short side resized to S (antialiased) and centre-cropped there.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spectral_ssl.decode_need import DecodeNeed

JPEG_MAGIC = b"\xff\xd8\xff"  # SOI marker + the first marker's 0xFF


def is_jpeg(data: bytes | memoryview) -> bool:
    """Whether ``data`` starts like a JPEG file (SOI marker)."""
    return bytes(data[:3]) == JPEG_MAGIC


def _simplejpeg():
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def jpeg_backend(name: str = "auto") -> str:
    """The backend ``decode_jpeg_at_least`` uses: ``simplejpeg`` if installed (faster, finer scales; measured in
    ``benchmarks/bench_jpeg.py``) else ``pil``; or the one named (``simplejpeg`` without the package: ImportError
    naming the ``jpeg`` extra)."""
    if name not in JPEG_BACKENDS:
        raise ValueError(f"unknown JPEG backend {name!r}; choose one of {', '.join(JPEG_BACKENDS)}")
    if name == "auto":
        return "simplejpeg" if _simplejpeg() is not None else "pil"
    if name == "simplejpeg" and _simplejpeg() is None:
        raise ImportError("the simplejpeg backend needs the optional package: pip install 'spectral_ssl[jpeg]'")
    return name


JPEG_BACKENDS = ("auto", "pil", "simplejpeg")


def decode_jpeg_at_least(data: bytes, need: DecodeNeed | None, backend: str = "auto") -> Image.Image:
    """PIL image of JPEG ``data`` decoded at the smallest size the backend offers that is >= ``need(W, H)`` on both
    sides (the full size without a need). Mode as decoded (RGB, L or CMYK): ``decode.decode_image`` normalises it."""
    backend = jpeg_backend(backend)
    if backend == "simplejpeg" and need is not None:
        simplejpeg = _simplejpeg()
        try:
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
            _refuse_bombs(width, height)
            if colorspace in ("Gray", "GRAY"):
                return Image.fromarray(_decode_gray(simplejpeg, data, need(width, height)), "L")
            if colorspace not in ("CMYK", "YCCK"):
                w, h = need(width, height)
                return Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=w, min_height=h),
                                       "RGB")
        except ValueError:
            pass  # anything simplejpeg refuses: PIL below (it raises the error a corrupt file deserves)
    image = Image.open(io.BytesIO(data))
    if need is not None:
        image.draft("RGB" if image.mode == "RGB" else None, need(*image.size))
    image.load()
    return image


def _refuse_bombs(width: int, height: int) -> None:
    """PIL's decompression bomb check (``Image.open`` makes it; simplejpeg does not): DecompressionBombError over
    twice ``Image.MAX_IMAGE_PIXELS``, a DecompressionBombWarning over it, nothing when it is None."""
    limit, pixels = Image.MAX_IMAGE_PIXELS, width * height
    if limit is None or pixels <= limit:
        return
    if pixels > 2 * limit:
        raise Image.DecompressionBombError(f"Image size ({pixels} pixels) exceeds limit of {2 * limit} pixels, could "
                                           "be decompression bomb DOS attack.")
    warnings.warn(f"Image size ({pixels} pixels) exceeds limit of {limit} pixels, could be decompression bomb DOS "
                  "attack.", Image.DecompressionBombWarning, stacklevel=3)


def _decode_gray(simplejpeg, data: bytes, size: tuple[int, int]) -> np.ndarray:
    out = simplejpeg.decode_jpeg(data, colorspace="GRAY", min_width=size[0], min_height=size[1])
    return out[..., 0] if out.ndim == 3 else out


def undecoded_jpeg(value) -> bytes | None:
    """The file of a datasets ``Image(decode=False)`` value (or bytes) if it is a JPEG, else None (other formats, PIL
    images): what the loader passes on with ``decode=device`` (collated as 1-D uint8 tensors for
    ``decode_jpeg_batch``). Its header is read first: DecompressionBombError (over twice ``Image.MAX_IMAGE_PIXELS``)
    or UnidentifiedImageError, which the loader names by row or skips."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is None and path is not None and str(path).lower().endswith((".jpg", ".jpeg")):
            data = Path(path).read_bytes()
    else:
        data = value if isinstance(value, (bytes, bytearray, memoryview)) else None
    if data is None or not is_jpeg(data):
        return None
    with Image.open(io.BytesIO(data)):  # the header only: PIL's bomb check and a named error for a broken one here,
        pass  # in the loader (skipped with skip_corrupt), rather than later on the device
    return bytes(data)


def source_is_jpeg(images) -> bool:
    """Whether the first row of ``images`` (``readers.ImageData``) holds a JPEG file (what ``decode=auto`` asks)."""
    try:
        row = next(iter(images.ds))
    except StopIteration:
        return False
    return undecoded_jpeg(row["image"]) is not None


def decode_on_device(setting: str, device: torch.device, images, *, skip_corrupt: bool = False) -> bool:
    """Whether ``decode=setting`` decodes on ``device``: ``device`` yes, ``cpu`` no, ``auto`` when ``device`` is a
    CUDA device, the source holds JPEGs (``source_is_jpeg``) and undecodable rows need not be skipped (a batched
    decode cannot skip one row)."""
    if setting not in ("auto", "cpu", "device"):
        raise ValueError(f"decode must be auto, cpu or device, got {setting!r}")
    if setting != "auto":
        return setting == "device"
    return torch.device(device).type == "cuda" and not skip_corrupt and source_is_jpeg(images)


def decode_jpeg_batch(images: list[torch.Tensor], image_size: int, device: torch.device | str) -> torch.Tensor:
    """(B, 3, S, S) uint8 on ``device`` from a batch's ``image`` list: 1-D uint8 tensors holding JPEG files are
    decoded in one batched ``torchvision.io.decode_jpeg`` call on ``device`` (nvJPEG on CUDA), then each short side
    is resized to S (bilinear, antialiased) and centre-cropped there, as ``decode.to_uint8`` does on the CPU; (3, S,
    S) tensors (other formats, decoded by the loader) are moved as they are."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not len(images):
        raise ValueError("decode_jpeg_batch needs at least one image")
    device = torch.device(device)
    files = [i for i, image in enumerate(images) if image.ndim == 1]
    out = torch.empty(len(images), 3, image_size, image_size, dtype=torch.uint8, device=device)
    for i, image in enumerate(images):
        if image.ndim != 1:
            out[i] = image.to(device, non_blocking=True)
    if files:
        decoded = decode_jpeg([images[i] for i in files], mode=ImageReadMode.RGB, device=device)
        for i, image in zip(files, decoded):
            out[i] = _short_side_crop(image, image_size)
    return out


def _short_side_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, size, size): the centre square of side min(H, W), resized to ``size`` (the crop is
    taken first, so only the square is resampled)."""
    _, h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[:, top:top + side, left:left + side]
    if side == size:
        return square
    resized = torch.nn.functional.interpolate(square[None].float(), size=(size, size), mode="bilinear",
                                              antialias=side > size, align_corners=False)
    return resized[0].round_().clamp_(0, 255).to(torch.uint8)
