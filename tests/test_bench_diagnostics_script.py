"""benchmarks/bench_diagnostics.py at a tiny scale: the step and diagnostics times, their ratio and the overheads."""

import math

import pytest

from tests.conftest import BENCHMARKS, load_module


def test_tiny_run_reports_step_diagnostics_and_their_ratio(capsys):
    bench = load_module(BENCHMARKS / "bench_diagnostics.py")
    res = bench.main(["--backbone", "test_resnet", "--batch", "4", "--dim", "8", "--image", "16", "--repeats", "1"])
    assert set(res) == {"device", "step_ms", "diagnostics_ms", "ratio"}
    assert all(math.isfinite(res[k]) and res[k] > 0 for k in ("step_ms", "diagnostics_ms", "ratio"))
    assert res["ratio"] == pytest.approx(res["diagnostics_ms"] / res["step_ms"])
    out = capsys.readouterr().out
    assert f"device: {res['device']}" in out
    assert "training step (test_resnet, 2 x 4 images at 16 px)" in out and "band of 8 anchors, D=8" in out
    assert f"ratio diagnostics / step: {res['ratio']:.3f}" in out
    assert f"{100 * res['ratio']:.1f} % / {10 * res['ratio']:.1f} % / {5 * res['ratio']:.1f} %" in out
