"""benchmarks/bench_monitor.py: a tiny end-to-end run reports both arms, the update and record costs and an overhead
equal to its formula."""

import pytest

from tests.conftest import BENCHMARKS, load_module


def test_tiny_run_reports_the_overhead_formula(capsys):
    bench = load_module(BENCHMARKS / "bench_monitor.py")
    res = bench.main(["--batch", "8", "--dim", "16", "--repeats", "4", "--every", "2", "--window", "32"])
    assert res["records_in_run"] == 2 and res["step_ms"] > 0 and res["monitored_step_ms"] > 0
    assert res["overhead"] == pytest.approx((res["update_ms"] + res["record_ms"] / 2) / res["step_ms"])
    assert "overhead at every=2" in capsys.readouterr().out
