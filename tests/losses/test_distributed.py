"""2 processes (gloo, spawned) with gathered losses equal 1 process on the full batch: value, gradients, state."""


import pytest
import torch

from spectral_ssl.losses import DCLLoss, IsoLoss, MoCoLoss, SogCLRLoss
from tests.launch import load_rank_results, save_rank_result, spawn_launcher

B, D = 4, 5


def make(name):
    torch.manual_seed(0)  # identical initial state (MoCo queue) on every rank
    return {"dcl": lambda: DCLLoss(0.3, gather_distributed=True),
            "sogclr": lambda: SogCLRLoss(16, temperature=0.3, gamma=0.8, gather_distributed=True),
            "moco": lambda: MoCoLoss(D, queue_size=12, gather_distributed=True),
            "isoloss": lambda: IsoLoss(D, gather_distributed=True)}[name]()


NAMES = ["dcl", "sogclr", "moco", "isoloss"]


def full_batch(step):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(2 * B, D, generator=g, dtype=torch.float64) for _ in range(4)]  # z1, z2, t1, t2


def index_of(step):
    return torch.arange(2 * B) * 2 + step % 2


def run(loss_fn, rows, steps=2):
    """Two steps on rows of the full batch; returns per-step (loss, grad z1, grad z2) and the final state."""
    out = []
    for step in range(steps):
        z1, z2, t1, t2 = (x[rows].clone() for x in full_batch(step))
        z1.requires_grad_(True)
        z2.requires_grad_(True)
        loss = loss_fn(z1, z2, index=index_of(step)[rows], targets=(t1, t2) if loss_fn.uses_target else None)
        loss.backward()
        out.append((loss.detach(), z1.grad, z2.grad))
    return out, {k: v.clone() for k, v in loss_fn.state_dict().items()}


def _worker(out_dir):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    r = acc.process_index
    rows = slice(r * B, (r + 1) * B)
    results = {name: run(make(name).double(), rows) for name in NAMES}
    save_rank_result(results, out_dir)


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_full_batch(tmp_path):
    spawn_launcher(_worker, args=(str(tmp_path),), num_processes=2)
    ranks = load_rank_results(tmp_path)
    for name in NAMES:
        full, full_state = run(make(name).double(), slice(0, 2 * B))
        for step, (loss, g1, g2) in enumerate(full):
            # mean of the per-rank losses = the full-batch loss; each rank's gradient / world = its slice
            mean = (ranks[0][name][0][step][0] + ranks[1][name][0][step][0]) / 2
            torch.testing.assert_close(mean, loss, msg=f"{name} step {step}")
            for r in range(2):
                _, r1, r2 = ranks[r][name][0][step]
                torch.testing.assert_close(r1 / 2, g1[r * B:(r + 1) * B], msg=f"{name} grad z1 rank {r}")
                torch.testing.assert_close(r2 / 2, g2[r * B:(r + 1) * B], msg=f"{name} grad z2 rank {r}")
        states = [ranks[r][name][1] for r in range(2)]
        for key, value in full_state.items():
            assert torch.equal(states[0][key], states[1][key]), f"{name}.{key} differs between ranks"
            if key == "queue":  # same keys, enqueued in rank order instead of view order
                sort = lambda q: q[torch.argsort(q[:, 0])]  # noqa: E731
                torch.testing.assert_close(sort(states[0][key]), sort(value))
            else:
                torch.testing.assert_close(states[0][key], value, msg=f"{name}.{key}")


@pytest.mark.parametrize("name", ["infonce", "dcl", "sogclr"])
def test_each_rank_of_a_simulated_two_process_group_scores_its_own_rows(name, monkeypatch):
    # fast (no processes): an anchor's loss depends only on the set of candidates, so the two ranks' losses
    # (candidates laid out per rank as [z1_r; z2_r], the anchor's own column and its positive at an offset of 2B on
    # rank 1) average to the one-process loss on the whole batch (SogCLR in eval mode on a fresh state: u = ĝ for
    # every anchor, no update)
    import importlib

    import torch.nn.functional as F

    from spectral_ssl.losses import InfoNCELoss

    module = importlib.import_module(f"spectral_ssl.losses.{name}")
    build = {"infonce": lambda gather: InfoNCELoss(0.3, gather_distributed=gather),
             "dcl": lambda gather: DCLLoss(0.3, gather_distributed=gather),
             "sogclr": lambda gather: SogCLRLoss(8, temperature=0.2, gather_distributed=gather).eval()}[name]
    z1, z2 = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    index = torch.arange(8)
    whole = build(False)(z1, z2, index=index)
    halves = [F.normalize(torch.cat([z1[r * 4:(r + 1) * 4], z2[r * 4:(r + 1) * 4]]), dim=1) for r in (0, 1)]
    monkeypatch.setattr(module.dist, "is_distributed", lambda: True)
    monkeypatch.setattr(module.dist, "gather", lambda x, differentiable=True: torch.cat(halves))
    losses = []
    for r in (0, 1):
        monkeypatch.setattr(module.dist, "rank", lambda r=r: r)
        rows = slice(r * 4, (r + 1) * 4)
        losses.append(build(True)(z1[rows], z2[rows], index=index[rows]))
    torch.testing.assert_close((losses[0] + losses[1]) / 2, whole)
