import io

import pytest
import torch
from PIL import Image

from spectral_ssl import data
from spectral_ssl.data.cache import (
    AUTO_CACHE_BYTES,
    DecodedEpochLoader,
    DecodedSplit,
    cache_device,
    decoded_bytes,
)
from tests.data.probes import assert_pool_resumes


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    full = data.synthetic_dataset(num_rows=45, image_size=12, num_classes=3, seed=2)
    for k, rows in enumerate(([0, 20], [20, 45])):
        full.select(range(*rows)).to_parquet(str(path / f"train-{k:05d}-of-00002.parquet"))
    gray = data.synthetic_dataset(num_rows=10, image_size=12, num_classes=2, seed=3, mode="L")
    gray.to_parquet(str(path / "test-00000-of-00001.parquet"))
    return path


def reference(images: data.ImageData, size: int) -> dict[int, torch.Tensor]:
    """The slow, obvious decode: every row through decode_image + to_uint8, keyed by idx."""
    return {int(row["idx"]): data.to_uint8(data.decode_image(row["image"]), size) for row in images.ds}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_cache_holds_every_row_decoded_sorted_by_idx(folder, num_workers):
    images = data.load_images(str(folder), "train", label_column=None)
    split = DecodedSplit.decode(images, 12, num_workers=num_workers)
    expected = reference(images, 12)
    assert split.idx.tolist() == sorted(expected) and split.images.dtype == torch.uint8
    assert split.images.shape == (45, 3, 12, 12)  # colour images keep 3 channels
    for position, i in enumerate(split.idx.tolist()):
        assert torch.equal(split.rows_at(torch.tensor([position]))[0], expected[i])


def test_gray_images_are_stored_and_served_as_one_channel(folder):
    images = data.load_images(str(folder), "test", label_column=None)
    split = DecodedSplit.decode(images, 12)
    assert split.images.shape == (10, 1, 12, 12)  # a third of the memory
    batch = split.rows_at(torch.arange(10))
    expected = reference(images, 12)
    assert batch.shape == (10, 1, 12, 12)  # DeviceAugment makes 3-channel views of it (tests/test_transforms.py)
    assert all(torch.equal(batch[p].expand(3, -1, -1), expected[i]) for p, i in enumerate(split.idx.tolist()))


def test_epochs_are_permutations_with_disjoint_equal_rank_shares(folder):
    split = DecodedSplit.decode(data.load_images(str(folder), "train", label_column=None), 12)
    one = DecodedEpochLoader(split, batch_size=5, seed=1, drop_last=False)
    epoch0 = [i for b in one(0) for i in b["idx"].tolist()]
    epoch1 = [i for b in one(1) for i in b["idx"].tolist()]
    assert sorted(epoch0) == sorted(epoch1) == list(range(45)) and epoch0 != epoch1
    assert epoch0 == [i for b in one(0) for i in b["idx"].tolist()]  # deterministic
    shares = [[i for b in DecodedEpochLoader(split, 4, seed=1, rank=r, world_size=3)(0) for i in b["idx"].tolist()]
              for r in range(3)]
    assert all(len(s) == 12 for s in shares)  # 15 rows each, 3 full batches of 4 (drop_last)
    assert not (set(shares[0]) & set(shares[1])) and not (set(shares[1]) & set(shares[2]))
    capped = [i for b in DecodedEpochLoader(split, 5, seed=1, max_samples=20)(0) for i in b["idx"].tolist()]
    assert capped == epoch0[:20]
    batch = next(iter(one(0)))
    assert batch["image"].shape == (5, 3, 12, 12) and batch["label"] is None
    assert torch.equal(batch["image"], split.rows_at(torch.searchsorted(split.idx, batch["idx"])))


def test_skip_and_reread_match_the_uninterrupted_epoch(folder):
    split = DecodedSplit.decode(data.load_images(str(folder), "train", label_column=None), 12)
    loader = DecodedEpochLoader(split, batch_size=4, seed=7)
    full = [b["idx"].tolist() for b in loader(2)]
    assert [b["idx"].tolist() for b in loader(2, skip_batches=3)] == full[3:]
    read = [i for b in full[:3] for i in b]
    waiting = [read[1], read[6], read[10]]  # candidates a pool held, in epoch order
    again = loader.reread(2, 3, waiting[::-1])
    assert again["idx"].tolist() == waiting
    assert torch.equal(again["image"], split.rows_at(torch.searchsorted(split.idx, again["idx"])))


def test_a_pool_over_the_cache_resumes_where_it_stopped_with_the_same_views(folder):
    split = DecodedSplit.decode(data.load_images(str(folder), "train", label_column=None), 12)

    assert_pool_resumes(DecodedEpochLoader(split, batch_size=4, seed=3), steps=14, stop_at=5)  # into epoch 2


def test_corrupt_rows_are_left_out_and_counted_once_per_epoch(tmp_path):
    good = data.synthetic_dataset(num_rows=8, image_size=8, seed=0)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    rows = [{"image": {"bytes": buf.getvalue() if i != 3 else b"not an image", "path": None}, "idx": i}
            for i in range(8)]
    import datasets

    ds = datasets.Dataset.from_list(rows)
    del good
    images = data.ImageData(ds, name="corrupt", split="train", num_rows=8)
    with pytest.raises(ValueError, match="idx 3 cannot be decoded"):
        DecodedSplit.decode(images, 8)
    split = DecodedSplit.decode(images, 8, skip_corrupt=True)
    assert split.idx.tolist() == [0, 1, 2, 4, 5, 6, 7] and split.skipped == 1
    batches = list(DecodedEpochLoader(split, batch_size=3)(0))
    assert [b["skipped"] for b in batches] == [1, 0]


def test_where_the_cache_goes():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    small = dict(rows=60_000, image_size=32)
    assert cache_device("auto", augment_on_device=True, device=cpu, **small) == cpu
    assert cache_device("auto", augment_on_device=True, device=gpu, **small) == gpu
    assert cache_device("auto", augment_on_device=False, device=gpu, **small) is None  # loader-side augmentations
    assert cache_device("auto", augment_on_device=True, rows=None, image_size=32, device=cpu) is None  # unknown
    huge = AUTO_CACHE_BYTES // decoded_bytes(1, 224) + 1
    assert cache_device("auto", augment_on_device=True, rows=huge, image_size=224, device=gpu) is None
    assert cache_device("ram", augment_on_device=True, rows=huge, image_size=224, device=gpu) == cpu  # asked for
    assert cache_device("device", augment_on_device=True, device=gpu, **small) == gpu
    assert cache_device("off", augment_on_device=True, device=cpu, **small) is None


def test_max_rows_caches_the_first_rows_of_the_unshuffled_split(folder):
    images = data.load_images(str(folder), "train", label_column=None)
    split = DecodedSplit.decode(images, 12, max_rows=23)
    assert split.idx.tolist() == list(range(23))  # shard 0 (20 rows) then the head of shard 1
    assert sorted(i for b in DecodedEpochLoader(split, 5, drop_last=False)(4) for i in b["idx"].tolist()) == \
        list(range(23))
