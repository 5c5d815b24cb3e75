"""benchmarks/bench_cpu_threads.py: the policies' environments, the table, and a tiny run of two policies x two
machine states in fresh interpreters."""

import pytest

from tests.conftest import BENCHMARKS, load_module


@pytest.fixture(scope="module")
def bench():
    return load_module(BENCHMARKS / "bench_cpu_threads.py")


def test_each_policy_runs_in_a_clean_environment_with_its_own_setting(bench):
    base = {"OMP_NUM_THREADS": "7", "GOMP_SPINCOUNT": "5", "OMP_WAIT_POLICY": "ACTIVE", "PATH": "/bin"}
    envs = {policy: bench.policy_env(policy, base) for policy in bench.POLICIES}
    for policy, env in envs.items():
        assert env["PATH"] == "/bin" and env.get("GOMP_SPINCOUNT") == ("10000" if policy == "short spin" else None)
    assert envs["default"]["SPECTRAL_SSL_THREADS"] == "default" and "OMP_NUM_THREADS" not in envs["default"]
    assert envs["passive"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert envs["1 thread"]["OMP_NUM_THREADS"] == "1"
    shipped = envs["shipped"]  # the child calls cpu_threads.configure() with nothing set
    assert not {"OMP_NUM_THREADS", "OMP_WAIT_POLICY", "SPECTRAL_SSL_THREADS"} & set(shipped)


def test_table_gives_ratios_to_the_idle_default(bench):
    results = {("default", "idle"): {"ms": 100.0, "threads": 2}, ("default", "busy loop"): {"ms": 400.0, "threads": 2},
               ("shipped", "idle"): {"ms": 102.0, "threads": 2}, ("shipped", "busy loop"): {"ms": 150.0, "threads": 1}}
    md = bench.table(results, ["default", "shipped"], ["idle", "busy loop"])
    assert "| default | 100 ms (2 thr, 1.00x) | 400 ms (2 thr, 4.00x) |" in md
    assert "| shipped | 102 ms (2 thr, 1.02x) | 150 ms (1 thr, 1.50x) |" in md


@pytest.mark.slow
def test_a_tiny_run_measures_every_requested_cell(bench, capsys):
    out = bench.main(["--batch_size=4", "--repeats=1", "--policies=default,shipped", "--states=idle,busy loop"])
    cells = {(r["policy"], r["state"]): r for r in out["results"]}
    assert set(cells) == {("default", "idle"), ("default", "busy loop"), ("shipped", "idle"), ("shipped", "busy loop")}
    assert all(r["ms"] > 0 and r["threads"] >= 1 for r in cells.values())
    assert cells[("default", "idle")]["chosen"] is None
    assert "GOMP_SPINCOUNT 10000" in cells[("shipped", "idle")]["chosen"]
    assert "| shipped |" in capsys.readouterr().out
