"""benchmarks/bench_online_knn.py: a tiny run on synthetic images with timm's test network."""

import json

import pytest

from tests.conftest import BENCHMARKS, load_module


@pytest.fixture(scope="module")
def bench():
    return load_module(BENCHMARKS / "bench_online_knn.py")


def test_a_tiny_run_times_both_arms_and_they_agree(bench, tmp_path, capsys):
    from spectral_ssl.data import synthetic_dataset

    for split, seed in (("train", 0), ("test", 1)):
        synthetic_dataset(num_rows=40, image_size=32, num_classes=4, seed=seed).to_parquet(
            str(tmp_path / f"{split}-00000-of-00001.parquet"))
    out = bench.main(["--samples=8,24", "--repeats=2", f"--output={tmp_path / 'r.json'}", f"--dataset={tmp_path}",
                      "--backbone=test_resnet", "--backbone_kwargs={}", "--image_size=16", "--proj_hidden_dim=16",
                      "--proj_dim=8"])
    assert [r["samples"] for r in out["rows"]] == [8, 24]
    for row in out["rows"]:
        assert row["read_again_s"] > 0 and row["kept_s"] > 0 and row["first_s"] > 0 and 0 <= row["top1"] <= 100
        assert row["speedup"] == pytest.approx(row["read_again_s"] / row["kept_s"])
        assert row["kept_mb"] == pytest.approx(2 * row["samples"] * 3 * 16 * 16 / 2**20)  # both splits, uint8
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == out["rows"]
    assert "| 24 | " in capsys.readouterr().out


def test_bad_counts_are_one_line(bench):
    with pytest.raises(SystemExit, match="--samples count must be >= 1"):
        bench.main(["--samples=0"])
