"""Live diagnostics of one training batch: what the pretrain recipe logs every ``log_every`` steps.

R_eff (covariance and RankMe) of the gathered, L2-normalised projections, the gradient-norm band with the method's
own negatives, and method-independent monitors (cosine between views, NT-Xent at a fixed τ) that can be compared
across losses, unlike the losses' own values (docs/method.md, §Band and §Losses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spectral_ssl.band import gradient_band, infonce_band
from spectral_ssl.dist import gather
from spectral_ssl.losses.infonce import InfoNCELoss
from spectral_ssl.spectral import effective_rank


@torch.no_grad()
def batch_diagnostics(z1: torch.Tensor, z2: torch.Tensor, temperature: float, *, monitor_temperature: float = 0.2,
                      negatives: torch.Tensor | None = None, keys: torch.Tensor | None = None) -> dict[str, float]:
    """Diagnostics of one batch, gathered over processes (call it on every rank).

    Args:
        z1, z2: (B, D) projections of the two views on this process (any scale; normalised here).
        temperature: τ of the band. For non-contrastive losses the band describes InfoNCE at this τ.
        monitor_temperature: τ of the NT-Xent monitor.
        negatives: (K, D) shared negatives (MoCo's queue, docs/method.md, §MoCo); with ``keys`` (B, D),
            the band is that of the queries ``z1`` against their keys and these negatives. Default: the batch
            (every anchor's negatives are the other 2B − 2 views, as in SimCLR).

    Returns:
        ``reff_cov`` and ``reff_rankme`` (``effective_rank`` of the 2B projections with each estimator's default eps:
        1e-12 for "cov", RankMe's 1e-7 for "rankme"), ``band_*`` (``BandResult.summary``), ``cos_views``, ``ntxent``
        and, with ``negatives``, ``reff_negatives`` ("cov" of the negatives).
    """
    z1, z2 = (F.normalize(gather(z.detach().float()), dim=1) for z in (z1, z2))
    z = torch.cat([z1, z2])
    extra = {}
    if negatives is not None:
        if keys is None:
            raise ValueError("pass the queries' keys with negatives (the band needs each query's positive).")
        negatives = F.normalize(negatives.detach().float(), dim=1)
        band = gradient_band(z1, F.normalize(gather(keys.detach().float()), dim=1), negatives, temperature)
        extra["reff_negatives"] = float(effective_rank(negatives, "cov"))
    else:
        band = infonce_band(z1, z2, temperature)
    return {"reff_cov": float(effective_rank(z, "cov")), "reff_rankme": float(effective_rank(z, "rankme")), **extra,
            **{f"band_{k}": v for k, v in band.summary().items()},
            "cos_views": float((z1 * z2).sum(1).mean()),
            "ntxent": float(InfoNCELoss(monitor_temperature)(z1, z2))}
