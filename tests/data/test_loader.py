import io
import re
import shutil

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from spectral_ssl import data
from tests.data.probes import epoch_idx, rows_and_workers


@pytest.fixture(scope="module")
def parquet_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parquet")
    data.synthetic_dataset(num_rows=40, image_size=16, num_classes=4, seed=0).to_parquet(
        str(folder / "train-00000-of-00001.parquet"))
    data.synthetic_dataset(num_rows=12, image_size=16, num_classes=4, seed=1).to_parquet(
        str(folder / "test-00000-of-00001.parquet"))
    return folder


@pytest.mark.parametrize("streaming", [True, False])
def test_local_parquet_folder_loads_with_canonical_columns(parquet_folder, streaming):
    ds = data.load_images(str(parquet_folder), "train", streaming=streaming)
    assert data.num_rows(ds) == 40
    row = next(iter(ds.ds))
    assert set(row) == {"image", "label", "idx"} and isinstance(row["image"], dict)  # undecoded


@pytest.mark.parametrize("streaming", [True, False])
def test_every_sample_once_per_epoch_and_disjoint_across_ranks(parquet_folder, streaming):
    ds = data.load_images(str(parquet_folder), "train", streaming=streaming)
    one = epoch_idx(ds, seed=3, epoch=0)
    assert sorted(one) == list(range(40))
    shares = [epoch_idx(ds, seed=3, epoch=0, rank=r, world_size=2) for r in (0, 1)]
    assert not set(shares[0]) & set(shares[1]) and sorted(shares[0] + shares[1]) == list(range(40))
    assert epoch_idx(ds, seed=3, epoch=0) == one  # deterministic per (seed, epoch)
    assert epoch_idx(ds, seed=3, epoch=1) != one  # reshuffled per epoch


def test_idx_is_stable_identity_of_the_example(parquet_folder):
    """The same idx always carries the same label and pixels, whatever the order."""
    ds = data.load_images(str(parquet_folder), "train", streaming=True)
    loader = data.make_loader(ds, data.EvalTransform(16), batch_size=40, collate="eval", seed=7, epoch=2)
    batch = next(iter(loader))
    ref = data.synthetic_dataset(num_rows=40, image_size=16, num_classes=4, seed=0)
    for i, idx in enumerate(batch["idx"].tolist()):
        assert batch["label"][i].item() == ref[idx]["label"]
    stable = data.make_loader(ds, data.EvalTransform(16), batch_size=40, collate="eval", shuffle=False)
    first = next(iter(stable))
    pos = batch["idx"].tolist().index(5)
    torch.testing.assert_close(batch["image"][pos], first["image"][first["idx"].tolist().index(5)])


def test_stream_without_idx_column_gets_positions_and_keeps_them(tmp_path):
    ds = data.synthetic_dataset(num_rows=24, image_size=16, seed=2).remove_columns("idx")
    ds.to_parquet(str(tmp_path / "train-00000-of-00001.parquet"))
    stream = data.load_images(str(tmp_path), "train", streaming=True)
    assert data.num_rows(stream) == 24
    orders = [epoch_idx(stream, seed=s, epoch=e, rank=r, world_size=2) for s in (0, 1) for e in (0, 1) for r in (0, 1)]
    for a, b in zip(orders[::2], orders[1::2]):
        assert sorted(a + b) == list(range(24))
    labels = {}
    for seed in (0, 1):
        loader = data.make_loader(stream, data.EvalTransform(16), batch_size=24, collate="eval", seed=seed)
        batch = next(iter(loader))
        for idx, label in zip(batch["idx"].tolist(), batch["label"].tolist()):
            assert labels.setdefault(idx, label) == label == idx % 4


def test_two_view_transform_shapes_and_modes():
    tf = data.TwoViewTransform(24)
    for mode in ("RGB", "L", "RGBA", "P"):
        img = data.synthetic_dataset(num_rows=1, image_size=32, mode=mode)[0]["image"]
        v1, v2 = tf(data.decode_image(img))
        assert v1.shape == v2.shape == (3, 24, 24) and v1.dtype == torch.float32
        assert not torch.equal(v1, v2)


