"""Streamed epochs over several processes: a rank reads its own shard files (``datasets.distributed.
split_dataset_by_node`` when the file count divides by the world size) and every DataLoader worker of every rank
decodes a part of them."""

import pytest

from spectral_ssl import data
from tests.data.probes import WorkerId


@pytest.mark.parametrize("num_workers", [0, 2])
def test_each_rank_streams_whole_files_of_its_own_and_every_worker_decodes(tmp_path, num_workers):
    full = data.synthetic_dataset(num_rows=48, image_size=8, seed=3)
    files = [list(range(k * 12, (k + 1) * 12)) for k in range(4)]  # 4 files, 2 ranks: 2 files each
    for k, rows in enumerate(files):
        full.select(rows).to_parquet(str(tmp_path / f"train-{k:05d}-of-00004.parquet"))
    ds = data.load_images(str(tmp_path), "train", streaming=True)
    seen = []
    for rank in (0, 1):
        loader = data.make_loader(ds, WorkerId(), batch_size=4, collate="eval", num_workers=num_workers,
                                  drop_last=False, seed=5, rank=rank, world_size=2)
        batches = list(loader)
        mine = {i for b in batches for i in b["idx"].tolist()}
        seen.append(mine)
        assert sum(set(rows) <= mine for rows in files) == 2 and len(mine) == 24  # two whole files, nothing else
        workers = {w for b in batches for w in b["image"].flatten().tolist()}
        assert workers == ({0, 1} if num_workers else {-1})  # no idle worker
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(48))
