"""spectral_ssl: self-supervised pretraining of timm backbones with spectrum-aware batches.

Public API (see DESIGN.md): spectra (``effective_rank``), the gradient-norm band (``gradient_band``), losses
(``spectral_ssl.losses``), the model (``SpectralSSL``) and evaluation (``linear_probe``, ``knn_probe``).
"""

from spectral_ssl._compat import ensure_torchvision_importable

ensure_torchvision_importable()  # before anything imports torchvision / timm

from spectral_ssl import batching, dist, losses  # noqa: E402
from spectral_ssl.band import BandResult, gradient_band  # noqa: E402
from spectral_ssl.model import SpectralSSL  # noqa: E402
from spectral_ssl.probe import ProbeResult, extract_features, knn_probe, linear_probe  # noqa: E402
from spectral_ssl.spectral import effective_rank, spectrum_stats  # noqa: E402
from spectral_ssl.whitening import BatchWhitening  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "BandResult",
    "BatchWhitening",
    "batching",
    "ProbeResult",
    "SpectralSSL",
    "dist",
    "effective_rank",
    "extract_features",
    "gradient_band",
    "knn_probe",
    "linear_probe",
    "losses",
    "spectrum_stats",
    "__version__",
]
