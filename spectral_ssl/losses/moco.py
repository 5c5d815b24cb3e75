"""MoCo-v2: InfoNCE of queries against their momentum-encoder key and a queue of past keys.

Reference: He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020; Chen et al.,
"Improved Baselines with Momentum Contrastive Learning" (MoCo v2), 2020; docs/method.md, §MoCo (the queue, the band
and R_eff on the queue negatives) and §Losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spectral_ssl import dist
from spectral_ssl.finite_watch import keep_if_finite
from spectral_ssl.losses._validation import (
    check_dim,
    check_gather,
    check_pair,
    check_positive,
    check_targets,
    fp32,
    full_precision,
    is_integer,
)


class MoCoLoss(nn.Module):
    """Symmetrised MoCo-v2 loss with the key queue as persistent buffers.

    For each view's queries q (online projections) the key k⁺ is the *other* view's momentum-encoder projection
    (``targets``; the detached online projection when ``targets`` is None), and the negatives are the K queued keys:
    ``logits = [q·k⁺, q·queue] / τ`` with target 0; the loss is the mean of the two directions.

    Queue convention (differs from the official MoCo and lightly's one-directional example): the loss is
    symmetrised, so after each training-mode forward the keys of *both* views, 2B per step for a global batch of B
    (gathered from every process, no gradient), are enqueued into a ring buffer that overwrites the oldest keys; any
    queue size works (no divisibility requirement). The queue therefore turns over twice as fast as with B keys per
    step: K queued keys span the last K/(2B) steps, so ``queue_size`` = 2K matches the official K in key age.
    Eval-mode forwards leave the queue alone.

    With spectrum-aware selection the queue holds keys of the *selected* batches, so diversity reaches the
    negatives with a lag of up to K / (2·global batch) steps (docs/method.md, ambiguity A9).

    ``default_momentum`` is the key encoder's EMA schedule, cosine from base to final (``cosine_momentum``):
    (0.99, 0.999) as solo-learn's MoCo v2+; the official MoCo v2 keeps 0.999 throughout.

    Args:
        dim: Projection dimension D (the model's ``proj_dim``; 128 in MoCo v2).
        queue_size: Number K of queued keys (65536 in MoCo v2 on ImageNet; 4096-32768 for small data).
        temperature: τ > 0 (0.2 in MoCo v2).
        gather_distributed: Enqueue the keys of every process (a no-op without a process group).
    """

    uses_target = True
    default_momentum = (0.99, 0.999)  # key-encoder EMA, cosine from base to final (solo-learn's MoCo v2+)

    def __init__(self, dim: int, queue_size: int = 65536, temperature: float = 0.2,
                 gather_distributed: bool = False) -> None:
        super().__init__()
        self.dim = check_dim("dim", dim)
        if not is_integer(queue_size) or queue_size < 1:
            raise ValueError(f"queue_size must be a positive integer, got {queue_size!r}; MoCo v2 uses 65536, small "
                             "datasets 4096-32768.")
        self.temperature = check_positive("temperature", temperature, "MoCo v2 uses 0.2")
        self.gather_distributed = check_gather(gather_distributed)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, queue_size={self.queue.shape[0]}, temperature={self.temperature}"

    def negatives(self) -> torch.Tensor:
        """(K, D) unit queue keys, detached: the negatives of the next step (for the band and R_eff)."""
        return self.queue.detach().clone()

    def _direction(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        positive = (q * k).sum(1, keepdim=True)
        with full_precision(q):
            logits = torch.cat([positive, q @ queue.T], dim=1) / self.temperature
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        if self.gather_distributed:
            keys = dist.gather(keys, differentiable=False)
        size = self.queue.shape[0]
        keys = keys[-size:]
        slots = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size
        # all or nothing: non-finite keys leave the queue and its pointer as they were
        self.queue[slots] = keep_if_finite(keys.to(self.queue.dtype), self.queue[slots])
        self.queue_ptr.copy_(keep_if_finite((self.queue_ptr + len(keys)) % size, self.queue_ptr, keys))

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, index: torch.Tensor | None = None,
                targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """z1, z2: (B, D) online projections; targets: (k1, k2) key-encoder projections (normalised here)."""
        check_pair(z1, z2, self.dim)
        check_targets(targets, z1)
        q1, q2, k1, k2 = fp32(z1, z2, *(targets if targets is not None else (z1, z2)))  # one dtype
        q1, q2 = F.normalize(q1, dim=1), F.normalize(q2, dim=1)
        k1, k2 = F.normalize(k1.detach(), dim=1), F.normalize(k2.detach(), dim=1)
        queue = self.queue.detach().clone().to(q1.dtype)  # this step's negatives, before the enqueue
        loss = 0.5 * (self._direction(q1, k2, queue) + self._direction(q2, k1, queue))
        if self.training:
            self._enqueue(torch.cat([k1, k2]))
        return loss
