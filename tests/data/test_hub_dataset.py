"""Stream training data from a Hub *dataset* repo; tests/fake_hub.py on 127.0.0.1 stands in for huggingface.co."""

import io
import urllib.error
import urllib.request
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml

from spectral_ssl import SpectralSSL
from spectral_ssl.data import decode_image, load_images, num_rows, synthetic_dataset
from tests.recipes.conftest import load_recipe


@pytest.fixture()
def hub(hub_server, monkeypatch, tmp_path):
    """``hub_server`` plus what ``datasets`` froze at import time: endpoint, offline flag and cache folders."""
    from huggingface_hub import constants

    url = constants.ENDPOINT  # the local server's, set by hub_server
    cache = tmp_path / "hf_home"
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    for name, value in {"HF_ENDPOINT": url, "HUB_DATASETS_URL": url + "/datasets/{repo_id}/resolve/{revision}/{path}",
                        "HF_HUB_OFFLINE": False, "HF_DATASETS_OFFLINE": False, "HF_CACHE_HOME": str(cache),
                        "HF_DATASETS_CACHE": cache / "datasets", "HF_MODULES_CACHE": cache / "modules",
                        "DOWNLOADED_DATASETS_PATH": cache / "datasets" / "downloads",
                        "EXTRACTED_DATASETS_PATH": cache / "datasets" / "downloads" / "extracted"}.items():
        monkeypatch.setattr(datasets.config, name, value)
    return hub_server


def rows(opened) -> list[dict]:
    """All rows of what ``load_images`` returned (an ``ImageData`` wrapping the stream, or the stream itself)."""
    stream = getattr(opened, "ds", opened)
    assert isinstance(stream, datasets.IterableDataset)
    return list(stream)


def parquet_bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.to_parquet(buffer)
    return buffer.getvalue()


def pixels(value) -> np.ndarray:
    return np.asarray(decode_image(value))


def assert_rows_match(rows, source, idx_of=lambda i, row: row["idx"]):
    """Every source row arrives once, with its own pixels and label (``idx_of`` maps a row to its source row)."""
    assert len(rows) == len(source)
    seen = set()
    for i, row in enumerate(rows):
        j = idx_of(i, row)
        seen.add(j)
        assert set(row) == {"image", "label", "idx"} and isinstance(row["image"], dict)  # undecoded bytes
        np.testing.assert_array_equal(pixels(row["image"]), np.asarray(source[j]["image"]))
        assert row["label"] == source[j]["label"] == j % 4
    assert seen == set(range(len(source)))


def test_fake_hub_dataset_repo_lists_folders_and_serves_byte_ranges(hub):
    from huggingface_hub import HfFileSystem, constants, hf_hub_download

    blob = bytes(range(256)) * 40
    hub.put("org/name", {"data/a/blob.bin": blob, "data/b.txt": b"b", "top.txt": b"t"})
    hub.put("org/name", {"weights.bin": b"model"}, repo_type="model")  # same id, another repo
    fs = HfFileSystem()
    assert fs.ls("datasets/org/name", detail=False) == ["datasets/org/name/data", "datasets/org/name/top.txt"]
    assert sorted(fs.find("datasets/org/name")) == ["datasets/org/name/data/a/blob.bin",
                                                     "datasets/org/name/data/b.txt", "datasets/org/name/top.txt"]
    assert fs.info("datasets/org/name/data/a")["type"] == "directory"
    assert fs.cat_file("datasets/org/name/data/a/blob.bin", start=1000, end=1300) == blob[1000:1300]
    assert any("blob.bin Range=bytes=1000-" in r for r in hub.requests)  # a ranged GET (it reads ahead)
    url = f"{constants.ENDPOINT}/datasets/org/name/resolve/main/data/a/blob.bin"
    size = len(blob)
    for ranged, status, body, content_range in (("bytes=10-19", 206, blob[10:20], f"bytes 10-19/{size}"),
                                                ("bytes=10000-", 206, blob[10000:], f"bytes 10000-{size - 1}/{size}"),
                                                ("bytes=-5", 206, blob[-5:], f"bytes {size - 5}-{size - 1}/{size}"),
                                                (None, 200, blob, None)):
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": ranged} if ranged else {})) as r:
            assert (r.status, r.read(), r.headers.get("Content-Range")) == (status, body, content_range)
    with pytest.raises(urllib.error.HTTPError) as e:  # at the end: how HfFileSystem's stream reader learns EOF
        urllib.request.urlopen(urllib.request.Request(url, headers={"Range": f"bytes={len(blob)}-"}))
    assert e.value.code == 416
    assert Path(hf_hub_download("org/name", "top.txt", repo_type="dataset")).read_bytes() == b"t"
    assert set(hub.files("org/name", "main", repo_type="model")[1]) == {"weights.bin"}


