"""benchmarks/bench_pipeline.py on a tiny prepared Fashion-MNIST (96 train rows): the loader's three ways and the
recipe's, their medians and ratios as printed, the JSON as returned."""

import json
import math
import statistics

import pytest

from tests.conftest import BENCHMARKS, SCRIPTS, load_module
from tests.test_readme_commands import fake_fashion_mnist

TINY = "--backbone=test_resnet --proj_hidden_dim=32 --proj_dim=16 --batch_size=16 --reff_samples=16 --log_every=1"


@pytest.mark.slow
def test_tiny_run_reports_the_three_ways_loader_and_recipe(tmp_path, capsys):
    fake_fashion_mnist(tmp_path / "idx")
    dataset = load_module(SCRIPTS / "prepare_fashion_mnist.py").main(["--source", str(tmp_path / "idx"),
                                                                      "--output", str(tmp_path / "fm")])
    bench = load_module(BENCHMARKS / "bench_pipeline.py")
    out = tmp_path / "pipeline.json"
    res = bench.main(["--dataset", str(dataset), "--repeats", "1", "--batches", "2", "--batch_size", "16",
                      "--steps", "3", "--recipe_args", TINY, "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    arms = ["loader", "device", "cached"]
    for part in ("loader", "recipe"):
        assert list(res[part]) == arms
        assert all(len(res[part][on]) == 1 and math.isfinite(res[part][on][0]) and res[part][on][0] > 0
                   for on in arms), res[part]
    assert len(res["decode_s"]) == 1 and res["decode_s"][0] > 0
    printed = capsys.readouterr().out
    assert "(a) input pipeline" in printed and "(b) recipe end to end" in printed
    for part in ("loader", "recipe"):
        before = statistics.median(res[part]["loader"])
        for on in arms:
            ratio = f"{statistics.median(res[part][on]) / before:.2f}x before"
            assert ratio in printed
    assert printed.count("1.00x before") >= 2  # the "before" arm over itself, in both parts
