"""One epoch of one rank as batches: a deterministic stream of rows -> decode (corrupt rows skipped and counted, or
reported by idx) -> transform -> batches, decoded in the main process or in DataLoader workers.

``make_loader`` is *not* meant for ``accelerator.prepare``: each rank already reads its own share (preparing it would
shard it twice and silently drop half the data). ``transform="uint8"``-style transforms (``Uint8Transform``) decode to
fixed-size uint8 tensors collated into one uint8 batch (augmentations then run batched on the training device).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import datasets
import torch
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from spectral_ssl.data.decode import DECODE_ERRORS, UndecodableImageError, decode_image, decode_need_of
from spectral_ssl.data.jpeg import undecoded_jpeg
from spectral_ssl.data.readers import NO_LABEL, Dataset, ImageData, _as_image_data

logger = logging.getLogger(__name__)


def collate_views(samples: list[dict]) -> dict[str, Any]:
    """Batch of two-view samples: ``views`` (x1, x2) each (B, 3, S, S), ``idx`` (B,), ``label`` (B,) or None."""
    return {
        "views": (torch.stack([s["view1"] for s in samples]), torch.stack([s["view2"] for s in samples])),
        "idx": torch.tensor([s["idx"] for s in samples], dtype=torch.long),
        "label": torch.tensor([s["label"] for s in samples]) if "label" in samples[0] else None,
        "skipped": sum(s.get("skipped", 0) for s in samples),
    }


def collate_eval(samples: list[dict]) -> dict[str, Any]:
    """Batch of single images: ``image`` (B, 3, S, S) (float, or uint8 from ``Uint8Transform``), ``idx`` (B,),
    ``label`` (B,) or None, ``skipped`` (undecodable rows skipped before these samples)."""
    return {
        "image": _stack_images([s["image"] for s in samples], files_as_tensors=True),
        "idx": torch.tensor([s["idx"] for s in samples], dtype=torch.long),
        "label": torch.tensor([s["label"] for s in samples]) if "label" in samples[0] else None,
        "skipped": sum(s.get("skipped", 0) for s in samples),
    }


class _Stream(IterableDataset):
    """This rank's deterministic stream of transformed samples for one epoch (see ``make_loader``)."""

    def __init__(self, data: ImageData, transform: Callable, *, kind: str, seed: int, epoch: int, rank: int,
                 world_size: int,
                 shuffle: bool, shuffle_buffer: int, skip: int, limit: int | None, skip_corrupt: bool,
                 keep_idx: frozenset[int] | None = None, decode: str = "cpu") -> None:
        self.data, self.ds, self.transform, self.kind, self.keep_idx = data, data.ds, transform, kind, keep_idx
        self.decode_need = decode_need_of(transform) if decode == "cpu" else None  # "full": full-size decodes
        self.jpeg_on_device = getattr(transform, "jpeg_on_device", False)  # JPEG files pass undecoded
        self.seed, self.epoch, self.rank, self.world = seed, epoch, rank, world_size
        self.shuffle, self.buffer, self.skip, self.limit, self.skip_corrupt = (shuffle, shuffle_buffer, skip, limit,
                                                                               skip_corrupt)
        self.corrupt: list[int] = []
        self._by_position = False

    def _rank_stream(self) -> Iterable[dict]:
        """Undecoded rows of this rank, in this epoch's order (a datasets stream, or a generator)."""
        ds = self.ds
        if isinstance(ds, datasets.Dataset):
            order = (torch.randperm(len(ds), generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
                     if self.shuffle else torch.arange(len(ds)))
            return (ds[i] for i in order[self.rank::self.world].tolist())
        if not self.data.native_order:
            if self.shuffle:  # shard order + buffer; one input shard at a time: datasets 5.2's multi-shard
                # interleaving stalls 5 s at the end of every epoch (seen here)
                ds = ds.shuffle(seed=self.seed, buffer_size=self.buffer, max_buffer_input_shards=1)
            if self.world > 1:
                ds = split_dataset_by_node(ds, rank=self.rank, world_size=self.world)
            ds.set_epoch(self.epoch)
            return ds
        return self._native_rows(ds)

    def own_shards(self, workers: int, rows: Iterable[dict] | None = None) -> int:
        """How many shards ``workers`` DataLoader workers split among themselves, each reading its own (``_samples``;
        0 when they split one stream by position instead): the served order then depends on the workers, and a
        resume in the middle of an epoch is approximate. ``rows``: this rank's stream, if already opened."""
        if workers < 2 or self.limit is not None:  # a cap is on the stream's first rows: never split by shards
            return 0
        rows = self._rank_stream() if rows is None else rows
        return rows.num_shards if isinstance(rows, datasets.IterableDataset) and rows.num_shards >= workers else 0

    def _native_rows(self, ds: datasets.IterableDataset) -> Iterator[dict]:
        rows = (row for i, row in enumerate(ds) if i % self.world == self.rank)  # idx = stream position: keep order
        if not self.shuffle:
            yield from rows
            return
        rng, buffer = random.Random(self.seed * 100_003 + self.epoch), []
        for row in rows:
            buffer.append(row)
            if len(buffer) >= self.buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[dict]:
        samples = self._samples()
        if get_worker_info() is None:
            yield from samples
            return
        # In a DataLoader worker: hand samples to the main process WORKER_CHUNK at a time, stacked into one tensor
        # per field. Each tensor crossing the process boundary costs a shared-memory segment and a file descriptor
        # (~0.5 ms); one per sample capped 8 workers at ~1,300 img/s on an H200 machine's 16 cores.
        # Workers that split one stream by position send one chunk per round of workers x WORKER_CHUNK positions
        # (empty ones too: the DataLoader takes items from the workers in turn), which ``_Batches`` puts back in
        # stream order: the served order is the num_workers=0 order, so skip_batches (resume) stays exact.
        chunk: list[dict] = []
        for sample in samples:
            if sample is _ROUND:
                yield _stack_chunk(chunk, positions=True)
                chunk = []
                continue
            chunk.append(sample)
            if not self._by_position and len(chunk) == WORKER_CHUNK:
                yield _stack_chunk(chunk)
                chunk = []
        if chunk or self._by_position:
            yield _stack_chunk(chunk, positions=self._by_position)

    def _samples(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rows = self._rank_stream()
        # Inside DataLoader workers a datasets stream hands each worker its own shards, and leaves the workers
        # with id >= num_shards idle: with fewer shards than workers every worker reads the whole (cheap,
        # undecoded) stream instead and decodes every workers-th row. A shard-split skip is per
        # worker (approximate resume; exact resume needs num_workers=0); with a limit the stream is not shard-split.
        split_by_datasets = workers > 1 and isinstance(rows, datasets.IterableDataset)
        # (not with a cap, max_samples: per-worker shares of it would miss rows where a worker's shards hold fewer
        # than limit / workers rows)
        presharded = bool(self.own_shards(workers, rows))
        if split_by_datasets and not presharded:
            rows = _unsplit(rows)
        skip, limit = self.skip, self.limit
        if presharded:
            skip = skip // workers
        self._by_position = info is not None and not presharded  # rounds of positions (see __iter__)
        round_rows = workers * WORKER_CHUNK
        wanted = None if self.keep_idx is None else set(self.keep_idx)
        skipped = 0  # undecodable rows since the last sample (summed per batch by the collate functions)
        pending = None  # held back one row: undecodable rows after the last sample are counted on it
        for position, row in enumerate(rows):
            if limit is not None and position >= limit:
                break
            if wanted is not None and not wanted:
                break  # every row asked for is found: the rest of the stream is not read
            if self._by_position and position and position % round_rows == 0:
                if pending is not None:
                    yield pending
                    pending = None
                yield _ROUND
            if wanted is not None and position >= skip:
                # before the worker's share: every worker splitting one stream sees the same rows go, and stops at the
                # same position (rounds stay whole)
                wanted.discard(int(row["idx"]))
            if position < skip or (not presharded and position % workers != worker):
                continue
            if self.keep_idx is not None and int(row["idx"]) not in self.keep_idx:
                continue
            try:
                raw = undecoded_jpeg(row["image"]) if self.jpeg_on_device else None
                image = None if raw is not None else decode_image(row["image"], self.decode_need)
            except DECODE_ERRORS as e:
                if not self.skip_corrupt:
                    raise UndecodableImageError.of(row, e) from e
                self.corrupt.append(int(row["idx"]))
                skipped += 1
                logger.warning("skipping undecodable image at idx %s (%d skipped so far)", row["idx"],
                               len(self.corrupt))
                continue
            sample = {"idx": int(row["idx"]), "skipped": skipped} | ({"_pos": position} if self._by_position else {})
            skipped = 0
            if "label" in row:
                sample["label"] = NO_LABEL if row["label"] is None else int(row["label"])
            if self.kind == "views":
                sample["view1"], sample["view2"] = self.transform(image)
            else:
                sample["image"] = raw if raw is not None else self.transform(image)
            if pending is not None:
                yield pending
            pending = sample
        if pending is not None:
            pending["skipped"] += skipped
            yield pending


WORKER_CHUNK = 32  # samples a DataLoader worker sends at once (see _Stream.__iter__)
_ROUND = object()  # in a worker's samples: the end of a round of positions (see _Stream.__iter__)
_TENSOR_FIELDS = ("image", "view1", "view2")


def _stack_images(images: list, files_as_tensors: bool = False) -> torch.Tensor | list:
    """Images stacked into one tensor, or a list when some are undecoded JPEG files (bytes, ``decode=device``;
    bytes cross from a worker without a shared-memory segment each), those as 1-D uint8 tensors if asked."""
    if not any(isinstance(image, bytes) for image in images):
        return torch.stack(images)
    if not files_as_tensors:
        return list(images)
    return [torch.frombuffer(bytearray(image), dtype=torch.uint8) if isinstance(image, bytes) else image
            for image in images]


def _stack_chunk(samples: list[dict], positions: bool = False) -> dict[str, Any]:
    """Consecutive samples of one worker as one item: tensors stacked, the rest as lists (``_unstack_chunk``);
    ``positions``: one round's samples with their stream positions (``_pos``), possibly none."""
    if not samples:
        return {"_chunk": 0, "_round": True}
    return {key: _stack_images([s[key] for s in samples]) if key in _TENSOR_FIELDS else [s[key] for s in samples]
            for key in samples[0]} | {"_chunk": len(samples)} | ({"_round": True} if positions else {})


def _unstack_chunk(chunk: dict[str, Any]) -> list[dict]:
    """The samples of a ``_stack_chunk`` item, in order (tensor rows are views: nothing is copied)."""
    keys = [k for k in chunk if k not in ("_chunk", "_round")]
    return [{key: chunk[key][i] for key in keys} for i in range(chunk["_chunk"])]


def _unsplit(ds: datasets.IterableDataset, chunk: int = 256) -> Iterator[dict]:
    """Every row of ``ds``, even inside a DataLoader worker (``IterableDataset.iter`` does not split by worker)."""
    for batch in ds.iter(batch_size=chunk):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns)):
            yield dict(zip(columns, values))


