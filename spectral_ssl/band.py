"""The gradient-norm spectral band of InfoNCE: exact per-anchor gradient norms and reference bounds.

For anchor ``u`` (unit vector), positive ``v`` and negatives ``n_1..n_K`` (unit vectors), with logits ``u·x/τ``:

- exact identity: ``‖∂L/∂u‖² = ((1 − p)²/τ²) · ‖v − m‖²``, where ``p`` is the softmax probability of the positive,
  ``q_k = p_k / (1 − p)`` the conditional weights of the negatives and ``m = Σ_k q_k n_k``;
- reference band (docs/method.md, §Band and ambiguity A1: *the project's deterministic reference band, not the
  paper's constants*): with ``a = (1 − p)²/τ²``, ``μ`` and ``Σ̂`` the mean and (1/K) covariance of the
  negatives, ``λ1 = λ_max(Σ̂)``, ``K_eff = 1/‖q‖²`` and ``r = sqrt(λ1 · K / K_eff)``::

      a · max{(1 − v·m)₊², (1 − ‖μ‖ − r)₊²}  ≤  ‖∂L/∂u‖²  ≤  a · min{4, (‖v − μ‖ + r)²}

  It holds deterministically (containment 100 %); its terms are the paper's ingredients: alignment (p, v·m),
  temperature (1/τ²), anisotropy (λ1 = p_max · tr Σ̂) and finite-sample concentration (K / K_eff).

Everything runs under ``no_grad`` in float64 (float32 on MPS); inputs are re-normalised after a unit-norm check.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spectral_ssl.spectral import _spectral_dtype, small_eigvalsh

UNIT_TOLERANCE = 1e-2  # bf16 unit vectors are off by up to ~4e-3


@dataclass
class BandResult:
    """Per-anchor band. Tensors have one entry per anchor (``lambda_max``/``trace`` are 0-dim when negatives are
    shared). ``containment`` is the share of anchors with ``lower <= measured <= upper``. ``lambda_max`` is the
    value the upper bound used: exact for ``gradient_band`` and ``infonce_band(exact=True)``; by default
    ``infonce_band`` uses the bound (N/K)·λ1 of the whole batch, which overstates each anchor's λ_max by a few
    per cent at small batches (14 % at B = 8)."""

    measured: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    containment: float
    p_pos: torch.Tensor
    k_eff: torch.Tensor
    lambda_max: torch.Tensor
    trace: torch.Tensor

    def summary(self) -> dict[str, float]:
        """Batch means for logging."""
        return {
            "measured_mean": float(self.measured.mean()),
            "lower_mean": float(self.lower.mean()),
            "upper_mean": float(self.upper.mean()),
            "containment": self.containment,
            "p_pos_mean": float(self.p_pos.mean()),
            "k_eff_mean": float(self.k_eff.mean()),
            "lambda_max": float(self.lambda_max.mean()),
            "trace": float(self.trace.mean()),
        }


def _unit(x: torch.Tensor, name: str, dtype: torch.dtype) -> torch.Tensor:
    x = x.detach().to(dtype)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} has non-finite values.")
    dev = (x.norm(dim=-1) - 1).abs().max() if x.numel() else 0.0
    if dev > UNIT_TOLERANCE:
        raise ValueError(f"{name} must be L2-normalised unit vectors (max |‖x‖ − 1| = {float(dev):.3g}); "
                         "apply torch.nn.functional.normalize(x, dim=-1) first.")
    return x / x.norm(dim=-1, keepdim=True)


def _check_temperature(temperature: float) -> float:
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}.")
    return float(temperature)


def _band(u, v, neg_logits, negatives, mu, lambda_max, trace, k, temperature) -> BandResult:
    """Core: ``neg_logits`` (A, K') logits of the negatives (``-inf`` where a column is not a negative of that
    anchor), ``negatives`` (K', D) shared matrix or (A, K', D), ``mu`` (A, D) or (D,), ``lambda_max``/``trace`` the
    spectrum of each anchor's negatives, ``k`` their count."""
    pos_logit = (u * v).sum(-1) / temperature
    one_minus_p = torch.sigmoid(torch.logsumexp(neg_logits, dim=1) - pos_logit)  # 1 − p, accurate when p → 1
    q = torch.softmax(neg_logits, dim=1)  # conditional weights over the negatives
    m = q @ negatives if negatives.ndim == 2 else torch.einsum("ak,akd->ad", q, negatives)
    k_eff = 1.0 / (q * q).sum(1)
    a = one_minus_p**2 / temperature**2
    measured = a * (v - m).pow(2).sum(1)
    r = torch.sqrt(lambda_max.clamp_min(0) * k / k_eff)
    align = (1 - (v * m).sum(1)).clamp_min(0) ** 2
    spread = (1 - mu.norm(dim=-1) - r).clamp_min(0) ** 2
    lower = a * torch.maximum(align, spread)
    upper = a * torch.clamp(((v - mu).norm(dim=-1) + r) ** 2, max=4.0)
    tol = 1e-6 * measured.abs() + 1e-12
    contained = (lower <= measured + tol) & (measured <= upper + tol)
    return BandResult(measured, lower, upper, float(contained.double().mean()), 1 - one_minus_p, k_eff, lambda_max,
                      trace)


