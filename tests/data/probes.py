"""Shared by the data tests: one epoch's idx order, a decode-side probe of which DataLoader worker decoded a row,
and the check that a candidate pool over an epoch loader resumes exactly where it stopped."""

import torch

from spectral_ssl import data
from spectral_ssl.batching import CandidatePool


def epoch_idx(ds, *, size: int = 16, batch_size: int = 8, **kw) -> list[int]:
    """The idx of one streamed epoch of ``ds`` in the order served (``make_loader``'s keywords in ``kw``)."""
    loader = data.make_loader(ds, data.EvalTransform(size), batch_size=batch_size, drop_last=False, collate="eval",
                              **kw)
    return [i for batch in loader for i in batch["idx"].tolist()]


class WorkerId:
    """Decode-side transform that records which DataLoader worker decoded the sample (-1: the main process)."""

    def __call__(self, image):
        info = torch.utils.data.get_worker_info()
        return torch.tensor([info.id if info else -1])


def noisy_views(batch: dict) -> dict:
    """Like the recipe's device augmentations: random views seeded by the whole batch."""
    generator = torch.Generator().manual_seed(int(batch["idx"].sum()))
    image = batch.pop("image").float()
    return {"views": (image + torch.randn(image.shape, generator=generator), image), **batch}


def _run(pool: CandidatePool, steps: int) -> list:
    out = []
    for _ in range(steps):
        if pool.fill() < 4:
            pool.next_epoch()
        chosen = [0, 2, 3, 5] if pool.fill() >= 6 else [0, 1, 2, 3]  # leaves candidates waiting
        batch = pool.take(torch.tensor(chosen))
        out.append((batch["idx"].tolist(), batch["views"][0]))
    return out


def assert_pool_resumes(loader, steps: int, stop_at: int) -> None:
    """A pool of 8 candidates taking 4 a step: stopped after ``stop_at`` steps (candidates waiting in it) and resumed
    from its state_dict, it gives the same rows and views as ``steps`` uninterrupted steps."""
    straight = _run(CandidatePool(loader, 8, noisy_views), steps)
    first = CandidatePool(loader, 8, noisy_views)
    head = _run(first, stop_at)
    assert len(first) == 4  # candidates wait in the pool at the "checkpoint"
    resumed = CandidatePool(loader, 8, noisy_views)
    resumed.load_state_dict(first.state_dict())
    both = head + _run(resumed, steps - stop_at)
    assert [i for i, _ in both] == [i for i, _ in straight]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(both, straight))  # the waiting ones' views too


def rows_and_workers(opened, world_size: int, num_workers: int = 3) -> tuple[list[int], list[set[int]]]:
    """One streamed epoch on each rank: every idx served (over all ranks), and the set of workers that decoded on
    each rank."""
    from spectral_ssl import data

    seen, workers = [], []
    for rank in range(world_size):
        loader = data.make_loader(opened, WorkerId(), batch_size=4, collate="eval", num_workers=num_workers,
                                  drop_last=False, seed=5, rank=rank, world_size=world_size)
        batches = list(loader)
        seen += [i for b in batches for i in b["idx"].tolist()]
        workers.append({w for b in batches for w in b["image"].flatten().tolist()})
    return seen, workers
