import pytest
import torch
import torch.nn.functional as F

from spectral_ssl import gradient_band
from spectral_ssl.band import infonce_band


def power_law_cloud(n: int, d: int, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """Unit vectors from a Gaussian with covariance eigenvalues k^(-alpha) in a random basis."""
    scales = torch.arange(1, d + 1, dtype=torch.float64) ** (-alpha / 2)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return F.normalize((torch.randn(n, d, generator=generator, dtype=torch.float64) * scales) @ basis.T, dim=1)


def autograd_grad_norms(u, v, negatives, tau):
    """‖∂L_i/∂u_i‖² by autograd, with u_i a free vector and L_i = −log softmax over [positive, negatives]."""
    u = u.clone().requires_grad_(True)
    if negatives.ndim == 2:
        neg = u @ negatives.T
    else:
        neg = torch.einsum("bd,bkd->bk", u, negatives)
    logits = torch.cat([(u * v).sum(1, keepdim=True), neg], dim=1) / tau
    loss = -torch.log_softmax(logits, dim=1)[:, 0].sum()  # rows are independent: grad of the sum = per-row grads
    (g,) = torch.autograd.grad(loss, u)
    return g.pow(2).sum(1)


def batch(b=48, k=96, d=32, alpha=1.0, seed=0, per_anchor=False):
    g = torch.Generator().manual_seed(seed)
    u = power_law_cloud(b, d, alpha, g)
    v = F.normalize(u + 0.6 * torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    n = power_law_cloud(b * k if per_anchor else k, d, alpha, g)
    return u, v, (n.view(b, k, d) if per_anchor else n)


@pytest.mark.parametrize("per_anchor", [False, True])
@pytest.mark.parametrize("tau", [0.05, 0.2, 1.0])
def test_identity_matches_autograd_in_float64(per_anchor, tau):
    u, v, n = batch(per_anchor=per_anchor)
    res = gradient_band(u, v, n, tau)
    torch.testing.assert_close(res.measured, autograd_grad_norms(u, v, n, tau), rtol=0, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("tau", [0.05, 0.1, 0.2, 0.5])
def test_full_containment_across_temperatures_and_spectra(alpha, tau):
    u, v, n = batch(b=64, k=126, d=64, alpha=alpha, seed=int(alpha * 10 + tau * 100))
    res = gradient_band(u, v, n, tau)
    assert res.containment == 1.0
    assert bool((res.lower <= res.upper).all())
    assert bool((res.lower > 0).any())  # the band is not trivially [0, 4a]


def test_spectral_terms_match_direct_computation():
    u, v, n = batch()
    res = gradient_band(u, v, n, 0.2)
    cov = torch.cov(n.T, correction=0)
    assert res.lambda_max.item() == pytest.approx(torch.linalg.eigvalsh(cov)[-1].item(), rel=1e-9)
    assert res.trace.item() == pytest.approx((1 - n.mean(0).pow(2).sum()).item(), rel=1e-9)
    assert bool(((res.k_eff >= 1) & (res.k_eff <= n.shape[0] + 1e-9)).all())


def test_tau_squared_scaled_identity():
    u, v, n = batch()
    for tau in (0.1, 0.5):
        res = gradient_band(u, v, n, tau)
        logits = torch.cat([(u * v).sum(1, keepdim=True), u @ n.T], dim=1) / tau
        p = torch.softmax(logits, 1)
        m = (p[:, 1:] / (1 - p[:, :1])) @ n
        torch.testing.assert_close(tau**2 * res.measured, (1 - p[:, 0]) ** 2 * (v - m).pow(2).sum(1))


def test_infonce_band_equals_per_anchor_reference():
    g = torch.Generator().manual_seed(3)
    z1 = power_law_cloud(12, 16, 1.0, g)
    z2 = F.normalize(z1 + 0.5 * torch.randn(12, 16, generator=g, dtype=torch.float64), dim=1)
    tau = 0.2
    res = infonce_band(z1, z2, tau, exact=True)
    z = torch.cat([z1, z2])
    pos = (torch.arange(24) + 12) % 24
    negatives = torch.stack([z[[j for j in range(24) if j not in (i, int(pos[i]))]] for i in range(24)])
    ref = gradient_band(z, z[pos], negatives, tau)
    for field in ("measured", "lower", "upper", "lambda_max", "trace", "k_eff", "p_pos"):
        torch.testing.assert_close(getattr(res, field), getattr(ref, field), rtol=1e-9, atol=1e-12)
    # and the measured values are each anchor's own-row gradient norms in the NT-Xent matrix
    torch.testing.assert_close(res.measured, autograd_grad_norms(z, z[pos], negatives, tau), rtol=0, atol=1e-6)
    assert res.containment == 1.0


def test_bf16_unit_vectors_are_accepted():
    z1 = F.normalize(torch.randn(16, 32), dim=1).bfloat16()
    z2 = F.normalize(torch.randn(16, 32), dim=1).bfloat16()
    res = infonce_band(z1, z2, 0.1)
    assert res.measured.dtype == torch.float64 and res.containment == 1.0


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_non_positive_temperature_raises(tau):
    u, v, n = batch()
    with pytest.raises(ValueError, match="temperature"):
        gradient_band(u, v, n, tau)


def test_bad_inputs_raise_clear_errors():
    u, v, n = batch()
    with pytest.raises(ValueError, match="L2-normalised"):
        gradient_band(3 * u, v, n, 0.2)
    with pytest.raises(ValueError, match="negatives must be"):
        gradient_band(u, v, n[:, :5], 0.2)
    with pytest.raises(ValueError, match="anchors and positives"):
        gradient_band(u, v[:3], n, 0.2)


def test_default_infonce_band_bounds_lambda_and_stays_valid():
    g = torch.Generator().manual_seed(4)
    for alpha in (0.0, 1.0, 2.0):
        z1 = power_law_cloud(32, 24, alpha, g)
        z2 = F.normalize(z1 + 0.4 * torch.randn(32, 24, generator=g, dtype=torch.float64), dim=1)
        exact, fast = infonce_band(z1, z2, 0.1, exact=True), infonce_band(z1, z2, 0.1)
        torch.testing.assert_close(fast.measured, exact.measured)
        torch.testing.assert_close(fast.trace, exact.trace)
        assert bool((fast.lambda_max >= exact.lambda_max - 1e-12).all())
        assert bool((fast.lambda_max <= exact.lambda_max * 64 / 62 * 1.5 + 1e-12).all())  # bound is not vacuous
        assert bool((fast.lower <= exact.lower + 1e-12).all()) and bool((fast.upper >= exact.upper - 1e-12).all())
        assert fast.containment == 1.0


def reference_band(u, v, n, tau):
    """The module docstring's band, one anchor at a time in numpy float64 (n: (K, D) shared or (B, K, D))."""
    import numpy as np
    u, v, n = u.numpy(), v.numpy(), n.numpy()
    out = {key: [] for key in ("measured", "lower", "upper", "p_pos", "k_eff", "lambda_max")}
    for i in range(len(u)):
        neg = n if n.ndim == 2 else n[i]
        k = len(neg)
        logits = np.concatenate([[u[i] @ v[i]], neg @ u[i]]) / tau
        e = np.exp(logits - logits.max())
        p = e[0] / e.sum()
        q = e[1:] / e[1:].sum()
        m = q @ neg
        a = (1 - p) ** 2 / tau**2
        mu = neg.mean(0)
        lam1 = np.linalg.eigvalsh((neg - mu).T @ (neg - mu) / k)[-1]
        k_eff = 1 / (q @ q)
        r = np.sqrt(max(lam1, 0) * k / k_eff)
        align = max(1 - v[i] @ m, 0) ** 2
        spread = max(1 - np.linalg.norm(mu) - r, 0) ** 2
        for key, value in (("measured", a * np.sum((v[i] - m) ** 2)), ("lower", a * max(align, spread)),
                           ("upper", a * min(4.0, (np.linalg.norm(v[i] - mu) + r) ** 2)), ("p_pos", p),
                           ("k_eff", k_eff), ("lambda_max", lam1)):
            out[key].append(value)
    return {key: torch.tensor(np.array(values)) for key, values in out.items()}


def concentrated_batch(seed=0, b=8, k=40, d=16):
    """Per-anchor negatives clustered round e1 and, for half the anchors, positives near −e1 (‖v − μ‖ + r > 2: the
    upper bound's cap at 4 binds); the other half aligned with the cluster."""
    g = torch.Generator().manual_seed(seed)
    e1 = torch.zeros(d, dtype=torch.float64)
    e1[0] = 1
    n = F.normalize(e1 + 0.15 * torch.randn(b, k, d, generator=g, dtype=torch.float64), dim=-1)
    u = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    v = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    v[: b // 2] = F.normalize(-e1 + 0.05 * torch.randn(b // 2, d, generator=g, dtype=torch.float64), dim=1)
    u[b // 2:] = F.normalize(e1 + 0.1 * torch.randn(b - b // 2, d, generator=g, dtype=torch.float64), dim=1)
    v[b // 2:] = F.normalize(u[b // 2:] + 0.02 * torch.randn(b - b // 2, d, generator=g, dtype=torch.float64), dim=1)
    return u, v, n


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_band_equals_the_docstring_formula_per_anchor(tau):
    for u, v, n in (batch(b=6, k=20, d=8), batch(b=6, k=20, d=8, per_anchor=True), concentrated_batch()):
        res = gradient_band(u, v, n, tau)
        ref = reference_band(u, v, n, tau)
        for field in ("measured", "lower", "upper", "p_pos", "k_eff"):
            torch.testing.assert_close(getattr(res, field), ref[field], rtol=1e-9, atol=1e-12, msg=field)
        torch.testing.assert_close(res.lambda_max.expand(len(u)), ref["lambda_max"], rtol=1e-9, atol=1e-12)
    # the case the concentrated batch is for does occur: the cap at 4a decides the upper bound
    u, v, n = concentrated_batch()
    res = gradient_band(u, v, n, 0.5)
    a = (1 - res.p_pos) ** 2 / 0.25
    assert bool(torch.isclose(res.upper, 4 * a, rtol=1e-12).any())


def test_band_renormalises_inputs_within_the_unit_tolerance():
    u, v, n = batch(b=6, k=20, d=8)
    exact = gradient_band(u, v, n, 0.2)
    off = gradient_band(u * 1.004, v * 0.996, n * 1.003, 0.2)  # |‖x‖ − 1| < 1e-2: accepted and re-normalised
    for field in ("measured", "lower", "upper", "p_pos", "k_eff", "lambda_max", "trace"):
        torch.testing.assert_close(getattr(off, field), getattr(exact, field), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="L2-normalised"):
        gradient_band(u * 1.02, v, n, 0.2)  # outside the 1e-2 tolerance


def test_containment_counts_both_bounds_with_a_tight_tolerance():
    # the private core fed a deliberately inconsistent spectrum, so that one bound fails by a known margin
    from spectral_ssl.band import _band
    u, v, n = batch(b=1, k=20, d=8)
    tau = 0.2
    logits = u @ n.T / tau
    res = _band(u, v, logits, n, n.mean(0), torch.zeros(()), torch.zeros(()), 20, tau)
    q = torch.softmax(logits, 1)
    m = q @ n
    dist_m = (v - m).norm()
    assert res.containment == float(res.lower <= res.measured <= res.upper)

    def containment(lambda_max, mu):
        return _band(u, v, logits, n, mu, lambda_max, torch.zeros(()), 20, tau).containment

    k_eff = 1 / (q * q).sum()
    # μ = v: upper = a·r² = a·λ·K/K_eff, placed 1e-3 (relative) below / above the measured a‖v − m‖² (the lower
    # bound, a(1 − v·m)², stays below it: ‖v − m‖ >= v·(v − m))
    for factor, expected in ((1 - 1e-3, 0.0), (1 + 1e-3, 1.0)):
        assert containment(dist_m**2 * factor * k_eff / 20, v[0]) == expected
    # μ = 0 and λ = 0: the spread term makes lower = a > measured (‖v − m‖ < 1 here)
    assert dist_m < 1
    assert containment(torch.zeros(()), torch.zeros(8, dtype=torch.float64)) == 0.0


def test_default_infonce_band_uses_n_over_k_times_the_batch_covariance_lambda():
    # docstring: λ1(Σ̂_i) <= (N/K)·λ1(Σ̂_batch) with Σ̂_batch the (1/N) covariance about the batch mean; a batch with
    # a large mean tells it apart from the uncentred second moment
    g = torch.Generator().manual_seed(5)
    z1 = F.normalize(power_law_cloud(10, 12, 1.0, g) + 1.5, dim=1)
    z2 = F.normalize(z1 + 0.3 * torch.randn(10, 12, generator=g, dtype=torch.float64), dim=1)
    z = torch.cat([z1, z2])
    expected = 20 / 18 * torch.linalg.eigvalsh(torch.cov(z.T, correction=0))[-1]
    torch.testing.assert_close(infonce_band(z1, z2, 0.2).lambda_max, expected.expand(20), rtol=1e-10, atol=0)
