"""Live diagnostics of one training batch: what the pretrain recipe logs every ``log_every`` steps.

A thin call to ``spectral_ssl.monitor.spectral_record`` (the one implementation), keeping the recipe's keys.

R_eff (covariance and RankMe) of the gathered, L2-normalised projections, the gradient-norm band with the method's
own negatives, and method-independent monitors (cosine between views, NT-Xent at a fixed τ) that can be compared
across losses, unlike the losses' own values (docs/method.md, §Band and §Losses).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from spectral_ssl.dist import gather
from spectral_ssl.monitor import spectral_record

DIAGNOSTICS_KEYS = ("reff_cov", "reff_rankme", "reff_negatives", "cos_views", "ntxent",  # + the band_* keys
                    "std_of_l2_normalized")


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
        1e-12 for "cov", RankMe's 1e-7 for "rankme"), ``band_*`` (``BandResult.summary``), ``cos_views``, ``ntxent``,
        ``std_of_l2_normalized`` (lightly's collapse monitor) and, with ``negatives``, ``reff_negatives`` ("cov" of
        the negatives).
    """
    z1, z2 = (gather(z.detach().float()) for z in (z1, z2))
    keys = None if keys is None else gather(keys.detach().float())
    record = spectral_record(z1, z2, temperature, monitor_temperature=monitor_temperature, negatives=negatives,
                             keys=keys)
    return {k: v for k, v in record.items() if k in DIAGNOSTICS_KEYS or k.startswith("band_")}


def write_training_plot(metrics: str | Path | list[dict[str, Any]], png_path: str | Path) -> Path | None:
    """Plot R_eff (with the chosen vs random batches' R_eff when selection logged them) and the gradient band over
    training, from a recipe's ``metrics.jsonl`` or its rows; None without rows."""
    if isinstance(metrics, (str, Path)):
        lines = Path(metrics).read_text().splitlines() if Path(metrics).is_file() else []
        metrics = [json.loads(line) for line in lines if line.strip()]
    rows = [row for row in metrics if "step" in row and "reff_cov" in row and "band_measured_mean" in row]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    left.plot(steps, [r["reff_cov"] for r in rows], label="R_eff (cov)")
    if all("reff_rankme" in r for r in rows):
        left.plot(steps, [r["reff_rankme"] for r in rows], label="RankMe")
    chosen = [r for r in rows if "sel_reff_chosen" in r]
    if chosen:
        left.plot([r["step"] for r in chosen], [r["sel_reff_chosen"] for r in chosen], "--", label="chosen batch")
        left.plot([r["step"] for r in chosen], [r["sel_reff_random"] for r in chosen], ":", label="random batch")
    left.set(xlabel="step", ylabel="effective rank of the projections", title="Batch spectrum")
    left.legend()
    lower, upper = [r["band_lower_mean"] for r in rows], [r["band_upper_mean"] for r in rows]
    right.fill_between(steps, lower, upper, alpha=0.25, label="band (lower-upper, batch mean)")
    right.plot(steps, [r["band_measured_mean"] for r in rows], label="measured ||g||^2 (batch mean)")
    containment = sum(r.get("band_containment", 0.0) for r in rows) / len(rows)
    right.set(xlabel="step", ylabel="squared gradient norm", yscale="log",
              title=f"Gradient-norm band (containment {100 * containment:.1f} %)")
    right.legend()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)
