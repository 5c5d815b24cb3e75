import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from spectral_ssl import data
from tests.conftest import SCRIPTS, load_module


@pytest.fixture(scope="module")
def prepare():
    return load_module(SCRIPTS / "prepare_fashion_mnist.py")


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture()
def fake_source(tmp_path, prepare, monkeypatch):
    """A miniature Fashion-MNIST in the Debian layout (8 train / 4 test images)."""
    rng = np.random.default_rng(0)
    monkeypatch.setattr(prepare, "ROWS", {"train": 8, "test": 4})
    monkeypatch.setattr(prepare, "SHARDS", {"train": 2, "test": 1})
    for split, n in (("train", 8), ("test", 4)):
        img, lab = prepare.FILES[split]
        write_idx(tmp_path / img, rng.integers(0, 256, size=(n, 28, 28)))
        write_idx(tmp_path / lab, np.arange(n) % 10)
    return tmp_path


def test_conversion_round_trips_through_load_images(prepare, fake_source, tmp_path):
    out = prepare.main(["--source", str(fake_source), "--output", str(tmp_path / "out")])
    assert prepare.is_complete(out)
    train = data.load_images(str(out), "train", streaming=True)
    assert data.num_rows(train) == 8
    rows = list(train.ds)
    assert [r["idx"] for r in rows] == list(range(8)) and [r["label"] for r in rows] == list(range(8))
    pixels = np.asarray(data.decode_image(rows[3]["image"]).convert("L"))
    np.testing.assert_array_equal(pixels, prepare.read_idx(fake_source / prepare.FILES["train"][0])[3])
    assert data.num_rows(data.load_images(str(out), "test")) == 4


def test_second_run_is_a_no_op_and_force_rebuilds(prepare, fake_source, tmp_path, capsys):
    out = tmp_path / "out"
    prepare.main(["--source", str(fake_source), "--output", str(out)])
    stamp = (out / "test-00000-of-00001.parquet").stat().st_mtime_ns
    prepare.main(["--source", str(fake_source), "--output", str(out)])
    assert "is complete" in capsys.readouterr().out
    assert (out / "test-00000-of-00001.parquet").stat().st_mtime_ns == stamp
    prepare.main(["--source", str(fake_source), "--output", str(out), "--force"])
    assert prepare.is_complete(out)


def test_bad_idx_file_is_rejected(prepare, tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x0D, 1) + struct.pack(">I", 3) + b"\0" * 12)
    with pytest.raises(ValueError, match="not a uint8 IDX"):
        prepare.read_idx(bad)


def test_missing_source_without_network_names_the_package(prepare, tmp_path, monkeypatch):
    def offline():
        raise ConnectionError("offline")

    monkeypatch.setattr(prepare, "from_hub", offline)
    with pytest.raises(SystemExit, match="apt-get install dataset-fashion-mnist"):
        prepare.main(["--source", str(tmp_path / "none"), "--output", str(tmp_path / "out")])


@pytest.mark.skipif(not (Path("/usr/share/datasets/fashion-mnist") / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_debian_labels_parse(prepare):
    labels = prepare.read_idx(Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"))
    assert labels.shape == (10_000,) and set(np.unique(labels).tolist()) == set(range(10))


def test_an_output_holding_other_files_or_being_a_file_is_refused_and_kept(prepare, fake_source, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "my_other_dataset.parquet").write_bytes(b"user data")
    with pytest.raises(SystemExit, match=r"^error: --output .*mine holds files this script did not write "
                                         r"\(my_other_dataset.parquet\)"):
        prepare.main(["--source", str(fake_source), "--output", str(mine), "--force"])
    assert (mine / "my_other_dataset.parquet").read_bytes() == b"user data"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit, match=r"^error: --output .*afile is a file"):
        prepare.main(["--source", str(fake_source), "--output", str(tmp_path / "afile")])
    out = tmp_path / "out"  # a folder this script wrote, with a stale shard of an older layout: rebuilt whole
    out.mkdir()
    (out / "train-00000-of-00003.parquet").write_bytes(b"stale")
    prepare.main(["--source", str(fake_source), "--output", str(out)])
    assert prepare.is_complete(out) and not (out / "train-00000-of-00003.parquet").exists()