def test_streams_a_pushed_dataset_with_idx_and_knows_its_length_from_the_card(hub):
    source = synthetic_dataset(num_rows=64, image_size=32, num_classes=4)
    source.push_to_hub("org/name", split="train")  # real upload: preupload, LFS batch, commit (+ README card)
    _, files = hub.files("org/name", "main", repo_type="dataset")
    assert set(files) == {"README.md", "data/train-00000-of-00001.parquet"}
    card = yaml.safe_load(files["README.md"].decode().split("---\n")[1])
    assert [(s["name"], s["num_examples"]) for s in card["dataset_info"]["splits"]] == [("train", 64)]
    hub.requests.clear()
    ds = load_images("org/name", "train", streaming=True)
    assert num_rows(ds) == 64  # from dataset_info in the README's YAML: nothing was read yet
    assert not any(".parquet" in r for r in hub.requests)
    first = rows(ds)
    assert_rows_match(first, source)
    assert any(".parquet Range=bytes=" in r for r in hub.requests)  # streamed with ranged reads, not a download
    assert rows(load_images("org/name", "train", streaming=True)) == first  # idx is the stored column: stable


def test_streams_placed_parquet_without_idx_by_stream_position_and_reads_split_sizes_from_yaml(hub):
    source = synthetic_dataset(num_rows=64, image_size=32, num_classes=4)
    hub.put("org/plain", {"data/train-00000-of-00001.parquet": parquet_bytes(source.remove_columns("idx")),
                          "data/test-00000-of-00001.parquet": parquet_bytes(source.select(range(8)))})
    ds = load_images("org/plain", "train", streaming=True)
    assert num_rows(ds) is None  # parquet files alone carry no split metadata for a stream
    streamed = rows(ds)
    assert_rows_match(streamed, source, idx_of=lambda i, row: i)
    assert [row["idx"] for row in streamed] == list(range(64))
    card = {"dataset_info": {"features": [{"name": "image", "dtype": "image"}, {"name": "label", "dtype": "int64"}],
                             "splits": [{"name": "train", "num_examples": 64}, {"name": "test", "num_examples": 8}]}}
    hub.put("org/plain", {"README.md": f"---\n{yaml.safe_dump(card)}---\n# plain\n".encode()})
    ds = load_images("org/plain", "train", streaming=True)
    assert num_rows(ds) == 64
    assert_rows_match(rows(ds), source, idx_of=lambda i, row: i)
    assert num_rows(load_images("org/plain", "test", streaming=True)) == 8


@pytest.mark.slow
def test_pretrain_streams_from_the_hub_and_names_the_dataset_in_the_export(hub, tmp_path):
    synthetic_dataset(num_rows=64, image_size=32, num_classes=4).push_to_hub("org/name", split="train")
    synthetic_dataset(num_rows=16, image_size=32, num_classes=4, seed=1).push_to_hub("org/name", split="test")
    hub.requests.clear()
    out = load_recipe("pretrain").main([
        "--dataset=org/name", f"--output_dir={tmp_path / 'run'}", "--backbone=test_resnet", "--proj_hidden_dim=32",
        "--proj_dim=16", "--batch_size=16", "--image_size=32", "--max_steps=2", "--reff_samples=16"])
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    meta = SpectralSSL.from_pretrained(out).metadata
    assert meta["dataset"] == "org/name" and meta["split"] == "train" and meta["steps"] == 2
    assert meta["effective_rank"]["n_samples"] == 16 and meta["effective_rank"]["split"] == "test"
    assert any("/datasets/org/name/resolve/" in r and "train-" in r for r in hub.requests)
    assert any("/datasets/org/name/resolve/" in r and "test-" in r for r in hub.requests)
