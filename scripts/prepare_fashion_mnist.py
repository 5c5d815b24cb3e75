"""Convert Fashion-MNIST into a local HF dataset folder (parquet, splits train/test, columns image/label/idx).

    python scripts/prepare_fashion_mnist.py [--output data/fashion_mnist] [--source DIR] [--force]

Source: the Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``: idx files in
/usr/share/datasets/fashion-mnist, MIT licence). Where those files are missing it falls back to the Hub copy
``zalando-datasets/fashion_mnist`` (needs a network). Idempotent: a complete output folder is left alone.
"""

from __future__ import annotations

import argparse
import gzip
import io
import re
import struct
import sys
import time
from pathlib import Path

import numpy as np

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HUB_ID = "zalando-datasets/fashion_mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
ROWS = {"train": 60_000, "test": 10_000}
SHARDS = {"train": 4, "test": 1}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic 0x0000 08 NDIM, big-endian dims, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{path} is too short to be an IDX file")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file (magic {raw[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} values")
    return data.reshape(dims)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _features():
    import datasets

    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES),
                              "idx": datasets.Value("int64")})


SHARD_NAME = re.compile(r"(train|test)-\d{5}-of-\d{5}\.parquet")  # what write_split writes, and nothing else


def write_split(output: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one split as ``{split}-0000i-of-0000n.parquet`` shards (so load_dataset finds the split by name)."""
    import datasets

    if images.ndim != 3 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{split}: {images.shape[0]} images but {labels.shape[0]} labels")
    n, shards = images.shape[0], SHARDS.get(split, 1)
    for k, rows in enumerate(np.array_split(np.arange(n), shards)):
        table = {"image": [{"bytes": _png(images[i]), "path": None} for i in rows],
                 "label": labels[rows].astype(np.int64).tolist(), "idx": rows.astype(np.int64).tolist()}
        ds = datasets.Dataset.from_dict(table, features=_features())
        ds.to_parquet(str(output / f"{split}-{k:05d}-of-{shards:05d}.parquet"))


def is_complete(output: Path) -> bool:
    """True when every split's shards exist and hold the expected number of rows."""
    import pyarrow.parquet as pq

    for split, expected in ROWS.items():
        files = sorted(output.glob(f"{split}-*.parquet"))
        if len(files) != SHARDS[split] or sum(pq.ParquetFile(f).metadata.num_rows for f in files) != expected:
            return False
    return True


def from_debian(source: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {split: (read_idx(source / img), read_idx(source / lab)) for split, (img, lab) in FILES.items()}


def from_hub() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import datasets

    out = {}
    for split in ROWS:
        ds = datasets.load_dataset(HUB_ID, split=split)
        out[split] = (np.stack([np.asarray(im.convert("L")) for im in ds["image"]]), np.asarray(ds["label"]))
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="data/fashion_mnist", help="output folder (default: %(default)s)")
    p.add_argument("--source", default=str(DEBIAN_DIR), help="folder with the four idx .gz files")
    p.add_argument("--force", action="store_true", help="rebuild even if the output is complete")
    args = p.parse_args(argv)
    output, source = Path(args.output), Path(args.source)
    if output.exists() and not output.is_dir():
        sys.exit(f"error: --output {output} is a file; pass a folder (new, or one this script wrote).")
    foreign = sorted(p.name for p in output.iterdir() if not SHARD_NAME.fullmatch(p.name)) if output.is_dir() else []
    if foreign:
        sys.exit(f"error: --output {output} holds files this script did not write ({', '.join(foreign[:3])}"
                 f"{', ...' if len(foreign) > 3 else ''}); pass a new folder or one this script wrote.")
    if output.is_dir() and not args.force and is_complete(output):
        print(f"{output} is complete (60000 train / 10000 test); --force rebuilds it")
        return output
    start = time.perf_counter()
    if all((source / f).is_file() for pair in FILES.values() for f in pair):
        splits, origin = from_debian(source), f"Debian idx files in {source}"
    else:
        try:
            splits, origin = from_hub(), f"the Hub copy {HUB_ID}"
        except Exception as e:  # noqa: BLE001  (no network here is the common case; say what to install)
            sys.exit(f"error: no Fashion-MNIST idx files in {source} and the Hub copy is unreachable "
                     f"({type(e).__name__}). Install them with `apt-get install dataset-fashion-mnist` "
                     "or pass --source DIR.")
    output.mkdir(parents=True, exist_ok=True)
    for old in output.iterdir():  # only this script's shards are there (checked above)
        old.unlink()
    for split, (images, labels) in splits.items():
        write_split(output, split, images, labels)
    counts = {s: int(images.shape[0]) for s, (images, _) in splits.items()}
    print(f"wrote {output} from {origin}: {counts} rows in {time.perf_counter() - start:.1f} s")
    return output


if __name__ == "__main__":
    main()
