"""CPU threads on a machine shared with other work: a short OpenMP spin and an intra-op thread count from the load.

With the defaults, each OpenMP thread that finishes its share of an operator spins (libgomp: 300k spins) waiting
for the others; when another process holds one of the cores, the threads wait for a thread that is not running and a
training step gets 4-25x slower (docs/benchmarks.md, "CPU threads"). The policy here:

* ``GOMP_SPINCOUNT=10000``: a short spin, then sleep. libgomp reads it once, when torch loads it, so ``configure()``
  must run before ``import torch`` (``import spectral_ssl.cpu_threads`` does not import torch).
* intra-op threads = max(1, usable cores - round(load from others)), the load read at start-up: how busy this
  process's CPUs are over 0.3 s (``/proc/stat``), less its own share; the 1-minute load average only where that
  file is missing (it lags: a test suite that ended a minute ago would halve the threads of an idle machine).

* glibc's heap keeps big blocks (``mallopt``: ``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD`` 1 GiB, also exported as
  ``MALLOC_MMAP_MAX_`` / ``MALLOC_TRIM_THRESHOLD_`` for child processes). By default every block over 32 MiB (and,
  until the adaptive threshold grows, over 128 KiB) is a fresh ``mmap`` returned to the system when freed, so each
  batch's views and activations are first-touch page faults again: two 224 px views of a 64-batch (38 MiB each) took
  26 ms to concatenate instead of 7.5, ``DeviceAugment`` on such a batch 169 -> 127 ms, a resnet18 step at 96 px
  1.12 -> 1.00 s, ``bench_jpeg``'s loader 1.94x -> 2.17x torchvision in one run (docs/benchmarks.md). The cost: memory a
  process freed stays with it (up to its peak) instead of going back to the system.

Values the user set win: ``OMP_NUM_THREADS`` (threads), ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` (spin),
``MALLOC_*_``, ``GLIBC_TUNABLES`` or an ``LD_PRELOAD`` allocator (heap) are left alone.
``SPECTRAL_SSL_THREADS=default`` turns the policy off (torch's defaults, glibc's heap); ``SPECTRAL_SSL_THREADS=N``
fixes the thread count at N and keeps the short spin and the heap setting; ``SPECTRAL_SSL_HEAP=glibc`` leaves only
the heap alone (setting ``MALLOC_MMAP_MAX_`` yourself is not the same: glibc then stops raising its mmap threshold
and maps every block over 128 KiB, measured 2.6x slower in ``bench_jpeg``).
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import platform
import sys
import time
from collections.abc import MutableMapping

HEAP_OPT_OUT = "SPECTRAL_SSL_HEAP"  # "glibc": leave glibc's heap as it is (threads and spin still set)
OPT_OUT = "SPECTRAL_SSL_THREADS"  # "default": torch's own threads and spin; an integer: that many threads
SPINCOUNT = "10000"
HEAP = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}  # glibc's names for the two settings
_MALLOPT = {"MALLOC_MMAP_MAX_": -4, "MALLOC_TRIM_THRESHOLD_": -1}  # M_MMAP_MAX, M_TRIM_THRESHOLD (malloc.h)
_HEAP_USER_KEYS = (*HEAP, "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")
logger = logging.getLogger(__name__)
_configured: dict | None = None  # the first decision in this process; later calls re-apply it


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]] | None:
    """(busy, total) jiffies of each listed CPU from ``/proc/stat``; None where the file is missing."""
    times = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                    continue
                ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                times[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    except (OSError, ValueError):
        return None
    return times or None


def busy_cores(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> float:
    """How many of the CPUs were busy between two ``_cpu_times`` reads: the sum of each CPU's busy fraction."""
    total = 0.0
    for cpu, (busy0, all0) in before.items():
        busy1, all1 = after.get(cpu, (busy0, all0))
        if all1 > all0:
            total += (busy1 - busy0) / (all1 - all0)
    return total


def busy_from_others(window: float = 0.3) -> float | None:
    """Cores kept busy by other work right now: the busy share of this process's CPUs over ``window`` seconds,
    less this process's own CPU time (it sleeps meanwhile). None where ``/proc/stat`` is missing."""
    cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    before, own0, t0 = _cpu_times(cpus), time.process_time(), time.monotonic()
    if before is None:
        return None
    time.sleep(window)
    after = _cpu_times(cpus)
    if after is None:
        return None
    own = (time.process_time() - own0) / max(time.monotonic() - t0, 1e-6)
    return max(0.0, busy_cores(before, after) - own)


def load_from_others() -> float:
    """The load other work puts on this process's CPUs now (``busy_from_others``); where that cannot be read, the
    1-minute load average. Not the load average first: it lags by a minute, so work that has just ended (the
    previous run, a test suite) would cost an idle machine half its threads."""
    now = busy_from_others()
    if now is not None:
        return now
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def choose_threads(cores: int, load: float) -> int:
    """max(1, cores - round(load)), halves rounded up."""
    return max(1, cores - math.floor(load + 0.5))