class _Batches:
    """Batches formed in the main process from single samples decoded by DataLoader workers.

    Workers send consecutive samples in chunks (``WORKER_CHUNK``, unstacked here). Batching inside each worker
    would drop a partial batch per worker and make the epoch length depend on the
    worker count; here only the epoch's last partial batch is dropped (``drop_last``).
    """

    def __init__(self, loader: DataLoader, batch_size: int, collate: Callable, drop_last: bool,
                 pin_memory: bool = False) -> None:
        self.loader, self.batch_size, self.drop_last = loader, batch_size, drop_last
        self.collate = (lambda samples: _pinned(collate(samples))) if pin_memory else collate
        self.dataset = loader.dataset

    def __iter__(self) -> Iterator[dict]:
        samples: list[dict] = []
        round_items: list[dict] = []  # the current round's chunks, one per worker (``_Stream.__iter__``)
        for item in itertools.chain(self.loader, [None]):
            if item is None:  # the end: a last, incomplete round (only if workers saw different streams)
                if not round_items:
                    break
            elif item.get("_round"):
                round_items.append(item)
                if len(round_items) < self.loader.num_workers:
                    continue
            else:
                samples.extend(_unstack_chunk(item) if "_chunk" in item else [item])
            if round_items:  # a whole round: its samples back in stream order
                ordered = sorted((s for it in round_items for s in _unstack_chunk(it)), key=lambda s: s["_pos"])
                samples.extend({k: v for k, v in s.items() if k != "_pos"} for s in ordered)
                round_items = []
            while len(samples) >= self.batch_size:
                yield self.collate(samples[:self.batch_size])
                samples = samples[self.batch_size:]
        if samples and not self.drop_last:
            yield self.collate(samples)


