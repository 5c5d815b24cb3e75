"""benchmarks/bench_tta.py: time-to-target arithmetic on hand-made curves, argument handling, a tiny end-to-end run."""

import json

import pytest
import yaml

from tests.conftest import BENCHMARKS, ROOT, load_module


@pytest.fixture(scope="module")
def bench():
    return load_module(BENCHMARKS / "bench_tta.py")


def fake_run(points, *, logged_between=True, linear=None, sel=None):
    """A run as read_run returns it; points are (step, train_seconds, knn_top1); optional lines without a probe."""
    curve = []
    for step, seconds, knn in points:
        if logged_between:
            curve.append({"step": step - 1, "train_seconds": seconds - 0.1, "loss": 1.0})
        curve.append({"step": step, "train_seconds": seconds, "knn_top1": knn})
    return {"curve": curve, "linear_top1": linear, "selection_reff": sel}


def test_target_and_time_to_target_follow_the_logged_curves(bench):
    runs = {
        "random": [fake_run([(10, 1.0, 50.0), (20, 2.0, 70.0), (30, 3.0, 80.0)], linear=70.0),
                   fake_run([(10, 1.5, 40.0), (20, 3.0, 55.0), (30, 4.5, 60.0)], linear=72.0)],
        "greedy": [fake_run([(10, 1.2, 63.0), (20, 2.4, 66.0), (30, 3.6, 70.0)], linear=75.0,
                            sel={"chosen": 30.0, "random": 20.0}),
                   fake_run([(10, 1.6, 62.9), (20, 3.2, 64.0), (30, 4.8, 65.0)], linear=None,
                            sel={"chosen": 34.0, "random": 22.0})],
    }
    summary = bench.summarise(runs, 0.9)
    assert summary["reference_final_knn"] == pytest.approx(70.0)  # mean of the last probes, 80 and 60
    assert summary["target"] == pytest.approx(63.0)
    rnd, greedy = summary["arms"]["random"], summary["arms"]["greedy"]
    assert (rnd["reached"], rnd["seconds"], rnd["steps"]) == (1, [2.0], [20])  # seed 1 never reaches 63
    assert runs["random"][1]["time_to_target"] is None
    assert (greedy["reached"], greedy["seconds"], greedy["steps"]) == (2, [1.2, 3.2], [10, 20])  # >= at 63.0
    assert greedy["linear_top1"] == [75.0] and greedy["train_seconds"] == [3.6, 4.8]
    assert (greedy["reff_chosen"], greedy["reff_random"]) == (32.0, 21.0)
    assert rnd["reff_chosen"] is None

    md = bench.table(summary, "tiny", 10)
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"arm", "random", "Greedy-64"}
    assert "1/2 (1 not reached)" in rows["random"] and "| 2/2 |" in rows["Greedy-64"]
    assert "2.0 ± 0.0" in rows["random"] and "2.2 ± 1.4" in rows["Greedy-64"]  # stdev(1.2, 3.2) = 1.414
    assert f"{2.0 / 2.2:.2f}×" in rows["Greedy-64"] and "32.0 / 21.0" in rows["Greedy-64"]
    assert "63.00 %" in md and "90%" in md


def test_a_crossing_lost_again_does_not_count_as_staying_above(bench):
    dip = fake_run([(10, 1.0, 70.0), (20, 2.0, 50.0), (30, 3.0, 65.0), (40, 4.0, 66.0)])
    assert bench.time_to_target(dip, 63.0)["step"] == 10
    assert bench.time_to_stay(dip, 63.0) == {"step": 30, "seconds": 3.0, "epoch": None}
    assert bench.time_to_stay(dip, 66.5) is None  # the last probe is below: never stays
    runs = {"random": [dip], "zca": [fake_run([(10, 1.0, 68.0), (20, 2.0, 69.0), (30, 3.0, 70.0), (40, 4.0, 70.0)])]}
    summary = bench.summarise(runs, 0.95)  # target 0.95 x 66 = 62.7
    assert summary["arms"]["random"]["stay_seconds"] == [3.0] and summary["arms"]["zca"]["stay_seconds"] == [1.0]
    zca = next(line for line in bench.table(summary, "tiny", 10).splitlines() if line.startswith("| ZCA |"))
    assert "| 1.0 ± 0.0 | 10 ± 0 | 3.00× |" in zca  # stays above 3x sooner; first crossings are equal (1.00x)


