"""Kept for ``scripts/bench_gpu.py`` only: the benchmarks' timing helpers now live in ``benchmarks/harness.py``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from harness import device_name, simclr_step, step_seconds, synchronizer, timed, train_step  # noqa: E402,F401