def _pinned(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v.pin_memory() if isinstance(v, torch.Tensor) else
            tuple(t.pin_memory() for t in v) if isinstance(v, tuple) else v for k, v in batch.items()}


def make_loader(
    ds: ImageData | Dataset,
    transform: Callable,
    *,
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    shuffle_buffer: int = 10_000,
    num_workers: int = 0,
    drop_last: bool = True,
    skip_corrupt: bool = False,
    collate: str = "views",
    skip_batches: int = 0,
    max_samples: int | None = None,
    keep_idx: Iterable[int] | None = None,
    pin_memory: bool = False,
    decode: str = "cpu",
) -> Iterable[dict]:
    """Batches of this rank's share of one epoch, deterministic given (seed, epoch, rank, world_size).

    Every sample is seen once per epoch across ranks (disjoint shares). Do not pass the result to
    ``accelerator.prepare``.

    Args:
        ds: ``ImageData`` from ``load_images`` (or a bare HF dataset with ``image`` and ``idx`` columns).
        transform: ``TwoViewTransform`` (``collate="views"``), or ``EvalTransform`` / ``Uint8Transform``
            (``collate="eval"``: one image per sample, batched under ``image``).
        batch_size: Per-process batch size.
        seed, epoch: Shuffle seed; the order changes with the epoch.
        rank, world_size: This process's share.
        shuffle, shuffle_buffer: Shuffle (streaming: shard order + a buffer of this many rows).
        num_workers: DataLoader worker processes decoding and augmenting disjoint parts of the rank's stream
            (batches are still formed in the main process). Served in the num_workers=0 order (resume-exact), except
            where each worker reads its own shards (a stream of at least ``num_workers`` shards): exact mid-epoch
            resume there needs 0 (a ``skip_batches`` there logs a warning).
        drop_last: Drop the last incomplete batch.
        skip_corrupt: Skip undecodable images (logged by idx) instead of raising a ValueError naming the row.
        collate: ``"views"`` or ``"eval"``.
        skip_batches: Skip the first ``skip_batches * batch_size`` rows of this rank's stream before decoding
            (resume in the middle of an epoch).
        max_samples: Stop this epoch after this many rows in total across ranks (``None`` = all).
        keep_idx: Decode and yield only the rows with these ``idx`` values (the rest of the stream is read but not
            decoded): recovers the samples a selection pool held when a checkpoint was written.
        pin_memory: Collate into pinned memory (for ``non_blocking`` copies to a GPU).
        decode: ``"cpu"``: JPEGs decoded at the size the transform needs (``decode.decode_need_of``, DCT-domain
            downscaling, ``spectral_ssl.data.jpeg``); ``"full"``: every image at full size (for comparisons).
    """
    data = _as_image_data(ds)
    if collate not in ("views", "eval"):
        raise ValueError(f"collate must be 'views' or 'eval', got {collate!r}.")
    if decode not in ("cpu", "full"):
        raise ValueError(f"decode must be 'cpu' or 'full', got {decode!r}.")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}.")
    limit = None if max_samples is None else max_samples // world_size
    stream = _Stream(data, transform, kind=collate, seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                     shuffle=shuffle, shuffle_buffer=shuffle_buffer, skip=skip_batches * batch_size, limit=limit,
                     skip_corrupt=skip_corrupt, keep_idx=None if keep_idx is None else frozenset(keep_idx),
                     decode=decode)
    collate_fn = collate_views if collate == "views" else collate_eval
    if num_workers and data.native_order:
        logger.warning("this stream has no idx column, so its idx is the stream position, which DataLoader workers "
                       "would renumber; decoding in the main process. To use num_workers: --streaming=false (an "
                       "image folder or files of known length), or data with an idx column.")
        num_workers = 0
    # Own generator: creating an iterator must not draw from the global RNG, or a resumed run's augmentations
    # (which use the global RNG restored from the checkpoint when num_workers=0) would be shifted.
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    shards = stream.own_shards(num_workers) if skip_batches else 0
    if shards:
        logger.warning("resuming in the middle of epoch %d with num_workers=%d over a stream of %d shards is not "
                       "exact: each worker reads its own shards, so some rows of this epoch may be trained twice and "
                       "others skipped; exact mid-epoch resume needs --num_workers=0 (or --streaming=false)", epoch,
                       num_workers, shards)
    if num_workers == 0:
        return DataLoader(stream, batch_size=batch_size, drop_last=drop_last, collate_fn=collate_fn,
                          generator=generator, pin_memory=pin_memory)
    samples = DataLoader(stream, batch_size=None, num_workers=num_workers, generator=generator,
                         prefetch_factor=4 * batch_size // (num_workers * WORKER_CHUNK) + 2)
    return _Batches(samples, batch_size, collate_fn, drop_last, pin_memory)