def _moments(second: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """λ_max and trace of ``second − mean meanᵀ`` (batched)."""
    cov = second - mean.unsqueeze(-1) * mean.unsqueeze(-2)
    eig = small_eigvalsh(cov)
    return eig[..., -1], eig.sum(-1)


@torch.no_grad()
def gradient_band(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                  temperature: float) -> BandResult:
    """Per-anchor squared InfoNCE gradient w.r.t. the normalised anchor (the row's own loss, docs/method.md,
    ambiguity A6), and its deterministic reference bounds (ambiguity A7).

    Args:
        anchors: (B, D) unit vectors u_i.
        positives: (B, D) unit vectors v_i.
        negatives: (K, D) unit vectors shared by all anchors (e.g. a MoCo queue), or (B, K, D) per anchor.
        temperature: τ > 0.

    Returns:
        BandResult with ``measured``, ``lower``, ``upper`` (B,) in float64 and the spectral terms used.
    """
    tau = _check_temperature(temperature)
    if anchors.ndim != 2 or positives.shape != anchors.shape:
        raise ValueError(f"anchors and positives must both be (B, D), got {tuple(anchors.shape)} and "
                         f"{tuple(positives.shape)}.")
    b, d = anchors.shape
    if not (negatives.ndim == 2 and negatives.shape[1] == d) and not (
            negatives.ndim == 3 and negatives.shape[0] == b and negatives.shape[2] == d):
        raise ValueError(f"negatives must be (K, {d}) or ({b}, K, {d}), got {tuple(negatives.shape)}.")
    if negatives.shape[-2] < 1:
        raise ValueError("the band needs at least one negative.")
    dtype = _spectral_dtype(anchors.device)
    u, v = _unit(anchors, "anchors", dtype), _unit(positives, "positives", dtype)
    n = _unit(negatives, "negatives", dtype)
    k = n.shape[-2]
    mu = n.mean(dim=-2)
    second = n.transpose(-1, -2) @ n / k
    lambda_max, trace = _moments(second, mu)
    if n.ndim == 2:
        neg_logits = u @ n.T / tau
    else:
        neg_logits = torch.einsum("bd,bkd->bk", u, n) / tau
    return _band(u, v, neg_logits, n, mu, lambda_max, trace, k, tau)


@torch.no_grad()
def infonce_band(z1: torch.Tensor, z2: torch.Tensor, temperature: float, exact: bool = False) -> BandResult:
    """The band of an NT-Xent (SimCLR) batch: 2B anchors (both views), K = 2B − 2 negatives each.

    Anchor ``i`` is row i of ``[z1; z2]``, its positive is the other view of the same image and its negatives are the
    other 2B − 2 rows. ``measured``, ``p_pos``, ``k_eff`` and ``trace`` are exact (each anchor's negatives are a
    rank-2 downdate of the batch, so the (2B, 2B − 2, D) tensor is never built).

    ``lambda_max`` of an anchor's negatives: with ``exact=True`` one eigen-solve per anchor (2B solves; the
    reference, slow); by default the bound ``λ1(Σ̂_i) ≤ (N/K)·λ1(Σ̂_batch)`` with N = 2B, from a single solve:
    removing vectors never grows the scatter about the batch mean, and scatter about the own mean is smaller
    still. The band only widens when λ1 grows, so containment stays guaranteed; it is looser by at most a factor
    sqrt(N/K) = sqrt(B/(B − 1)) in its spectral term.

    Args:
        z1: (B, D) unit vectors of the first views.
        z2: (B, D) unit vectors of the second views.
        temperature: τ > 0.
        exact: Solve each anchor's covariance exactly (tests, small batches).
    """
    tau = _check_temperature(temperature)
    if z1.ndim != 2 or z1.shape != z2.shape or z1.shape[0] < 2:
        raise ValueError(f"z1 and z2 must be (B, D) with the same shape and B >= 2, got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}.")
    dtype = _spectral_dtype(z1.device)
    z = torch.cat([_unit(z1, "z1", dtype), _unit(z2, "z2", dtype)])  # (2B, D)
    n_all, b = z.shape[0], z1.shape[0]
    rows = torch.arange(n_all, device=z.device)
    pos = (rows + b) % n_all
    u, v = z, z[pos]
    k = n_all - 2
    neg_logits = z @ z.T / tau
    neg_logits[rows, rows] = float("-inf")
    neg_logits[rows, pos] = float("-inf")
    mu = (z.sum(0, keepdim=True) - u - v) / k  # (2B, D)
    if exact:
        second = (z.T @ z).unsqueeze(0) - u.unsqueeze(2) * u.unsqueeze(1) - v.unsqueeze(2) * v.unsqueeze(1)
        lambda_max, trace = _moments(second / k, mu)
    else:
        batch_lambda_max, _ = _moments(z.T @ z / n_all, z.mean(0))
        lambda_max = (n_all / k) * batch_lambda_max.expand(n_all)
        trace = (z.pow(2).sum() - u.pow(2).sum(1) - v.pow(2).sum(1)) / k - mu.pow(2).sum(1)
    return _band(u, v, neg_logits, z, mu, lambda_max, trace, k, tau)
