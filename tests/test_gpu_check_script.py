"""scripts/gpu_check.py: its float64 greedy reference against the torch loop, and the whole command at tiny scale on
the CPU (every phase runs, results rewritten as JSON and markdown, nothing fails)."""

import collections
import json
import warnings

import pytest
import torch

from spectral_ssl.batching import greedy_select
from tests.conftest import SCRIPTS, load_module


@pytest.fixture(scope="module")
def gpu_check():
    return load_module(SCRIPTS / "gpu_check.py")


@pytest.mark.parametrize("m", [None, 5, 64])
def test_reference_picks_equal_the_torch_loop(gpu_check, m):
    # On the CPU the torch loop draws Greedy-m's keys pick by pick from the stream one torch.rand(steps, M) call
    # gives, which is what the device check feeds the reference (the kernel draws them so).
    k, total, dim = 15, 70, 9
    x = gpu_check.kernel_pool(total, dim, seed=2, device="cpu", dtype=torch.float64)
    sampled = 0 if m is None else max(0, min(k, total - m))
    keys = torch.rand(sampled, total, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    expected = greedy_select(x, k, m=m, eps=1e-2, generator=torch.Generator().manual_seed(4), backend="torch")
    assert gpu_check.reference_picks(x, k, 1e-2, m, keys if sampled else None) == expected.tolist()


def test_the_matrix_covers_every_loss_whitening_and_selection_and_one_scheduled_greedy(gpu_check, tmp_path):
    sizes = {"backbone": "test_resnet", "backbone_kwargs": "{}", "image_size": 32, "batch": 8, "proj_dim": 4,
             "hidden": 8, "matrix_steps": 10, "matrix_rows": 64}
    jobs = gpu_check.matrix_jobs(tmp_path / "data", tmp_path, sizes)
    names = [job["name"] for job in jobs]
    assert len(names) == len(set(names)) == 7 * 2 * 3 + 1 and "infonce/zca/greedy_until" in names
    until = jobs[names.index("infonce/zca/greedy_until")]["argv"]
    plain = jobs[names.index("infonce/zca/greedy")]["argv"]
    own_dir = f"--output_dir={tmp_path / 'matrix' / 'infonce_zca_greedy'}_until"
    assert set(until) - set(plain) == {"--selection_until=0.5", own_dir}


def test_same_compares_checkpoint_state_with_restored_snapshots(gpu_check):
    saved = {"a": torch.ones(3), "nested": {"b": [1, 2]}}
    assert gpu_check.same(saved, {"a": (torch.ones(3), "cpu"), "nested": {"b": [1, 2]}})
    assert not gpu_check.same(saved, {"a": (torch.zeros(3), "cpu"), "nested": {"b": [1, 2]}})
    assert not gpu_check.same(saved, {"a": (torch.ones(3), "cpu")})


def test_sync_sites_counts_the_lines_that_sync_inside_the_named_function_only(gpu_check):
    message = "called a synchronizing CUDA operation"  # torch.cuda.set_sync_debug_mode("warn") on a GPU

    def train():
        for _ in range(3):
            warnings.warn(message, stacklevel=1)  # every step
        warnings.warn(message, stacklevel=1)  # once
        warnings.warn("an unrelated warning", stacklevel=1)

    def export():
        warnings.warn(message, stacklevel=1)  # outside the loop: not counted

    with warnings.catch_warnings(record=True) as others:
        warnings.simplefilter("always")
        sites = gpu_check.sync_sites(lambda: (train(), export()), ("train", "test_gpu_check_script.py"))
    assert sorted(sites.values()) == [1, 3]
    assert all(site.startswith("test_gpu_check_script.py:") and "warnings.warn(message" in site for site in sites)
    assert not [w for w in others if "synchronizing" in str(w.message)]


def test_syncs_every_step_fail_unless_the_design_needs_them(gpu_check):
    sites = collections.Counter({"step.py:175 positions = positions.to(self.samples['idx'].device)": 20,
                                 "whitening.py:30 lam, vecs = torch.linalg.eigh(cov)": 36,
                                 "pretrain.py:218 'loss': accelerator.reduce(loss.detach(), 'mean').item()": 2})
    per_step, unexpected, expected = gpu_check.classify_syncs(sites, steps=20, log_every=10)
    assert len(per_step) == 2 and unexpected == ["whitening.py:30 lam, vecs = torch.linalg.eigh(cov)"]
    assert "picks are read back" in expected
    assert gpu_check.classify_syncs(collections.Counter(), 20, 10) == ([], [], "")



def test_missing_data_is_one_line(gpu_check, tmp_path):
    with pytest.raises(SystemExit, match="prepare_fashion_mnist"):
        gpu_check.main(["--output", str(tmp_path / "out"), "--dataset", str(tmp_path / "none"), "--phases",
                        "headline"])


@pytest.mark.slow
def test_tiny_run_goes_through_every_phase(gpu_check, tmp_path):
    out = tmp_path / "out"
    gpu_check.main(["--tiny", "--output", str(out), "--budget_s", "240", "--dataset", str(tmp_path / "no_data")])
    report = json.loads((out / "gpu_check.json").read_text())
    rows = report["checks"]
    assert not [r for r in rows if r["status"] in ("FAIL", "ERROR")], [r for r in rows if r["status"] in
                                                                       ("FAIL", "ERROR")]
    phases = {r["phase"] for r in rows}
    assert {"preflight", "correctness", "speed", "headline", "tta"} <= phases
    by_name = {r["check"]: r for r in rows}
    assert by_name["checkpoint + resume on the device"]["status"] == "PASS"
    matrix = by_name["every loss x whitening x selection (+ Greedy with selection_until), bf16"]
    assert matrix["runs"] and all(r["ok"] for r in matrix["runs"])  # the box may cut the matrix, never fail it
    figures = report["figures"]
    assert figures["model_only"]["img_per_s"] > 0 and figures["recipe random"]["img_per_s"] > 0
    jpeg = figures["jpeg"]  # the recipe end to end on a folder of JPEGs (decode=cpu here, decode=device on a GPU)
    assert jpeg["decode"] == "cpu" and jpeg["recipe"]["img_per_s"] > 0 and jpeg["ratio"] > 0
    knn = by_name["online kNN probe, images kept / read again"]  # bench_online_knn on the headline's network
    assert knn["status"] == "INFO" and knn["ratio"] > 0 and figures["online_knn"]["rows"][0]["samples"] == 32
    half = by_name["recipe Greedy-64 + ZCA, candidates embedded at half the side / random"]  # the tiny 16 px: 8 px
    assert half["status"] == "INFO" and half["ratio"] > 0 and "--selection_embed_size=8;" in half["detail"]
    assert 0 <= figures["headline"]["linear_top1"] <= 100 and "raw_pixels_top1" in figures["headline"]
    assert (out / "headline_probe.json").is_file() and (out / "headline_metrics.jsonl").is_file()
    markdown = (out / "gpu_check.md").read_text()
    assert "| headline | Fashion-MNIST linear top-1 |" in markdown
    names = [r["check"] for r in rows]  # the verdict as soon as the pretrained probe ends, the baselines after it
    assert names.index("Fashion-MNIST linear top-1") < names.index("baselines (same probe, same images)")
    assert figures["recipe random"]["rows"] == 512  # the speed arms decode a capped split; the headline scales it
    tta = by_name.get("one more seed")
    assert tta is not None and tta["status"] in ("INFO", "SKIP")
    if tta["status"] == "INFO":
        record = json.loads((out / "tta_seed.json").read_text())
        assert record["seed"] == 0 and set(record["tta"]["summary"]["arms"]) >= {"random", "greedy_zca"}


def test_demo_runs_the_gpu_config_on_cuda_and_the_cpu_config_elsewhere():
    import yaml

    demo = load_module(SCRIPTS / "demo.py")
    gpu_config, gpu_probe = demo.choose_config(cuda=True)
    cpu_config, cpu_probe = demo.choose_config(cuda=False)
    assert gpu_config.name == "fashion_mnist_gpu.yaml" and gpu_probe == (None, None)  # the full 60k/10k probe
    assert cpu_config.name == "fashion_mnist_simclr.yaml" and cpu_probe == (10_000, None)
    gpu = yaml.safe_load(gpu_config.read_text())
    assert gpu["backbone"] == "resnet18" and gpu["backbone_kwargs"] == {} and gpu["image_size"] == 64
