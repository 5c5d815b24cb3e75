"""benchmarks/bench_jpeg.py: the photo-like JPEGs, the image folder, the table, and a tiny run of every arm."""

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import BENCHMARKS, load_module


@pytest.fixture(scope="module")
def bench():
    return load_module(BENCHMARKS / "bench_jpeg.py")


def test_photos_are_textured_jpegs_of_the_asked_size(bench):
    data = bench.photo_jpeg(np.random.default_rng(0), 120, 90)
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.size == (120, 90) and image.mode == "RGB"
    pixels = np.asarray(image, dtype=np.float64)
    assert pixels.std() > 20  # not flat
    assert np.abs(np.diff(pixels, axis=1)).max() > 60  # edges
    assert data != bench.photo_jpeg(np.random.default_rng(1), 120, 90)


def test_the_folder_has_class_subfolders_both_loaders_read(bench, tmp_path):
    from torchvision.datasets import ImageFolder

    train = bench.write_folder(tmp_path, 7, 40, 30, classes=3)
    assert sorted(p.name for p in train.iterdir()) == ["class_0", "class_1", "class_2"]
    folder = ImageFolder(str(train))
    assert len(folder) == 7 and sorted(set(folder.targets)) == [0, 1, 2]


def test_two_views_are_independent_draws(bench):
    calls = iter(range(10))
    views = bench.TwoViews(lambda image: (image, next(calls)))
    assert views("x") == (("x", 0), ("x", 1))


def test_table_gives_ratios_to_torchvision(bench):
    md = bench.table({"ours": [200.0, 220.0, 180.0], "torchvision": [100.0]})
    assert "| ours | 200.0 (min 180.0, max 220.0) | 2.00x |" in md and "| torchvision | 100.0" in md


def test_torchvision_baseline_is_the_standard_simclr_recipe(bench):
    from torchvision import transforms as T

    ops = bench.torchvision_simclr().transforms
    assert isinstance(ops[0], T.RandomResizedCrop) and ops[0].size == (224, 224) and ops[0].scale == (0.08, 1.0)
    jitter = ops[2]
    assert jitter.p == 0.8 and jitter.transforms[0].brightness == (0.6, 1.4) and jitter.transforms[0].hue == (-0.1, 0.1)
    assert ops[3].p == 0.2 and ops[4].p == 0.5 and isinstance(ops[5], T.ToTensor)


def test_a_tiny_run_measures_every_arm(bench, tmp_path, capsys):
    out = bench.main(["--images=16", "--batch=8", "--workers=0", f"--folder={tmp_path}", "--width=160",
                      "--height=120", f"--output={tmp_path / 'r.json'}"])
    assert set(out["img_per_s"]) == set(bench.ARMS) and all(v[0] > 0 for v in out["img_per_s"].values())
    assert out["ratio_to_torchvision"]["torchvision"] == pytest.approx(1.0)
    assert "pil full" in out["decode_ms"] and (tmp_path / "r.json").is_file()
    printed = capsys.readouterr().out
    assert "| timm |" in printed and "ratio to torchvision" in printed
