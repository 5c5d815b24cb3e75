"""Moved to ``spectral_ssl.data.cache`` (the data package holds every input concern); this alias stays for code that
imports ``spectral_ssl.decoded_split`` and will be removed in a later release."""

import warnings

from spectral_ssl.data.cache import AUTO_CACHE_BYTES, DecodedEpochLoader, DecodedSplit, cache_device, decoded_bytes

warnings.warn("spectral_ssl.decoded_split moved to spectral_ssl.data (DecodedSplit, DecodedEpochLoader, "
              "cache_device)", DeprecationWarning, stacklevel=2)

__all__ = ["AUTO_CACHE_BYTES", "DecodedEpochLoader", "DecodedSplit", "cache_device", "decoded_bytes"]
