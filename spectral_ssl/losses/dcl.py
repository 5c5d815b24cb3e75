"""Decoupled contrastive loss (DCL / DCLW).

Reference: Yeh et al., "Decoupled Contrastive Learning", ECCV 2022 (arXiv 2110.06848); docs/method.md, §Losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spectral_ssl import dist
from spectral_ssl.losses._validation import check_gather, check_pair, check_positive, fp32, full_precision


class DCLLoss(nn.Module):
    """NT-Xent with the positive removed from the denominator (the paper's single-log form).

    For each of the 2B anchors a (both views act as anchors), with cosine similarities s and the other view a⁺:
    ``L_a = −w_a·s(a, a⁺)/τ + log Σ_{k ∉ {a, a⁺}} exp(s(a, k)/τ)``; the loss is the mean over anchors. The
    negatives are both views of every other image (gathered from all processes with ``gather_distributed``).
    This is the paper's equation with one log-sum-exp over all 2B − 2 negatives of an anchor, as in lightly's
    ``DCLLoss`` (which concatenates the same-view and cross-view similarities before its single ``logsumexp``), and
    the form SogCLR reduces to at γ = 1.

    Args:
        temperature: τ > 0 (the DCL paper uses 0.1).
        gather_distributed: Gather negatives across processes (a no-op without a process group).
        weight_sigma: ``None`` for DCL; a σ > 0 gives DCLW's von Mises–Fisher weight
            ``w_a = 2 − B·softmax(s(a, a⁺)/σ)`` over this process's batch (σ = 0.5 in the paper).
    """

    uses_target = False

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = False,
                 weight_sigma: float | None = None) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature, "DCL uses 0.1")
        self.weight_sigma = None if weight_sigma is None else check_positive("weight_sigma", weight_sigma,
                                                                              "DCLW uses 0.5; None gives DCL")
        self.gather_distributed = check_gather(gather_distributed)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, weight_sigma={self.weight_sigma}"

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, index: torch.Tensor | None = None,
                targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """z1, z2: (B, D) projections of the two views (normalised here). Returns the mean over 2B anchors."""
        check_pair(z1, z2)
        batch = z1.shape[0]
        local = F.normalize(torch.cat(fp32(z1, z2)), dim=1)  # (2B, D)
        if self.gather_distributed and dist.is_distributed():
            candidates, offset = dist.gather(local), dist.rank() * 2 * batch
        else:
            candidates, offset = local, 0
        if candidates.shape[0] <= 2:
            raise ValueError("DCL needs negatives: a global batch of at least 2 images.")
        with full_precision(local):
            sim = local @ candidates.T  # (2B, W·2B)
        rows = torch.arange(2 * batch, device=local.device)
        positives = (rows + batch) % (2 * batch) + offset
        positive_sim = sim[rows, positives]
        excluded = torch.zeros_like(sim, dtype=torch.bool)
        excluded[rows, rows + offset] = True  # the anchor itself
        excluded[rows, positives] = True  # and its positive: only negatives in the denominator
        masked = (sim / self.temperature).masked_fill(excluded, float("-inf"))
        weight = 1.0
        if self.weight_sigma is not None:
            weight = 2 - batch * F.softmax(positive_sim.view(2, batch) / self.weight_sigma, dim=1).reshape(-1)
            weight = weight.detach()
        return (-weight * positive_sim / self.temperature + torch.logsumexp(masked, dim=1)).mean()
