"""Images in through HF ``datasets`` (streaming first), with a stable integer ``idx`` and two-view augmentations.

- ``load_images``: a Hub id or a local folder (parquet files named by split, a ``save_to_disk`` folder, or an image
  folder) -> ``ImageData``: a dataset with canonical columns ``image`` (undecoded: bytes/path), optional ``label`` and
  ``idx``, plus what is known about it (row count, idx origin), carried explicitly beside the dataset.
- ``make_loader``: per-rank, per-epoch deterministic stream -> decode with PIL (corrupt rows skipped and counted, or
  reported by idx) -> transform -> batches. ``transform="uint8"`` decodes to fixed-size uint8 tensors and collates
  one uint8 batch (augmentations then run batched on the training device, ``spectral_ssl.transforms``). The loader
  is *not* meant for ``accelerator.prepare``: each rank already reads its own share (preparing it would shard it
  twice and silently drop half the data).
- Augmentations live in ``spectral_ssl.transforms``; ``synthetic_dataset`` makes small labelled data for tests.

Stable ``idx``: a dataset that carries an ``idx`` column keeps it (``scripts/prepare_fashion_mnist.py`` writes one),
and then ``datasets``' own shard+buffer shuffle and ``split_dataset_by_node`` are used. Without one, map-style data
gets its row number; streaming data gets its position in the *unshuffled* stream, so that path never reorders shards:
it shuffles with a buffer and splits ranks by example inside the loader.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from spectral_ssl.transforms import (  # noqa: F401  (re-exported: the loader's transforms)
    EVAL_INTERPOLATION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TwoViewTransform,
)

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DATA_SUFFIXES = {".parquet", ".arrow", ".csv", ".json", ".jsonl"}


@dataclass(frozen=True)
class ImageData:
    """An opened split: the HF dataset and what is known about it, carried beside it (a dataset's own attributes are
    lost when a caller maps or filters it).

    Attributes:
        ds: ``datasets.Dataset`` or ``IterableDataset`` with columns ``image`` (undecoded), ``idx`` and optionally
            ``label``.
        name, split: Where it came from (for messages).
        num_rows: Rows in the split, or None when unknown (a stream without metadata).
        native_order: ``idx`` is the row's position in the unshuffled stream (no idx column in the data), so the
            stream must never be reordered by shards.
    """

    ds: datasets.Dataset | datasets.IterableDataset
    name: str = ""
    split: str = ""
    num_rows: int | None = None
    native_order: bool = False


def _as_image_data(data: ImageData | datasets.Dataset | datasets.IterableDataset) -> ImageData:
    if isinstance(data, ImageData):
        return data
    return ImageData(data, num_rows=num_rows(data))


def _columns(ds: datasets.Dataset | datasets.IterableDataset) -> list[str]:
    if ds.column_names is not None:
        return list(ds.column_names)
    return list(ds.features or {})


def load_images(
    dataset: str,
    split: str = "train",
    *,
    streaming: bool = True,
    image_column: str = "image",
    label_column: str | None = "label",
    idx_column: str = "idx",
) -> datasets.Dataset | datasets.IterableDataset:
    """Open an image dataset with canonical columns ``image`` (undecoded), ``label`` (if asked) and ``idx``.

    Args:
        dataset: HF datasets id (``org/name``) or a local folder (parquet/arrow files whose names start with the
            split, ``train/``-style sub-folders, or an image folder).
        split: Split to read.
        streaming: Stream (``IterableDataset``) instead of loading map-style.
        image_column: Column holding the images.
        label_column: Column holding integer labels, or None for unlabelled use.
        idx_column: Column holding a stable integer sample index, created if absent (see module docstring).
    """
    folder = Path(dataset)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"dataset {dataset!r} is a file; pass the folder that holds the split files.")
    if folder.is_dir() and not any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | DATA_SUFFIXES
                                   for p in folder.rglob("*")):
        raise FileNotFoundError(f"no images or data files found under {dataset!r}; point --dataset at a folder of "
                                "images (class sub-folders optional), parquet/arrow files or a save_to_disk folder.")
    try:
        if _is_saved_to_disk(folder):
            ds = _load_from_disk(folder, split, streaming)
        else:
            ds = datasets.load_dataset(dataset, split=split, streaming=streaming)
    except KeyError as e:
        raise ValueError(f"split {split!r} not found in {dataset!r} ({e}); pass an existing split.") from e
    except ValueError as e:
        if "split" in str(e).lower():
            raise ValueError(f"split {split!r} not found in {dataset!r} ({e}); pass an existing split.") from e
        raise
    except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as e:
        raise FileNotFoundError(f"dataset {dataset!r} not found: neither a local folder nor a reachable Hub dataset "
                                f"({type(e).__name__}: {e}).") from e
    columns = _columns(ds)
    wanted = {image_column: "image"}
    for name, role in ((image_column, "image_column"), (label_column, "label_column")):
        if name is not None and name not in columns:
            raise ValueError(f"column {name!r} not found in {dataset!r} split {split!r}; available columns: "
                             f"{columns}; pass {role}=... (or label_column=None for unlabelled data).")
    if label_column is not None:
        wanted[label_column] = "label"
    has_idx = idx_column in columns
    if has_idx:
        wanted[idx_column] = "idx"
    ds = ds.select_columns(list(wanted))
    renames = {k: v for k, v in wanted.items() if k != v}
    if renames:
        ds = ds.rename_columns(renames)
    if isinstance(ds.features.get("image") if ds.features else None, datasets.Image):
        ds = ds.cast_column("image", datasets.Image(decode=False))  # decode ourselves: corrupt rows are per-row errors
    rows = num_rows(ds)
    if rows is None and folder.is_dir():
        rows = _local_rows(dataset, split)
    native = False
    if not has_idx:
        if isinstance(ds, datasets.Dataset):
            ds = ds.add_column("idx", np.arange(len(ds), dtype=np.int64))
        else:
            ds = ds.map(lambda example, i: {"idx": i}, with_indices=True)
            native = True  # this stream's idx is only stable in its natural order
    return ImageData(ds, name=dataset, split=split, num_rows=rows, native_order=native)


def _is_saved_to_disk(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file())


def _load_from_disk(folder: Path, split: str, streaming: bool) -> datasets.Dataset | datasets.IterableDataset:
    """A ``save_to_disk`` folder (one Dataset, or a DatasetDict whose keys are splits); streamed from its arrow
    files when ``streaming`` (its length stays known: ``num_rows`` reads it before converting)."""
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise KeyError(f"available splits: {sorted(loaded)}")
        loaded = loaded[split]
    elif split not in ("train", str(loaded.split or "train")):
        raise KeyError("a single saved Dataset is read as split 'train'")
    if not streaming:
        return loaded
    stream = loaded.to_iterable_dataset(num_shards=max(1, min(64, len(loaded) // 1000)))
    stream.info.splits = datasets.SplitDict({split: datasets.SplitInfo(split, num_examples=len(loaded))})
    stream._split = datasets.NamedSplit(split)
    return stream


def _local_rows(folder: str, split: str) -> int | None:
    """Rows of a split in a local folder without reading it: parquet footers, or the number of image files."""
    try:
        files = datasets.load_dataset_builder(folder).config.data_files.get(split, [])
    except Exception:  # noqa: BLE001  (row counts are an optimisation; unknown is a valid answer)
        return None
    if files and all(str(f).endswith(".parquet") for f in files):
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    images = [f for f in files if Path(str(f)).suffix.lower() in IMAGE_SUFFIXES]
    return len(images) or None


def num_rows(ds: ImageData | datasets.Dataset | datasets.IterableDataset) -> int | None:
    """Number of rows (from split metadata when streaming), or None if unknown."""
    if isinstance(ds, ImageData):
        return ds.num_rows
    if isinstance(ds, datasets.Dataset):
        return len(ds)
    splits = ds.info.splits or {}
    split = splits.get(str(ds.split)) if ds.split is not None else None
    if split is not None and split.num_examples:
        return int(split.num_examples)
    return None


def decode_image(value: Any) -> Image.Image:
    """PIL RGB image from a datasets ``Image(decode=False)`` value, a PIL image, or bytes."""
    if isinstance(value, Image.Image):
        image = value
    else:
        if isinstance(value, dict):
            data, path = value.get("bytes"), value.get("path")
        else:
            data, path = value, None
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
        "image": torch.stack([s["image"] for s in samples]),
        "idx": torch.tensor([s["idx"] for s in samples], dtype=torch.long),
        "label": torch.tensor([s["label"] for s in samples]) if "label" in samples[0] else None,
        "skipped": sum(s.get("skipped", 0) for s in samples),
    }


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
    """(3, size, size) uint8 tensor: the short side resized to ``size`` (bilinear, antialiased), centre-cropped.
    What ``make_loader(transform="uint8")`` yields for augmentations on the training device."""
    width, height = image.size
    scale = size / min(width, height)
    if (width, height) != (size, size):
        image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))),
                             Image.Resampling.BILINEAR)
        left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


class Uint8Transform:
    """Decode-only transform: ``to_uint8`` at ``image_size`` (collated into one uint8 batch)."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_uint8(image, self.image_size)


