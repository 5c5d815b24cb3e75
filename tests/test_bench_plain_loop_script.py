"""benchmarks/bench_plain_loop.py at a tiny CPU scale: both arms train the same network for the same steps and are
probed the same way; the plain arm's torchvision views carry the recipe's augmentation parameters."""

import json
import math

import pytest
from torchvision import transforms as T

from spectral_ssl import SpectralSSL
from spectral_ssl.config import PretrainConfig, parse_config
from tests.conftest import BENCHMARKS, SCRIPTS, load_module
from tests.test_readme_commands import fake_fashion_mnist

TINY = ("--backbone=test_resnet --backbone_kwargs={} --proj_hidden_dim=32 --proj_dim=16 --batch_size=16 "
        "--reff_samples=16 --log_every=1")


@pytest.fixture(scope="module")
def bench():
    return load_module(BENCHMARKS / "bench_plain_loop.py")


def test_torchvision_views_take_the_recipes_augmentation_parameters(bench):
    cfg = parse_config(PretrainConfig, ["--augment_kwargs={crop_scale: [0.5, 1], blur_p: 0.25, grayscale_p: 0}",
                                        "--image_size=40", "--mean=[0.1,0.2,0.3]"])
    views = bench.torchvision_views(cfg)
    assert len(views) == 2
    ops = {type(op).__name__: op for op in views[0].transforms}
    crop = ops["RandomResizedCrop"]
    assert crop.size == (40, 40) and crop.scale == (0.5, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    jitter, blur = (op for op in views[0].transforms if isinstance(op, T.RandomApply))
    assert jitter.p == 0.8 and isinstance(jitter.transforms[0], T.ColorJitter)
    assert jitter.transforms[0].brightness == pytest.approx((0.6, 1.4)) and jitter.transforms[0].hue == (-0.1, 0.1)
    assert blur.p == 0.25 and blur.transforms[0].sigma == (0.1, 2.0)
    assert blur.transforms[0].kernel_size == (5, 5)  # ~10 % of 40 px, odd
    assert ops["RandomGrayscale"].p == 0 and ops["RandomHorizontalFlip"].p == 0.5
    assert ops["Normalize"].mean == [0.1, 0.2, 0.3]


@pytest.mark.slow
def test_both_arms_train_the_same_network_and_are_probed_alike(bench, tmp_path, capsys):
    fake_fashion_mnist(tmp_path / "idx")
    dataset = load_module(SCRIPTS / "prepare_fashion_mnist.py").main(["--source", str(tmp_path / "idx"),
                                                                      "--output", str(tmp_path / "fm")])
    out = tmp_path / "bench"
    results = bench.main(["--max_steps", "3", "--out", str(out), "--num_workers", "0", "--probe_train", "48",
                          "--probe_test", "24", "--pretrain_args", f"--dataset={dataset} {TINY}"])
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    arms = results["arms"]
    assert list(arms) == ["recipe", "plain loop", "fair random init", "raw pixels"] and results["steps"] == 3
    for row in arms.values():
        assert 0 <= row["linear_top1"] <= 100 and 0 <= row["knn_top1"] <= 100
    for name in ("recipe", "plain loop"):
        assert arms[name]["img_per_s"] > 0 and math.isfinite(arms[name]["last_loss"])
    assert results["speed_ratio"] == pytest.approx(arms["recipe"]["img_per_s"] / arms["plain loop"]["img_per_s"])
    recipe, plain = SpectralSSL.from_pretrained(out / "recipe"), SpectralSSL.from_pretrained(out / "plain")
    assert plain.metadata["steps"] == recipe.metadata["steps"] == 3
    shapes = {name: {k: v.shape for k, v in m.state_dict().items()} for name, m in (("r", recipe), ("p", plain))}
    assert shapes["r"] == shapes["p"] and plain.data_config == recipe.data_config
    assert any(k.endswith("running_mean") for k in shapes["p"])
    assert json.loads((out / "plain" / "linear_probe.json").read_text())["pretrained"]["top1"] == \
        arms["plain loop"]["linear_top1"]
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert table[0] == "| arm | linear top-1 | kNN top-1 | training s | img/s |" and len(table) == 5
