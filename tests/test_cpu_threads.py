"""spectral_ssl.cpu_threads: the thread count from the load, user values win, applied before torch loads libgomp;
the heap policy (big blocks stay in glibc's heap);
and the package's lazy public names (``import spectral_ssl.cpu_threads`` must not import torch)."""

import json
import os
import subprocess
import sys

import pytest

import spectral_ssl
from spectral_ssl import cpu_threads
from tests.conftest import ROOT

POLICY_KEYS = ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY", cpu_threads.OPT_OUT, cpu_threads.HEAP_OPT_OUT,
               *cpu_threads.HEAP)


def fresh_env(**extra: str) -> dict:
    """This environment without the thread policy's variables (the test process set GOMP_SPINCOUNT), plus extra."""
    env = {k: v for k, v in os.environ.items() if k not in POLICY_KEYS}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, **extra}


def run_python(code: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture()
def machine(monkeypatch):
    """A fake machine: ``cores``, ``busy`` (cores other work keeps busy now, None: /proc/stat unreadable) and ``load``
    (the 1-minute average)."""
    fake = {"cores": 8, "busy": 0.0, "load": 0.0}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(fake["cores"])), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (fake["load"], 0.0, 0.0))
    monkeypatch.setattr(cpu_threads, "busy_from_others", lambda: fake["busy"])
    return fake


@pytest.mark.parametrize(("cores", "busy", "load", "threads"), [
    (8, 0.0, 0.0, 8), (8, 2.4, 0.0, 6), (8, 2.5, 0.0, 5), (2, 1.0, 0.0, 1), (2, 5.0, 0.0, 1),
    (2, 0.1, 3.0, 2),  # work that ended a minute ago: the load average still counts it, the CPUs are idle
    (2, 1.0, 0.0, 1),  # a competitor that just started: the load average has not seen it yet
    (4, None, 3.0, 1),  # no /proc/stat (macOS): the load average
])
def test_threads_are_the_usable_cores_less_the_load_from_others(machine, cores, busy, load, threads):
    machine.update(cores=cores, busy=busy, load=load)
    chosen = cpu_threads.plan({})
    assert chosen["threads"] == threads and chosen["cores"] == cores
    assert chosen["load_from_others"] == (load if busy is None else busy)
    assert f"{cores} usable cores" in chosen["threads_reason"]


def test_busy_cores_sums_each_cpus_busy_share_between_two_reads():
    before = {0: (100, 1000), 1: (500, 1000), 2: (0, 1000)}
    after = {0: (200, 1100), 1: (550, 1100), 2: (0, 1000)}  # cpu0 fully busy, cpu1 half, cpu2 not ticked
    assert cpu_threads.busy_cores(before, after) == pytest.approx(1.5)


def test_a_busy_loop_beside_this_process_is_seen_at_once():
    """A real competitor that started 0.5 s ago (the load average would need a minute to see it)."""
    if cpu_threads.busy_from_others(window=0.05) is None:
        pytest.skip("no /proc/stat on this system")
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.5)
        assert cpu_threads.busy_from_others() >= 0.7
    finally:
        loop.kill()
        loop.wait()


def test_the_short_spin_is_chosen_only_before_torch_and_when_the_user_set_none(machine, monkeypatch):
    with monkeypatch.context() as m:
        m.delitem(sys.modules, "torch")  # plan() only looks; the real torch stays loaded elsewhere
        assert cpu_threads.plan({})["spincount"] == cpu_threads.SPINCOUNT
        for key, value in (("GOMP_SPINCOUNT", "5"), ("OMP_WAIT_POLICY", "PASSIVE")):
            chosen = cpu_threads.plan({key: value})
            assert chosen["spincount"] == ("5" if key == "GOMP_SPINCOUNT" else None)
            assert f"{key}={value} from the environment" in chosen["spin_reason"]
    chosen = cpu_threads.plan({})
    assert chosen["spincount"] is None and "torch was imported first" in chosen["spin_reason"]


def test_user_values_win(machine):
    machine.update(cores=8, load=0.0)
    chosen = cpu_threads.plan({"OMP_NUM_THREADS": "3"})
    assert chosen["threads"] is None and "OMP_NUM_THREADS=3 from the environment" in chosen["threads_reason"]
    off = cpu_threads.plan({cpu_threads.OPT_OUT: "default"})
    assert off["threads"] is None and off["spincount"] is None and "torch's defaults" in off["threads_reason"]
    assert cpu_threads.plan({cpu_threads.OPT_OUT: "3"})["threads"] == 3
    for bad in ("many", "0"):
        with pytest.raises(ValueError, match=cpu_threads.OPT_OUT):
            cpu_threads.plan({cpu_threads.OPT_OUT: bad})


