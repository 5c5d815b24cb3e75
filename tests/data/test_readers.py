"""Webdataset tar shards as a source: column mapping, labels, stable idx, splits (local and on the fake Hub), corrupt
members, and the loader's epoch/resume/worker guarantees. Shards are written here with ``tarfile``: the reference is
the list of samples each test wrote (key -> image bytes, label)."""

import functools
import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from spectral_ssl import data
from tests.data import probes
from tests.data.probes import rows_and_workers
from tests.data.test_hub_dataset import hub  # noqa: F401  (fixture: the fake Hub with datasets' frozen config)


def jpeg(k: int, size: int = 8) -> bytes:
    """A solid grey JPEG whose level (8 k + 4) identifies sample k after decoding (JPEG keeps a flat block's level)."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (8 * k + 4,) * 3).save(buffer, format="JPEG")
    return buffer.getvalue()


def tar_bytes(samples: list[tuple[str, dict[str, bytes]]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for key, members in samples:
            for ext, payload in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def make_samples(first: int, count: int) -> list[tuple[str, dict[str, bytes]]]:
    """Samples first..first+count-1: ``000007.jpg`` + ``000007.cls`` (label k % 4, as text with a newline)."""
    return [(f"{k:06d}", {"jpg": jpeg(k), "cls": f"{k % 4}\n".encode()}) for k in range(first, first + count)]


def write_split(root, layout: str, split: str, shards: list[list]) -> None:
    """Shards of a split as ``<split>-0000k.tar`` (layout "names") or ``<split>/0000k.tar`` (layout "folders")."""
    for k, samples in enumerate(shards):
        path = root / f"{split}-{k:05d}.tar" if layout == "names" else root / split / f"{k:05d}.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tar_bytes(samples))


def shard_folder(root, layout: str = "names", shard_sizes=(8, 8, 8), test_size: int = 4):
    """A folder of train shards (samples 0..23 by default, in shard order) and one test shard (its own 0..3)."""
    first = np.cumsum((0, *shard_sizes)).tolist()
    write_split(root, layout, "train", [make_samples(first[i], n) for i, n in enumerate(shard_sizes)])
    write_split(root, layout, "test", [make_samples(0, test_size)])
    return root


def level(image) -> int:
    """The sample number a decoded solid-grey image stands for."""
    return round((float(np.asarray(data.decode_image(image)).mean()) - 4) / 8)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return shard_folder(tmp_path_factory.mktemp("shards"))


def assert_canonical(rows, n: int) -> None:
    """Rows of samples 0..n-1 in order: canonical columns, the sample's own image, an integer label."""
    assert [row["idx"] for row in rows] == list(range(n))
    for row in rows:
        assert set(row) == {"image", "label", "idx"} and isinstance(row["image"], dict)  # undecoded
        assert level(row["image"]) == row["idx"] and type(row["label"]) is int and row["label"] == row["idx"] % 4


@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("layout", ["names", "folders"])
def test_local_shards_map_members_to_canonical_columns_per_split(tmp_path, layout, streaming):
    shard_folder(tmp_path, layout)
    assert data.source_kind(str(tmp_path)) == "webdataset"
    train = data.load_images(str(tmp_path), "train", streaming=streaming)
    assert train.kind == "webdataset" and data.num_rows(train) == 24 and not train.native_order
    assert_canonical(list(train.ds), 24)
    test = data.load_images(str(tmp_path), "test", streaming=streaming)
    assert data.num_rows(test) == 4
    assert_canonical(list(test.ds), 4)
    with pytest.raises(data.DataKeyError, match="split=validation not found .*available splits: test, train"):
        data.load_images(str(tmp_path), "validation", streaming=streaming)


def test_a_folder_of_shards_without_split_names_is_train(tmp_path):
    (tmp_path / "a.tar").write_bytes(tar_bytes(make_samples(0, 3)))
    (tmp_path / "b.tar").write_bytes(tar_bytes(make_samples(3, 2)))
    assert_canonical(list(data.load_images(str(tmp_path), "train").ds), 5)


