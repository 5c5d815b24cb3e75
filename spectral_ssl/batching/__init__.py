"""Spectrum-aware batch selection: pure selectors (``selectors.py``) and the training step that applies them to an
oversampled candidate pool (``step.py``)."""

from __future__ import annotations

from spectral_ssl.batching.selectors import greedy_select, log_det_objective, pool_select, resolve_target
from spectral_ssl.batching.step import SELECTIONS, SOURCES, BatchSelector, CandidatePool, frozen_norm_statistics

__all__ = ["SELECTIONS", "SOURCES", "BatchSelector", "CandidatePool", "frozen_norm_statistics", "greedy_select",
           "log_det_objective", "pool_select", "resolve_target"]
