import numpy as np
import pytest
import torch

from spectral_ssl import effective_rank, spectrum_stats
from spectral_ssl.spectral import covariance_eigenvalues


def isotropic(d: int) -> torch.Tensor:
    """±e_i: exactly isotropic centred covariance (I/d)."""
    eye = torch.eye(d, dtype=torch.float64)
    return torch.cat([eye, -eye])


def random_rotation(d: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


@pytest.mark.parametrize("d", [2, 8, 64])
def test_isotropic_cloud_has_full_rank_for_cov_and_pr(d):
    z = isotropic(d)
    assert effective_rank(z, "cov").item() == pytest.approx(d, rel=1e-10)
    assert effective_rank(z, "pr").item() == pytest.approx(d, rel=1e-10)


def test_rank_one_data_has_rank_one():
    direction = torch.randn(16, dtype=torch.float64)
    z = torch.randn(50, 1, dtype=torch.float64) * direction
    assert effective_rank(z, "cov").item() == pytest.approx(1.0, abs=1e-8)
    assert effective_rank(z, "pr").item() == pytest.approx(1.0, abs=1e-8)


def test_closed_form_on_a_known_diagonal_spectrum():
    lam = torch.tensor([4.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    z = isotropic(4) * torch.cat([lam, lam]).sqrt()[:, None]  # rows ±sqrt(λ_i) e_i: covariance diag(λ)/4
    p = lam / lam.sum()
    assert effective_rank(z, "cov").item() == pytest.approx(torch.exp(-(p * p.log()).sum()).item(), rel=1e-10)
    assert effective_rank(z, "pr").item() == pytest.approx((lam.sum() ** 2 / (lam**2).sum()).item(), rel=1e-10)


def test_invariant_to_scale_rotation_and_row_order():
    z = torch.randn(200, 32, dtype=torch.float64) * torch.linspace(0.1, 2, 32, dtype=torch.float64)
    base = {e: effective_rank(z, e).item() for e in ("cov", "pr", "rankme")}
    perm = torch.randperm(200)
    for e in ("cov", "pr", "rankme"):
        assert effective_rank(7.5 * z, e).item() == pytest.approx(base[e], rel=1e-6)
        assert effective_rank(z[perm], e).item() == pytest.approx(base[e], rel=1e-9)
    rotated = z @ random_rotation(32)
    for e in ("cov", "pr"):  # centred spectra are rotation invariant; RankMe's singular values too
        assert effective_rank(rotated, e).item() == pytest.approx(base[e], rel=1e-9)
    assert effective_rank(rotated, "rankme").item() == pytest.approx(base["rankme"], rel=1e-9)


def test_cov_estimator_is_below_roy_vetterli_on_singular_values():
    z = torch.randn(300, 16, dtype=torch.float64) * torch.logspace(0, -2, 16, dtype=torch.float64)
    sigma = torch.linalg.svdvals(z - z.mean(0))
    p = sigma / sigma.sum()
    rv_sigma = torch.exp(-(p * p.log()).sum()).item()
    assert effective_rank(z, "cov").item() < rv_sigma


def test_rankme_matches_numpy_reference():
    z = torch.randn(40, 12, dtype=torch.float64) + 0.5
    s = np.linalg.svd(z.numpy(), compute_uv=False)
    p = s / s.sum() + 1e-7
    expected = np.exp(-(p * np.log(p)).sum())
    assert effective_rank(z, "rankme", eps=1e-7).item() == pytest.approx(expected, rel=1e-10)


def test_rankme_default_eps_is_the_papers_1e7():
    # known singular values: two large, thirty at 1e-5. Their shares p ~ 6e-6 are close enough to eps that the
    # default matters: RankMe's 1e-7 and the old 1e-12 differ by ~2e-5 relative, far above the rounding (~1e-12).
    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(64, 32, dtype=torch.float64, generator=g)).Q
    v = torch.linalg.qr(torch.randn(32, 32, dtype=torch.float64, generator=g)).Q
    sigma = torch.cat([torch.tensor([1.0, 0.7], dtype=torch.float64), torch.full((30,), 1e-5, dtype=torch.float64)])
    z = u @ torch.diag(sigma) @ v.T

    def reference(eps):
        p = sigma / sigma.sum() + eps
        return torch.exp(-(p * p.log()).sum()).item()

    assert abs(reference(1e-7) / reference(1e-12) - 1) > 1e-5  # the two defaults are distinguishable here
    assert effective_rank(z, "rankme").item() == pytest.approx(reference(1e-7), rel=1e-9)
    assert effective_rank(z, "rankme", eps=1e-12).item() == pytest.approx(reference(1e-12), rel=1e-9)


def test_cov_default_eps_drops_only_numerical_zeros():
    z = torch.randn(50, 3, dtype=torch.float64) @ torch.randn(3, 20, dtype=torch.float64)  # rank 3 in 20 dims
    lam = torch.linalg.eigvalsh(torch.cov(z.T, correction=0)).clamp_min(0)
    p = lam / lam.sum()
    p = p[p > 1e-9]  # the three real eigenvalues
    expected = torch.exp(-(p * p.log()).sum()).item()
    assert effective_rank(z, "cov").item() == pytest.approx(expected, rel=1e-9)
    assert effective_rank(z, "cov").item() == effective_rank(z, "cov", eps=1e-12).item()
    # a threshold above the smallest real eigenvalue's share drops it: the estimate falls
    assert effective_rank(z, "cov", eps=float(p.min()) * 1.01).item() < effective_rank(z, "cov").item() - 1e-3
    assert effective_rank(z, "pr", eps=0.5).item() == effective_rank(z, "pr").item()  # unused by "pr"
    with pytest.raises(ValueError, match="eps must be"):
        effective_rank(z, "rankme", eps=-1e-7)


def test_gram_path_equals_covariance_path():
    z = torch.randn(10, 40, dtype=torch.float64)  # N < D: Gram route
    lam = covariance_eigenvalues(z)
    zc = z - z.mean(0)
    ref = torch.linalg.eigvalsh(zc.T @ zc / 10).flip(0)[:10].clamp_min(0)
    torch.testing.assert_close(lam, ref, rtol=1e-9, atol=1e-12)
    assert effective_rank(z, "cov").item() <= 9 + 1e-9  # rank of centred N rows is at most N - 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_input_is_upcast(dtype):
    z = torch.randn(128, 16)
    out = effective_rank(z.to(dtype), "cov")
    assert out.dtype == torch.float64
    assert out.item() == pytest.approx(effective_rank(z.to(dtype).float(), "cov").item(), rel=1e-9)


def test_non_finite_wrong_shape_and_unknown_estimator_raise():
    z = torch.randn(8, 4)
    z[1, 2] = float("nan")
    z[3, 0] = float("inf")
    with pytest.raises(ValueError, match="2 non-finite"):
        effective_rank(z)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        effective_rank(torch.randn(8))
    with pytest.raises(ValueError, match="unknown estimator"):
        effective_rank(torch.randn(8, 4), "entropy")
    with pytest.raises(ValueError, match="at least 2 samples"):
        effective_rank(torch.randn(1, 4))


def test_degenerate_spectra_give_zero():
    assert effective_rank(torch.ones(5, 3), "cov").item() == 0.0
    assert effective_rank(torch.zeros(5, 3), "rankme").item() == 0.0


def test_spectrum_stats_are_consistent():
    z = torch.nn.functional.normalize(torch.randn(256, 8, dtype=torch.float64) + 1.0, dim=1)
    st = spectrum_stats(z)
    assert st["trace"].item() == pytest.approx(1 - st["mean_norm2"].item(), rel=1e-9)  # unit rows
    assert st["p_max"].item() >= 1 / st["reff_cov"].item() - 1e-12  # Shannon entropy >= min-entropy
    assert st["trace"] / st["reff_pr"] <= st["lambda_max"] + 1e-12 <= st["trace"] / st["reff_pr"].sqrt() + 1e-9


@pytest.mark.parametrize("estimator", ["cov", "rankme", "pr"])
def test_rank_is_scale_invariant_down_to_the_bit_and_at_extreme_scales(estimator):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(60, 10, generator=g, dtype=torch.float64) * torch.logspace(0, -3, 10, dtype=torch.float64)
    ref = effective_rank(z, estimator)
    assert 1.0 < ref < 10.0
    assert effective_rank(z * 2.0**-70, estimator) == ref  # an exact rescaling gives the same bits
    for scale in (1e200, 1e-200, 1e300):  # squares overflow / underflow float64 without the rescaling
        torch.testing.assert_close(effective_rank(z * scale, estimator), ref, rtol=1e-12, atol=0)


def test_spectrum_stats_keep_their_scale_at_extreme_scales():
    z = torch.randn(40, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    stats, big = spectrum_stats(z), spectrum_stats(z * 2.0**400)
    assert big["trace"] == stats["trace"] * 2.0**800 and big["lambda_max"] == stats["lambda_max"] * 2.0**800
    assert big["reff_cov"] == stats["reff_cov"] and big["p_max"] == stats["p_max"]


@pytest.mark.parametrize("estimator", ["cov", "rankme", "pr"])
@pytest.mark.parametrize("shape", [(0, 5), (5, 0)])
def test_empty_embeddings_are_refused_in_one_line(estimator, shape):
    with pytest.raises(ValueError, match=r"z is empty, shape \(\d, \d\)"):
        effective_rank(torch.zeros(shape), estimator)


@pytest.mark.parametrize("n,d,r", [(5, 9, 2), (64, 32, 2), (16, 64, 1)])
def test_rankme_of_rank_deficient_embeddings_equals_numpy_svd(n, d, r):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((n, r)) @ rng.standard_normal((r, d))
    s = np.linalg.svd(z, compute_uv=False)
    for eps in (1e-7, 0.0):
        p = s / s.sum() + eps
        p = p[p > 0]
        reference = float(np.exp(-(p * np.log(p)).sum()))
        assert float(effective_rank(torch.tensor(z), "rankme", eps=eps)) == pytest.approx(reference, rel=1e-12)
    if r == 1:  # one direction: RankMe 1 (it was 1.0000009 from the square roots of Gram eigenvalues)
        assert float(effective_rank(torch.tensor(z), "rankme", eps=0.0)) == pytest.approx(1.0, abs=1e-12)


def rank_three_in_sixteen(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 16, generator=g, dtype=torch.float64)


def test_covariance_eigenvalues_of_rank_deficient_data_are_clamped_at_zero():
    z = rank_three_in_sixteen()
    zc = z - z.mean(0)
    raw = torch.linalg.eigvalsh(zc.T @ zc / 64)
    assert bool((raw < 0).any())  # the solver's round-off does give negative eigenvalues here
    lam = covariance_eigenvalues(z)
    assert bool((lam >= 0).all()) and bool((lam[:-1] >= lam[1:]).all())
    torch.testing.assert_close(lam[:3], raw.flip(0)[:3], rtol=1e-10, atol=0)
    assert float(lam[3:].max()) <= 1e-12 * float(lam[0])


def test_cov_eps_zero_drops_exact_zero_shares():
    # eps=0: p_i <= 0 (the clamped zeros) are dropped, 0·log 0 = 0; the result is exp(H) of the three real shares
    z = rank_three_in_sixteen()
    lam = torch.linalg.eigvalsh(torch.cov(z.T, correction=0)).clamp_min(0)
    p = lam / lam.sum()
    p = p[p > 1e-9]
    expected = torch.exp(-(p * p.log()).sum()).item()
    assert effective_rank(z, "cov", eps=0.0).item() == pytest.approx(expected, rel=1e-9)


def test_cov_default_eps_keeps_a_small_real_eigenvalue():
    # rows (±1, ±b): centred covariance exactly diag(1, b²); with b = 1e-4 the share p2 = 1e-8/(1 + 1e-8) is real,
    # far above the 1e-12 numerical-zero threshold, and must enter the entropy: exp(H) = 1 + ~1.9e-7
    b = 1e-4
    z = torch.tensor([[1.0, b], [1.0, -b], [-1.0, b], [-1.0, -b]], dtype=torch.float64)
    p = np.array([1.0, b * b]) / (1 + b * b)
    expected = float(np.exp(-(p * np.log(p)).sum()))
    assert expected - 1 > 1e-7
    assert effective_rank(z, "cov").item() == pytest.approx(expected, rel=1e-12)
    assert spectrum_stats(z)["reff_cov"].item() == pytest.approx(expected, rel=1e-12)


def test_rankme_eps_zero_with_an_exact_zero_singular_value():
    # singular values exactly (2, 0): p = (1, 0) and 0·log 0 = 0, so RankMe is exactly 1 (not NaN)
    z = torch.tensor([[2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    assert torch.linalg.svdvals(z)[1].item() == 0.0
    assert effective_rank(z, "rankme", eps=0.0).item() == pytest.approx(1.0, abs=1e-15)


def test_participation_ratio_and_stats_of_a_zero_spectrum_are_zero():
    z = torch.ones(5, 3, dtype=torch.float64)
    assert effective_rank(z, "pr").item() == 0.0
    stats = spectrum_stats(z)
    for key in ("trace", "lambda_max", "p_max", "reff_cov", "reff_pr"):
        assert stats[key].item() == 0.0, key
