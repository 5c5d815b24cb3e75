"""BYOL: predict the EMA target network's projection of the other view.

Reference: Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020; solo-learn's CIFAR config; docs/method.md, §Losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spectral_ssl.losses._validation import check_dim, check_pair, check_targets, for_module, fp32


def make_predictor(dim: int, hidden_dim: int, bias: bool = True) -> nn.Sequential:
    """Linear(dim→hidden) → BN → ReLU → Linear(hidden→dim): the BYOL / SimSiam predictor MLP."""
    return nn.Sequential(nn.Linear(dim, hidden_dim, bias=bias), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, dim))


def negative_cosine(p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``2 − 2·cos(p, SG(target))``, in float32 or better."""
    p, target = fp32(p, target.detach())
    return (2 - 2 * F.cosine_similarity(p, target, dim=1)).mean()


class BYOLLoss(nn.Module):
    """``Σ_orderings mean(2 − 2·cos(q(z_b), SG(t_a)))`` with the learnable predictor q as a submodule.

    The recipe passes ``targets`` = the EMA network's projections of both views (``uses_target``) and trains the
    predictor's parameters with the model (add ``loss.parameters()`` to the optimiser). Without ``targets`` the
    detached online projections are used (SimSiam-style stop-gradient).

    Scale convention: this is the BYOL paper's sum of ``2 − 2·cos`` over both orderings, in [0, 8]. lightly's BYOL
    example trains on ``0.5·(NegativeCosineSimilarity(p0, z1) + NegativeCosineSimilarity(p1, z0))`` = −mean cos, in
    [−1, 1]; this loss is ``4 + 4 ×`` that one, so its gradients are 4× larger: at the same SGD learning rate it
    takes 4× the step (use lr/4 to reproduce a lightly recipe; Adam-type optimisers are nearly scale-free).

    ``default_momentum``: the target EMA runs cosine from 0.99 to 1 (solo-learn's CIFAR config; the BYOL paper uses
    0.996 → 1 on ImageNet).

    Args:
        dim: Projection dimension D (the model's ``proj_dim``; 256 in BYOL).
        hidden_dim: Predictor hidden width (4096 in BYOL).
    """

    uses_target = True
    default_momentum = (0.99, 1.0)  # solo-learn CIFAR; the BYOL paper uses 0.996 on ImageNet

    def __init__(self, dim: int, hidden_dim: int = 4096) -> None:
        super().__init__()
        self.dim = check_dim("dim", dim)
        self.predictor = make_predictor(dim, check_dim("hidden_dim", hidden_dim, "the predictor's hidden width; "
                                                                              "BYOL uses 4096"))

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, index: torch.Tensor | None = None,
                targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """z1, z2: (B, D) online projections; targets: (t1, t2) EMA projections. Scalar in [0, 8]."""
        check_pair(z1, z2, self.dim)
        check_targets(targets, z1)
        if z1.shape[0] < 2 and self.training:
            raise ValueError("the predictor's BatchNorm needs a batch of at least 2.")
        t1, t2 = targets if targets is not None else (z1, z2)
        q1, q2 = for_module(self.predictor, z1, z2)
        return negative_cosine(self.predictor(q1), t2) + negative_cosine(self.predictor(q2), t1)
