"""2-process (gloo; accelerate's debug-launcher environment, spawned) vs 1-process equivalence of gathered InfoNCE."""


import pytest
import torch

from spectral_ssl import dist
from spectral_ssl.losses import InfoNCELoss
from tests.launch import load_rank_results, save_rank_result, spawn_launcher

B, D, TAU = 6, 5, 0.3


def _full_batch():
    g = torch.Generator().manual_seed(1234)
    return torch.randn(2 * B, D, generator=g, dtype=torch.float64), torch.randn(2 * B, D, generator=g,
                                                                                  dtype=torch.float64)


def _worker(out_dir):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    r = acc.process_index
    z1, z2 = _full_batch()
    l1 = z1[r * B:(r + 1) * B].clone().requires_grad_(True)
    l2 = z2[r * B:(r + 1) * B].clone().requires_grad_(True)
    loss = InfoNCELoss(TAU, gather_distributed=True)(l1, l2)
    loss.backward()
    gathered = dist.gather(torch.full((2,), float(r)), differentiable=False)
    save_rank_result({"loss": loss.detach(), "g1": l1.grad, "g2": l2.grad, "world": dist.world_size(),
                      "rank": dist.rank(), "gathered": gathered}, out_dir)


def test_helpers_without_process_group_are_identities():
    x = torch.randn(3, 2, requires_grad=True)
    assert dist.world_size() == 1 and dist.rank() == 0 and not dist.is_distributed()
    assert dist.gather(x) is x
    assert dist.broadcast(x) is x
    assert torch.equal(dist.all_reduce_sum(x), x)


def test_shut_down_releases_and_destroys_a_process_group_and_is_a_no_op_without_one(tmp_path):
    released = []
    dist.shut_down(release=lambda: released.append(True))  # no group: nothing to release
    assert released == []
    store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    dist.shut_down(release=lambda: released.append(torch.distributed.is_initialized()))
    assert released == [True] and not torch.distributed.is_initialized()


@pytest.mark.slow
def test_two_process_gathered_loss_and_gradients_equal_full_batch(tmp_path):
    spawn_launcher(_worker, args=(str(tmp_path),), num_processes=2)
    ranks = load_rank_results(tmp_path)
    z1, z2 = _full_batch()
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    full = InfoNCELoss(TAU)(z1, z2)
    full.backward()
    assert [r["world"] for r in ranks] == [2, 2] and [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["gathered"].tolist() == [0.0, 0.0, 1.0, 1.0]
    # mean of the per-rank losses (what DDP optimises) equals the 1-process full-batch loss
    mean_loss = (ranks[0]["loss"] + ranks[1]["loss"]) / 2
    torch.testing.assert_close(mean_loss.double(), full.detach().double(), rtol=1e-6, atol=1e-7)
    # each rank's input gradient, averaged by DDP (divide by world size), equals its slice of the full gradient
    for r, res in enumerate(ranks):
        torch.testing.assert_close(res["g1"] / 2, z1.grad[r * B:(r + 1) * B], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(res["g2"] / 2, z2.grad[r * B:(r + 1) * B], rtol=1e-5, atol=1e-7)
