"""benchmarks/bench_layout.py: a tiny run times both layouts side by side and reports their ratio."""

import pytest

from tests.conftest import BENCHMARKS, load_module


def test_tiny_run_reports_both_layouts_and_their_ratio(capsys, tmp_path):
    bench = load_module(BENCHMARKS / "bench_layout.py")
    res = bench.main(["--backbone", "test_resnet", "--batch", "4", "--dim", "8", "--image", "16", "--repeats", "2",
                      "--rounds", "2", "--output", str(tmp_path / "layout.json")])
    assert res["channels_last_ms"] > 0 and res["contiguous_ms"] > 0
    assert res["speedup"] == pytest.approx(res["contiguous_ms"] / res["channels_last_ms"])
    assert (tmp_path / "layout.json").is_file()
    assert "channels_last (the recipe)" in capsys.readouterr().out


def test_the_other_precision_is_a_third_arm(capsys):
    bench = load_module(BENCHMARKS / "bench_layout.py")
    res = bench.main(["--backbone", "test_resnet", "--batch", "4", "--dim", "8", "--image", "16", "--repeats", "1",
                      "--rounds", "1", "--other_precision"])
    assert res["other_precision"] == "bf16" and res["other_precision_ms"] > 0  # the tests run on the CPU
    assert res["precision_speedup"] == pytest.approx(res["channels_last_ms"] / res["other_precision_ms"])
    assert "channels_last, bf16" in capsys.readouterr().out