def test_eval_transform_is_deterministic():
    img = data.decode_image(data.synthetic_dataset(num_rows=1, image_size=40)[0]["image"])
    tf = data.EvalTransform(32)
    assert torch.equal(tf(img), tf(img)) and tf(img).shape == (3, 32, 32)


def test_corrupt_rows_are_skipped_or_reported_by_idx(tmp_path):
    good = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(good, format="PNG")
    table = {"image": [{"bytes": good.getvalue(), "path": None}, {"bytes": b"not a png", "path": None}] * 3,
             "label": [0, 1] * 3, "idx": list(range(6))}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64"),
                                  "idx": datasets.Value("int64")})
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(tmp_path / "train-0.parquet"))
    ds = data.load_images(str(tmp_path), "train")
    loader = data.make_loader(ds, data.EvalTransform(16), batch_size=2, collate="eval", shuffle=False,
                              drop_last=False, skip_corrupt=True)
    assert [i for b in loader for i in b["idx"].tolist()] == [0, 2, 4]
    assert loader.dataset.corrupt == [1, 3, 5]
    with pytest.raises(ValueError, match=r"idx 1 .*--skip_corrupt=true"):
        list(data.make_loader(ds, data.EvalTransform(16), batch_size=2, collate="eval", shuffle=False))


