import pytest
import torch
import torch.nn.functional as F

from spectral_ssl.losses import DCLLoss, SogCLRLoss


def reference_sogclr(z1, z2, index, u, tau, gamma):
    """The official algorithm written out (per anchor), returning the surrogate value, its gradient and new u."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    new_u = u.clone()
    total, us = 0.0, []
    for a in range(2 * n):
        pos = (a + n) % (2 * n)
        negs = [k for k in range(2 * n) if k not in (a, pos)]
        sims = torch.stack([z[a] @ z[k] for k in negs])
        g_hat = torch.exp((sims.detach().double() - 1) / tau).mean()
        prev = u[index[a % n]]
        g = 1.0 if prev == 0 else gamma
        u_a = (1 - g) * prev + g * g_hat
        us.append(u_a)
        weights = (torch.exp((sims.detach().double() - 1) / tau) / u_a).float()
        total = total - z[a] @ z[pos] + (weights * sims).mean()
    for i in range(n):
        new_u[index[i]] = (us[i] + us[i + n]) / 2
    return total / (2 * n), new_u


def test_matches_reference_and_updates_u_over_two_visits():
    torch.manual_seed(0)
    loss_fn = SogCLRLoss(dataset_size=20, temperature=0.2, gamma=0.7)
    u = torch.zeros(20, dtype=torch.float64)
    index = torch.tensor([3, 7, 11, 19, 0])
    for _ in range(2):  # first visit (γ=1 per sample), then the moving average
        z1, z2 = torch.randn(5, 6, requires_grad=True), torch.randn(5, 6, requires_grad=True)
        ref, u = reference_sogclr(z1, z2, index, u, 0.2, 0.7)
        ours = loss_fn(z1, z2, index=index)
        torch.testing.assert_close(ours, ref.float())
        torch.testing.assert_close(loss_fn.u, u)
    assert int((loss_fn.u > 0).sum()) == 5


def test_first_visit_is_decided_per_sample_not_per_batch():
    # batch 2 mixes seen samples (2, 3) and new ones (4, 5): the new ones start at their batch estimate (γ = 1 for
    # them), where LibAUC's batch-level rule (γ = 1 only for an all-new batch) would store γ·ĝ
    torch.manual_seed(0)
    loss_fn = SogCLRLoss(dataset_size=8, temperature=0.2, gamma=0.7)
    u = torch.zeros(8, dtype=torch.float64)
    for index in (torch.tensor([0, 1, 2, 3]), torch.tensor([2, 3, 4, 5])):
        z1, z2 = torch.randn(4, 6), torch.randn(4, 6)
        ref, u = reference_sogclr(z1, z2, index, u, 0.2, 0.7)
        torch.testing.assert_close(loss_fn(z1, z2, index=index), ref.float())
        torch.testing.assert_close(loss_fn.u, u)
    fresh = SogCLRLoss(dataset_size=8, temperature=0.2, gamma=1.0)  # γ = 1: u = ĝ for every sample
    fresh(z1, z2, index=index)
    torch.testing.assert_close(loss_fn.u[4:6], fresh.u[4:6])  # new samples: ĝ, not 0.7·ĝ
    assert not torch.allclose(loss_fn.u[2:4], fresh.u[2:4])  # seen samples: the moving average


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_at_gamma_one_the_gradient_is_tau_times_decoupled_infonce(tau):
    z1, z2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    a1, a2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    SogCLRLoss(10, temperature=tau, gamma=1.0)(a1, a2, index=torch.arange(6)).backward()
    b1, b2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    DCLLoss(tau)(b1, b2).backward()
    torch.testing.assert_close(a1.grad, tau * b1.grad)
    torch.testing.assert_close(a2.grad, tau * b2.grad)


def test_small_temperature_does_not_overflow():
    z1 = torch.randn(8, 4)
    loss_fn = SogCLRLoss(8, temperature=0.005)
    z = z1.clone().requires_grad_(True)
    loss = loss_fn(z, z1 + 0.01, index=torch.arange(8))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all() and torch.isfinite(loss_fn.u).all()


def test_index_is_required_and_checked():
    loss_fn = SogCLRLoss(10)
    with pytest.raises(ValueError, match="SogCLR needs the dataset index"):
        loss_fn(torch.randn(4, 3), torch.randn(4, 3))
    with pytest.raises(ValueError, match="outside \\[0, dataset_size=10\\)"):
        loss_fn(torch.randn(4, 3), torch.randn(4, 3), index=torch.tensor([1, 2, 3, 10]))


def test_index_must_be_one_integer_per_pair_and_the_message_names_the_bad_one():
    loss_fn, z = SogCLRLoss(dataset_size=10), torch.randn(4, 3)
    with pytest.raises(ValueError, match="integer dataset indices, got dtype torch.float32"):
        loss_fn(z, z, index=torch.arange(4).float() + 0.7)
    with pytest.raises(ValueError, match=r"shape \(4,\), one dataset index per pair, got \(2, 2\)"):
        loss_fn(z, z, index=torch.arange(4).reshape(2, 2))
    with pytest.raises(ValueError, match=r"index -5 is outside \[0, dataset_size=10\)"):
        loss_fn(z, z, index=torch.tensor([-5, 1, 2, 7]))


def test_temperature_below_the_float64_floor_is_refused():
    # below 0.003, exp((s - 1)/τ) underflows float64 for opposite views: u = 0 and a NaN loss
    with pytest.raises(ValueError, match="temperature must be >= 0.003"):
        SogCLRLoss(dataset_size=10, temperature=0.001)
    z = F.normalize(torch.randn(6, 3, dtype=torch.float64), dim=1)
    assert torch.isfinite(SogCLRLoss(dataset_size=10, temperature=0.003)(z, -z, index=torch.arange(6)))


def test_eval_mode_leaves_u_alone_and_gives_the_training_value():
    torch.manual_seed(1)
    z1, z2, index = torch.randn(4, 6), torch.randn(4, 6), torch.tensor([0, 2, 5, 7])
    evaluated, trained = SogCLRLoss(dataset_size=10).eval(), SogCLRLoss(dataset_size=10)
    torch.testing.assert_close(evaluated(z1, z2, index=index), trained(z1, z2, index=index))
    assert bool((evaluated.u == 0).all()) and bool((trained.u[index] > 0).all())


def test_a_single_pair_is_refused_and_a_non_finite_batch_leaves_u():
    with pytest.raises(ValueError, match="needs negatives: a global batch of at least 2"):
        SogCLRLoss(dataset_size=4)(torch.randn(1, 4), torch.randn(1, 4), index=torch.tensor([0]))
    loss_fn = SogCLRLoss(dataset_size=6)
    loss_fn(torch.randn(3, 4), torch.randn(3, 4), index=torch.tensor([0, 1, 2]))
    before = loss_fn.u.clone()
    z1 = torch.randn(3, 4)
    z1[1, 2] = float("nan")
    assert not torch.isfinite(loss_fn(z1, torch.randn(3, 4), index=torch.tensor([0, 1, 2])))
    torch.testing.assert_close(loss_fn.u, before, rtol=0, atol=0)
