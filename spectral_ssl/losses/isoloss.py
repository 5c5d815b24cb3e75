"""IsoLoss: the closed-form eigen-predictor with an isotropic loss (no EMA target needed).

Reference: Halvagal, Laborieux and Zenke, "Implicit variance regularization in non-contrastive SSL", NeurIPS 2023;
official code fmi-basel/implicit-var-reg (``solo/methods/directpred.py``, ``solo/losses/isoloss.py``);
docs/method.md, §Losses.
"""

from __future__ import annotations

import torch
from torch import nn

from spectral_ssl import dist
from spectral_ssl.finite_watch import keep_if_finite
from spectral_ssl.losses._validation import (
    check_dim,
    check_gather,
    check_pair,
    check_targets,
    check_unit_interval,
    fp32,
    full_precision,
    is_real,
)

METRICS = ("cos", "euc")
_TINY = 1e-8  # guards ‖p‖ (W_P has eigenvalues down to 0) and λ_max (0 for an all-zero C; the official code lacks it)


class IsoLoss(nn.Module):
    """Isotropic loss with the closed-form linear predictor ``W_P = U diag(λ̂^α) Uᵀ``.

    ``C`` (buffer ``corr``) is an EMA of the uncentred correlation ``ZᵀZ/N`` of the detached online projections,
    updated once per view in training mode from the projections of every process (so all ranks share one C);
    ``λ̂ = max(λ, 0)/λ_max + eps``. With ``p = z W_P`` the isotropic losses are built so that
    ``∇_z L_iso = ∇_p L_plain`` (the plain loss's error signal without the extra W_P factor):

    - ``metric="euc"``: ``‖z − SG(z' + z − p)‖²`` (value ``‖p − z'‖²``);
    - ``metric="cos"``: ``−2·[⟨z, SG(z')⟩/SG(‖p‖‖z'‖) − ½·SG(⟨p, z'⟩/(‖p‖³‖z'‖))·‖z W_P^½‖²]`` (no "+2").

    z' is the other view's target: the EMA network's projection when ``ema=True`` (the recipe passes ``targets``),
    the detached online projection otherwise. Both orderings are summed, mean over the batch, as in the official
    code. Eigendecompositions run in float64 (``eigh``).

    Args:
        dim: Projection dimension D (256 in the paper).
        alpha: Predictor exponent α (0.5 = IsoLoss/DirectPred; 1 with eps 0.25 = DirectCopy).
        eps: ε added to the normalised eigenvalues (0 for IsoLoss).
        corr_momentum: ρ of the correlation EMA; ``None`` = the official default, 0.998 with an EMA target, 0.5
            without.
        metric: ``"cos"`` or ``"euc"``.
        ema: Whether the method runs with an EMA target network (sets ``uses_target`` for the recipe; the EMA then
            follows ``default_momentum``, cosine from 0.99 to 1 as in the official configs).
        gather_distributed: Update C from the projections of all processes.
    """

    uses_target = False  # per instance: ``ema``
    default_momentum = (0.99, 1.0)

    def __init__(self, dim: int, alpha: float = 0.5, eps: float = 0.0, corr_momentum: float | None = None,
                 metric: str = "cos", ema: bool = False, gather_distributed: bool = False) -> None:
        super().__init__()
        self.dim = check_dim("dim", dim)
        if not is_real(alpha) or not 0 < alpha <= 2:
            raise ValueError(f"alpha must be in (0, 2], got {alpha!r}; IsoLoss uses 0.5, DirectCopy 1.")
        if not is_real(eps) or eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}; IsoLoss uses 0, DirectCopy 0.25.")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}.")
        if not isinstance(ema, bool):
            raise ValueError(f"ema must be True or False, got {ema!r}.")
        self.alpha, self.eps, self.metric = float(alpha), float(eps), metric
        self.corr_momentum = check_unit_interval("corr_momentum", corr_momentum if corr_momentum is not None
                                                 else (0.998 if ema else 0.5), "0.998 with EMA, 0.5 without")
        self.uses_target = ema
        self.gather_distributed = check_gather(gather_distributed)
        self.register_buffer("corr", torch.zeros(dim, dim))
        self.register_buffer("eigenvalues", torch.zeros(dim))  # λ̂ of the last predictor, for logging

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, alpha={self.alpha}, eps={self.eps}, corr_momentum={self.corr_momentum}, "
                f"metric={self.metric}, ema={self.uses_target}")

    @torch.no_grad()
    def update_correlation(self, *views: torch.Tensor) -> None:
        """``C ← ρC + (1 − ρ) ZᵀZ/N`` for each view in turn, from detached projections (gathered), in float32 or
        better; all or nothing: a non-finite value in any view leaves C as it was."""
        corr = self.corr
        for z in views:
            z = z.detach().to(self.corr.dtype)
            if self.gather_distributed:
                z = dist.gather(z, differentiable=False)
            z = z / z.shape[0] ** 0.5
            corr = self.corr_momentum * corr + (1 - self.corr_momentum) * (z.T @ z)
        self.corr.copy_(keep_if_finite(corr, self.corr))

    def predictor(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_P, W_P^½), D×D constants from the current C."""
        lam, vec = torch.linalg.eigh(self.corr.double())
        lam = lam.clamp(min=0)
        top = lam.max()
        # no estimate yet (C = 0: before the first training call, e.g. evaluating a fresh loss): act as C = I, the
        # isotropic predictor, instead of W_P = 0 (p = 0, a loss of ~1e8); decided on the device, no sync
        lam_hat = torch.where(top > 0, lam / (top + _TINY), torch.ones_like(lam)) + self.eps
        self.eigenvalues.copy_(lam_hat.to(self.eigenvalues.dtype))
        w = (vec * lam_hat.pow(self.alpha)) @ vec.T
        w_sqrt = (vec * lam_hat.pow(self.alpha / 2)) @ vec.T
        return w.to(self.corr.dtype), w_sqrt.to(self.corr.dtype)

    def _pair(self, z: torch.Tensor, target: torch.Tensor, w: torch.Tensor, w_sqrt: torch.Tensor) -> torch.Tensor:
        p = z @ w
        target = target.detach()
        if self.metric == "euc":
            return (z - (target + z - p).detach()).pow(2).sum(1).mean()
        p_norm, t_norm = p.norm(dim=1).clamp_min(_TINY), target.norm(dim=1).clamp_min(_TINY)
        first = (z * target).sum(1) / (p_norm * t_norm).detach()
        coefficient = ((p * target).sum(1) / (p_norm.pow(3) * t_norm)).detach()
        second = 0.5 * coefficient * (z @ w_sqrt).pow(2).sum(1)
        return (-2 * (first - second)).mean()

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, index: torch.Tensor | None = None,
                targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """z1, z2: (B, D) online projections (not normalised: the predictor acts on raw z); targets: (t1, t2)."""
        check_pair(z1, z2, self.dim)
        check_targets(targets, z1)
        z1, z2, t1, t2 = fp32(z1, z2, *(targets if targets is not None else (z1, z2)))  # one dtype
        if self.training:
            self.update_correlation(z1, z2)
        w, w_sqrt = (m.to(z1.dtype) for m in self.predictor())
        with full_precision(z1):
            return self._pair(z1, t2, w, w_sqrt) + self._pair(z2, t1, w, w_sqrt)