def test_rows_without_an_image_and_decompression_bombs_are_refused_by_idx_or_skipped_and_counted(tmp_path,
                                                                                                  monkeypatch):
    def png(size):
        out = io.BytesIO()
        Image.new("RGB", (size, size), (10, 20, 30)).save(out, format="PNG")
        return {"bytes": out.getvalue(), "path": None}

    table = {"image": [png(16), None, png(16), png(64)], "label": [0, 1, 2, 3], "idx": [0, 1, 2, 3]}  # 1: null, 3: bomb
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64"),
                                  "idx": datasets.Value("int64")})
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(tmp_path / "train-0.parquet"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 is over twice this: a bomb; 16 x 16 is not
    for streaming in (True, False):
        ds = data.load_images(str(tmp_path), "train", streaming=streaming)
        loader = data.make_loader(ds, data.EvalTransform(16), batch_size=1, collate="eval", shuffle=False,
                                  drop_last=False, skip_corrupt=True)
        batches = list(loader)
        assert [i for b in batches for i in b["idx"].tolist()] == [0, 2] and loader.dataset.corrupt == [1, 3]
        assert sum(b["skipped"] for b in batches) == 2  # the last row's too: counted on the sample before it
        with pytest.raises(ValueError, match=r"^image at idx 1 cannot be decoded \(ValueError: the row has no image "
                                             r"\(None\)\);.*--skip_corrupt=true"):
            list(data.make_loader(ds, data.EvalTransform(16), batch_size=1, collate="eval", shuffle=False))
        with pytest.raises(ValueError, match=r"^image at idx 3 cannot be decoded \(DecompressionBombError: "):
            list(data.make_loader(ds, data.EvalTransform(16), batch_size=1, collate="eval", shuffle=False,
                                  keep_idx=[3]))


def test_decode_on_device_refuses_or_skips_a_jpeg_bomb_in_the_loader(tmp_path, monkeypatch):
    """decode=device hands JPEG files over undecoded: their header is still read in the loader, so a decompression
    bomb is named by idx (or skipped) there, as on the CPU path, not decoded on the device."""
    def jpg(size):
        out = io.BytesIO()
        Image.new("RGB", (size, size), (10, 20, 30)).save(out, format="JPEG")
        return {"bytes": out.getvalue(), "path": None}

    table = {"image": [jpg(16), jpg(64), jpg(16)], "idx": [0, 1, 2]}
    features = datasets.Features({"image": datasets.Image(), "idx": datasets.Value("int64")})
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(tmp_path / "train-0.parquet"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 is over twice this
    ds = data.load_images(str(tmp_path), "train", label_column=None)
    on_device = data.Uint8Transform(16, jpeg_on_device=True)
    loader = data.make_loader(ds, on_device, batch_size=1, collate="eval", shuffle=False, drop_last=False,
                              skip_corrupt=True)
    assert [b["idx"].tolist() for b in loader] == [[0], [2]] and loader.dataset.corrupt == [1]
    with pytest.raises(ValueError, match=r"^image at idx 1 cannot be decoded \(DecompressionBombError: "):
        list(data.make_loader(ds, on_device, batch_size=1, collate="eval", shuffle=False))


@pytest.mark.parametrize("streaming", [True, False])
def test_a_null_label_in_an_integer_column_is_no_label(tmp_path, streaming):
    """A null in an integer label column is -1 ("no label", which the probes leave out), not int(None) mid-epoch."""
    images = data.synthetic_dataset(num_rows=4, image_size=8).remove_columns("label")
    images = images.add_column("label", [3, None, 0, 2], feature=datasets.Value("int64"))
    images.to_parquet(str(tmp_path / "train-0.parquet"))
    ds = data.load_images(str(tmp_path), "train", streaming=streaming)
    batches = data.make_loader(ds, data.EvalTransform(8), batch_size=4, collate="eval", shuffle=False)
    assert [b["label"].tolist() for b in batches] == [[3, data.NO_LABEL, 0, 2]] and data.NO_LABEL == -1


@pytest.mark.parametrize("streaming", [True, False])
def test_a_label_column_that_holds_no_integers_is_refused_when_the_split_is_opened(tmp_path, streaming):
    images = data.synthetic_dataset(num_rows=4, image_size=8).remove_columns("label")
    columns = {"label": ["cat", "dog"] * 2, "species": ["cat", "dog"] * 2, "weight": [0.5, 1.5] * 2,
               "count": [3, 1, 0, 2]}
    for name, values in columns.items():
        images = images.add_column(name, values)
    images.to_parquet(str(tmp_path / "train-0.parquet"))  # streamed parquet declares no features: the first row
    text, where = re.escape("text ('cat')"), re.escape(f"{tmp_path} split train")
    for column, what in (("label", text), ("species", text), ("weight", r"(float|double)\w* values \(0\.5\)")):
        with pytest.raises(ValueError, match=rf"^reading {where}: the label column \(--label_column={column}\) "
                                             rf"holds {what}, not integer class ids; map it to integer "
                                             r"class ids, or pass --label_column=null for unlabelled data\.$"):
            data.load_images(str(tmp_path), "train", streaming=streaming, label_column=column)
    counted = data.load_images(str(tmp_path), "train", streaming=streaming, label_column="count")
    assert [b["label"].tolist() for b in data.make_loader(counted, data.EvalTransform(8), batch_size=4,
                                                          collate="eval", shuffle=False)] == [[3, 1, 0, 2]]
    unlabelled = data.load_images(str(tmp_path), "train", streaming=streaming, label_column=None)
    assert "label" not in next(iter(unlabelled.ds))


def test_skip_batches_and_max_samples(parquet_folder):
    ds = data.load_images(str(parquet_folder), "train")
    full = epoch_idx(ds, seed=1)
    assert epoch_idx(ds, seed=1, skip_batches=2) == full[16:]
    assert epoch_idx(ds, seed=1, max_samples=10) == full[:10]


def test_missing_column_and_split_errors_name_the_key_and_what_exists(parquet_folder):
    with pytest.raises(data.DataKeyError, match=r"image_column=img not found.*available columns: idx, image, label"):
        data.load_images(str(parquet_folder), "train", image_column="img")
    with pytest.raises(data.DataKeyError) as error:
        data.load_images(str(parquet_folder), "validation")
    assert error.value.role == "split" and error.value.available == ["test", "train"]
    assert error.value.message("--eval_split") == (
        f"--eval_split=validation not found in {parquet_folder}; available splits: test, train; "
        "pass --eval_split=test")
    for key in ("--split", "--train_split"):  # a training split is offered for the training split's key
        assert error.value.message(key).endswith(f"available splits: test, train; pass {key}=train")
    with pytest.raises(data.DataKeyError) as error:
        data.load_images(str(parquet_folder), "train", label_column="y")
    assert error.value.message().endswith(
        "pass --label_column=<one of them>, or --label_column=null for unlabelled data")


def test_a_missing_local_path_fails_at_once_naming_it_and_how_to_make_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data.readers, "_read_builder", None)  # never reaches datasets (or the Hub)
    for path in (str(tmp_path / "nope"), "./nope", "~/surely-not-here-123", "a/b/c", "data/fashion_mnist"):
        with pytest.raises(FileNotFoundError, match=f"dataset folder '{path}' does not exist"):
            data.load_images(path, "train")
    with pytest.raises(FileNotFoundError, match="make it with `python scripts/prepare_fashion_mnist.py`"):
        data.load_images("data/fashion_mnist", "train")
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileNotFoundError, match="no images or data files found under 'mine'"):
        data.load_images("mine", "train")
    assert not data.looks_local("fashion_mnist") and not data.looks_local("zalando-datasets/fashion_mnist")
    assert data.looks_local("mine/x") and data.looks_local("outputs/x")


