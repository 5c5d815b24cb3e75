"""benchmarks/bench_spectral_step.py at a tiny scale: the four step variants, amortised diagnostics, the ratios."""

import math

from tests.conftest import BENCHMARKS, load_module

VARIANTS = ["random", "greedy + zca (cache)", "greedy + zca (online)", "pool P3 + zca", "greedy + zca (online, 8 px)"]


def test_tiny_run_reports_every_variant_and_its_ratio_to_random(capsys):
    bench = load_module(BENCHMARKS / "bench_spectral_step.py")
    res = bench.main(["--backbone", "test_resnet", "--batch", "8", "--dim", "4", "--image", "16", "--repeats", "1",
                      "--pool_factor", "3", "--log_every", "2", "--embed_size", "8"])
    assert list(res) == ["device", *VARIANTS, "diagnostics_per_step_ms"]
    assert all(math.isfinite(res[k]) and res[k] > 0 for k in [*VARIANTS, "diagnostics_per_step_ms"])
    lines = {line.split("  ")[1].strip(): line for line in capsys.readouterr().out.splitlines()
             if line.startswith("  ")}
    assert list(lines) == VARIANTS
    for name in VARIANTS:  # every spectral variant pays the amortised diagnostics on top of its step
        total = res[name] + (res["diagnostics_per_step_ms"] if name != "random" else 0.0)
        assert lines[name].endswith(f"{total:8.1f} ms   ratio to random {total / res['random']:.3f}")
    assert lines["random"].endswith("ratio to random 1.000")
