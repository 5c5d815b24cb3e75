"""scripts/bench_gpu.py end to end at a tiny CPU scale: every row measured, the JSON complete, targets pending."""

import json
import math

import pytest
import torch

from tests.conftest import SCRIPTS, load_module


@pytest.fixture(scope="module")
def bench_gpu():
    return load_module(SCRIPTS / "bench_gpu.py")


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-scale check; the GPU run is the script itself")
def test_tiny_cpu_run_fills_every_row(bench_gpu, tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two busy cores: one thread each is faster than two fighting
    try:
        out = tmp_path / "bench.json"
        returned = bench_gpu.main(["--device", "cpu", "--backbone", "test_resnet", "--batch_size", "16",
                                   "--image_size", "16", "--steps", "4", "--rows", "128", "--repeats", "2",
                                   "--k", "64", "--pool", "256", "--dataset", str(tmp_path / "missing"),
                                   "--output", str(out)])
    finally:
        torch.set_num_threads(threads)
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))
    assert results["config"]["dataset"].startswith("synthetic") and results["config"]["proj_dim"] == 8
    assert positive(results["model_only"]["step_ms"])
    assert results["model_only"]["img_per_s"] == pytest.approx(16 / (results["model_only"]["step_ms"] / 1000))
    assert list(results["recipe"]) == list(bench_gpu.RUNS)
    for name, row in results["recipe"].items():
        assert all(positive(row[key]) for key in ("img_per_s", "step_ms", "logs", "wall_s")), (name, row)
        if name.startswith(("Pool", "Greedy")):
            assert positive(row["sel_select_ms"]) and positive(row["sel_share"]), (name, row)
            assert "--selection=" + ("pool" if name.startswith("Pool") else "greedy") in row["argv"]
        assert ("--whitening=zca" in row["argv"]) == name.endswith("ZCA")
        assert row["logs"] == 3  # steps 2, 3, 4 (log_every 1, the first step is the warm-up)
    greedy = results["greedy_select"]
    assert positive(greedy["torch_exact_ms"]) and positive(greedy["torch_m64_ms"])
    assert greedy["kernel_exact_ms"] is None and greedy["kernel_m64_ms"] is None  # no kernel on the CPU
    ratios = results["ratios"]
    assert ratios["recipe_random_over_model"] == pytest.approx(results["recipe"]["random"]["img_per_s"]
                                                               / results["model_only"]["img_per_s"])
    assert ratios["recipe random / random"] == 1.0 and all(positive(v) for v in ratios.values())
    assert [t["status"].split(" ")[0] for t in results["targets"]] == ["pending"] * 4
    printed = capsys.readouterr().out
    assert "IMAGES per second" in printed and "recipe Greedy-64 + ZCA" in printed and "n/a (no kernel)" in printed
    with capsys.disabled():
        print("\n" + printed[printed.index("device: "):])


def test_target_reads_pass_fail_or_pending(bench_gpu):
    assert bench_gpu.target(0.85, 0.8, False, True, "x") == "PASS"
    assert bench_gpu.target(0.75, 0.8, False, True, "x") == "FAIL"
    assert bench_gpu.target(1.5, 1.0, True, True, "x") == "FAIL"
    assert bench_gpu.target(0.5, 1.0, True, True, "x") == "PASS"
    assert bench_gpu.target(0.5, 1.0, True, False, "CPU run") == "pending (CPU run)"
    assert bench_gpu.target(None, 1.0, True, True, "no kernel") == "pending (no kernel)"