def run_and_export_folders(root):
    """Folders as recipes/pretrain.py leaves them (run_folder.py): a run (train_config.json, metrics.jsonl, the
    exported model), a run stopped at its first checkpoint, and an export (config.json with a spectral_ssl key)."""
    run, stopped, export = root / "run", root / "stopped", root / "export"
    for folder in (run, stopped / "checkpoints" / "step_10", export):
        folder.mkdir(parents=True)
    (run / "train_config.json").write_text('{"dataset": "data/fashion_mnist"}')
    for folder in (run, stopped):
        (folder / "metrics.jsonl").write_text('{"step": 10, "loss": 0.5}\n')
    for folder in (run, export):
        (folder / "config.json").write_text('{"architecture": "resnet18", "spectral_ssl": {"step": 10}}')
        (folder / "model.safetensors").write_bytes(b"\0" * 16)
    return {run: "train_config.json", stopped: "checkpoints/", export: "config.json"}


@pytest.mark.parametrize("streaming", [True, False])
def test_a_run_or_export_folder_is_refused_as_a_dataset_naming_what_marks_it(tmp_path, streaming):
    for folder, marker in run_and_export_folders(tmp_path).items():
        message = (f"{folder} is a spectral_ssl run or export folder, not a dataset (it holds {marker}); pass the "
                   "image folder or dataset it was trained on.")
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            data.load_images(str(folder), "train", streaming=streaming)
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            data.eval_loader(str(folder), "train", data.EvalTransform(8), label_column=None)


@pytest.mark.parametrize("streaming", [True, False])
def test_a_dataset_folder_holding_a_run_or_export_is_refused_naming_it(tmp_path, streaming):
    """Images with a run kept beside them: the run's metrics.jsonl and config.json would make the folder a json
    dataset (and its plots images); refused, naming the sub-folder, until it is moved out."""
    for label in ("cat", "dog"):
        (tmp_path / "train" / label).mkdir(parents=True)
        Image.new("L", (12, 12), 40).save(tmp_path / "train" / label / "0.png")
    for folder, marker in sorted(run_and_export_folders(tmp_path / "runs").items()):  # named in path order
        if marker == "checkpoints/":
            continue  # a checkpoint without its train_config.json: nothing of it reads as data
        name = folder.relative_to(tmp_path)
        message = (f"{tmp_path} holds a spectral_ssl run or export folder, {name} (it holds {marker}), whose files "
                   "would be read as data; move it out of the dataset folder.")
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            data.load_images(str(tmp_path), "train", streaming=streaming)
        shutil.move(str(folder), str(tmp_path.parent / f"{tmp_path.name}-{folder.name}"))
    assert data.num_rows(data.load_images(str(tmp_path), "train", streaming=streaming)) == 2


def test_image_folder_source(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / "train" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (12, 12), 40 * i).save(tmp_path / "train" / label / f"{i}.png")
    ds = data.load_images(str(tmp_path), "train", streaming=True)
    assert data.num_rows(ds) == 6
    assert sorted(epoch_idx(ds)) == list(range(6))


