"""A run's epochs: the protocol every epoch source follows (``EpochBatches``), the streaming one (``EpochLoader``)
and the per-batch seeding of augmentations on the training device (``DeviceViews``).

``batching.CandidatePool`` reads any ``EpochBatches``: ``EpochLoader`` (decodes every epoch) or
``cache.DecodedEpochLoader`` (a split decoded once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from spectral_ssl.data.readers import ImageData
from spectral_ssl.data.stream import make_loader


@runtime_checkable
class EpochBatches(Protocol):
    """Where a run's batches come from, any epoch, from any position (what resume needs)."""

    def __call__(self, epoch: int, skip_batches: int = 0) -> Iterable[dict]:
        """This rank's batches of ``epoch`` after its first ``skip_batches``."""

    def reread(self, epoch: int, read_batches: int, keep_idx: list[int]) -> dict | None:
        """The rows with idx in ``keep_idx`` among this rank's first ``read_batches`` batches of ``epoch``, as one
        batch (the candidates a selection pool held at a checkpoint), or None."""


@dataclass
class EpochLoader:
    """Opens this rank's loader for any epoch, with the run's fixed settings (``make_loader``'s arguments).

    ``loader(epoch, skip_batches)`` is the epoch's stream from a position; ``reread(epoch, read_batches, keep_idx)``
    re-reads, from the first ``read_batches`` batches of every rank, the rows with the given idx as one batch (the
    samples a selection pool held at a checkpoint). Used by ``batching.CandidatePool``.
    """

    data: ImageData
    transform: Callable
    batch_size: int
    collate: str = "views"
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    shuffle_buffer: int = 10_000
    num_workers: int = 0
    skip_corrupt: bool = False
    max_samples: int | None = None
    pin_memory: bool = False

    def _common(self) -> dict[str, Any]:
        return dict(seed=self.seed, rank=self.rank, world_size=self.world_size, shuffle_buffer=self.shuffle_buffer,
                    skip_corrupt=self.skip_corrupt, collate=self.collate, pin_memory=self.pin_memory)

    def __call__(self, epoch: int, skip_batches: int = 0) -> Iterable[dict]:
        return make_loader(self.data, self.transform, batch_size=self.batch_size, epoch=epoch,
                           num_workers=self.num_workers, skip_batches=skip_batches, max_samples=self.max_samples,
                           **self._common())

    def reread(self, epoch: int, read_batches: int, keep_idx: list[int]) -> dict | None:
        read = read_batches * self.batch_size * self.world_size
        if self.num_workers > 1:  # workers reading their own shards served other rows first: look through the epoch
            read = self.max_samples or 2**62  # (the stream stops once every row in keep_idx is found)
        loader = make_loader(self.data, self.transform, batch_size=len(keep_idx), epoch=epoch, drop_last=False,
                             max_samples=min(read, self.max_samples or read), keep_idx=keep_idx, **self._common())
        return next(iter(loader), None)


class DeviceViews:
    """A uint8 batch -> the same batch with two augmented ``views`` made on the training device (``image`` removed).

    Seeded per batch by (run seed, epoch, the batch's idx), never by a global generator: the views of a batch do not
    depend on how many batches were drawn before it, so a resumed run (or a selection pool that prepares a batch
    again) makes the same views as an uninterrupted run.

    Args:
        augment: ``transforms.DeviceAugment`` (on ``device``), called as ``augment(uint8_images, generator)``.
        seed: The run's seed.
        device: The training device.
        epoch: Returns the current epoch (e.g. ``lambda: pool.epoch``).
    """

    def __init__(self, augment: Callable[[torch.Tensor, torch.Generator], Any], seed: int, device: torch.device,
                 epoch: Callable[[], int]) -> None:
        self.augment, self.seed, self.device, self.epoch = augment, seed, device, epoch

    def generator(self, batch: dict) -> torch.Generator:
        from spectral_ssl.batching import step_seed

        return torch.Generator().manual_seed(step_seed(self.seed, self.epoch() * 7_919 + int(batch["idx"].sum())))

    def __call__(self, batch: dict) -> dict:
        images = batch.pop("image").to(self.device, non_blocking=True)
        return {"views": self.augment(images, self.generator(batch)), **batch}