def test_an_arm_that_never_reaches_the_target_says_so(bench):
    runs = {"random": [fake_run([(5, 1.0, 50.0)])], "zca": [fake_run([(5, 1.0, 10.0)])]}
    summary = bench.summarise(runs, 0.95)
    md = bench.table(summary, "tiny", 5)
    zca = next(line for line in md.splitlines() if line.startswith("| ZCA |"))
    assert "0/1 (1 not reached)" in zca and "not reached |" in zca and summary["arms"]["zca"]["seconds"] == []


def test_arguments_pass_through_and_arms_differ_only_in_their_own_keys(bench, tmp_path):
    args, passthrough = bench.parse_args(["--arms", "random,greedy_zca", "--max_steps", "7", "--backbone", "resnet50",
                                          "--image-size=64", "--lr=0.5"])
    assert passthrough == {"backbone": "resnet50", "image_size": "64", "lr": "0.5"}
    a = bench.pretrain_argv(args, passthrough, "random", 1, tmp_path / "a")
    b = bench.pretrain_argv(args, passthrough, "greedy_zca", 1, tmp_path / "a")
    common = set(a) & set(b)
    assert set(a) - common == set(bench.ARMS["random"][1]) - set(bench.ARMS["greedy_zca"][1])
    assert "--backbone=resnet50" in common and "--max_steps=7" in common and "--seed=1" in common
    assert "--backbone=resnet18" not in a and "--batch_size=128" in a  # pass-through replaces a default, once
    for bad, message in ((["--selection=pool"], "set by the benchmark"), (["--arms", "zca"], "include it"),
                         (["--log_every", "4", "--probe_every", "6"], "multiple"), (["--backbone"], "needs a value"),
                         (["--arms", "random,nope"], "unknown")):
        with pytest.raises(SystemExit, match=message):
            bench.parse_args(bad)


def test_the_reduced_scale_trains_the_demo_network(bench):
    """The reduced scale stands for ``make demo``: the keys they share must not drift apart (the stock last stage
    and the dilated one rank the arms differently, docs/benchmarks.md)."""
    demo = yaml.safe_load((ROOT / "recipes" / "configs" / "fashion_mnist_simclr.yaml").read_text())
    shared = ("dataset", "backbone", "backbone_kwargs", "image_size", "mean", "std", "batch_size", "proj_dim", "lr")
    assert {k: yaml.safe_load(bench.PRETRAIN_DEFAULTS[k]) for k in shared} == {k: demo[k] for k in shared}


def test_the_scale_line_names_every_other_key_the_runs_were_given(bench):
    args, passthrough = bench.parse_args(["--whitening_eps=1.0", "--lr", "0.004", "--temperature=0.5"])
    config = {"dataset": "d", "backbone": "resnet18", "backbone_kwargs": {}, "image_size": 32, "batch_size": 128,
              "proj_dim": 64, "max_train_samples": 6000, "max_steps": 120, "run_epochs": 2.6, "lr": 0.004,
              "optimizer": "adamw", "warmup_steps": 20, "loss": "infonce", "probe_samples": 500, "probe_every": 20}
    line = bench.scale_text(config, args, "CPU", passthrough)
    assert line.endswith("; other pretrain keys: --whitening_eps=1.0, --temperature=0.5")
    assert "lr 0.004" in line and "--lr" not in line  # stated once, in its own place
    assert "other pretrain keys" not in bench.scale_text(config, args, "CPU", {})