@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("name", ["imgs[1]", "imgs[!x]", "a**b"])
def test_a_folder_whose_name_has_glob_characters_is_read_literally(tmp_path, name, streaming):
    """datasets reads a path as a glob pattern: imgs[1] would read imgs1/, a**b every folder a...b/."""
    for folder, rows in ((tmp_path / name, 3), (tmp_path / "imgs1", 5), (tmp_path / "a-and-b", 5)):
        for label in ("cat", "dog"):
            (folder / "images" / "train" / label).mkdir(parents=True)
            for i in range(rows):
                Image.new("L", (8, 8), 10 * i).save(folder / "images" / "train" / label / f"{i}.png")
        images = data.synthetic_dataset(num_rows=rows, image_size=8, seed=rows)
        (folder / "table").mkdir()
        images.to_parquet(str(folder / "table" / "train-00000-of-00001.parquet"))
        images.select(range(2)).to_parquet(str(folder / "table" / "test-00000-of-00001.parquet"))
    images = data.load_images(str(tmp_path / name / "images"), "train", streaming=streaming)
    paths = sorted(row["image"]["path"] for row in images.ds)
    assert paths == sorted(str(p) for p in (tmp_path / name / "images").rglob("*.png")) and len(paths) == 6
    assert data.num_rows(images) == 6
    assert sorted(row["label"] for row in images.ds) == [0, 0, 0, 1, 1, 1]  # cat, dog
    table = data.load_images(str(tmp_path / name / "table"), "train", streaming=streaming)
    assert data.num_rows(table) == 3 and sorted(row["idx"] for row in table.ds) == [0, 1, 2]
    assert [row["idx"] for row in data.load_images(str(tmp_path / name / "table"), "test", streaming=streaming).ds] \
        == [0, 1]
    with pytest.raises(data.DataKeyError, match=r"validation not found .*available splits: test, train"):
        data.load_images(str(tmp_path / name / "table"), "validation", streaming=streaming)


@pytest.mark.parametrize("streaming", [True, False])
def test_workers_decode_every_sample_once(tmp_path, streaming):
    ds_full = data.synthetic_dataset(num_rows=30, image_size=16, seed=3)
    for k, rows in enumerate(([0, 10], [10, 20], [20, 30])):  # 3 shards
        ds_full.select(range(*rows)).to_parquet(str(tmp_path / f"train-{k:05d}-of-00003.parquet"))
    ds = data.load_images(str(tmp_path), "train", streaming=streaming)
    loader = data.make_loader(ds, data.EvalTransform(16), batch_size=4, collate="eval", num_workers=2,
                              drop_last=True, seed=5)
    batches = list(loader)
    seen = [i for b in batches for i in b["idx"].tolist()]
    assert all(len(b["idx"]) == 4 for b in batches) and len(batches) == 30 // 4  # only the epoch's tail dropped
    assert len(set(seen)) == len(seen) and set(seen) <= set(range(30))


@pytest.mark.parametrize("world_size", [1, 2])
def test_every_worker_decodes_when_the_stream_has_fewer_shards_than_workers(tmp_path, world_size):
    # datasets leaves workers with id >= num_shards idle; the loader splits by example instead
    ds_full = data.synthetic_dataset(num_rows=48, image_size=8, seed=3)
    for k, rows in enumerate(([0, 24], [24, 48])):  # 2 shards, 3 workers
        ds_full.select(range(*rows)).to_parquet(str(tmp_path / f"train-{k:05d}-of-00002.parquet"))
    ds = data.load_images(str(tmp_path), "train", streaming=True)
    seen, workers = rows_and_workers(ds, world_size)
    assert sorted(seen) == list(range(48))  # every row once, across ranks and workers
    assert all(w == {0, 1, 2} for w in workers)  # no idle worker on any rank


