"""One reader per source: a local or Hub dataset -> ``ImageData`` (canonical columns, what is known about it).

Sources (``source_kind``): a ``save_to_disk`` folder; a folder of data files (parquet/arrow/csv/json, named by split
or in split sub-folders); an image folder (class sub-folders optional); webdataset tar shards (a folder of ``.tar``
files, split as ``datasets`` splits files: ``train-*.tar`` / ``test-*.tar`` or ``train/`` / ``test/``); a Hub dataset
id (``name`` or ``org/name``, streamed; its files may be parquet, images or tar shards). Each reader returns an HF
dataset; ``load_images`` then gives it the canonical columns ``image`` (undecoded: bytes/path), optional ``label``
and ``idx``.

Webdataset shards: a sample is the run of tar members sharing a key (``000001.jpg`` + ``000001.cls``), and its
columns are the members' extensions plus ``__key__``. With the default column names ``image`` comes from the first
of ``SHARD_IMAGE_KEYS`` present (then any other image member) and ``label`` from ``cls``; an explicit name
(``image_column="png"``) picks that member. Labels become integers (``.cls`` text such as ``b"3\n"``), or the row's
key is named in a one-line error. Local shards are read here (``_read_shards``): one header pass counts each
shard's samples, so ``idx`` is the sample's position in shard order then member order, whatever order the shards are
streamed in, and the split's length is known. Hub shards go through ``datasets``' webdataset builder.

Stable ``idx``: a dataset that carries an ``idx`` column keeps it (``scripts/prepare_fashion_mnist.py`` writes one),
and then ``datasets``' own shard+buffer shuffle and ``split_dataset_by_node`` are used. Without one, map-style data
gets its row number; streaming data gets its position in the *unshuffled* stream, so that path never reorders shards:
it shuffles with a buffer and splits ranks by example inside the loader.

Mistakes raise ``DataKeyError`` (a ValueError that knows which setting was wrong and what would have worked, so a
recipe can name its own key: ``error.message("--eval_split")``) or ``FileNotFoundError`` naming the path.
"""

from __future__ import annotations

import glob
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from datasets.data_files import DataFilesDict, get_data_patterns

from spectral_ssl.run_folder import RUN_MARKER_FILES, not_a_dataset, run_inside

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DATA_SUFFIXES = {".parquet", ".arrow", ".csv", ".json", ".jsonl"}
SHARD_SUFFIXES = {".tar"}
SHARD_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")  # a default image_column takes the first of these a shard holds
SHARD_LABEL_KEYS = ("cls",)  # ... and a default label_column the first of these
_SAMPLE_MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's (and datasets') key.extension split
LOCAL_ROOTS = ("data", "datasets", "outputs")  # a first path component that names a local folder, never a Hub org
PREPARE_HINTS = {"data/fashion_mnist": "python scripts/prepare_fashion_mnist.py"}  # default datasets we can make

Dataset = datasets.Dataset | datasets.IterableDataset
NO_LABEL = -1  # a null label: datasets' ClassLabel "no label", left out by the probes and the online kNN


class LabelsNotIntegerError(ValueError):
    """A label column that does not hold integer class ids. ``message(labels_optional)``: the one line, with the
    ``--label_column=null`` way out only where labels are optional (pretraining, ranking; a probe needs them)."""

    def __init__(self, where: str, column: str, what: str) -> None:
        self.where, self.column, self.what = where, column, what
        super().__init__(self.message())

    def message(self, labels_optional: bool = True) -> str:
        fix = ", or pass --label_column=null for unlabelled data." if labels_optional else \
            " (the probe needs integer class labels)."
        return (f"reading {self.where}: the label column (--label_column={self.column}) holds {self.what}, not "
                f"integer class ids; map it to integer class ids{fix}")