def test_configure_after_torch_sets_the_threads_and_says_the_spin_was_not_applied(machine, monkeypatch, caplog):
    import torch

    machine.update(cores=2, busy=1.0)
    monkeypatch.setattr(cpu_threads, "_configured", None)
    before = torch.get_num_threads()
    env = {}
    try:
        with caplog.at_level("INFO", logger="spectral_ssl.cpu_threads"):
            chosen = cpu_threads.configure(env)
        assert chosen["threads"] == 1 == torch.get_num_threads()
        assert "GOMP_SPINCOUNT" not in env and "not applied" in chosen["summary"]
        assert [r.getMessage() for r in caplog.records] == [chosen["summary"]]
    finally:
        torch.set_num_threads(before)


def test_a_fresh_process_gets_the_spin_before_torch_loads_and_the_chosen_threads():
    code = ("import json, os, sys\nfrom spectral_ssl import cpu_threads\nchosen = cpu_threads.configure()\n"
            "import torch\nprint(json.dumps({'env': os.environ.get('GOMP_SPINCOUNT'), 'torch_first': "
            "chosen['torch_already_imported'], 'chosen': chosen['threads'], 'threads': torch.get_num_threads()}))")
    seen = run_python(code, fresh_env())
    assert seen["env"] == cpu_threads.SPINCOUNT and seen["torch_first"] is False
    assert seen["threads"] == seen["chosen"] >= 1
    user = run_python(code, fresh_env(OMP_NUM_THREADS="1", GOMP_SPINCOUNT="7"))
    assert (user["env"], user["chosen"], user["threads"]) == ("7", None, 1)


def test_importing_cpu_threads_leaves_torch_unloaded():
    code = "import json, sys\nimport spectral_ssl.cpu_threads\nprint(json.dumps('torch' in sys.modules))"
    assert run_python(code, fresh_env()) is False


def test_every_public_name_resolves():
    for name in spectral_ssl.__all__:
        assert getattr(spectral_ssl, name) is not None, name
    from spectral_ssl import SpectralSSL, effective_rank, losses

    assert SpectralSSL is spectral_ssl.model.SpectralSSL and effective_rank is spectral_ssl.spectral.effective_rank
    assert spectral_ssl.losses is losses and callable(spectral_ssl.batching.greedy_select)
    assert set(spectral_ssl.__all__) <= set(dir(spectral_ssl))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        spectral_ssl.nope  # noqa: B018


GLIBC = __import__("platform").libc_ver()[0] == "glibc"


def test_the_heap_policy_is_chosen_unless_the_user_set_an_allocator_or_opted_out():
    chosen = cpu_threads.plan({})
    assert chosen["heap"] is GLIBC
    for env, reason in [({"MALLOC_ARENA_MAX": "2"}, "MALLOC_ARENA_MAX from the environment"),
                        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=1"}, "GLIBC_TUNABLES from the environment"),
                        ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "an allocator in LD_PRELOAD"),
                        ({cpu_threads.OPT_OUT: "default"}, "glibc's defaults"),
                        ({cpu_threads.HEAP_OPT_OUT: "glibc"}, "SPECTRAL_SSL_HEAP=glibc")]:
        assert cpu_threads.plan(env)["heap"] is False and reason in cpu_threads.plan(env)["heap_reason"], env
    assert cpu_threads.plan({cpu_threads.OPT_OUT: "3"})["heap"] is GLIBC  # a fixed thread count keeps the heap policy


@pytest.mark.skipif(not GLIBC, reason="the heap policy is glibc's mallopt")
def test_a_fresh_process_reuses_a_freed_big_block_without_page_faults():
    """After configure(), a 60 MiB tensor made after a 64 MiB one was freed reuses its pages (no first-touch page
    faults); with the opt-out glibc maps fresh memory (here one fault per 4 KiB page, 15k; fewer with transparent
    huge pages); the settings reach child processes through the environment."""
    code = ("import json, os, resource\nfrom spectral_ssl import cpu_threads\nchosen = cpu_threads.configure()\n"
            "import torch\nx = torch.ones(16 << 20)\ndel x\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\ny = torch.ones(15 << 20)\n"
            "print(json.dumps({'heap': chosen['heap'], 'env': os.environ.get('MALLOC_MMAP_MAX_'), "
            "'faults': resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))")
    kept = run_python(code, fresh_env())
    assert kept == {"heap": True, "env": "0", "faults": kept["faults"]} and kept["faults"] < 100
    default = run_python(code, fresh_env(**{cpu_threads.HEAP_OPT_OUT: "glibc"}))
    assert default["heap"] is False and default["env"] is None and default["faults"] > kept["faults"]  # fewer with THP