@pytest.mark.parametrize("mode,pixels,expected", [
    ("I;16", np.array([[0, 32768, 65535]], dtype=np.uint16), [0, 128, 255]),
    ("I", np.array([[0, 1000, 65535]], dtype=np.int32), [0, 4, 255]),
    ("I", np.array([[0, 100, 255]], dtype=np.int32), [0, 100, 255]),
    ("F", np.array([[0.0, 0.5, 1.0]], dtype=np.float32), [0, 128, 255]),
])
def test_16_and_32_bit_images_are_scaled_to_8_bits(mode, pixels, expected):
    image = Image.fromarray(pixels, mode) if mode != "I;16" else Image.frombytes("I;16", (3, 1), pixels.tobytes())
    decoded = np.asarray(data.decode_image(image))
    assert decoded.shape == (1, 3, 3) and decoded[0, :, 0].tolist() == expected
    assert (decoded[..., 0] == decoded[..., 2]).all()


def test_images_without_a_known_scale_are_refused():
    with pytest.raises(ValueError, match="no known 8-bit scale"):
        data.decode_image(Image.fromarray(np.array([[-5.0, 300.0]], dtype=np.float32), "F"))


def test_save_to_disk_folder_knows_its_length_when_streamed(tmp_path):
    import datasets as hf

    hf.DatasetDict({"train": data.synthetic_dataset(num_rows=20, image_size=16),
                    "test": data.synthetic_dataset(num_rows=8, image_size=16, seed=1)}).save_to_disk(str(tmp_path))
    for streaming in (True, False):
        train = data.load_images(str(tmp_path), "train", streaming=streaming)
        assert data.num_rows(train) == 20 and sorted(epoch_idx(train)) == list(range(20))
    assert data.num_rows(data.load_images(str(tmp_path), "test")) == 8
    with pytest.raises(ValueError, match="split=validation not found"):
        data.load_images(str(tmp_path), "validation")


def test_a_folder_without_images_says_so(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "readme.txt").write_text("nothing")
    with pytest.raises(FileNotFoundError, match="no images or data files found under"):
        data.load_images(str(tmp_path), "train")


def test_uint8_decoding_gives_fixed_size_batches(parquet_folder):
    ds = data.load_images(str(parquet_folder), "train")
    batch = next(iter(data.make_loader(ds, data.Uint8Transform(12), batch_size=8, collate="eval")))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (8, 3, 12, 12) and batch["skipped"] == 0


def test_both_epoch_sources_follow_the_protocol_the_selection_pool_reads(parquet_folder):
    ds = data.load_images(str(parquet_folder), "train")
    streamed = data.EpochLoader(ds, data.Uint8Transform(16), batch_size=4, collate="eval", seed=1)
    cached = data.DecodedEpochLoader(data.DecodedSplit.decode(ds, 16), batch_size=4, seed=1)
    for source in (streamed, cached):
        assert isinstance(source, data.EpochBatches)
        first = next(iter(source(0)))
        assert first["image"].dtype == torch.uint8 and len(first["idx"]) == 4
        again = source.reread(0, 1, first["idx"].tolist())
        assert sorted(again["idx"].tolist()) == sorted(first["idx"].tolist())


@pytest.mark.parametrize("streaming", [True, False])
def test_workers_skip_corrupt_rows_in_the_main_process_order_and_count_every_one(tmp_path, streaming):
    # 150 rows over several rounds of 2 workers x 32 positions, every 7th undecodable (some at round edges)
    good = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(good, format="PNG")
    rows = 150
    table = {"image": [{"bytes": b"not a png" if i % 7 == 3 else good.getvalue(), "path": None} for i in range(rows)],
             "label": [i % 2 for i in range(rows)], "idx": list(range(rows))}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64"),
                                  "idx": datasets.Value("int64")})
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(tmp_path / "train-0.parquet"))
    ds = data.load_images(str(tmp_path), "train", streaming=streaming)
    served = {}
    for workers in (0, 2):
        loader = data.make_loader(ds, data.EvalTransform(8), batch_size=16, collate="eval", shuffle=False,
                                  drop_last=False, skip_corrupt=True, num_workers=workers)
        batches = list(loader)
        served[workers] = [i for b in batches for i in b["idx"].tolist()]
        assert sum(int(b["skipped"]) for b in batches) == len([i for i in range(rows) if i % 7 == 3]), workers
    assert served[2] == served[0] == [i for i in range(rows) if i % 7 != 3]
