import pytest
import torch
import torch.nn.functional as F

from spectral_ssl.losses import IsoLoss


def fitted(metric, dim=5, seed=0):
    torch.manual_seed(seed)
    loss_fn = IsoLoss(dim, metric=metric)
    for _ in range(3):  # an anisotropic correlation
        loss_fn.update_correlation(torch.randn(32, dim) * torch.linspace(0.2, 2.0, dim))
    return loss_fn.eval()  # no further C updates inside the checks


def plain(p, target, metric):
    if metric == "euc":
        return (p - target).pow(2).sum(1).mean()
    return (-2 * F.cosine_similarity(p, target, dim=1)).mean()


@pytest.mark.parametrize("metric", ["cos", "euc"])
def test_isotropic_gradient_equals_plain_gradient_wrt_the_prediction(metric):
    loss_fn = fitted(metric)
    w, w_sqrt = loss_fn.predictor()
    z, target = torch.randn(6, 5), torch.randn(6, 5)
    zz = z.clone().requires_grad_(True)
    loss_fn._pair(zz, target, w, w_sqrt).backward()
    p = (z @ w).requires_grad_(True)
    plain(p, target, metric).backward()
    torch.testing.assert_close(zz.grad, p.grad, rtol=1e-4, atol=1e-6)
    # the plain loss through the predictor carries the extra W_P factor
    zp = z.clone().requires_grad_(True)
    plain(zp @ w, target, metric).backward()
    torch.testing.assert_close(zp.grad, p.grad @ w.T, rtol=1e-4, atol=1e-6)


def test_euclidean_value_equals_the_plain_value_and_both_orderings_are_summed():
    loss_fn = fitted("euc")
    w, _ = loss_fn.predictor()
    z1, z2, t1, t2 = (torch.randn(4, 5) for _ in range(4))
    expected = plain(z1 @ w, t2, "euc") + plain(z2 @ w, t1, "euc")
    torch.testing.assert_close(loss_fn(z1, z2, targets=(t1, t2)), expected)


def test_predictor_is_the_normalised_eigen_power_of_the_correlation():
    loss_fn = fitted("cos")
    w, w_sqrt = loss_fn.predictor()
    lam, vec = torch.linalg.eigh(loss_fn.corr.double())
    expected = (vec * (lam / lam.max()).pow(0.5)) @ vec.T
    torch.testing.assert_close(w.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w_sqrt @ w_sqrt, w, rtol=1e-4, atol=1e-6)
    assert loss_fn.eigenvalues.max() == pytest.approx(1.0)


def test_correlation_ema_runs_once_per_view_in_training_only():
    loss_fn = IsoLoss(3, corr_momentum=0.5)
    z1, z2 = torch.ones(4, 3), 2 * torch.ones(4, 3)
    loss_fn(z1, z2)
    # C = 0.5·(0.5·0 + 0.5·1) + 0.5·4 = 2.25 for every entry
    torch.testing.assert_close(loss_fn.corr, torch.full((3, 3), 2.25))
    loss_fn.eval()(z1, z2)
    torch.testing.assert_close(loss_fn.corr, torch.full((3, 3), 2.25))
    assert IsoLoss(3).corr_momentum == 0.5 and IsoLoss(3, ema=True).corr_momentum == 0.998
    assert IsoLoss(3, ema=True).uses_target and not IsoLoss(3).uses_target


def test_a_fresh_loss_in_eval_uses_the_isotropic_predictor():
    # C = 0 before the first training call: acting as C = I (W_P = I), not W_P = 0 (p = 0 and a loss of ~1e8)
    fresh, isotropic = IsoLoss(dim=4).eval(), IsoLoss(dim=4).eval()
    isotropic.corr.copy_(torch.eye(4))
    z1, z2 = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 4, dtype=torch.float64)
    torch.testing.assert_close(fresh(z1, z2), isotropic(z1, z2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fresh.eigenvalues, torch.ones(4))
    assert abs(fresh(z1, z2).item()) < 10


def test_correlation_ema_weights_the_old_value_by_rho():
    # ρ = 0.75 (asymmetric, unlike 0.5): C = 0.75·(0.75·0 + 0.25·1) + 0.25·4 = 1.1875
    loss_fn = IsoLoss(3, corr_momentum=0.75)
    loss_fn.update_correlation(torch.ones(4, 3), 2 * torch.ones(4, 3))
    torch.testing.assert_close(loss_fn.corr, torch.full((3, 3), 1.1875))


def test_predictor_of_a_rank_deficient_correlation_is_finite_and_clamps_negative_eigenvalues():
    # C from rank-1 projections: eigh returns round-off eigenvalues of either sign; negative ones are 0 (λ̂ >= 0),
    # so W_P ≈ u uᵀ for the unit top eigenvector u (alpha = 0.5: λ̂^α = 1 on it, round-off^½ elsewhere)
    loss_fn = IsoLoss(4)
    direction = torch.tensor([1.0, -2.0, 0.5, 3.0])
    loss_fn.update_correlation(torch.randn(16, 1, generator=torch.Generator().manual_seed(0)) * direction)
    assert bool((torch.linalg.eigvalsh(loss_fn.corr.double()) < 0).any())  # the clamp has work to do
    w, w_sqrt = loss_fn.predictor()
    unit = direction / direction.norm()
    torch.testing.assert_close(w, torch.outer(unit, unit), rtol=0, atol=1e-3)
    assert bool(torch.isfinite(w_sqrt).all())
    assert bool((loss_fn.eigenvalues >= 0).all())


@pytest.mark.parametrize("alpha, eps", [(1.0, 0.25), (0.5, 0.1), (2.0, 0.0)])
def test_predictor_uses_alpha_and_eps(alpha, eps):
    # W_P = U diag(λ̂^α) Uᵀ, W_P^½ = U diag(λ̂^(α/2)) Uᵀ with λ̂ = max(λ, 0)/λ_max + eps (DirectCopy: α = 1, eps 0.25)
    loss_fn = IsoLoss(4, alpha=alpha, eps=eps)
    loss_fn.update_correlation(torch.randn(64, 4, generator=torch.Generator().manual_seed(0)) * torch.arange(1., 5.))
    lam, vec = torch.linalg.eigh(loss_fn.corr.double())
    lam_hat = lam.clamp_min(0) / lam.max() + eps
    w, w_sqrt = loss_fn.predictor()
    torch.testing.assert_close(w.double(), (vec * lam_hat.pow(alpha)) @ vec.T, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w_sqrt.double(), (vec * lam_hat.pow(alpha / 2)) @ vec.T, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_fn.eigenvalues.double(), lam_hat, rtol=1e-6, atol=1e-7)
