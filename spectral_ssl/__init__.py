"""spectral_ssl: self-supervised pretraining of timm backbones with spectrum-aware batches.

Public API (README.md; the method: docs/method.md):
spectra (``effective_rank``), the gradient-norm band (``gradient_band``), losses
(``spectral_ssl.losses``), two views -> loss (``Objective``: loss + whitening + EMA target), the model
(``SpectralSSL``), monitoring any training loop (``SpectralMonitor``; host adapters in
``spectral_ssl.integrations``) and evaluation (``linear_probe``, ``knn_probe``).
"""

# every submodule, so ``import spectral_ssl`` reaches each one as ``spectral_ssl.<name>``
from spectral_ssl import (
    band,
    batching,
    config,
    data,
    diagnostics,
    dist,
    hub,
    integrations,
    losses,
    model,
    momentum,
    monitor,
    objective,
    probe,
    run_folder,
    spectral,
    transforms,
    whitening,
)
from spectral_ssl.band import BandResult, gradient_band
from spectral_ssl.model import SpectralSSL
from spectral_ssl.monitor import CollapseError, SpectralMonitor
from spectral_ssl.objective import Objective, create_objective
from spectral_ssl.probe import ProbeResult, extract_features, knn_probe, linear_probe
from spectral_ssl.spectral import effective_rank, spectrum_stats
from spectral_ssl.whitening import BatchWhitening

__version__ = "0.1.0"


def __getattr__(name: str):
    """``spectral_ssl.rank`` (the ``python -m spectral_ssl.rank`` command) is imported on first use: imported eagerly,
    ``python -m`` would find it already loaded and warn."""
    if name == "rank":
        import importlib

        return importlib.import_module("spectral_ssl.rank")
    raise AttributeError(f"module 'spectral_ssl' has no attribute {name!r}")

__all__ = [
    "BandResult",
    "BatchWhitening",
    "CollapseError",
    "Objective",
    "ProbeResult",
    "SpectralMonitor",
    "SpectralSSL",
    "band",
    "batching",
    "config",
    "data",
    "diagnostics",
    "dist",
    "hub",
    "integrations",
    "model",
    "momentum",
    "monitor",
    "objective",
    "probe",
    "rank",
    "run_folder",
    "spectral",
    "transforms",
    "whitening",
    "effective_rank",
    "extract_features",
    "gradient_band",
    "knn_probe",
    "linear_probe",
    "create_objective",
    "losses",
    "spectrum_stats",
    "__version__",
]
