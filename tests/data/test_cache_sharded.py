"""The decoded cache sharded over processes: each rank decodes and holds only its own rows (``DecodedSplit.decode(...,
rank, world_size)``) and serves epochs from them (``DecodedEpochLoader``), compared with the obvious references: the
rows a rank must hold (positions r, r + W, ... of a map-style split; whole shard files of a stream), the whole split
once per epoch across ranks, and an uninterrupted run for a resume."""

import pytest
import torch

from spectral_ssl import data
from spectral_ssl.data.cache import DecodedEpochLoader, DecodedSplit, cache_device, decoded_bytes
from tests.data.probes import assert_pool_resumes
from tests.launch import load_rank_results, save_rank_result, spawn_launcher

SIZE = 8


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """``even``: 48 colour rows in one parquet file; ``uneven``: 20 gray rows then 25 colour rows, two files."""
    root = tmp_path_factory.mktemp("sharded")
    (root / "even").mkdir()
    data.synthetic_dataset(num_rows=48, image_size=SIZE, seed=4).to_parquet(
        str(root / "even" / "train-00000-of-00001.parquet"))
    (root / "uneven").mkdir()
    data.synthetic_dataset(num_rows=20, image_size=SIZE, seed=5, mode="L").to_parquet(
        str(root / "uneven" / "train-00000-of-00002.parquet"))
    colour = data.synthetic_dataset(num_rows=25, image_size=SIZE, seed=6)
    colour.map(lambda row, i: {"idx": 20 + i}, with_indices=True).to_parquet(
        str(root / "uneven" / "train-00001-of-00002.parquet"))
    return root


def reference(images: data.ImageData) -> dict[int, torch.Tensor]:
    """The slow, obvious decode: every row through decode_image + to_uint8, keyed by idx."""
    return {int(row["idx"]): data.to_uint8(data.decode_image(row["image"]), SIZE) for row in images.ds}


def epoch_idx(loader, epoch: int) -> list[int]:
    return [i for batch in loader(epoch) for i in batch["idx"].tolist()]