class DataKeyError(ValueError):
    """A split or column that the data does not have.

    Attributes:
        role: The setting that was wrong: ``"split"``, ``"image_column"`` or ``"label_column"``.
        value: What was asked for.
        available: What the data has (splits or columns), sorted.
        dataset: The dataset's name.
    """

    def __init__(self, role: str, value: str, available: list[str], dataset: str, detail: str = "") -> None:
        self.role, self.value, self.available = role, value, sorted(available)
        self.dataset, self.detail = dataset, detail
        super().__init__(self.message(keys={"image_column": "image_column", "label_column": "label_column"}))

    def message(self, split_key: str = "split", keys: dict[str, str] | None = None) -> str:
        """One line naming the setting to change, what exists, and a fix. The setting is the caller's flag:
        ``split_key`` for a split (e.g. ``--eval_split``), ``--image_column`` / ``--label_column`` for a column, or
        ``keys[role]`` where a caller names them otherwise."""
        key = {"split": split_key, "image_column": "--image_column", "label_column": "--label_column",
               **(keys or {})}.get(self.role, self.role)
        what = "splits" if self.role == "split" else "columns"
        if self.role == "split":
            order = ("test", "validation", "valid", "val", "train")  # an evaluation split; a training one below
            if key.lstrip("-") in ("split", "train_split"):
                order = ("train", *order[:-1])
            likely = [s for s in order if s in self.available]
            fix = f"pass {key}={(likely or self.available)[0]}" if self.available else "check the dataset"
        elif self.role == "label_column":
            fix = f"pass {key}=<one of them>, or {key}=null for unlabelled data"
        else:
            fix = f"pass {key}=<one of them>"
        have = ", ".join(self.available) or "none"
        return f"{key}={self.value} not found in {self.dataset}; available {what}: {have}; {fix}"


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
        kind: The source (``source_kind``).
    """

    ds: Dataset
    name: str = ""
    split: str = ""
    num_rows: int | None = None
    native_order: bool = False
    kind: str = ""


def _as_image_data(data: ImageData | Dataset) -> ImageData:
    if isinstance(data, ImageData):
        return data
    return ImageData(data, num_rows=num_rows(data))


def _columns(ds: Dataset) -> list[str]:
    if ds.column_names is not None:
        return list(ds.column_names)
    return list(ds.features or {})


def looks_local(dataset: str) -> bool:
    """Whether ``dataset`` names a path of this machine rather than a Hub id (``name`` or ``org/name``): it exists
    here, or it is absolute, ``./``, ``../`` or ``~``, has a backslash or more than one ``/``, or its first component
    is a local folder or one of ``LOCAL_ROOTS`` (``data/fashion_mnist``). The one rule for readers and for what a
    model card calls local."""
    first = dataset.split("/", 1)[0]
    return (Path(dataset).is_absolute() or dataset.startswith((".", "~")) or "\\" in dataset
            or dataset.count("/") > 1 or ("/" in dataset and (first in LOCAL_ROOTS or Path(first).is_dir()))
            or Path(dataset).expanduser().exists())


def source_kind(dataset: str) -> str:
    """Which reader opens ``dataset``: ``saved_to_disk``, ``files``, ``image_folder``, ``webdataset`` or ``hub``.

    Raises FileNotFoundError (one line naming the path, and for a default dataset the command that makes it) for a
    local path that does not exist or holds nothing readable, and ValueError for a file where a folder is expected
    or for a spectral_ssl run or export folder, or a folder holding one (``run_folder.not_a_dataset``,
    ``run_folder.run_inside``: its files are no data).
    """
    folder = Path(dataset).expanduser()
    if folder.is_dir():
        refusal = not_a_dataset(dataset)
        if refusal is not None:
            raise ValueError(refusal + ".")
        if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
            return "saved_to_disk"
        suffixes, markers = set(), []  # one walk of the folder, without holding every path of a large one
        for path in folder.rglob("*"):
            if path.is_file():
                suffixes.add(path.suffix.lower())
                if path.name in RUN_MARKER_FILES:
                    markers.append(path)
        refusal = run_inside(folder, markers)
        if refusal is not None:
            raise ValueError(refusal + ".")
        if suffixes & DATA_SUFFIXES:
            return "files"
        if suffixes & SHARD_SUFFIXES:
            return "webdataset"
        if suffixes & IMAGE_SUFFIXES:
            return "image_folder"
        raise FileNotFoundError(f"no images or data files found under {dataset!r}; point --dataset at a folder of "
                                "images (class sub-folders optional), parquet/arrow files, webdataset .tar shards or "
                                "a save_to_disk folder.")
    if folder.exists():
        raise ValueError(f"dataset {dataset!r} is a file; pass the folder that holds the split files.")
    if looks_local(dataset):
        hint = PREPARE_HINTS.get(dataset.rstrip("/"))
        raise FileNotFoundError(f"dataset folder {dataset!r} does not exist" + (
            f"; make it with `{hint}`" if hint else "; check --dataset (a local folder, or a Hub id org/name)"))
    return "hub"


def _split_names(dataset: str) -> list[str]:
    """The splits a local folder or Hub dataset has, or [] when that cannot be told cheaply."""
    try:
        if Path(dataset).expanduser().is_dir():
            return list(_local_files(dataset))
        builder = datasets.load_dataset_builder(dataset)
    except Exception:  # noqa: BLE001  (only used to word an error)
        return []
    if builder.config.data_files:
        return [str(s) for s in builder.config.data_files]
    return [str(s) for s in (builder.info.splits or {})]


def _read_saved_to_disk(dataset: str, split: str, streaming: bool) -> Dataset:
    """A ``save_to_disk`` folder (one Dataset, or a DatasetDict whose keys are splits); streamed from its arrow
    files when ``streaming`` (its length stays known: ``num_rows`` reads it before converting)."""
    loaded = datasets.load_from_disk(str(Path(dataset).expanduser()))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataKeyError("split", split, list(loaded), dataset)
        loaded = loaded[split]
    elif split not in ("train", str(loaded.split or "train")):
        raise DataKeyError("split", split, ["train"], dataset, "a single saved Dataset is read as split 'train'")
    if not streaming:
        return loaded
    stream = loaded.to_iterable_dataset(num_shards=max(1, min(64, len(loaded) // 1000)))
    stream.info.splits = datasets.SplitDict({split: datasets.SplitInfo(split, num_examples=len(loaded))})
    stream._split = datasets.NamedSplit(split)
    return stream


def _local_files(folder: str) -> dict[str, list[str]]:
    """The files of each split of a local folder, as ``datasets`` finds them (``train-*``, ``train/``...; everything
    is ``train`` when nothing names a split), with the folder's own path read literally: ``datasets`` reads it as a
    glob pattern, so a folder named ``photos[2024]`` or ``a**b`` would match other files, or none (it is escaped;
    such a folder's README ``configs`` are not read)."""
    path = str(Path(folder).expanduser())
    if not _has_glob_characters(path):
        files = datasets.load_dataset_builder(path).config.data_files or {}
    else:
        base = glob.escape(os.path.abspath(path))
        files = DataFilesDict.from_patterns(get_data_patterns(base), base_path=base)
    return {str(split): [str(f) for f in split_files] for split, split_files in files.items()}


def _has_glob_characters(path: str) -> bool:
    return glob.escape(path) != path


def _read_builder(dataset: str, split: str, streaming: bool) -> Dataset:
    """Data files, an image folder, tar shards or a Hub id, through ``datasets.load_dataset``'s packaged builders.
    A local folder whose path has glob characters is read from its files, named (``_local_files``), every split's
    (an image folder's class names come from all of them)."""
    folder = Path(dataset).expanduser()
    literal = folder.is_dir() and _has_glob_characters(str(folder))
    try:
        if not literal:
            return datasets.load_dataset(str(folder) if folder.is_dir() else dataset, split=split,
                                         streaming=streaming)
        files = _local_files(dataset)
        if split in files:
            return datasets.load_dataset(str(folder), split=split, streaming=streaming,
                                         data_files={s: [glob.escape(f) for f in fs] for s, fs in files.items()})
    except KeyError as e:
        raise DataKeyError("split", split, _split_names(dataset), dataset, str(e)) from None
    except ValueError as e:
        if "split" in str(e).lower():
            raise DataKeyError("split", split, _split_names(dataset), dataset, str(e)) from None
        raise
    except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as e:
        raise FileNotFoundError(f"dataset {dataset!r} not found: neither a local folder nor a reachable Hub dataset "
                                f"({type(e).__name__}: {e}).") from None
    raise DataKeyError("split", split, list(files), dataset)


def _split_files(dataset: str, split: str) -> list[str]:
    """The files of ``split`` in a local folder, named as ``datasets`` names splits (``train-*.tar``, ``train/``...;
    everything is ``train`` when nothing names a split)."""
    files = _local_files(dataset)
    if split not in files:
        raise DataKeyError("split", split, list(files), dataset)
    return files[split]


def _samples(tar: tarfile.TarFile, path: str) -> Iterator[tuple[str, list[tarfile.TarInfo]]]:
    """(key, members) of each sample of a shard, in archive order: consecutive members sharing a key (as datasets'
    webdataset builder groups them; names without an extension are not samples)."""
    key, members = None, []
    for member in tar:
        match = _SAMPLE_MEMBER.match(member.name) if member.isfile() else None
        if match is None:
            continue
        if members and match.group(1) != key:
            yield key, members
            members = []
        key = match.group(1)
        if any(_SAMPLE_MEMBER.match(m.name).group(2) == match.group(2) for m in members):
            raise ValueError(f"shard {path} has two {match.group(2)!r} members for sample {key!r}; a sample's "
                             "members need distinct extensions.")
        members.append(member)
    if members:
        yield key, members


def _scan_shard(path: str) -> tuple[int, set[str]]:
    """Samples in a shard and the extensions they use, from the tar headers alone (no member is read)."""
    try:
        with tarfile.open(path) as tar:
            count, fields = 0, set()
            for _, members in _samples(tar, path):
                count += 1
                fields.update(_SAMPLE_MEMBER.match(m.name).group(2) for m in members)
            return count, fields
    except tarfile.TarError as e:
        raise ValueError(f"shard {path} is not a readable tar file ({e}); re-write or remove it.") from None


def _shard_rows(shards: list[tuple[str, int, int, int]], fields: tuple[str, ...],
                image_fields: tuple[str, ...]) -> Iterator[dict]:
    """Rows of the given shards ((path, first idx, size, mtime) each; size and mtime only key the cache): one column
    per extension (images as ``{"bytes", "path"}``, the rest raw bytes, None where a sample lacks it), ``__key__`` and
    ``idx`` (the shard's first idx plus the sample's position in it)."""
    for path, offset, _, _ in shards:
        with tarfile.open(path) as tar:
            for position, (key, members) in enumerate(_samples(tar, path)):
                row = dict.fromkeys(fields)
                for member in members:
                    field = _SAMPLE_MEMBER.match(member.name).group(2)
                    value = tar.extractfile(member).read()
                    row[field] = {"bytes": value, "path": member.name} if field in image_fields else value
                yield row | {"__key__": key, "idx": offset + position}


def _read_shards(dataset: str, split: str, streaming: bool) -> Dataset:
    """Local webdataset shards of ``split``, each sample's ``idx`` fixed by shard order then member order (so the
    stream may be reordered by shards, split across ranks and DataLoader workers), and the split's length known."""
    paths = _split_files(dataset, split)
    scans = [_scan_shard(path) for path in paths]
    fields = tuple(sorted(set().union(*(f for _, f in scans))))
    image_fields = tuple(f for f in fields if "." + f.rsplit(".", 1)[-1].lower() in IMAGE_SUFFIXES)
    offsets = np.cumsum([0] + [count for count, _ in scans]).tolist()
    shards = [(path, offsets[i], Path(path).stat().st_size, Path(path).stat().st_mtime_ns)
              for i, path in enumerate(paths)]
    features = datasets.Features({**{f: datasets.Image(decode=False) if f in image_fields else datasets.Value("binary")
                                     for f in fields},
                                  "__key__": datasets.Value("string"), "idx": datasets.Value("int64")})
    kwargs = {"shards": shards, "fields": fields, "image_fields": image_fields}  # tuples: only shards is sharded
    if not streaming:
        return datasets.Dataset.from_generator(_shard_rows, features=features, gen_kwargs=kwargs, split=split)
    stream = datasets.IterableDataset.from_generator(_shard_rows, features=features, gen_kwargs=kwargs, split=split)
    stream.info.splits = datasets.SplitDict({split: datasets.SplitInfo(split, num_examples=offsets[-1])})
    return stream


READERS: dict[str, Callable[[str, str, bool], Dataset]] = {
    "saved_to_disk": _read_saved_to_disk,
    "files": _read_builder,
    "image_folder": _read_builder,
    "webdataset": _read_shards,
    "hub": _read_builder,
}


def _shard_columns(ds: Dataset, columns: list[str], image_column: str,
                   label_column: str | None) -> tuple[str, str | None, list[str]]:
    """The members that default column names stand for in webdataset data (its columns are extensions): ``image``
    -> each sample's first member of ``SHARD_IMAGE_KEYS`` (then other image members) that it holds; ``label`` ->
    ``cls``. Explicit names and names the data has are kept. Returns (image column, label column, the image members
    to merge into the image column: several when the shards mix formats, e.g. some samples .jpg, others .png)."""
    members: list[str] = []
    if image_column == "image" and "image" not in columns:
        images = [c for c in columns if isinstance((ds.features or {}).get(c), datasets.Image)]
        members = list(dict.fromkeys(c for c in (*SHARD_IMAGE_KEYS, *images) if c in columns))
        image_column = members[0] if members else image_column
    if label_column == "label" and "label" not in columns:
        label_column = next((c for c in SHARD_LABEL_KEYS if c in columns), label_column)
    return image_column, label_column, members


class _FirstImage:
    """``ds.map`` function: the first of a sample's image members that it holds, into the first member's column."""

    def __init__(self, members: list[str]) -> None:
        self.members = members

    def __call__(self, row: dict) -> dict:
        return {self.members[0]: next((row[m] for m in self.members if row[m] is not None), None)}


class _IntLabels:
    """``ds.map`` function: a webdataset label (an int, or text/bytes such as ``b"3\n"`` from a ``.cls`` member) as
    an int, or a ValueError naming the sample's key."""

    def __init__(self, column: str, dataset: str) -> None:
        self.column, self.dataset = column, dataset

    def __call__(self, row: dict) -> dict:
        value = row["label"]
        if value is None:  # no label member: "no label", as a null in a label column
            return {"label": NO_LABEL}
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return {"label": int(value)}
        try:
            text = value.decode() if isinstance(value, bytes) else value
            return {"label": int(text.strip())}
        except (AttributeError, UnicodeDecodeError, ValueError):
            raise ValueError(f"--label_column={self.column}: sample {row['__key__']!r} of {self.dataset} has label "
                             f"{value!r}, not an integer; store integer class ids, or pass --label_column=null for "
                             "unlabelled data.") from None


def load_images(
    dataset: str,
    split: str = "train",
    *,
    streaming: bool = True,
    image_column: str = "image",
    label_column: str | None = "label",
    idx_column: str = "idx",
) -> ImageData:
    """Open an image dataset with canonical columns ``image`` (undecoded), ``label`` (if asked) and ``idx``.

    Args:
        dataset: HF datasets id (``org/name``) or a local folder (see ``source_kind``).
        split: Split to read.
        streaming: Stream (``IterableDataset``) instead of loading map-style.
        image_column: Column holding the images.
        label_column: Column holding integer labels (a ClassLabel or integer column; a column of text is refused
            here, not mid-epoch), or None for unlabelled use.
        idx_column: Column holding a stable integer sample index, created if absent (see module docstring).

    Raises:
        DataKeyError: the split or a column does not exist (it lists what does).
        FileNotFoundError: a local path that does not exist or holds nothing readable; an unreachable Hub id.
        ValueError: a label column that holds no integer class ids (one line naming ``--label_column``).
    """
    kind = source_kind(dataset)
    ds = READERS[kind](dataset, split, streaming)
    columns = _columns(ds)
    shards = "__key__" in columns  # webdataset samples: columns are member extensions
    if shards:
        image_column, label_column, members = _shard_columns(ds, columns, image_column, label_column)
        if len(members) > 1:  # mixed formats: every sample's own image, not the first format's (None elsewhere)
            raw = datasets.Image(decode=False)
            for member in members:
                ds = ds.cast_column(member, raw)
            features = datasets.Features({k: v for k, v in ds.features.items() if k not in members[1:]})
            ds = ds.map(_FirstImage(members), remove_columns=members[1:], features=features)
            columns = [c for c in columns if c not in members[1:]]
    if label_column is not None and label_column == image_column:
        raise ValueError(f"--image_column and --label_column are both {image_column!r} in {dataset} split {split}; "
                         f"the images and the labels are two columns (available: {', '.join(columns)})")
    if kind == "image_folder" and label_column == "label" and not _folder_has_classes(dataset, split):
        columns = [c for c in columns if c != "label"]  # datasets' label from the split folder's own name: no class
    wanted = {image_column: "image"}
    for name, role in ((image_column, "image_column"), (label_column, "label_column")):
        if name is not None and name not in columns:
            raise DataKeyError(role, name, columns, f"{dataset} split {split}")
    if label_column is not None:
        wanted[label_column] = "label"
    has_idx = idx_column in columns and idx_column not in (image_column, label_column)
    if has_idx:
        wanted[idx_column] = "idx"
    int_labels = shards and label_column is not None and not _is_integer(ds, label_column)
    if int_labels:
        wanted["__key__"] = "__key__"  # names the sample whose label is not an integer
    ds = ds.select_columns(list(wanted))
    renames = {k: v for k, v in wanted.items() if k != v}
    if renames:
        ds = ds.rename_columns(renames)
    if int_labels:
        features = datasets.Features({k: v for k, v in ds.features.items() if k != "__key__"})
        features["label"] = datasets.Value("int64")
        ds = ds.map(_IntLabels(label_column, f"{dataset} split {split}"), remove_columns=["__key__"],
                    features=features)
    if isinstance(ds.features.get("image") if ds.features else None, datasets.Image):
        ds = ds.cast_column("image", datasets.Image(decode=False))  # decode ourselves: corrupt rows are per-row errors
    if label_column is not None and not int_labels:
        _refuse_non_integer_labels(ds, label_column, f"{dataset} split {split}")
    rows = num_rows(ds)
    if rows is None and kind in ("files", "image_folder", "webdataset"):
        rows = _local_rows(dataset, split)
    native = False
    if not has_idx:
        if isinstance(ds, datasets.Dataset):
            ds = ds.add_column("idx", np.arange(len(ds), dtype=np.int64))
        else:
            ds = ds.map(lambda example, i: {"idx": i}, with_indices=True)
            native = True  # this stream's idx is only stable in its natural order
    return ImageData(ds, name=dataset, split=split, num_rows=rows, native_order=native, kind=kind)


def _folder_has_classes(dataset: str, split: str) -> bool:
    """False when every image of ``split`` lies in the folder itself or in a folder named as a split
    (``my_images/train/1.png``): ``datasets`` then still makes a ``label`` column, from the split folders' names
    (all 0 in one split, missing rows in another), which is no class."""
    root = Path(dataset).expanduser().resolve()
    keywords = {split.lower()} | {k for names in datasets.data_files.SPLIT_KEYWORDS.values() for k in names}
    try:
        files = _local_files(dataset).get(split, [])
    except Exception:  # noqa: BLE001  (unknown: leave the column to datasets)
        return True
    for f in files:
        parent = Path(f).resolve().parent
        if parent != root and parent.name.lower() not in keywords:
            return True
    return not files


def _is_integer(ds: Dataset, column: str) -> bool:
    feature = (ds.features or {}).get(column)
    return isinstance(feature, datasets.ClassLabel) or (
        isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")))


def _refuse_non_integer_labels(ds: Dataset, column: str, where: str) -> None:
    """A ValueError naming ``column`` unless the canonical ``label`` column holds integer class ids (a ClassLabel,
    an integer or bool feature), checked when the split is opened rather than as a crash mid-epoch (or in a
    DataLoader worker): by the feature type, or by the first row of a stream that declares no features."""
    feature = (ds.features or {}).get("label")
    if feature is not None and (isinstance(feature, datasets.ClassLabel) or (
            isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint", "bool")))):
        return
    if isinstance(ds, datasets.Dataset):
        value = ds[0]["label"] if len(ds) else None
    else:
        value = next(iter(ds), {}).get("label")
    if feature is None and (value is None or isinstance(value, (int, np.integer))):
        return  # a stream without features: its first label is an integer (or there is none to judge by)
    if isinstance(value, (str, bytes)) or (isinstance(feature, datasets.Value) and "string" in feature.dtype):
        what = f"text ({value!r})"
    else:
        kind = feature.dtype if isinstance(feature, datasets.Value) else type(feature or value).__name__
        what = f"{kind} values ({value!r:.40})"
    raise LabelsNotIntegerError(where, column, what)


def _local_rows(folder: str, split: str) -> int | None:
    """Rows of a split in a local folder without reading it: parquet footers, or the number of image files."""
    try:
        files = _local_files(folder).get(split, [])
    except Exception:  # noqa: BLE001  (row counts are an optimisation; unknown is a valid answer)
        return None
    if files and all(str(f).endswith(".parquet") for f in files):
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    images = [f for f in files if Path(str(f)).suffix.lower() in IMAGE_SUFFIXES]
    return len(images) or None


def num_rows(ds: ImageData | Dataset) -> int | None:
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