@pytest.mark.parametrize("streaming", [True, False])
def test_default_image_column_takes_the_first_preferred_member_and_explicit_ones_work(tmp_path, streaming):
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 200, 200)).save(png, format="PNG")
    (tmp_path / "train-0.tar").write_bytes(tar_bytes(
        [(f"{k:06d}", {"webp": png.getvalue(), "png": png.getvalue(), "jpg": jpeg(k), "txt": b"a caption"})
         for k in range(3)]))
    opened = data.load_images(str(tmp_path), "train", streaming=streaming, label_column=None)
    assert [level(row["image"]) for row in opened.ds] == [0, 1, 2]  # jpg before png/webp, whatever the tar order
    explicit = data.load_images(str(tmp_path), "train", streaming=streaming, image_column="png", label_column=None)
    assert [row["image"]["bytes"] for row in explicit.ds] == [png.getvalue()] * 3
    with pytest.raises(data.DataKeyError) as error:
        data.load_images(str(tmp_path), "train", streaming=streaming, image_column="jpeg")
    assert error.value.role == "image_column" and {"jpg", "png", "webp", "txt"} <= set(error.value.available)
    with pytest.raises(data.DataKeyError) as error:  # no cls member: the default label column is missing
        data.load_images(str(tmp_path), "train", streaming=streaming)
    assert error.value.role == "label_column" and error.value.message().startswith("--label_column=label not found")


def test_default_image_member_order_without_jpg(tmp_path):
    (tmp_path / "train-0.tar").write_bytes(tar_bytes([("a", {"webp": b"w", "png": b"p"}), ("b", {"webp": b"w"})]))
    rows = list(data.load_images(str(tmp_path), "train", label_column=None).ds)
    assert [row["image"]["bytes"] for row in rows] == [b"p", b"w"]  # png first; else the sample's own member


@pytest.mark.parametrize("streaming", [True, False])
def test_text_labels_become_integers_and_a_non_integer_one_is_named_by_its_key(tmp_path, streaming):
    samples = [(f"{k:06d}", {"jpg": jpeg(k), "cls": f" {k * 3}\r\n".encode(), "label": str(k + 100).encode()})
               for k in range(4)]
    (tmp_path / "train-0.tar").write_bytes(tar_bytes(samples))
    rows = list(data.load_images(str(tmp_path), "train", streaming=streaming).ds)  # a `label` member wins
    assert [row["label"] for row in rows] == [100, 101, 102, 103]
    rows = list(data.load_images(str(tmp_path), "train", streaming=streaming, label_column="cls").ds)
    assert [row["label"] for row in rows] == [0, 3, 6, 9] and all(type(row["label"]) is int for row in rows)
    del samples[1][1]["cls"]  # a sample without the label member: "no label", as a null in a label column
    (tmp_path / "train-0.tar").write_bytes(tar_bytes(samples))
    rows = list(data.load_images(str(tmp_path), "train", streaming=streaming, label_column="cls").ds)
    assert [row["label"] for row in rows] == [0, data.NO_LABEL, 6, 9]
    samples[2][1]["cls"] = b"cat"
    (tmp_path / "train-0.tar").write_bytes(tar_bytes(samples))
    with pytest.raises(ValueError, match=r"^--label_column=cls: sample '000002' of .* has label b'cat', not an "
                                         r"integer; .*--label_column=null") as error:
        list(data.load_images(str(tmp_path), "train", streaming=streaming, label_column="cls").ds)
    assert "\n" not in str(error.value)


def test_shards_in_a_folder_whose_name_has_glob_characters_are_read_literally(tmp_path):
    shard_folder(tmp_path / "shards[1]", shard_sizes=(2,), test_size=1)
    shard_folder(tmp_path / "shards1", shard_sizes=(8, 8), test_size=4)  # what shards[1] means as a glob pattern
    opened = data.load_images(str(tmp_path / "shards[1]"), "train", streaming=True)
    assert data.num_rows(opened) == 2
    assert_canonical(list(opened.ds), 2)