class _Stream(IterableDataset):
    """This rank's deterministic stream of transformed samples for one epoch (see ``make_loader``)."""

    def __init__(self, data: ImageData, transform: Callable, *, kind: str, seed: int, epoch: int, rank: int,
                 world_size: int,
                 shuffle: bool, shuffle_buffer: int, skip: int, limit: int | None, skip_corrupt: bool,
                 keep_idx: frozenset[int] | None = None) -> None:
        self.data, self.ds, self.transform, self.kind, self.keep_idx = data, data.ds, transform, kind, keep_idx
        self.seed, self.epoch, self.rank, self.world = seed, epoch, rank, world_size
        self.shuffle, self.buffer, self.skip, self.limit, self.skip_corrupt = (shuffle, shuffle_buffer, skip, limit,
                                                                               skip_corrupt)
        self.corrupt: list[int] = []

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
        chunk: list[dict] = []
        for sample in samples:
            chunk.append(sample)
            if len(chunk) == WORKER_CHUNK:
                yield _stack_chunk(chunk)
                chunk = []
        if chunk:
            yield _stack_chunk(chunk)

    def _samples(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rows = self._rank_stream()
        # Inside DataLoader workers a datasets stream hands each worker its own shards, and leaves the workers
        # with id >= num_shards idle: with fewer shards than workers every worker reads the whole (cheap,
        # undecoded) stream instead and decodes every workers-th row. Shard-split positions (skip, limit) are per
        # worker (approximate resume; exact resume needs num_workers=0).
        split_by_datasets = workers > 1 and isinstance(rows, datasets.IterableDataset)
        presharded = split_by_datasets and rows.num_shards >= workers
        if split_by_datasets and not presharded:
            rows = _unsplit(rows)
        skip, limit = self.skip, self.limit
        if presharded:
            skip, limit = skip // workers, None if limit is None else limit // workers
        skipped = 0  # undecodable rows since the last yielded sample (summed per batch by the collate functions)
        for position, row in enumerate(rows):
            if limit is not None and position >= limit:
                return
            if position < skip or (not presharded and position % workers != worker):
                continue
            if self.keep_idx is not None and int(row["idx"]) not in self.keep_idx:
                continue
            try:
                image = decode_image(row["image"])
            except (UnidentifiedImageError, OSError, ValueError, TypeError) as e:
                if not self.skip_corrupt:
                    raise ValueError(f"image at idx {row['idx']} cannot be decoded ({type(e).__name__}: {e}); fix "
                                     "or drop that row, or pass --skip_corrupt=true to skip undecodable images.") from e
                self.corrupt.append(int(row["idx"]))
                skipped += 1
                logger.warning("skipping undecodable image at idx %s (%d skipped so far)", row["idx"],
                               len(self.corrupt))
                continue
            sample = {"idx": int(row["idx"]), "skipped": skipped}
            skipped = 0
            if "label" in row:
                sample["label"] = int(row["label"])
            if self.kind == "views":
                sample["view1"], sample["view2"] = self.transform(image)
            else:
                sample["image"] = self.transform(image)
            yield sample


WORKER_CHUNK = 32  # samples a DataLoader worker sends at once (see _Stream.__iter__)
_TENSOR_FIELDS = ("image", "view1", "view2")


def _stack_chunk(samples: list[dict]) -> dict[str, Any]:
    """Consecutive samples of one worker as one item: tensors stacked, the rest as lists (``_unstack_chunk``)."""
    return {key: torch.stack([s[key] for s in samples]) if key in _TENSOR_FIELDS else [s[key] for s in samples]
            for key in samples[0]} | {"_chunk": len(samples)}


def _unstack_chunk(chunk: dict[str, Any]) -> list[dict]:
    """The samples of a ``_stack_chunk`` item, in order (tensor rows are views: nothing is copied)."""
    keys = [k for k in chunk if k != "_chunk"]
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
        for item in self.loader:
            samples.extend(_unstack_chunk(item) if "_chunk" in item else [item])
            while len(samples) >= self.batch_size:
                yield self.collate(samples[:self.batch_size])
                samples = samples[self.batch_size:]
        if samples and not self.drop_last:
            yield self.collate(samples)


def _pinned(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v.pin_memory() if isinstance(v, torch.Tensor) else
            tuple(t.pin_memory() for t in v) if isinstance(v, tuple) else v for k, v in batch.items()}


def make_loader(
    ds: ImageData | datasets.Dataset | datasets.IterableDataset,
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
            (batches are still formed in the main process). Exact mid-epoch resume needs 0.
        drop_last: Drop the last incomplete batch.
        skip_corrupt: Skip undecodable images (logged by idx) instead of raising a ValueError naming the row.
        collate: ``"views"`` or ``"eval"``.
        skip_batches: Skip the first ``skip_batches * batch_size`` rows of this rank's stream before decoding
            (resume in the middle of an epoch).
        max_samples: Stop this epoch after this many rows in total across ranks (``None`` = all).
        keep_idx: Decode and yield only the rows with these ``idx`` values (the rest of the stream is read but not
            decoded): recovers the samples a selection pool held when a checkpoint was written.
        pin_memory: Collate into pinned memory (for ``non_blocking`` copies to a GPU).
    """
    data = _as_image_data(ds)
    if collate not in ("views", "eval"):
        raise ValueError(f"collate must be 'views' or 'eval', got {collate!r}.")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}.")
    limit = None if max_samples is None else max_samples // world_size
    stream = _Stream(data, transform, kind=collate, seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                     shuffle=shuffle, shuffle_buffer=shuffle_buffer, skip=skip_batches * batch_size, limit=limit,
                     skip_corrupt=skip_corrupt, keep_idx=None if keep_idx is None else frozenset(keep_idx))
    collate_fn = collate_views if collate == "views" else collate_eval
    if num_workers and data.native_order:
        logger.warning("this stream has no idx column, so its idx is the stream position, which DataLoader workers "
                       "would renumber; decoding in the main process (add an idx column to use num_workers).")
        num_workers = 0
    # Own generator: creating an iterator must not draw from the global RNG, or a resumed run's augmentations
    # (which use the global RNG restored from the checkpoint when num_workers=0) would be shifted.
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if num_workers == 0:
        return DataLoader(stream, batch_size=batch_size, drop_last=drop_last, collate_fn=collate_fn,
                          generator=generator, pin_memory=pin_memory)
    samples = DataLoader(stream, batch_size=None, num_workers=num_workers, generator=generator,
                         prefetch_factor=4 * batch_size // (num_workers * WORKER_CHUNK) + 2)
    return _Batches(samples, batch_size, collate_fn, drop_last, pin_memory)


def synthetic_dataset(num_rows: int = 256, image_size: int = 32, num_classes: int = 4, seed: int = 0,
                      mode: str = "RGB") -> datasets.Dataset:
    """Small labelled image dataset for tests and smoke runs: class-dependent oriented stripes plus noise.

    Columns: ``image`` (PIL, ``mode``), ``label`` (0..num_classes-1), ``idx`` (0..num_rows-1).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    images, labels = [], []
    for i in range(num_rows):
        label = i % num_classes
        angle = np.pi * label / num_classes
        freq = 2 * np.pi * (2 + label) / image_size
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        colour = rng.uniform(0.4, 1.0, size=3) * (0.5 + 0.5 * np.eye(3)[label % 3])
        pixels = 127.5 + 100 * wave[..., None] * colour + rng.normal(0, 12, size=(image_size, image_size, 3))
        images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").convert(mode))
        labels.append(label)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=num_classes),
                                  "idx": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"image": images, "label": labels, "idx": list(range(num_rows))},
                                      features=features)


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
        loader = make_loader(self.data, self.transform, batch_size=len(keep_idx), epoch=epoch, drop_last=False,
                             max_samples=min(read, self.max_samples or read), keep_idx=keep_idx, **self._common())
        return next(iter(loader), None)
