"""Momentum (EMA) target networks: the update and the cosine schedule of BYOL / MoCo / IsoLoss-with-EMA.

Reference: docs/method.md, §Losses (solo-learn's ``MomentumUpdater``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def update_momentum(*, target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``θ_t ← m·θ_t + (1 − m)·θ_o`` for parameters; buffers (BN statistics) are copied from the online network.

    Keyword-only on purpose: lightly's ``update_momentum(model, model_ema, m)`` takes the online network first, the
    opposite of the ``(target, online)`` order a positional call here would suggest; a swapped positional call would
    silently pull the online network towards its EMA. Call ``update_momentum(target=ema, online=model, momentum=m)``.

    Args:
        target: The EMA (key / target) network, updated in place.
        online: The trained network; same architecture as ``target``.
        momentum: m in [0, 1]: 1 keeps the target, 0 copies the online network.
    """
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}.")
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o.detach(), 1 - momentum)
    for t, o in zip(target.buffers(), online.buffers(), strict=True):
        t.copy_(o)


def cosine_momentum(step: int, total_steps: int, base: float = 0.99, final: float = 1.0) -> float:
    """``final − (final − base)·(cos(π·step/total) + 1)/2``: ``base`` at step 0, ``final`` at the end."""
    progress = min(1.0, max(0.0, step / max(1, total_steps)))
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
