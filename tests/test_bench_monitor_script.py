"""benchmarks/bench_monitor.py: a tiny end-to-end run reports the three arms, the in-loop and alone costs and
overheads equal to their formulas."""

import pytest

from tests.conftest import BENCHMARKS, load_module


@pytest.mark.parametrize("every", [1, 2])
def test_tiny_run_reports_the_overhead_formulas(capsys, every):
    bench = load_module(BENCHMARKS / "bench_monitor.py")
    res = bench.main(["--batch", "8", "--dim", "16", "--repeats", "3", "--every", str(every), "--window", "32"])
    assert res["records_in_run"] == 3  # one record step per repeat, the window full at each
    assert res["step_ms"] > 0 and res["record_step_ms"] > 0 and res["loop_record_ms"] > 0 and res["record_ms"] > 0
    assert (res["update_step_ms"] > 0) == (every > 1) and (res["loop_update_ms"] > 0) == (every > 1)
    assert res["overhead"] == pytest.approx(
        ((every - 1) * res["loop_update_ms"] + res["loop_record_ms"]) / (every * res["step_ms"]))
    assert res["overhead_alone"] == pytest.approx((res["update_ms"] + res["record_ms"] / every) / res["step_ms"])
    out = capsys.readouterr().out
    assert f"overhead at every={every}, side by side" in out and "one record" in out
