"""Spectrum-aware batch selection: pure selectors (``selectors.py``) and the training step that applies them to an
oversampled candidate pool (``step.py``); ``create_selector(name, **kwargs)`` builds one by name."""

from __future__ import annotations

from spectral_ssl.batching.selectors import (
    greedy_select,
    log_det_objective,
    pool_select,
    resolve_target,
    resolve_until,
)
from spectral_ssl.batching.step import (
                                        SELECTIONS,
                                        SELECTORS,
                                        SOURCES,
                                        BatchSelector,
                                        CandidatePool,
                                        GreedySelector,
                                        PoolSelector,
                                        RandomSelector,
                                        ResumeError,
                                        create_selector,
                                        frozen_norm_statistics,
                                        selector_arguments,
                                        step_seed,
)

__all__ = ["SELECTIONS", "SELECTORS", "SOURCES", "BatchSelector", "CandidatePool", "GreedySelector", "PoolSelector",
           "RandomSelector", "ResumeError", "create_selector", "frozen_norm_statistics", "greedy_select",
           "log_det_objective", "pool_select", "resolve_target", "resolve_until", "selector_arguments", "step_seed"]
