"""Non-finite training steps: the first step whose loss or gradient norm was NaN/inf, found without stalling a GPU."""

from __future__ import annotations

import torch


class NonFiniteError(RuntimeError):
    """A step's loss or gradients were not finite; ``step`` is the first such step, ``kind`` "loss" or "gradients".
    The message says what to change (the recipes' keys); a recipe turns it into its one-line error."""

    def __init__(self, step: int, kind: str) -> None:
        self.step, self.kind = step, kind
        if kind == "loss":
            message = f"non-finite loss at step {step}; lower --lr or check the data"
        else:
            message = (f"non-finite gradients at step {step} (no checkpoint holds them); resume from the last "
                       "checkpoint with a lower --lr, --grad_clip=1 or a larger --whitening_eps")
        super().__init__(message)


class FiniteWatch:
    """The first step whose loss or gradient norm was not finite, kept on the device until ``check`` reads it.

    On the CPU ``check`` runs every step, before the optimiser step: weights are never updated with a non-finite
    gradient. On a GPU it runs at logging steps and before each checkpoint: a bad step's update is then discarded
    with the run (it stops), and every checkpoint on disk predates it.
    """

    def __init__(self, device: torch.device) -> None:
        self.first = torch.full((2,), -1, dtype=torch.long, device=device)  # first bad step: loss, gradients

    def record(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        bad = torch.stack([~torch.isfinite(loss.detach()), ~torch.isfinite(grad_norm)])
        self.first = torch.where(bad & (self.first < 0), step, self.first)

    def check(self) -> None:
        """Raise ``NonFiniteError`` for the earliest bad step recorded so far (reads the device: a GPU sync)."""
        bad = [(step, kind) for kind, step in enumerate(self.first.tolist()) if step >= 0]
        if not bad:
            return
        step, kind = min(bad)  # the earliest; a non-finite loss before the gradients it makes
        raise NonFiniteError(step, ("loss", "gradients")[kind])
