"""benchmarks/bench_augment.py at a tiny CPU scale: every method's rate, and the ratios equal to the rates."""

import importlib.util
import math

import pytest

from tests.conftest import BENCHMARKS, load_module


def test_tiny_run_reports_each_method_and_ratios_of_the_rates(capsys):
    bench = load_module(BENCHMARKS / "bench_augment.py")
    res = bench.main(["--batch", "4", "--image", "16", "--input", "16", "--repeats", "1",
                      "--presets", "simclr", "byol", "--devices", "cpu"])
    kornia = importlib.util.find_spec("kornia") is not None
    methods = ["(a) PIL TwoViewTransform", "(b) DeviceAugment", "(b3) DeviceAugment, RGB in"]
    methods += ["(c) kornia.augmentation"] if kornia else []
    assert [(r["preset"], r["method"]) for r in res["rows"]] == [(p, m) for p in ("simclr", "byol") for m in methods]
    for row in res["rows"]:
        assert math.isfinite(row["img_per_s"]) and row["img_per_s"] > 0 and row["device"].startswith("CPU")
    rate = {(r["preset"], r["method"].split()[0]): r["img_per_s"] for r in res["rows"]}
    assert [(r["preset"], r["method"]) for r in res["ratios"]] == [(p, m) for p in ("simclr", "byol")
                                                                   for m in methods[1:3]]
    for r in res["ratios"]:
        tag = r["method"].split()[0]
        assert r["over_pil"] == pytest.approx(rate[(r["preset"], tag)] / rate[(r["preset"], "(a)")])
        if kornia:
            assert r["over_kornia"] == pytest.approx(rate[(r["preset"], tag)] / rate[(r["preset"], "(c)")])
        else:
            assert r["over_kornia"] is None
    out = capsys.readouterr().out
    assert "two views per image, batch 4, 16x16 uint8 gray -> 16 px, median of 1" in out
    assert out.count("(b) / PIL (a) =") == 2 and out.count("(b3) / PIL (a) =") == 2
