"""The learning-rate schedule of the recipes: linear warm-up, then cosine decay to 0."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int, base: float) -> float:
    """The learning rate of 0-based ``step`` of ``total``: ``base * (step + 1) / warmup`` over the first ``warmup``
    steps, then ``base * (1 + cos(pi * progress)) / 2`` with ``progress`` going from 0 to 1 over the remaining steps
    (0 from step ``total`` on)."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
