"""Non-finite training steps: the first step whose loss or gradient norm was NaN/inf, found without stalling a GPU;
and ``keep_if_finite``, which keeps NaN/inf out of a module's training state (queues, ``u``, running statistics)."""

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


@torch.no_grad()
def keep_if_finite(new: torch.Tensor, old: torch.Tensor, *evidence: torch.Tensor) -> torch.Tensor:
    """``new`` if it and every ``evidence`` tensor are all finite, else ``old``, decided on the device (no host
    synchronisation): state updated from a non-finite batch keeps its previous value, so a caller that skips the
    bad batch (AMP practice) goes on with intact state, while the batch's own loss is still non-finite."""
    ok = torch.isfinite(new).all()
    for tensor in evidence:
        ok = ok & torch.isfinite(tensor).all().to(ok.device)
    return torch.where(ok, new, old)


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
