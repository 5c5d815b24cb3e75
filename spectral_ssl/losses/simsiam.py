"""SimSiam: a predictor and a stop-gradient, no negatives and no EMA.

Reference: Chen and He, "Exploring Simple Siamese Representation Learning", CVPR 2021 (facebookresearch/simsiam);
docs/method.md, §Losses.
"""

from __future__ import annotations

import torch
from torch import nn

from spectral_ssl.losses._validation import check_dim, check_pair, for_module
from spectral_ssl.losses.byol import make_predictor, negative_cosine


class SimSiamLoss(nn.Module):
    """``−½[cos(p1, SG(z2)) + cos(p2, SG(z1))]`` with the SimSiam predictor (bias-free first layer, BN) inside.

    The same scale as the SimSiam paper and lightly's example (in [−1, 1]); train the predictor's parameters with
    the model (add ``loss.parameters()`` to the optimiser).

    Args:
        dim: Projection dimension D (the model's ``proj_dim``; 2048 in SimSiam).
        hidden_dim: Predictor bottleneck width (512 in SimSiam).
    """

    uses_target = False

    def __init__(self, dim: int, hidden_dim: int = 512) -> None:
        super().__init__()
        self.dim = check_dim("dim", dim)
        self.predictor = make_predictor(dim, check_dim("hidden_dim", hidden_dim, "the predictor's bottleneck "
                                                                              "width; SimSiam uses 512"),
                                        bias=False)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, index: torch.Tensor | None = None,
                targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """z1, z2: (B, D) projections. Scalar in [−1, 1] (−1 = perfectly predicted)."""
        check_pair(z1, z2, self.dim)
        if z1.shape[0] < 2 and self.training:
            raise ValueError("the predictor's BatchNorm needs a batch of at least 2.")
        # 2 − 2cos per term, so −½(cos + cos) = (Σ terms)/4 − 1
        q1, q2 = for_module(self.predictor, z1, z2)
        return (negative_cosine(self.predictor(q1), z2) + negative_cosine(self.predictor(q2), z1)) / 4 - 1
