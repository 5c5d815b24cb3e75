"""Self-supervised losses: one module per file, all with ``forward(z1, z2, index=None, targets=None) -> scalar``.

The loss protocol (what a training loop may rely on; nothing else is read):

- ``forward(z1, z2, index=None, targets=None)``: ``z1``, ``z2`` (B, D) projections of two views; ``index`` (B,)
  dataset indices (always passed by the recipe; losses with per-sample state, SogCLR, use them); ``targets`` the
  target network's projections of the two views when ``uses_target``.
- ``uses_target`` (bool): the loss needs a momentum (EMA) target network; such a class also has
  ``default_momentum = (base, final)``, the ends of its cosine momentum schedule.
- ``negatives()`` (optional method): the (K, D) negatives the anchors are contrasted with beyond the batch (MoCo's
  queue); the gradient band is computed against them.
- state (queues, per-sample ``u``, correlations) lives in registered buffers, so it is checkpointed with the module.

``LOSSES`` maps the recipe's ``loss=`` names to the classes; ``create_loss`` builds one by name.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from spectral_ssl.losses.byol import BYOLLoss
from spectral_ssl.losses.dcl import DCLLoss
from spectral_ssl.losses.infonce import InfoNCELoss
from spectral_ssl.losses.isoloss import IsoLoss
from spectral_ssl.losses.moco import MoCoLoss
from spectral_ssl.losses.simsiam import SimSiamLoss
from spectral_ssl.losses.sogclr import SogCLRLoss

LOSSES: dict[str, type] = {
    "infonce": InfoNCELoss,
    "simclr": InfoNCELoss,
    "dcl": DCLLoss,
    "moco": MoCoLoss,
    "sogclr": SogCLRLoss,
    "isoloss": IsoLoss,
    "byol": BYOLLoss,
    "simsiam": SimSiamLoss,
}

# Facts of the run rather than method choices: passed to a loss whose constructor takes them, dropped otherwise.
_RUN_ARGUMENTS = ("dim", "gather_distributed", "temperature")


def loss_arguments(name: str) -> dict[str, Any]:
    """The constructor arguments of loss ``name`` with their defaults (``inspect.Parameter.empty`` if required)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}.")
    params = inspect.signature(LOSSES[name].__init__).parameters
    return {n: p.default for n, p in params.items() if n != "self" and p.kind is not p.VAR_KEYWORD}


def create_loss(name: str, *, dim: int, dataset_size: int | None = None, gather_distributed: bool = False,
                **kwargs: Any) -> nn.Module:
    """Build loss ``name`` (a key of ``LOSSES``); each class owns its defaults and validates its own arguments.

    Args:
        name: ``infonce`` (= ``simclr``), ``dcl``, ``moco``, ``sogclr``, ``isoloss``, ``byol`` or ``simsiam``.
        dim: Projection dimension D (given to losses with D-sized state or a predictor).
        dataset_size: Number of training rows; required by losses with per-sample state (SogCLR).
        gather_distributed: Gather across processes (losses that support it).
        **kwargs: The method's own arguments (e.g. ``queue_size=4096`` for MoCo, ``gamma=0.9`` for SogCLR). A
            ``temperature`` is used by the losses that have one and ignored by the others (BYOL, SimSiam,
            IsoLoss). Unknown names raise a ValueError listing the accepted ones.
    """
    accepted = loss_arguments(name)
    unknown = sorted(set(kwargs) - set(accepted) - {"temperature"})
    if unknown:
        options = sorted(set(accepted) - {"dim", "dataset_size", "gather_distributed"})
        raise ValueError(f"loss {name!r} takes no argument {', '.join(map(repr, unknown))}; its arguments are "
                         f"{options}.")
    given = {"dim": dim, "gather_distributed": gather_distributed, **kwargs}
    args = {k: v for k, v in given.items() if k in accepted or k not in _RUN_ARGUMENTS}
    if "dataset_size" in accepted:
        if not dataset_size:
            raise ValueError(f"loss {name!r} keeps per-sample state and needs dataset_size (the number of training "
                             "rows): pass dataset_size=N; a streamed dataset without split metadata has no known "
                             "length: use one with it.")
        args["dataset_size"] = dataset_size
    return LOSSES[name](**args)


__all__ = ["LOSSES", "BYOLLoss", "DCLLoss", "InfoNCELoss", "IsoLoss", "MoCoLoss", "SimSiamLoss", "SogCLRLoss",
           "create_loss", "loss_arguments"]
