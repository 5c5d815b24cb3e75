"""Self-supervised losses: one module per file, all with ``forward(z1, z2, index=None, targets=None) -> scalar``.

Class attributes tell the training loop what a loss needs: ``uses_target`` (a momentum/EMA target network whose
projections are passed as ``targets``) and ``needs_index`` (dataset indices, for per-sample state).
``LOSSES`` maps the recipe's ``loss=`` names to the classes.
"""

from __future__ import annotations

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

__all__ = ["LOSSES", "BYOLLoss", "DCLLoss", "InfoNCELoss", "IsoLoss", "MoCoLoss", "SimSiamLoss", "SogCLRLoss"]
