"""benchmarks/bench_peers.py at a tiny CPU scale: three arms in the JSON, the textbook NT-Xent equals InfoNCELoss."""

import importlib.util
import json
import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from spectral_ssl.losses import InfoNCELoss
from tests.conftest import BENCHMARKS, load_module


@pytest.fixture(scope="module")
def bench_peers():
    return load_module(BENCHMARKS / "bench_peers.py")


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """NT-Xent by its definition, one anchor at a time in float64: -log(e^{s_ap} / sum_{c != a} e^{s_ac})."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n, b = z.shape[0], z1.shape[0]
    total = 0.0
    for a in range(n):
        sims = [(z[a] @ z[c]).item() / tau for c in range(n) if c != a]
        total += -((z[a] @ z[(a + b) % n]).item() / tau - math.log(sum(math.exp(s) for s in sims)))
    return total / n


def test_textbook_nt_xent_equals_infonce(bench_peers):
    g = torch.Generator().manual_seed(0)
    for b, d in ((2, 4), (5, 16), (32, 128)):
        z1 = F.normalize(torch.randn(b, d, generator=g), dim=1)
        z2 = F.normalize(torch.randn(b, d, generator=g), dim=1)
        textbook = bench_peers.nt_xent(z1, z2, 0.2).item()
        assert textbook == pytest.approx(InfoNCELoss(0.2)(z1, z2).item(), abs=1e-5)
        assert textbook == pytest.approx(reference_nt_xent(z1, z2, 0.2), abs=1e-5)
    # perfectly aligned, mutually orthogonal pairs: the positive has similarity 1, the 2B - 2 negatives 0
    z = torch.eye(8)[:3]
    expected = -math.log(math.exp(1 / 0.2) / (math.exp(1 / 0.2) + 4))
    assert bench_peers.nt_xent(z, z, 0.2).item() == pytest.approx(expected, rel=1e-6)


def test_tiny_cpu_run_reports_three_arms(bench_peers, tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two busy cores: one thread each is faster than two fighting
    try:
        out = tmp_path / "peers.json"
        returned = bench_peers.main(["--backbone", "test_resnet", "--batch", "8", "--image", "32", "--repeats", "2",
                                     "--steps", "1", "--device", "cpu", "--output", str(out)])
    finally:
        torch.set_num_threads(threads)
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))
    assert list(results["arms"]) == ["spectral_ssl", "plain timm + torch", "lightly NTXentLoss"]
    installed = importlib.util.find_spec("lightly") is not None
    assert (results["lightly"] is not None) == installed
    for name, row in results["arms"].items():
        if name == "lightly NTXentLoss" and not installed:
            assert row["status"].startswith("not installed") and row["img_per_s"] is None
            assert results["ratios"]["ours / lightly"] is None
            continue
        assert row["status"] == "measured" and positive(row["img_per_s"]), (name, row)
        assert len(row["step_s"]) == 2 and all(len(s) == 1 and positive(s[0]) for s in row["step_s"])
        assert row["min"] <= row["img_per_s"] <= row["max"]
        assert row["img_per_s"] == pytest.approx(statistics.median(8 / s[0] for s in row["step_s"]))
    ours = results["arms"]["spectral_ssl"]["img_per_s"]
    assert results["ratios"]["ours / plain"] == pytest.approx(ours / results["arms"]["plain timm + torch"]["img_per_s"])
    check = results["loss_check"]
    assert check["abs_diff_textbook"] < 1e-5
    assert (check["abs_diff_lightly"] is not None and check["abs_diff_lightly"] < 1e-5) == installed
    assert results["settings"]["backbone_kwargs"] == {} and results["settings"]["precision"] == "fp32"
    printed = capsys.readouterr().out
    assert "IMAGES per second" in printed and "plain timm + torch" in printed
    assert ("not installed (pip install lightly" in printed) != installed