def heap_plan(env: MutableMapping[str, str]) -> tuple[bool, str]:
    """Whether to set glibc's heap policy (module docstring) in this process, and why (not)."""
    if env.get(OPT_OUT, "").strip().lower() == "default":
        return False, f"{OPT_OUT}=default: glibc's defaults"
    if env.get(HEAP_OPT_OUT, "").strip().lower() == "glibc":
        return False, f"{HEAP_OPT_OUT}=glibc: glibc's defaults"
    for key in _HEAP_USER_KEYS:
        if key in env:
            return False, f"{key} from the environment"
    preload = env.get("LD_PRELOAD", "")
    if any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return False, "an allocator in LD_PRELOAD"
    if platform.libc_ver()[0] != "glibc":
        return False, "not glibc: the system's allocator"
    return True, "big blocks kept in the heap (no mmap, trim at 1 GiB)"


def _set_heap(env: MutableMapping[str, str]) -> bool:
    """``mallopt`` the heap settings into this process and export them for its children; False if libc refuses."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    if not all(mallopt(_MALLOPT[key], int(value)) == 1 for key, value in HEAP.items()):
        return False
    env.update(HEAP)
    return True


def plan(environ: MutableMapping[str, str] | None = None) -> dict:
    """What ``configure`` would do in this process, without doing it: threads, spin count and why."""
    env = os.environ if environ is None else environ
    torch_loaded = "torch" in sys.modules
    opt = env.get(OPT_OUT, "").strip().lower()
    out = {"threads": None, "threads_reason": "", "spincount": None, "spin_reason": "", "cores": usable_cores(),
           "load_from_others": None, "torch_already_imported": torch_loaded}
    out["heap"], out["heap_reason"] = heap_plan(env)
    if opt == "default":
        out["threads_reason"] = out["spin_reason"] = f"{OPT_OUT}=default: torch's defaults"
        return out
    if "GOMP_SPINCOUNT" in env or "OMP_WAIT_POLICY" in env:
        key = "GOMP_SPINCOUNT" if "GOMP_SPINCOUNT" in env else "OMP_WAIT_POLICY"
        out["spincount"] = env.get("GOMP_SPINCOUNT")
        out["spin_reason"] = f"{key}={env[key]} from the environment"
    elif torch_loaded:
        out["spin_reason"] = "not applied: torch was imported first (call configure() before import torch)"
    else:
        out["spincount"], out["spin_reason"] = SPINCOUNT, "short spin (libgomp's default is 300k)"
    if "OMP_NUM_THREADS" in env:
        out["threads_reason"] = f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} from the environment"
        return out
    if opt:
        try:
            out["threads"] = int(opt)
        except ValueError:
            raise ValueError(f"{OPT_OUT}={env[OPT_OUT]!r}: use 'default' (torch's threads) or a thread count") from None
        if out["threads"] < 1:
            raise ValueError(f"{OPT_OUT}={env[OPT_OUT]!r}: the thread count must be at least 1")
        out["threads_reason"] = f"{OPT_OUT}={opt}"
        return out
    load = load_from_others()
    out["load_from_others"] = round(load, 2)
    out["threads"] = choose_threads(out["cores"], load)
    out["threads_reason"] = f"{out['cores']} usable cores, load {load:.2f} from other work"
    return out


def configure(environ: MutableMapping[str, str] | None = None) -> dict:
    """Apply the policy (module docstring) to this process; returns what was chosen and why (``plan``'s dict plus
    ``summary``) and logs it in one INFO line. Call it before ``import torch``: afterwards only the thread count can
    still be set (``torch.set_num_threads``) and the result says the spin count was not applied. A second call
    re-applies the first decision (the load then includes this process's own work)."""
    global _configured
    env = os.environ if environ is None else environ
    if _configured is not None and environ is None:
        if _configured["threads"] is not None and "torch" in sys.modules:
            import torch

            torch.set_num_threads(_configured["threads"])
        return dict(_configured)
    chosen = plan(env)
    if chosen["spincount"] is not None and "GOMP_SPINCOUNT" not in env:
        env["GOMP_SPINCOUNT"] = chosen["spincount"]  # before libgomp loads (with torch)
    if chosen["threads"] is not None:
        import torch

        torch.set_num_threads(chosen["threads"])
    if chosen["heap"] and not _set_heap(env):
        chosen["heap"], chosen["heap_reason"] = False, "mallopt refused: glibc's defaults"
    threads = chosen["threads"] if chosen["threads"] is not None else "default"
    chosen["summary"] = (f"CPU threads: {threads} ({chosen['threads_reason']}); "
                         f"GOMP_SPINCOUNT {chosen['spincount'] or 'default'} ({chosen['spin_reason']}); "
                         f"heap: {'kept' if chosen['heap'] else 'default'} ({chosen['heap_reason']}); "
                         f"opt out with {OPT_OUT}=default")
    logger.info(chosen["summary"])
    if environ is None:
        _configured = dict(chosen)
    return chosen
