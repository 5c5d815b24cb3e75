"""DataLoader workers and mid-epoch resume: the served order is the num_workers=0 order wherever the workers split
one stream by position (map-style data, or a stream with fewer shards than workers), so ``skip_batches`` is exact;
where each worker reads its own shards a resume is approximate, and says so, but still finds the pool's rows."""

import logging

import pytest
import torch

from spectral_ssl import data
from spectral_ssl.batching import CandidatePool
from tests.data.probes import epoch_idx


@pytest.fixture(scope="module")
def three_shards(tmp_path_factory):
    """100 rows in 3 parquet shards of unequal sizes (50, 30, 20)."""
    folder = tmp_path_factory.mktemp("three_shards")
    full = data.synthetic_dataset(num_rows=100, image_size=8, seed=2)
    for k, rows in enumerate(([0, 50], [50, 80], [80, 100])):
        full.select(range(*rows)).to_parquet(str(folder / f"train-{k:05d}-of-00003.parquet"))
    return folder


@pytest.mark.parametrize("streaming,workers", [(False, 2), (False, 3), (True, 4)])  # True, 4: more workers than shards
def test_workers_serve_the_main_process_order_so_skip_batches_resumes_exactly(three_shards, streaming, workers):
    ds = data.load_images(str(three_shards), "train", streaming=streaming, label_column=None)
    kw = dict(size=8, seed=1, shuffle_buffer=8)
    alone = epoch_idx(ds, **kw)
    assert sorted(alone) == list(range(100))
    assert epoch_idx(ds, num_workers=workers, **kw) == alone
    # 2 batches of 8 = 16 rows: not a whole round of workers x 32 rows, where the old chunk order was off
    assert epoch_idx(ds, num_workers=workers, skip_batches=2, **kw) == alone[16:]
    assert epoch_idx(ds, num_workers=workers, skip_batches=9, **kw) == alone[72:]


def _noisy(batch: dict) -> dict:
    image = batch.pop("image").float()
    return {"views": (image, image), **batch}


def test_a_pool_resumed_with_workers_reading_their_own_shards_finds_its_rows_and_warns(three_shards, caplog):
    ds = data.load_images(str(three_shards), "train", streaming=True, label_column=None)
    loader = data.EpochLoader(ds, data.Uint8Transform(8), batch_size=8, collate="eval", seed=1, shuffle_buffer=8,
                              num_workers=2)  # 3 shards >= 2 workers: each worker reads its own shards
    first = CandidatePool(loader, 24, _noisy)
    first.fill()
    first.take(torch.arange(8))
    first.fill()
    first.take(torch.arange(8))  # 16 candidates wait, 5 batches read: not whole rounds of 2 x 32 rows
    state = first.state_dict()
    resumed = CandidatePool(loader, 24, _noisy)
    resumed.load_state_dict(state)
    with caplog.at_level(logging.WARNING):
        assert resumed.fill() >= 16  # re-read the waiting rows wherever the workers served them
    assert sorted(resumed.samples["idx"].tolist()[:16]) == sorted(state["carried"][0])
    assert "is not exact" in caplog.text and "--num_workers=0" in caplog.text


def test_max_samples_with_workers_reading_their_own_shards_serves_the_first_rows_of_every_epoch(three_shards):
    # the cap was split into per-worker shares: a worker whose shards held fewer rows served fewer (49 of 64 seen)
    ds = data.load_images(str(three_shards), "train", streaming=True, label_column=None)
    for epoch in range(4):
        kw = dict(size=8, seed=0, epoch=epoch, shuffle_buffer=64, max_samples=64)
        assert epoch_idx(ds, num_workers=2, **kw) == epoch_idx(ds, **kw), epoch
