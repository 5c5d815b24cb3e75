"""InfoNCE / NT-Xent loss (SimCLR).

Reference: Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spectral_ssl import dist
from spectral_ssl.losses._validation import check_gather, check_pair, check_positive, full_precision


class InfoNCELoss(nn.Module):
    """NT-Xent: for each of the 2B views, its other view is the positive among 2B - 1 candidates.

    Both views act as anchors; the loss is the mean over all 2B anchors of ``-log softmax(sim / τ)[positive]`` with
    cosine similarity (inputs are L2-normalised here). With ``gather_distributed=True`` the candidates are gathered
    from every process with a differentiable all-gather, so N processes with batch B train exactly like one
    process with batch N·B (each rank scores its own anchors against all N·2B candidates).

    Same maths as lightly's ``NTXentLoss`` (docs/method.md, §Losses).

    Args:
        temperature: Softmax temperature τ > 0 (SimCLR uses 0.1-0.5; 0.2 is a good default for small batches).
        gather_distributed: Gather candidates across processes. Works (as a no-op) without a process group.
    """

    uses_target = False

    def __init__(self, temperature: float = 0.2, gather_distributed: bool = False) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature, "SimCLR uses 0.1-0.5")
        self.gather_distributed = check_gather(gather_distributed)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather_distributed={self.gather_distributed}"

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, index: torch.Tensor | None = None,
                targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            z1: (B, D) projections of the first views (any scale; normalised here).
            z2: (B, D) projections of the second views, row i pairs with row i of ``z1``.
            index, targets: Unused (accepted so every loss shares one signature).

        Returns:
            Scalar loss, mean over this process's 2B anchors.
        """
        check_pair(z1, z2)
        dtype = torch.promote_types(z1.dtype, torch.float32)  # at least fp32 softmax, also under autocast
        local = F.normalize(torch.cat([z1, z2], dim=0).to(dtype), dim=1)  # (2B, D)
        batch = z1.shape[0]
        if self.gather_distributed and dist.is_distributed():
            # candidates of all ranks, laid out per rank as [z1_r; z2_r]
            candidates = dist.gather(local)  # (W·2B, D)
            offset = dist.rank() * 2 * batch
        else:
            candidates, offset = local, 0
        if candidates.shape[0] <= 2:  # the positive alone: loss 0, no gradient, nothing learnt
            raise ValueError("InfoNCE needs negatives: a global batch of at least 2 images.")
        with full_precision(local):
            logits = local @ candidates.T / self.temperature  # (2B, W·2B): row a = anchor a, column c = candidate c
        rows = torch.arange(2 * batch, device=local.device)
        self_cols = rows + offset
        logits[rows, self_cols] = float("-inf")  # an anchor is never its own candidate
        positives = (rows + batch) % (2 * batch) + offset  # view 1 <-> view 2 of the same image
        return F.cross_entropy(logits, positives)
