"""SogCLR: the global contrastive loss optimised with per-sample moving averages (small batches).

Reference: Yuan et al., "Provable Stochastic Optimization for Global Contrastive Learning: Small Batch Does Not Harm
Performance", ICML 2022; official code Optimization-AI/SogCLR and LibAUC ``GCLoss_v1``; docs/method.md, §Losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spectral_ssl import dist
from spectral_ssl.finite_watch import keep_if_finite
from spectral_ssl.losses._validation import (
    check_gather,
    check_pair,
    check_positive,
    check_unit_interval,
    fp32,
    full_precision,
    is_integer,
)

MIN_TEMPERATURE = 0.003  # the smallest τ whose float64 state cannot underflow (docstring)

class SogCLRLoss(nn.Module):
    """Global contrastive loss with the per-sample moving average ``u`` (a persistent buffer indexed by ``idx``).

    For anchor a of image i (both views act as anchors) with positive a⁺ and the 2(N−1) views of the other images of
    the global batch as negatives (N images across processes), the batch estimate is
    ``ĝ_a = mean_neg exp((s − 1)/τ)`` and ``u_a = (1 − γ)·u[i] + γ·ĝ_a`` (γ weights the new estimate; ``u[i] = 0``
    marks a first visit, which uses γ = 1 for that sample). The surrogate whose gradient is SogCLR's estimator is

        ℓ_a = −s(a, a⁺) + mean_neg SG(exp((s − 1)/τ) / u_a) · s

    and the loss is the mean over the 2B local anchors; then ``u[i] ← (u_a¹ + u_a²)/2`` for every image of the
    global batch (indices and estimates gathered, so every process holds the same ``u``).

    The shift by 1/τ (similarities are at most 1) cancels in the weights and keeps every exponential ≤ 1, and the
    state is float64, so small τ neither overflows nor underflows (τ ≥ 0.003). The value is a surrogate (it goes
    negative): log a method-independent monitor instead. At γ = 1 the gradient is exactly τ × the gradient of the
    decoupled InfoNCE (``DCLLoss``). The official code sums the two directions; this mean over anchors is half of
    it (a factor 2 in the learning rate).

    First-visit convention: the γ = 1 initialisation is decided *per sample* (``u[i] == 0``), whereas LibAUC's
    ``GCLoss_v1`` and the official PyTorch code use γ = 1 only when ``u`` is zero for the *whole batch*. The two agree
    when a batch is all new or all seen (epoch 0 of random batches); when new and seen samples share a batch
    (spectrum-aware selection defers samples; ``drop_last`` leaves some out of epoch 0), LibAUC starts a new sample
    at ``γ·ĝ`` (biased low by 1 − γ for one visit) where this starts it at ``ĝ``.

    Args:
        dataset_size: Number of rows N_data; ``index`` values must lie in ``[0, dataset_size)``.
        temperature: τ > 0 (0.1 in the official code).
        gamma: γ in (0, 1], the weight of the new batch estimate (0.9 in the official code; 1 = no memory).
        gather_distributed: Gather negatives and indices across processes (a no-op without a process group).
    """

    uses_target = False

    def __init__(self, dataset_size: int, temperature: float = 0.1, gamma: float = 0.9,
                 gather_distributed: bool = False) -> None:
        super().__init__()
        if not is_integer(dataset_size) or dataset_size < 2:
            raise ValueError(f"dataset_size must be the number of training rows (an integer >= 2), got "
                             f"{dataset_size!r}.")
        self.temperature = check_positive("temperature", temperature, "SogCLR uses 0.1")
        if self.temperature < MIN_TEMPERATURE:  # exp((s − 1)/τ) >= exp(−2/τ) underflows float64 below it: u = 0, 0/0
            raise ValueError(f"temperature must be >= {MIN_TEMPERATURE} (below it the float64 state underflows to "
                             f"0), got {temperature!r}; SogCLR uses 0.1.")
        self.gamma = check_unit_interval("gamma", gamma, "SogCLR uses 0.9")
        if self.gamma == 0:
            raise ValueError("gamma must be > 0 (gamma = 0 never updates u); SogCLR uses 0.9.")
        self.gather_distributed = check_gather(gather_distributed)
        self.register_buffer("u", torch.zeros(dataset_size, dtype=torch.float64))

    def extra_repr(self) -> str:
        return f"dataset_size={self.u.shape[0]}, temperature={self.temperature}, gamma={self.gamma}"

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, index: torch.Tensor | None = None,
                targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """z1, z2: (B, D) projections (normalised here); index: (B,) dataset indices of the images."""
        check_pair(z1, z2)
        if index is None:
            raise ValueError("SogCLR needs the dataset index of every sample (its per-sample state u is indexed by "
                             "it): call loss(z1, z2, index=batch['idx']).")
        index = torch.as_tensor(index)
        if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
            raise ValueError(f"index must hold integer dataset indices, got dtype {index.dtype}.")
        if index.shape != (z1.shape[0],):
            raise ValueError(f"index must have shape ({z1.shape[0]},), one dataset index per pair, got "
                             f"{tuple(index.shape)}.")
        # checked where it is (a CPU index, as the recipes pass it, costs a GPU run no host sync), then moved
        outside = (index < 0) | (index >= self.u.shape[0])
        if bool(outside.any()):
            raise ValueError(f"index {int(index[outside][0])} is outside [0, dataset_size={self.u.shape[0]}); pass "
                             "dataset_size = the number of training rows and an idx column numbering them 0..N-1.")
        index = index.to(self.u.device, torch.long, non_blocking=True)
        batch = z1.shape[0]
        local = F.normalize(torch.cat(fp32(z1, z2)), dim=1)  # (2B, D): [view 1; view 2]
        gathered = self.gather_distributed and dist.is_distributed()
        candidates, offset = (dist.gather(local), dist.rank() * 2 * batch) if gathered else (local, 0)
        total = candidates.shape[0]
        if total <= 2:
            raise ValueError("SogCLR needs negatives: a global batch of at least 2 images.")
        with full_precision(local):
            sim = local @ candidates.T  # (2B, W·2B)
        rows = torch.arange(2 * batch, device=local.device)
        positives = (rows + batch) % (2 * batch) + offset
        negative = torch.ones_like(sim, dtype=torch.bool)
        negative[rows, rows + offset] = False
        negative[rows, positives] = False
        with torch.no_grad():
            weights = torch.exp((sim.detach().double() - 1.0) / self.temperature) * negative
            estimate = weights.sum(1) / (total - 2)  # ĝ_a: mean over the 2(N−1) negatives
            previous = self.u[index].repeat(2).to(estimate.device)
            gamma = torch.where(previous > 0, torch.full_like(previous, self.gamma), torch.ones_like(previous))
            u = (1 - gamma) * previous + gamma * estimate  # (2B,) per direction
            coefficient = (weights / u[:, None] / (total - 2)).to(sim.dtype)
        loss = (-sim[rows, positives] + (coefficient * sim).sum(1)).mean()
        if self.training:
            with torch.no_grad():
                new = (u[:batch] + u[batch:]) / 2
                all_index, all_new = index, new
                if gathered:
                    all_index = dist.gather(index.to(local.device), differentiable=False).to(self.u.device)
                    all_new = dist.gather(new, differentiable=False)
                all_new = all_new.to(self.u.device, self.u.dtype)
                self.u[all_index] = keep_if_finite(all_new, self.u[all_index])
        return loss