def test_a_sample_with_two_members_of_one_extension_is_refused_naming_shard_and_key(tmp_path):
    (tmp_path / "train-0.tar").write_bytes(tar_bytes([("a", {"jpg": jpeg(0)})]) [:-1024])  # trailing blocks cut
    with tarfile.open(tmp_path / "train-0.tar", "a") as tar:
        info = tarfile.TarInfo("a.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(ValueError, match=r"train-0.tar has two 'jpg' members for sample 'a'"):
        data.load_images(str(tmp_path), "train", label_column=None)


def test_a_shard_that_is_not_a_tar_is_named(tmp_path):
    (tmp_path / "train-0.tar").write_bytes(tar_bytes(make_samples(0, 2)))
    (tmp_path / "train-1.tar").write_bytes(b"\x00not a tar" * 100)
    with pytest.raises(ValueError, match=r"shard .*train-1.tar is not a readable tar file"):
        data.load_images(str(tmp_path), "train")


# ---- the loader's guarantees, for shards (tests/data/test_loader.py holds them for the other sources) ----

epoch_idx = functools.partial(probes.epoch_idx, size=8, batch_size=4)


@pytest.mark.parametrize("streaming", [True, False])
def test_shard_epochs_are_deterministic_reshuffled_and_disjoint_across_ranks(shards, streaming):
    opened = data.load_images(str(shards), "train", streaming=streaming)
    one = epoch_idx(opened, seed=3, epoch=0, shuffle_buffer=4)
    assert sorted(one) == list(range(24)) and one != list(range(24))
    assert epoch_idx(opened, seed=3, epoch=0, shuffle_buffer=4) == one  # same (seed, epoch): same order
    assert epoch_idx(opened, seed=3, epoch=1, shuffle_buffer=4) != one  # the next epoch reshuffles
    assert epoch_idx(opened, seed=4, epoch=0, shuffle_buffer=4) != one
    shares = [epoch_idx(opened, seed=3, epoch=0, rank=r, world_size=2, shuffle_buffer=4) for r in (0, 1)]
    assert not set(shares[0]) & set(shares[1]) and sorted(shares[0] + shares[1]) == list(range(24))


@pytest.mark.parametrize("streaming", [True, False])
def test_shard_idx_names_the_same_sample_in_every_order(shards, streaming):
    opened = data.load_images(str(shards), "train", streaming=streaming)
    loader = data.make_loader(opened, _Level(), batch_size=24, collate="eval", seed=5, epoch=2, shuffle_buffer=4)
    batch = next(iter(loader))
    assert batch["idx"].tolist() != list(range(24))
    assert batch["image"].flatten().tolist() == batch["idx"].tolist()  # each idx carries its own pixels
    assert batch["label"].tolist() == [i % 4 for i in batch["idx"].tolist()]


@pytest.mark.parametrize("streaming", [True, False])
def test_shard_resume_from_a_position_gives_the_remaining_batches(shards, streaming):
    opened = data.load_images(str(shards), "train", streaming=streaming)
    for epoch in (0, 1):
        full = epoch_idx(opened, seed=1, epoch=epoch, shuffle_buffer=4)
        assert epoch_idx(opened, seed=1, epoch=epoch, shuffle_buffer=4, skip_batches=2) == full[8:]
        assert epoch_idx(opened, seed=1, epoch=epoch, shuffle_buffer=4, max_samples=10) == full[:10]


def test_a_truncated_jpeg_in_a_shard_is_refused_by_idx_or_skipped_and_counted(tmp_path):
    samples = make_samples(0, 8)
    samples[5][1]["jpg"] = samples[5][1]["jpg"][:-40]  # cut inside the entropy-coded data
    write_split(tmp_path, "names", "train", [samples[:4], samples[4:]])
    opened = data.load_images(str(tmp_path), "train", streaming=True)
    loader = data.make_loader(opened, data.EvalTransform(8), batch_size=2, collate="eval", shuffle=False,
                              drop_last=False, skip_corrupt=True)
    batches = list(loader)
    assert [i for b in batches for i in b["idx"].tolist()] == [0, 1, 2, 3, 4, 6, 7]
    assert loader.dataset.corrupt == [5] and sum(b["skipped"] for b in batches) == 1
    with pytest.raises(ValueError, match=r"image at idx 5 \(000005.jpg\) cannot be decoded .*--skip_corrupt=true"):
        list(data.make_loader(opened, data.EvalTransform(8), batch_size=2, collate="eval", shuffle=False))


class _Level:
    """Decode-side transform: the sample number the solid-grey image stands for."""

    def __call__(self, image):
        return torch.tensor([level(image)])


@pytest.mark.parametrize("streaming", [True, False])
def test_a_sample_without_an_image_member_is_refused_by_idx_or_skipped_and_counted(tmp_path, streaming):
    samples = make_samples(0, 4)
    del samples[2][1]["jpg"]  # sample 2 has only its .cls
    write_split(tmp_path, "names", "train", [samples])
    opened = data.load_images(str(tmp_path), "train", streaming=streaming)
    loader = data.make_loader(opened, data.EvalTransform(8), batch_size=1, collate="eval", shuffle=False,
                              drop_last=False, skip_corrupt=True)
    assert [i for b in loader for i in b["idx"].tolist()] == [0, 1, 3] and loader.dataset.corrupt == [2]
    with pytest.raises(ValueError, match=r"^image at idx 2 cannot be decoded \(ValueError: the row has no image"):
        list(data.make_loader(opened, data.EvalTransform(8), batch_size=1, collate="eval", shuffle=False))


@pytest.mark.parametrize("world_size", [1, 2])
def test_every_worker_decodes_when_there_are_fewer_shards_than_workers(tmp_path, world_size):
    shard_folder(tmp_path, shard_sizes=(12, 12))  # 2 shards, 3 workers
    opened = data.load_images(str(tmp_path), "train", streaming=True)
    seen, workers = rows_and_workers(opened, world_size)
    assert sorted(seen) == list(range(24))  # every sample once, across ranks and workers
    assert all(w == {0, 1, 2} for w in workers)  # no idle worker on any rank


def test_workers_read_whole_shards_and_keep_each_sample_identity(tmp_path):
    shard_folder(tmp_path, shard_sizes=(6, 6, 6, 6))  # 4 shards, 2 workers: datasets hands out shards
    opened = data.load_images(str(tmp_path), "train", streaming=True)
    loader = data.make_loader(opened, _Level(), batch_size=4, collate="eval", num_workers=2, drop_last=False, seed=2)
    batches = list(loader)
    idx = [i for b in batches for i in b["idx"].tolist()]
    assert sorted(idx) == list(range(24))
    assert [v for b in batches for v in b["image"].flatten().tolist()] == idx


# ---- shards in a Hub dataset repo (tests/fake_hub.py) ----

@pytest.mark.parametrize("layout", ["names", "folders"])
def test_hub_shards_map_members_and_select_splits(hub, layout):  # noqa: F811
    train = [make_samples(0, 5), make_samples(5, 4)]
    if layout == "names":
        files = {f"train-{k:05d}.tar": tar_bytes(s) for k, s in enumerate(train)} | {
            "test-00000.tar": tar_bytes(make_samples(0, 3))}
    else:
        files = {f"data/train/{k:05d}.tar": tar_bytes(s) for k, s in enumerate(train)} | {
            "data/test/00000.tar": tar_bytes(make_samples(0, 3))}
    hub.put("org/shards", files)
    for streaming in (True, False):
        opened = data.load_images("org/shards", "train", streaming=streaming)
        assert opened.kind == "hub"
        assert_canonical(list(opened.ds), 9)  # idx: the position in shard then member order
        assert_canonical(list(data.load_images("org/shards", "test", streaming=streaming).ds), 3)
        with pytest.raises(data.DataKeyError) as error:
            data.load_images("org/shards", "train", streaming=streaming, image_column="png")
        assert {"jpg", "cls", "__key__"} <= set(error.value.available)
    assert any("train-00001.tar" in r or "train/00001.tar" in r for r in hub.requests)


def png(k: int, size: int = 8) -> bytes:
    """``jpeg(k)``'s image as a PNG (lossless: the same level)."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (8 * k + 4,) * 3).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("streaming", [True, False])
def test_shards_that_mix_image_formats_give_every_sample_its_own_image(tmp_path, streaming):
    # some samples .jpg, some .png, one .webp: `image` is each sample's own member, never None for the others
    samples = make_samples(0, 9)
    for k in (1, 4, 5, 8):
        samples[k][1].pop("jpg")
        samples[k][1]["png"] = png(k)
    samples[6][1]["webp"] = samples[6][1].pop("jpg")  # a JPEG payload under .webp: decoded by content
    write_split(tmp_path, "names", "train", [samples[:5], samples[5:]])
    rows = list(data.load_images(str(tmp_path), "train", streaming=streaming).ds)
    assert_canonical(rows, 9)


def test_one_column_for_images_and_labels_is_one_line_and_an_idx_label_column_is_no_index(tmp_path):
    from spectral_ssl.data import load_images, synthetic_dataset

    folder = tmp_path / "ds"
    folder.mkdir()
    synthetic_dataset(num_rows=6, image_size=8, num_classes=2, seed=0).to_parquet(
        str(folder / "train-00000-of-00001.parquet"))
    with pytest.raises(ValueError, match=r"^--image_column and --label_column are both 'label' in .* split train; "
                                         r"the images and the labels are two columns \(available: .*image.*\)$"):
        load_images(str(folder), "train", image_column="label", label_column="label")
    rows = list(load_images(str(folder), "train", streaming=True, label_column="idx").ds)  # idx as the label
    assert [r["label"] for r in rows] == list(range(6))
