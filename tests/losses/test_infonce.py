import math

import pytest
import torch
import torch.nn.functional as F

from spectral_ssl.losses import LOSSES, InfoNCELoss


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Slow, obviously correct NT-Xent: loop over the 2B anchors, 2B - 1 candidates each."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n, b = z.shape[0], z1.shape[0]
    total = 0.0
    for a in range(n):
        positive = (a + b) % n
        sims = [z[a] @ z[c] / temperature for c in range(n) if c != a]
        log_denominator = torch.logsumexp(torch.stack(sims), dim=0)
        total = total + (log_denominator - z[a] @ z[positive] / temperature)
    return total / n


@pytest.mark.parametrize("batch,dim,temperature", [(2, 3, 0.5), (4, 8, 0.1), (7, 16, 0.2), (16, 32, 1.0)])
def test_matches_slow_reference_value_and_gradient(batch, dim, temperature):
    z1 = torch.randn(batch, dim, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(batch, dim, dtype=torch.float64, requires_grad=True)
    loss = InfoNCELoss(temperature)(z1, z2)
    ref = reference_nt_xent(z1, z2, temperature)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    g = torch.autograd.grad(loss, (z1, z2))
    g_ref = torch.autograd.grad(ref, (z1, z2))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_identical_embeddings_give_log_of_candidate_count():
    batch = 5
    z = torch.ones(batch, 4)
    assert InfoNCELoss(0.3)(z, z).item() == pytest.approx(math.log(2 * batch - 1), rel=1e-6)


def test_symmetric_in_views_and_scale_invariant():
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    loss = InfoNCELoss(0.2)
    assert loss(z1, z2).item() == pytest.approx(loss(z2, z1).item(), rel=1e-6)
    assert loss(z1, z2).item() == pytest.approx(loss(3.0 * z1, 0.5 * z2).item(), rel=1e-5)


def test_permuting_pairs_leaves_loss_unchanged():
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    perm = torch.randperm(8)
    loss = InfoNCELoss(0.2)
    assert loss(z1, z2).item() == pytest.approx(loss(z1[perm], z2[perm]).item(), rel=1e-5)


def test_aligned_pairs_give_lower_loss_than_random_pairs():
    z1 = torch.randn(32, 64)
    loss = InfoNCELoss(0.1)
    assert loss(z1, z1 + 0.01 * torch.randn_like(z1)) < loss(z1, torch.randn(32, 64))


def test_sgd_on_free_embeddings_lowers_loss():
    z1 = torch.randn(16, 8, requires_grad=True)
    z2 = torch.randn(16, 8, requires_grad=True)
    loss_fn = InfoNCELoss(0.2)
    opt = torch.optim.SGD([z1, z2], lr=0.5)
    first = loss_fn(z1, z2).item()
    for _ in range(20):
        opt.zero_grad()
        loss_fn(z1, z2).backward()
        opt.step()
    assert loss_fn(z1, z2).item() < first - 0.5


def test_bf16_autocast_inputs_give_fp32_loss():
    z1, z2 = torch.randn(8, 16).bfloat16(), torch.randn(8, 16).bfloat16()
    out = InfoNCELoss(0.2)(z1, z2)
    assert out.dtype == torch.float32 and torch.isfinite(out)


@pytest.mark.parametrize("temperature", [0, -0.1, "0.2", None])
def test_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        InfoNCELoss()(torch.randn(4, 8), torch.randn(5, 8))


def test_registered_under_recipe_names():
    assert LOSSES["infonce"] is InfoNCELoss and LOSSES["simclr"] is InfoNCELoss


def test_a_single_pair_has_no_negatives_and_is_refused():
    # with one image the positive is the only candidate: a loss of 0 and no gradient, so nothing would be learnt
    with pytest.raises(ValueError, match="needs negatives: a global batch of at least 2"):
        InfoNCELoss(0.2)(torch.randn(1, 4), torch.randn(1, 4))
