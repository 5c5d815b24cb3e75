"""The objective: what turns two augmented views into a loss, in one place (open_clip's ``TrainingTask``).

``Objective`` owns the loss (``losses.create_loss``, with its predictor and state), the optional in-batch
whitening of the projections (decided once here: ``whitening="none"`` means no whitening anywhere), the momentum
(EMA) target network of the losses that use one, and its cosine momentum schedule. A training loop calls it once
per step::

    objective = create_objective(model, "byol", dim=128, whitening="zca")
    out = objective(x1, x2, index=idx)            # ObjectiveOutput: loss, p1, z1, z2, targets
    out.loss.backward(); optimizer.step()
    objective.update_target(step, total_steps)    # EMA target (no-op for losses without one)

``out.p1`` are the raw projections of the first view (what a selection cache stores), ``out.z1``/``out.z2`` what
the loss saw (after whitening), the quantities the diagnostics measure; ``objective.negatives()`` and ``out.keys``
are the band's extra negatives (MoCo's queue) and keys (the target's projections of the second view).

Its ``state_dict`` is everything the objective must carry across a resume: the loss's state (MoCo's queue,
SogCLR's ``u``, IsoLoss's correlations, a BYOL/SimSiam predictor), the EMA target and the whitening's running
statistics (register the objective for checkpointing). The online model is held, not owned: it is checkpointed
with the optimiser by the training loop. Under data parallelism call ``attach`` with the wrapped model and, when
``learnable_loss``, the wrapped loss (the predictor's gradients are synchronised); the unwrapped loss keeps its
attributes and state. References: docs/method.md, §Losses and §Whitening (ambiguity A9: per-view statistics, online
branch only).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from spectral_ssl.losses import create_loss
from spectral_ssl.momentum import cosine_momentum, update_momentum
from spectral_ssl.whitening import BatchWhitening

WHITENINGS = ("none", "zca", "cholesky")


@dataclass
class ObjectiveOutput:
    """One step's loss and the projections around it.

    Attributes:
        loss: Scalar loss.
        p1: (B, D) raw projections of view 1 (before whitening): what a selection cache stores.
        z1, z2: (B, D) what the loss saw (whitened when whitening is on): what the diagnostics measure.
        targets: The target network's projections of both views (losses with an EMA target), else ``None``.
    """

    loss: torch.Tensor
    p1: torch.Tensor
    z1: torch.Tensor
    z2: torch.Tensor
    targets: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def keys(self) -> torch.Tensor | None:
        """The target's projections of view 2 (the band's keys), ``None`` without a target network."""
        return None if self.targets is None else self.targets[1]


class Objective(nn.Module):
    """Loss + whitening + EMA target around an online model (held, not owned).

    Args:
        model: The online network (``SpectralSSL``: images -> projections). The EMA target starts as a copy of it.
        loss: A loss module of the ``spectral_ssl.losses`` protocol (``create_loss``).
        whitening: ``"none"``, ``"zca"`` or ``"cholesky"`` (``BatchWhitening`` of each view's projections).
        dim: Projection dimension D (needed by whitening).
        whitening_eps: Whitening ridge, relative to the mean eigenvalue.
        whitening_sync: Whiten with the global batch's statistics under several processes (``BatchWhitening``'s
            ``sync``).
        whitening_solver: How ZCA computes its inverse square root: ``"auto"`` (newton_schulz on CUDA to D=512,
            else eigh), ``"eigh"`` or ``"newton_schulz"`` (matrix products only: no host synchronisation). See
            ``BatchWhitening``.
        ema_momentum, ema_momentum_final: Ends of the cosine EMA schedule; ``None`` = the loss's
            ``default_momentum``.
    """

    def __init__(self, model: nn.Module, loss: nn.Module, *, whitening: str = "none", dim: int | None = None,
                 whitening_eps: float = 1e-4, whitening_solver: str = "auto", whitening_sync: bool = False,
                 ema_momentum: float | None = None, ema_momentum_final: float | None = None) -> None:
        super().__init__()
        if whitening not in WHITENINGS:
            raise ValueError(f"whitening must be one of {WHITENINGS}, got {whitening!r}.")
        if whitening != "none" and not dim:
            raise ValueError("whitening needs dim (the projection dimension D).")
        uses_target = getattr(loss, "uses_target", False)
        for key, value in (("ema_momentum", ema_momentum), ("ema_momentum_final", ema_momentum_final)):
            if value is not None and not uses_target:  # it would be ignored: the user meant another loss
                raise ValueError(f"{key}={value} is set, but loss {type(loss).__name__} trains without an EMA target "
                                 "network (byol, moco and isoloss with ema: true have one); leave it unset")
        self.loss = loss
        self.target = copy.deepcopy(model).requires_grad_(False) if uses_target else None
        self.whiten = (BatchWhitening(dim, kind=whitening, eps=whitening_eps, solver=whitening_solver,
                                      sync=whitening_sync) if whitening != "none" else None)
        base, final = getattr(loss, "default_momentum", (None, None))
        self.momentum = (base if ema_momentum is None else ema_momentum,
                         final if ema_momentum_final is None else ema_momentum_final)
        # held, not registered: the online model is not the objective's state; the loss call may be a DDP wrapper
        self.__dict__["online"] = self.__dict__["_unwrapped"] = model
        self.__dict__["_loss_call"] = loss

    @property
    def learnable_loss(self) -> bool:
        """The loss has parameters (a BYOL/SimSiam predictor): wrap it for data parallelism (``attach``)."""
        return any(True for _ in self.loss.parameters())

    def attach(self, model: nn.Module, loss: Callable[..., torch.Tensor] | None = None) -> None:
        """Call ``model`` (a wrapper of the online network given at construction, e.g. DDP's: same parameters) and,
        if given, ``loss`` (the wrapped loss) from now on; ``self.loss`` stays the unwrapped module (attributes,
        state) and the EMA target keeps following the unwrapped online network."""
        self.__dict__["online"] = model
        self.__dict__["_loss_call"] = self.loss if loss is None else loss

    def loss_space(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Maps (N, D) projections to the space the loss sees (running-statistics whitening), ``None`` = identity:
        what a selector scores candidates in to see them as the loss does."""
        return None if self.whiten is None else self.whiten.whiten_running

    def negatives(self) -> torch.Tensor | None:
        """(K, D) negatives beyond the batch (MoCo's queue) for the gradient band, ``None`` for the others."""
        return self.loss.negatives() if hasattr(self.loss, "negatives") else None

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, index: torch.Tensor | None = None) -> ObjectiveOutput:
        """Two (B, C, H, W) views (and their (B,) dataset indices) -> ``ObjectiveOutput``."""
        if x1.shape[0] != x2.shape[0]:
            raise ValueError(f"the two views must hold the same images: x1 has {x1.shape[0]} and x2 {x2.shape[0]} "
                             "rows.")
        model = self.__dict__["online"]
        p1, p2 = model(x1), model(x2)
        # both views in one batched call: half the kernel launches, the same result as one call per view
        z1, z2 = self.whiten(torch.stack((p1, p2))).unbind(0) if self.whiten is not None else (p1, p2)
        targets = None
        if self.target is not None:
            with torch.no_grad():
                targets = (self.target(x1), self.target(x2))
        loss = self.__dict__["_loss_call"](z1, z2, index=index, targets=targets)
        return ObjectiveOutput(loss=loss, p1=p1, z1=z1, z2=z2, targets=targets)

    def update_target(self, step: int, total_steps: int) -> None:
        """Move the EMA target towards the online network at the cosine momentum of ``step``; call after each
        optimiser step (no-op without a target network)."""
        if self.target is None:
            return
        update_momentum(target=self.target, online=self.__dict__["_unwrapped"],
                        momentum=cosine_momentum(step, total_steps, *self.momentum))


def create_objective(model: nn.Module, loss: str, *, dim: int, dataset_size: int | None = None,
                     gather_distributed: bool = False, whitening: str = "none", whitening_eps: float = 1e-4,
                     whitening_solver: str = "auto", whitening_sync: bool = False, ema_momentum: float | None = None,
                     ema_momentum_final: float | None = None, **loss_kwargs: Any) -> Objective:
    """``Objective`` around ``model`` with loss ``loss`` built by ``create_loss(loss, dim=dim, ...,
    **loss_kwargs)`` (each loss owns its defaults and checks its arguments)."""
    built = create_loss(loss, dim=dim, dataset_size=dataset_size, gather_distributed=gather_distributed,
                        **loss_kwargs)
    return Objective(model, built, whitening=whitening, dim=dim, whitening_eps=whitening_eps,
                     whitening_solver=whitening_solver, whitening_sync=whitening_sync, ema_momentum=ema_momentum,
                     ema_momentum_final=ema_momentum_final)