@pytest.mark.slow
def test_two_arms_two_seeds_end_to_end(bench, tmp_path, capsys):
    from spectral_ssl.data import synthetic_dataset

    data = tmp_path / "data"
    data.mkdir()
    synthetic_dataset(num_rows=96, image_size=32, num_classes=4, seed=0).to_parquet(
        str(data / "train-00000-of-00001.parquet"))
    synthetic_dataset(num_rows=48, image_size=32, num_classes=4, seed=1).to_parquet(
        str(data / "test-00000-of-00001.parquet"))
    out = tmp_path / "tta"
    argv = ["--arms", "random,greedy", "--seeds", "2", "--max_steps", "4", "--log_every", "2", "--probe_every", "2",
            "--probe_samples", "16", "--output_dir", str(out), "--runs_dir", str(tmp_path / "runs"),
            "--linear_train_samples", "64", "--linear_test_samples", "32", f"--dataset={data}",
            "--backbone=test_resnet", "--proj_hidden_dim=32", "--proj_dim=16", "--batch_size=16", "--reff_samples=32",
            "--shuffle_buffer=64", "--lr=0.01", "--backbone_kwargs={}", "--warmup_steps=0"]
    result = bench.main(argv)
    for name in ("tta_wallclock.png", "tta_steps.png", "tta_band.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    md = (out / "tta.md").read_text()
    assert md.split("![")[0].strip() in capsys.readouterr().out
    probe = json.loads((tmp_path / "runs" / "random" / "seed0" / "linear_probe.json").read_text())
    base = result["summary"]["baselines"]  # the fair baselines, from the reference run's probe, in the table
    assert base == {"random_init": probe["random_init"]["top1"], "raw_pixels": probe["raw_pixels"]["top1"]}
    assert f"at random {base['random_init']:.2f} %, raw pixels {base['raw_pixels']:.2f} %" in md
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows == ["arm", "random", "Greedy-64"]
    assert "test_resnet at 32 px, batch 16" in md and "4 steps" in md

    saved = json.loads((out / "tta.json").read_text())
    assert saved["summary"]["target"] == pytest.approx(result["summary"]["target"])
    finals = []
    for arm in ("random", "greedy"):
        assert [r["seed"] for r in saved["runs"][arm]] == [0, 1]
        for run in saved["runs"][arm]:
            probes = [p for p in run["curve"] if "knn_top1" in p]
            assert [p["step"] for p in probes] == [2, 4]
            assert probes[0]["train_seconds"] < probes[1]["train_seconds"]
            assert all(p["band_lower_mean"] <= p["band_measured_mean"] <= p["band_upper_mean"] for p in probes)
            assert 0 <= run["linear_top1"] <= 100
            hit = next((p for p in probes if p["knn_top1"] >= saved["summary"]["target"]), None)
            assert run["time_to_target"] == (None if hit is None else {"step": hit["step"],
                                                                       "seconds": hit["train_seconds"],
                                                                       "epoch": hit.get("epoch")})
            if arm == "random":
                finals.append(probes[-1]["knn_top1"])
        assert (saved["runs"][arm][0]["selection_reff"] is None) == (arm == "random")
    assert saved["summary"]["target"] == pytest.approx(0.95 * sum(finals) / 2)
    seeds = {json.loads((tmp_path / "runs" / "greedy" / f"seed{s}" / "train_config.json").read_text())["seed"]
             for s in (0, 1)}
    assert seeds == {0, 1}

    metrics = tmp_path / "runs" / "random" / "seed0" / "metrics.jsonl"
    stamp = metrics.stat().st_mtime_ns
    again = bench.main([*argv, "--reuse", "--output_dir", str(tmp_path / "again")])  # no run trains again
    assert metrics.stat().st_mtime_ns == stamp and again["summary"] == result["summary"]
