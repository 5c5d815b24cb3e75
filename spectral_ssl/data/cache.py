"""Decode once, reuse every epoch: a split held as one uint8 tensor, in RAM or on the training device.

Small datasets (Fashion-MNIST decoded at 32 px is 61 MB as one grayscale channel, CIFAR-10 150 MB) are decoded by
the loader in every epoch although the decoded pixels never change; with augmentations on the device
(``transforms.DeviceAugment``) the decode is then the whole input pipeline. ``DecodedSplit.decode``
reads the split once through ``stream.make_loader`` (``Uint8Transform``, the loader's workers and corrupt-row
handling), sorts it by ``idx`` (the cache does not depend on the worker count) and keeps it as one ``(N, C, S, S)``
uint8 tensor: C = 1 when every image is gray (the three decoded channels are equal), else 3.
``DecodedEpochLoader`` then serves epochs from it with the interface of ``epochs.EpochLoader`` (what
``batching.CandidatePool`` reads): a permutation per (seed, epoch), this rank's share, batches of uint8 ``image``
gathered by index (on the cache's device), so epochs decode nothing.

Several processes (``world_size`` W > 1): ``DecodedSplit.decode(..., rank=r, world_size=W)`` decodes and keeps only
rank r's shard, the rows ``stream.make_loader`` gives rank r unshuffled (a map-style split: positions r, r + W, ...;
a stream: its own shard files through ``datasets.distributed.split_dataset_by_node`` when their number divides by W,
else every W-th row), so every row is held by exactly one rank and each process holds ~1/W of the split. Epochs
are then per shard, as a ``DistributedSampler`` over a pre-sharded dataset: rank r serves a permutation of its own
rows seeded by (seed, epoch, rank), cut to the same length on every rank (the smallest shard's, agreed once at decode
time; drop_last semantics: the rows a larger shard has beyond it sit out that epoch, different ones each epoch), in
batches of ``batch_size``. The global batch is the W per-rank batches, as with the stream: the selectors gather every
rank's candidates (each drawn from its own shard), decide once on rank 0 and take ``batch_size`` from each rank
(``batching.step``); the loss gathers the W batches. The epoch's order is a function of (seed, epoch, rank, shard),
so a resume with the same world size is exact. The unsharded split (``world_size=1``; also the old way to run W
processes: each holds everything and takes every W-th row of one global permutation) is served as before.

Memory: ``decoded_bytes(rows, size)`` estimates 3 x rows x size^2 bytes before decoding (the gray case takes a third of
it once decoded); ``recipes/pretrain.py`` caches automatically up to ``AUTO_CACHE_BYTES`` per process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from spectral_ssl import dist
from spectral_ssl.data.decode import Uint8Transform
from spectral_ssl.data.readers import ImageData
from spectral_ssl.data.stream import make_loader

logger = logging.getLogger(__name__)

AUTO_CACHE_BYTES = 4 * 2**30  # what ``cache_decoded=auto`` keeps (per process)


def decoded_bytes(rows: int, image_size: int) -> int:
    """Bytes of ``rows`` decoded RGB images of ``image_size`` px (the cache's size before the gray check)."""
    return 3 * rows * image_size * image_size


class _Shard(NamedTuple):
    """What the ranks tell each other about their decoded shards (``DecodedSplit.decode``)."""

    rows: int
    gray: bool
    repeated: bool  # a repeated idx
    skipped: int


@dataclass
class DecodedSplit:
    """A whole split (or this rank's shard of it) decoded: ``images`` (N, C, S, S) uint8 (C = 1 for gray images, 3
    otherwise) and ``idx`` (N,) int64, sorted by idx; ``skipped`` counts the undecodable rows left out
    (``skip_corrupt``; of every shard when sharded, as an unsharded cache reports them).

    Sharded (``world_size`` > 1): the rows of process ``rank`` only; ``rows_per_rank`` is the number of rows every
    rank serves per epoch (the smallest shard's length).
    """

    images: torch.Tensor
    idx: torch.Tensor
    skipped: int = 0
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1
    rows_per_rank: int | None = None

    @classmethod
    def decode(cls, images: ImageData, image_size: int, *, device: torch.device | str = "cpu",
               num_workers: int = 0, skip_corrupt: bool = False, max_rows: int | None = None,
               batch_size: int = 512, rank: int = 0, world_size: int = 1) -> DecodedSplit:
        """Read and decode every row of ``images`` (or its first ``max_rows`` rows, unshuffled) once
        (``Uint8Transform(image_size)``), onto ``device``.

        With ``world_size`` > 1 only rank ``rank``'s shard is read and decoded (see the module docstring; with
        ``max_rows``, ``max_rows // world_size`` rows of each shard). Every rank must call this: the ranks agree
        on the channel count and the per-rank epoch length through one gather (with no process group, as in a
        test, each shard keeps its own).

        Raises ValueError (naming the fix) when the split (any rank's shard) yields no decodable row.
        """
        start = time.perf_counter()
        loader = make_loader(images, Uint8Transform(image_size), batch_size=batch_size, collate="eval",
                             shuffle=False, drop_last=False, num_workers=num_workers, skip_corrupt=skip_corrupt,
                             max_samples=max_rows, rank=rank, world_size=world_size)
        chunks, ids, skipped = [], [], 0
        for batch in loader:
            image = batch["image"]
            gray = bool((image[:, 0] == image[:, 1]).all() and (image[:, 1] == image[:, 2]).all())
            chunks.append((image[:, :1] if gray else image, gray))
            ids.append(batch["idx"])
            skipped += int(batch["skipped"])
        idx, order = torch.sort(torch.cat(ids)) if ids else (torch.zeros(0, dtype=torch.long), None)
        mine = _Shard(len(idx), all(gray for _, gray in chunks), bool((idx[1:] == idx[:-1]).any()), skipped)
        # sharded: every rank learns every shard's length, gray-ness and validity before any rank may raise (a rank
        # that raised alone would leave the others waiting in the next collective)
        shards = [mine] if world_size == 1 else dist.gather_objects(mine)
        lengths = [shard.rows for shard in shards]
        name = images.name or "the dataset"
        where = "" if world_size == 1 else f" (the shard of rank {{}} of {world_size})"
        if min(lengths) == 0:
            raise ValueError(f"{name} split {images.split or '?'} has no decodable image to cache"
                             f"{where.format(lengths.index(0))}; check --dataset/--split (or pass --cache_decoded=off)")
        repeated = [shard.repeated for shard in shards]
        if any(repeated):
            raise ValueError(f"{name} has repeated idx values{where.format(repeated.index(True))}; the cache (and "
                             "selection) need a unique idx per row")
        all_gray = all(shard.gray for shard in shards)  # one channel count on every rank
        pixels = torch.cat([c if all_gray or not gray else c.expand(-1, 3, -1, -1) for c, gray in chunks])
        split = cls(pixels[order].to(device), idx, sum(shard.skipped for shard in shards), time.perf_counter() - start,
                    rank=rank, world_size=world_size, rows_per_rank=None if world_size == 1 else min(lengths))
        logger.info("decoded %d rows of %s [%s]%s once into %s: %.1f MB, %.1f s", len(split), images.name,
                    images.split, "" if world_size == 1 else f" (shard {rank} of {world_size}, {sum(lengths)} rows "
                    f"in all, {split.rows_per_rank} per rank and epoch)", split.images.device,
                    split.images.numel() / 2**20, split.seconds)
        return split

    def __len__(self) -> int:
        return len(self.idx)

    def rows_at(self, positions: torch.Tensor) -> torch.Tensor:
        """(len(positions), C, S, S) uint8 images at cache positions ``positions``, on the cache's device; C = 1 for
        a gray split (``transforms.DeviceAugment`` takes it as is and makes 3-channel views, about 2x faster than
        from 3 equal channels)."""
        return self.images[positions.to(self.images.device, non_blocking=True)]  # else a host sync per batch


@dataclass
class DecodedEpochLoader:
    """Epochs served from a ``DecodedSplit``, with ``data.EpochLoader``'s interface (``__call__(epoch,
    skip_batches)``, ``reread(epoch, read_batches, keep_idx)``).

    Epoch order of a whole split: a permutation of the cached rows seeded by (seed, epoch), cut to ``max_samples``
    rows in total; process ``rank`` takes every ``world_size``-th row of it, so the shares are disjoint and every rank
    gets the same number of rows (+/- 1). Of a sharded split (``DecodedSplit.decode(..., rank, world_size)``; the
    loader's rank and world_size must be the split's): a permutation of this rank's rows seeded by (seed, epoch,
    rank), cut to ``split.rows_per_rank`` (and ``max_samples // world_size``) rows, the same count on every rank.
    Batches: ``image`` (B, C, S, S) uint8 (``DecodedSplit.rows_at``), ``idx`` (B,), ``label`` None, ``skipped`` (the
    cached rows' undecodable ones, on an epoch's first batch, as a loader that decodes every epoch reports them).
    """

    split: DecodedSplit
    batch_size: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    max_samples: int | None = None
    drop_last: bool = True

    def __post_init__(self) -> None:
        sharded = self.split.world_size > 1
        if sharded and (self.rank, self.world_size) != (self.split.rank, self.split.world_size):
            raise ValueError(f"this split was decoded as the shard of rank {self.split.rank} of "
                             f"{self.split.world_size}; serve it with rank={self.split.rank}, "
                             f"world_size={self.split.world_size} (got rank={self.rank}, world_size={self.world_size})")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world_size {self.world_size}.")

    def order(self, epoch: int) -> torch.Tensor:
        """Cache positions of this rank's rows in ``epoch``, in order."""
        if self.split.world_size > 1:  # this rank's own shard, reshuffled every epoch
            seed = (self.seed * 100_003 + epoch) * 65_537 + self.rank
            perm = torch.randperm(len(self.split), generator=torch.Generator().manual_seed(seed))
            rows = self.split.rows_per_rank
            if self.max_samples is not None:
                rows = min(rows, self.max_samples // self.world_size)
            return perm[:rows]
        perm = torch.randperm(len(self.split), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        if self.max_samples is not None:
            perm = perm[: self.max_samples]
        return perm[self.rank::self.world_size]

    def _batch(self, positions: torch.Tensor, first: bool) -> dict[str, Any]:
        return {"image": self.split.rows_at(positions), "idx": self.split.idx[positions], "label": None,
                "skipped": self.split.skipped if first else 0}

    def __call__(self, epoch: int, skip_batches: int = 0) -> Iterator[dict[str, Any]]:
        order = self.order(epoch)
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(skip_batches * self.batch_size, stop, self.batch_size):
            yield self._batch(order[start:start + self.batch_size], first=start == 0)

    def _kept(self, epoch: int, read_batches: int, keep_idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's first ``read_batches`` batches of ``epoch`` as cache positions, and which hold a kept idx."""
        read = self.order(epoch)[: read_batches * self.batch_size]
        wanted = torch.tensor(sorted(set(keep_idx)), dtype=self.split.idx.dtype)
        return read, torch.isin(self.split.idx[read], wanted)

    def origin_batches(self, epoch: int, read_batches: int, keep_idx: list[int]) -> Iterator[dict[str, Any]]:
        """The batches, among this rank's first ``read_batches``, that hold a row with idx in ``keep_idx``, whole and
        as first served (``batching.CandidatePool`` prepares them again for an exact resume)."""
        read, kept = self._kept(epoch, read_batches, keep_idx)
        for start in range(0, len(read), self.batch_size):
            if bool(kept[start:start + self.batch_size].any()):
                yield self._batch(read[start:start + self.batch_size], first=start == 0)

    def reread(self, epoch: int, read_batches: int, keep_idx: list[int]) -> dict[str, Any] | None:
        """The rows with idx in ``keep_idx`` among this rank's first ``read_batches`` batches, as one batch, in
        epoch order (the candidates a selection pool held at a checkpoint)."""
        read, kept = self._kept(epoch, read_batches, keep_idx)
        return self._batch(read[kept], first=False) if bool(kept.any()) else None


def cache_device(setting: str, *, augment_on_device: bool, rows: int | None, image_size: int,
                 device: torch.device, world_size: int = 1) -> torch.device | None:
    """Where ``cache_decoded=setting`` keeps the decoded split (None: not cached, the loader decodes every epoch).

    ``auto`` caches only with augmentations on the device, a known row count and an estimate of one process's shard
    (``rows / world_size``, rounded up) within ``AUTO_CACHE_BYTES``: on a GPU in its memory, else in RAM.
    ``ram``/``device`` cache whatever the size.
    """
    if setting == "off" or not augment_on_device:
        return None
    if setting == "auto":
        if rows is None or decoded_bytes(-(-rows // world_size), image_size) > AUTO_CACHE_BYTES:
            return None
        return device if device.type == "cuda" else torch.device("cpu")
    return device if setting == "device" else torch.device("cpu")
