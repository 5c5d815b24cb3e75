"""A pretraining run's input, chosen in one place: where images are decoded and where the two views are made.

Three paths, from the run's settings (``training_input``):

- the decoded cache (``cache_device`` says where): the split decoded once into a uint8 tensor, every epoch a
  permutation of it (``DecodedEpochLoader``), the views made on the training device (``DeviceViews``);
- streamed with views on the device: the loader decodes uint8 images at the size needed (``Uint8Transform``), or
  passes JPEG files undecoded to one batched decode on the GPU (``decode=device``), then ``DeviceViews``;
- streamed with views in the loader (``TwoViewTransform``, augment_on=loader): batches arrive with their views.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from spectral_ssl.data import jpeg
from spectral_ssl.data.cache import DecodedEpochLoader, DecodedSplit, cache_device
from spectral_ssl.data.decode import Uint8Transform
from spectral_ssl.data.epochs import DeviceViews, EpochBatches, EpochLoader
from spectral_ssl.data.readers import ImageData
from spectral_ssl.transforms import AugmentConfig, DeviceAugment, Preprocessing, TwoViewTransform


@dataclass
class TrainingInput:
    """What ``training_input`` chose: ``batches`` (what the selection pool reads, any epoch from any position) and
    ``prepare`` (the per-batch step on the training device that makes the views; None when the loader made them),
    the decoded cache (``cache``: its device, None without one; ``cached``: the split) and ``jpeg_on_device``."""

    batches: EpochBatches
    prepare: Callable[[dict], dict] | None
    cache: torch.device | None
    cached: DecodedSplit | None
    jpeg_on_device: bool
    world_size: int = 1

    @property
    def decode_seconds(self) -> float:
        """The decode pass of the cache (training time), 0 without one."""
        return self.cached.seconds if self.cached is not None else 0.0

    def describe(self) -> str:
        """One phrase for a run's start line: the cache (rows, MB, seconds), or where images are decoded each epoch."""
        if self.cached is not None:
            return (f"decoded once into {self.cache.type} memory ({len(self.cached)} rows"
                    f"{' per process' * (self.world_size > 1)}, {self.cached.images.numel() / 2**20:.0f} MB, "
                    f"{self.cached.seconds:.0f} s)")
        return "JPEGs decoded on the device (nvJPEG)" if self.jpeg_on_device else "decoded in the loader every epoch"


def training_input(images: ImageData, prep: Preprocessing, views: tuple[AugmentConfig, AugmentConfig], *,
                   device: torch.device, augment_on_device: bool, cache: str = "auto", decode: str = "auto",
                   rows: int | None, batch_size: int, seed: int, epoch: Callable[[], int], rank: int = 0,
                   world_size: int = 1, num_workers: int = 0, shuffle_buffer: int = 10_000, skip_corrupt: bool = False,
                   max_rows: int | None = None) -> TrainingInput:
    """The batches of ``images`` (``rows`` training rows, None if unknown; the first ``max_rows`` if given) for this
    rank, and how their two ``views`` (``prep``: size, mean, std) are made on ``device``.

    ``cache`` and ``decode`` are the recipes' ``cache_decoded`` and ``decode`` settings (``cache_device``,
    ``jpeg.decode_on_device``); with the cache each process decodes and keeps only its ``1/world_size`` shard.
    Views made on the device are seeded by (``seed``, ``epoch()``, the batch's idx): resume-exact. ``epoch`` is read
    per batch (the pool's current epoch).
    """
    augment = DeviceAugment(prep.image_size, mean=prep.mean, std=prep.std, views=views).to(device)
    on_cache = cache_device(cache, augment_on_device=augment_on_device, rows=rows, image_size=prep.image_size,
                            device=device, world_size=world_size)
    cached, jpeg_on_device = None, False
    if on_cache is not None:  # decode once, every epoch gathers from one tensor
        cached = DecodedSplit.decode(images, prep.image_size, device=on_cache, num_workers=num_workers,
                                     skip_corrupt=skip_corrupt, max_rows=max_rows, rank=rank, world_size=world_size)
        batches = DecodedEpochLoader(cached, batch_size, seed=seed, rank=rank, world_size=world_size)
    else:  # JPEGs decoded in the loader at the size needed, or passed undecoded to a batched decode on the GPU
        jpeg_on_device = augment_on_device and jpeg.decode_on_device(decode, device, images, skip_corrupt=skip_corrupt)
        transform = (Uint8Transform(prep.image_size, jpeg_on_device=jpeg_on_device) if augment_on_device
                     else TwoViewTransform(prep.image_size, mean=prep.mean, std=prep.std, views=views))
        batches = EpochLoader(images, transform, batch_size, collate="eval" if augment_on_device else "views",
                              seed=seed, rank=rank, world_size=world_size, shuffle_buffer=shuffle_buffer,
                              num_workers=num_workers, skip_corrupt=skip_corrupt, max_samples=max_rows,
                              pin_memory=device.type == "cuda")
    prepare = None
    if augment_on_device:  # uint8 batches -> two views made on the device
        views_on_device = DeviceViews(augment, seed, device, epoch=epoch)

        def decode_then_views(batch: dict) -> dict:  # decode=device: the batch's JPEG files decoded together (nvJPEG)
            return views_on_device({**batch, "image": jpeg.decode_jpeg_batch(batch["image"], prep.image_size, device)})

        prepare = decode_then_views if jpeg_on_device else views_on_device
    return TrainingInput(batches, prepare, on_cache, cached, jpeg_on_device, world_size)
