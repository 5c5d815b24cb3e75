"""Thin host adapters over ``spectral_ssl.monitor.SpectralMonitor`` (the integration room).

- ``spectral_ssl.integrations.lightning.SpectralMonitorCallback``: a Lightning ``Callback`` (``pip install
  spectral_ssl[lightning]``);
- ``spectral_ssl.integrations.transformers.SpectralMonitorCallback``: an HF ``TrainerCallback``;
- ``spectral_ssl.integrations.trackers.tracker_log``: send records to accelerate's trackers (or anything with
  ``.log(values, step=)``).

Importing this package imports neither Lightning nor transformers; each adapter imports its host on first use. The
helpers here are what every adapter shares: finding the projector to watch, the loggable part of a record and the
lazy class that imports its host on first use.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from torch import nn

PROJECTOR_NAMES = ("projection_head", "projector", "proj_head", "head")  # lightly, SpectralSSL/solo-learn, others


def find_projector(model: nn.Module, name: str | None = None) -> nn.Module | None:
    """The projector submodule of ``model``: ``name`` (a dotted path) if given, else the first of
    ``PROJECTOR_NAMES`` it has (also under a ``module``/``model`` wrapper attribute); None when there is none."""
    if name is not None:
        try:
            return model.get_submodule(name)
        except AttributeError:
            children = [n for n, _ in model.named_modules() if n][:12]
            raise ValueError(f"projector={name!r}: {type(model).__name__} has no submodule {name!r}; its submodules "
                             f"include {children}.") from None
    for holder in (model, getattr(model, "module", None), getattr(model, "model", None)):
        for attr in PROJECTOR_NAMES:
            candidate = getattr(holder, attr, None) if holder is not None else None
            if isinstance(candidate, nn.Module):
                return candidate
    return None


def loggable(record: dict[str, Any], prefix: str = "spectral/") -> dict[str, float]:
    """The numbers of a record as floats, keys prefixed (strings such as ``source`` and ``step`` are left out)."""
    return {f"{prefix}{k}": float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float, bool))}


def check_arguments(monitor: Any, prefix: Any) -> None:
    """The adapters' shared argument checks, one line each."""
    from spectral_ssl.monitor import SpectralMonitor

    if monitor is not None and not isinstance(monitor, SpectralMonitor):
        raise ValueError(f"monitor must be a spectral_ssl.SpectralMonitor (or None, with its arguments passed as "
                         f"keywords), got {type(monitor).__name__}.")
    if not isinstance(prefix, str):
        raise ValueError(f"prefix must be a string (e.g. 'spectral/'), got {prefix!r}.")


def lazy_class(module_name: str, name: str, build: Callable[[], type]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` that builds ``name`` with ``build()`` on first access (an adapter subclasses
    its host's callback class, so the class exists only once the host is imported)."""

    def __getattr__(attr: str) -> Any:
        if attr != name:
            raise AttributeError(f"module {module_name!r} has no attribute {attr!r}")
        cls = build()
        cls.__module__ = module_name
        setattr(sys.modules[module_name], name, cls)
        return cls

    return __getattr__
