"""benchmarks/compare_recipes.py on a tiny prepared Fashion-MNIST (96 train / 48 test rows): two runs pretrained
and probed, their rows in results.json as returned, and the markdown table printed from them."""

import json
import math

import pytest

from tests.conftest import BENCHMARKS, SCRIPTS, load_module
from tests.test_readme_commands import fake_fashion_mnist

TINY = ("--backbone=test_resnet --proj_hidden_dim=32 --proj_dim=16 --batch_size=16 --reff_samples=16 --log_every=1 "
        "--shuffle_buffer=64")


def finite(value, low: float = 0.0, high: float = math.inf) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high


@pytest.mark.slow
def test_tiny_runs_are_probed_and_tabled(tmp_path, capsys):
    fake_fashion_mnist(tmp_path / "idx")
    dataset = load_module(SCRIPTS / "prepare_fashion_mnist.py").main(["--source", str(tmp_path / "idx"),
                                                                      "--output", str(tmp_path / "fm")])
    capsys.readouterr()
    bench = load_module(BENCHMARKS / "compare_recipes.py")
    out = tmp_path / "compare"
    rows = bench.main(["--max_steps", "2", "--only", "simclr,simclr + Pool-P3", "--out", str(out),
                       "--dataset", str(dataset), "--pretrain_args", TINY, "--max_train_samples", "48",
                       "--max_test_samples", "24"])
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(rows))
    assert [r["run"] for r in rows] == ["simclr", "simclr + Pool-P3"]
    assert rows[1]["overrides"] == ["--selection=pool", "--pool_candidates=3"]
    for r in rows:
        assert r["steps"] == 2 and (out / r["run"].replace(" + ", "_").replace(" ", "_").lower()).is_dir()
        assert finite(r["top1"], 0, 100) and finite(r["reff_backbone"], 1, r["reff_dim"]) and r["reff_dim"] > 0
        assert finite(r["reff_proj"], 1) and finite(r["containment"], 0, 1) and finite(r["cos_views"], -1, 1)
        assert finite(r["ntxent_monitor"]) and r["pretrain_s"] > 0 and r["probe_s"] > 0
    plain, pool = rows
    assert plain["sel_share"] is None and plain["reff_chosen"] is None  # random batches: no selection measured
    assert finite(pool["sel_share"], 0, 1) and finite(pool["reff_chosen"], 1) and finite(pool["reff_random"], 1)
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(rows) and table[0].startswith("| run | linear top-1 |")
    for line, r in zip(table[2:], rows):
        assert line.startswith(f"| {r['run']} | {r['top1']:.2f} % | {r['reff_backbone']:.1f} / {r['reff_dim']} | ")
    assert f"| {pool['reff_chosen']:.1f} / {pool['reff_random']:.1f} | {pool['sel_share']:.1%} |" in table[3]
    assert "| – | – |" in table[2]  # no chosen / random R_eff and no selection share for random batches