@pytest.mark.parametrize("world_size", [2, 3])
def test_a_map_style_split_is_dealt_out_by_position_each_row_to_one_rank(folders, world_size):
    images = data.load_images(str(folders / "even"), "train", streaming=False, label_column=None)
    expected = reference(images)
    shards = [DecodedSplit.decode(images, SIZE, rank=r, world_size=world_size) for r in range(world_size)]
    for r, shard in enumerate(shards):
        assert shard.idx.tolist() == list(range(r, 48, world_size))  # idx = row number here
        assert len(shard) == 48 // world_size and shard.images.shape[1:] == (3, SIZE, SIZE)  # 1/W of the memory
        assert all(torch.equal(shard.rows_at(torch.tensor([p]))[0], expected[i]) for p, i in
                   enumerate(shard.idx.tolist()))
    capped = [DecodedSplit.decode(images, SIZE, rank=r, world_size=world_size, max_rows=20) for r in
              range(world_size)]
    assert sorted(i for s in capped for i in s.idx.tolist()) == list(range(20 // world_size * world_size))


def test_a_stream_with_one_file_per_rank_gives_each_rank_its_own_file(folders):
    images = data.load_images(str(folders / "uneven"), "train", label_column=None)  # streamed, 2 files
    shards = [DecodedSplit.decode(images, SIZE, rank=r, world_size=2) for r in range(2)]
    assert [s.idx.tolist() for s in shards] == [list(range(20)), list(range(20, 45))]
    # no process group here: each shard keeps its own length and channel count (the gray file alone: one channel)
    assert [s.rows_per_rank for s in shards] == [20, 25] and [s.images.shape[1] for s in shards] == [1, 3]


def test_a_sharded_epoch_is_a_fresh_permutation_of_the_ranks_own_rows(folders):
    images = data.load_images(str(folders / "even"), "train", streaming=False, label_column=None)
    shard = DecodedSplit.decode(images, SIZE, rank=1, world_size=2)
    loader = DecodedEpochLoader(shard, batch_size=5, seed=3, rank=1, world_size=2)
    first, second = epoch_idx(loader, 0), epoch_idx(loader, 1)
    assert len(first) == 20 and set(first) <= set(range(1, 48, 2))  # 24 rows, 4 full batches (drop_last)
    assert first != second and first == epoch_idx(loader, 0)  # reshuffled per epoch, deterministic
    # the order is a permutation seeded by (seed, epoch, rank), not rank 0's order re-used
    other = DecodedEpochLoader(DecodedSplit.decode(images, SIZE, rank=0, world_size=2), 5, seed=3, world_size=2)
    assert [i - 1 for i in first] != epoch_idx(other, 0)
    capped = DecodedEpochLoader(shard, batch_size=5, seed=3, rank=1, world_size=2, max_samples=22)
    assert epoch_idx(capped, 0) == first[:10]  # 22 rows in all: 11 per rank, 2 batches
    batch = next(iter(loader(0)))
    assert torch.equal(batch["image"], shard.rows_at(torch.searchsorted(shard.idx, batch["idx"])))
    with pytest.raises(ValueError, match="shard of rank 1 of 2; serve it with rank=1, world_size=2"):
        DecodedEpochLoader(shard, batch_size=5, rank=0, world_size=2)


def test_a_pool_over_a_shard_resumes_exactly(folders):
    images = data.load_images(str(folders / "even"), "train", streaming=False, label_column=None)
    shard = DecodedSplit.decode(images, SIZE, rank=1, world_size=2)
    loader = DecodedEpochLoader(shard, batch_size=4, seed=2, rank=1, world_size=2)

    assert_pool_resumes(loader, steps=9, stop_at=4)  # 24 rows: 6 steps an epoch, crosses into the second


def test_auto_caches_when_one_process_shard_fits():
    cpu = torch.device("cpu")
    rows = 2 * (data.AUTO_CACHE_BYTES // decoded_bytes(1, 224))  # twice what one process may keep
    assert cache_device("auto", augment_on_device=True, rows=rows, image_size=224, device=cpu) is None
    assert cache_device("auto", augment_on_device=True, rows=rows, image_size=224, device=cpu, world_size=2) == cpu
    assert cache_device("auto", augment_on_device=True, rows=rows + 1, image_size=224, device=cpu,
                        world_size=2) is None  # the larger shard (rounded up) decides


def _two_process_worker(root, out_dir):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    r, w = acc.process_index, acc.num_processes
    even = data.load_images(f"{root}/even", "train", streaming=False, label_column=None)
    shard = DecodedSplit.decode(even, SIZE, rank=r, world_size=w)
    loader = DecodedEpochLoader(shard, batch_size=4, seed=3, rank=r, world_size=w)
    uneven = DecodedSplit.decode(data.load_images(f"{root}/uneven", "train", label_column=None), SIZE, rank=r,
                                 world_size=w)
    uneven_loader = DecodedEpochLoader(uneven, batch_size=4, seed=3, rank=r, world_size=w)
    save_rank_result({"held": shard.idx, "bytes": shard.images.numel(), "epochs": [epoch_idx(loader, e) for e in
                                                                                    (0, 1)],
                      "uneven_held": uneven.idx, "uneven_channels": uneven.images.shape[1],
                      "uneven_rows_per_rank": uneven.rows_per_rank,
                      "uneven_epoch": [b["idx"].tolist() for b in uneven_loader(0)]}, out_dir)


@pytest.mark.slow
def test_two_processes_each_hold_half_and_an_epoch_covers_the_split_once(folders, tmp_path):
    spawn_launcher(_two_process_worker, args=(str(folders), str(tmp_path)), num_processes=2)
    ranks = load_rank_results(tmp_path)
    full = DecodedSplit.decode(data.load_images(str(folders / "even"), "train", streaming=False, label_column=None),
                               SIZE)
    assert [res["held"].tolist() for res in ranks] == [list(range(0, 48, 2)), list(range(1, 48, 2))]
    assert [res["bytes"] for res in ranks] == [full.images.numel() // 2] * 2  # memory per process: 1/W
    for epoch in (0, 1):  # 48 = 2 ranks x 6 batches x 4: every row once, on the rank that holds it
        shares = [res["epochs"][epoch] for res in ranks]
        assert sorted(shares[0] + shares[1]) == list(range(48))
        assert all(set(share) <= set(res["held"].tolist()) for share, res in zip(shares, ranks))
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]
    # unequal shards (one file of 20 gray rows, one of 25 colour rows): one length and one channel count for all
    assert [res["uneven_held"].tolist() for res in ranks] == [list(range(20)), list(range(20, 45))]
    assert [res["uneven_rows_per_rank"] for res in ranks] == [20, 20] and [res["uneven_channels"] for res in
                                                                          ranks] == [3, 3]
    epochs = [res["uneven_epoch"] for res in ranks]
    assert [len(e) for e in epochs] == [5, 5]  # 20 rows each: the same number of batches on both ranks
    assert len({i for e in epochs for b in e for i in b}) == 40  # 5 of rank 1's rows sit this epoch out
