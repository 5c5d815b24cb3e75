"""benchmarks/bench_selection.py at a tiny CPU scale: each pool's timings and objectives, and the step's share."""

import math

import pytest

from tests.conftest import BENCHMARKS, load_module

TIMES = ["torch_fp32_ms", "torch_fp64_ms", "dpp_map_fp32_ms", "block1_ms", "block4_ms", "block16_ms"]


def test_tiny_run_reports_both_pools_and_the_training_step(capsys):
    bench = load_module(BENCHMARKS / "bench_selection.py")
    k, pool, dim = 8, 32, 16
    res = bench.main(["--k", str(k), "--pool", str(pool), "--dim", str(dim), "--repeats", "1", "--device", "cpu",
                      "--backbone", "test_resnet"])
    assert list(res) == ["device", "random", "low-rank clustered", "step_ms"]
    floor = dim * math.log(1e-2)  # F of the empty set: every pick adds log(1 + |x|^2 / eps) > 0 to it
    for label in ("random", "low-rank clustered"):
        row = res[label]
        assert set(row) == {*TIMES, "objective_fp32", "objective_fp64", "objective_dpp_map"}
        assert all(math.isfinite(row[t]) and row[t] > 0 for t in TIMES), row
        for key in ("objective_fp32", "objective_fp64", "objective_dpp_map"):
            assert math.isfinite(row[key]) and row[key] > floor
        # the same objective, greedily (unit vectors tie on the first pick, so the picks may differ): within 5 %
        gain = row["objective_fp64"] - floor
        assert row["objective_dpp_map"] == pytest.approx(row["objective_fp64"], abs=0.05 * gain)
        assert row["objective_fp32"] == pytest.approx(row["objective_fp64"], abs=0.05 * gain)
    assert math.isfinite(res["step_ms"]) and res["step_ms"] > 0
    out = capsys.readouterr().out
    assert f"k={k}, M={pool}, D={dim}, eps=0.01" in out and "[random]" in out and "[low-rank clustered]" in out
    assert f"(d) test_resnet SimCLR training step, batch {k} x 2 views @ 32 px: {res['step_ms']:.1f} ms" in out
    assert f"selection (a) fp32 is {100 * res['random']['torch_fp32_ms'] / res['step_ms']:.1f} % of it" in out
