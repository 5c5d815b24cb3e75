"""Self-supervised losses: one module per file, all with ``forward(z1, z2, index=None) -> scalar``.

``LOSSES`` maps the recipe's ``loss=`` names to the classes.
"""

from __future__ import annotations

from spectral_ssl.losses.infonce import InfoNCELoss

LOSSES: dict[str, type] = {
    "infonce": InfoNCELoss,
    "simclr": InfoNCELoss,
}

__all__ = ["LOSSES", "InfoNCELoss"]
