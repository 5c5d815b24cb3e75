"""spectral_ssl: self-supervised pretraining of timm backbones with spectrum-aware batches.

Public API (README.md; the method: docs/method.md):
spectra (``effective_rank``), the gradient-norm band (``gradient_band``), losses
(``spectral_ssl.losses``), two views -> loss (``Objective``: loss + whitening + EMA target), the model
(``SpectralSSL``), monitoring any training loop (``SpectralMonitor``; host adapters in
``spectral_ssl.integrations``) and evaluation (``linear_probe``, ``knn_probe``).
"""

import importlib as _importlib

# every submodule is reachable as ``spectral_ssl.<name>`` and the public names below as ``spectral_ssl.<Name>``; both
# are imported on first use (PEP 562), so ``import spectral_ssl.cpu_threads`` can set the OpenMP environment before
# anything imports torch, and ``python -m spectral_ssl.rank`` does not find its module already loaded
_SUBMODULES = frozenset({
    "band", "batching", "config", "cpu_threads", "data", "diagnostics", "dist", "hub", "integrations",
    "losses", "model", "momentum", "monitor", "objective", "probe", "rank", "run_folder", "spectral", "transforms",
    "whitening",
})
_NAMES = {  # public name -> the submodule that defines it
    "BandResult": "band", "gradient_band": "band",
    "SpectralSSL": "model",
    "CollapseError": "monitor", "SpectralMonitor": "monitor",
    "Objective": "objective", "create_objective": "objective",
    "OnlineKnn": "probe", "ProbeResult": "probe", "extract_features": "probe", "knn_probe": "probe",
    "linear_probe": "probe",
    "effective_rank": "spectral", "spectrum_stats": "spectral",
    "BatchWhitening": "whitening",
}

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _SUBMODULES:
        return _importlib.import_module(f"spectral_ssl.{name}")
    if name in _NAMES:
        value = getattr(_importlib.import_module(f"spectral_ssl.{_NAMES[name]}"), name)
        globals()[name] = value  # the next lookup skips __getattr__
        return value
    raise AttributeError(f"module 'spectral_ssl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES | set(_NAMES))


__all__ = [
    "BandResult",
    "BatchWhitening",
    "CollapseError",
    "Objective",
    "OnlineKnn",
    "ProbeResult",
    "SpectralMonitor",
    "SpectralSSL",
    "band",
    "batching",
    "config",
    "cpu_threads",
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
