"""Spectrum-aware batch selection: pure selectors (``selectors.py``). The training step that embeds an oversampled
pool and applies them is not written yet (issue 5)."""

from __future__ import annotations

from spectral_ssl.batching.selectors import greedy_select, log_det_objective, pool_select, resolve_target

__all__ = ["greedy_select", "log_det_objective", "pool_select", "resolve_target"]
