"""CPU thread policies on a machine shared with other work: one demo training step under each policy and machine state.

    python benchmarks/bench_cpu_threads.py [--batch_size 256] [--repeats 5] [--policies ...] [--states ...]

The step is `make demo`'s (recipes/configs/fashion_mnist_simclr.yaml): a half-width resnet18 (channels 32-256), 2048
hidden, the config's projection dim (128 until 2026-12-07, 64 since), InfoNCE, two 32x32 views, AdamW, channels_last
as the recipe trains. Each (policy, state) runs in a fresh interpreter with the policy's environment (libgomp reads
it when torch loads) and reports the median ms of ``--repeats`` steps after one warm-up step. Policies:

* ``default``: torch's defaults (OpenMP threads = cores, libgomp's long spin);
* ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once);
* ``1 thread``: ``OMP_NUM_THREADS=1``;
* ``short spin``: ``GOMP_SPINCOUNT=10000`` (all cores, a short spin before sleeping);
* ``shipped``: ``spectral_ssl.cpu_threads.configure()`` (short spin, threads = cores less the load from others).

Machine states: ``idle`` (nothing started by the benchmark; other users' work may still run: the load is printed),
``busy loop`` (one Python process spinning on one core), ``torch run`` (a second process training the same step with
torch's defaults), ``shipped run`` (the same second process under the shipped policy: two spectral_ssl runs side by
side). Ratios are to ``default`` on the idle machine, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
POLICY_KEYS = ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "SPECTRAL_SSL_THREADS")
POLICIES = {  # name -> environment set on top of a clean one (None: the child calls cpu_threads.configure())
    "default": {"SPECTRAL_SSL_THREADS": "default"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "SPECTRAL_SSL_THREADS": "default"},
    "1 thread": {"OMP_NUM_THREADS": "1", "SPECTRAL_SSL_THREADS": "default"},
    "short spin": {"GOMP_SPINCOUNT": "10000", "SPECTRAL_SSL_THREADS": "default"},
    "shipped": None,
}
STATES = ("idle", "busy loop", "torch run", "shipped run")
COMPETITOR_POLICY = {"torch run": "default", "shipped run": "shipped"}
BUSY_LOOP = "while True: pass"


def policy_env(policy: str, base: dict | None = None) -> dict:
    """The environment a child runs under: ``base`` (default: this one) without any thread setting, plus the
    policy's."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in POLICY_KEYS}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, **(POLICIES[policy] or {})}


def demo_step(batch_size: int):
    """The demo's training step as a closure, and the device it runs on (imports torch)."""
    import torch
    import yaml
    from harness import simclr_step

    cfg = yaml.safe_load((HERE.parent / "recipes" / "configs" / "fashion_mnist_simclr.yaml").read_text())
    device = torch.device("cpu")
    return simclr_step(cfg["backbone"], batch_size, cfg["proj_dim"], device, image=cfg["image_size"],
                       backbone_kwargs=cfg["backbone_kwargs"], memory_format=torch.channels_last), device


def child(args: argparse.Namespace) -> None:
    """One measurement (or, with ``--compete``, the competing training run); prints one JSON line."""
    chosen = None
    if os.environ.get("SPECTRAL_SSL_THREADS") != "default":
        from spectral_ssl import cpu_threads

        chosen = cpu_threads.configure()
    load = os.getloadavg()[0]
    step, device = demo_step(args.batch_size)
    import torch
    from harness import step_seconds

    if args.compete:
        step()
        print("ready", flush=True)
        while True:
            step()
    samples = step_seconds(step, args.repeats, device)
    print(json.dumps({"ms": 1000 * statistics.median(samples), "threads": torch.get_num_threads(),
                      "load_at_start": load, "chosen": chosen and chosen["summary"]}))


def start_competitor(state: str, batch_size: int) -> subprocess.Popen | None:
    """The state's competing process, running once this returns; None on the idle machine."""
    if state == "idle":
        return None
    if state == "busy loop":
        proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        time.sleep(1.0)
        return proc
    proc = subprocess.Popen([sys.executable, __file__, "--child", "--compete", f"--batch_size={batch_size}"],
                            env=policy_env(COMPETITOR_POLICY[state]), stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError("the competing training process did not start")
    return proc


def measure(policy: str, state: str, batch_size: int, repeats: int, timeout: float = 1800) -> dict:
    """Median ms per step of a fresh child under ``policy`` while ``state``'s competitor runs."""
    competitor = start_competitor(state, batch_size)
    try:
        done = subprocess.run([sys.executable, __file__, "--child", f"--batch_size={batch_size}",
                               f"--repeats={repeats}"], env=policy_env(policy), capture_output=True, text=True,
                              timeout=timeout)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    if done.returncode != 0:
        raise RuntimeError(f"{policy} / {state} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict, policies: list[str], states: list[str]) -> str:
    """Markdown: ms per step (threads) and the ratio to the idle default, one row per policy."""
    base = results.get(("default", "idle"), {}).get("ms")
    head = "| policy | " + " | ".join(states) + " |"
    lines = [head, "|" + "---|" * (len(states) + 1)]
    for policy in policies:
        cells = []
        for state in states:
            r = results[(policy, state)]
            ratio = f", {r['ms'] / base:.2f}x" if base else ""
            cells.append(f"{r['ms']:.0f} ms ({r['threads']} thr{ratio})")
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--policies", default=",".join(POLICIES), help="comma-separated subset of " + ", ".join(POLICIES))
    p.add_argument("--states", default=",".join(STATES), help="comma-separated subset of " + ", ".join(STATES))
    p.add_argument("--output", default=None, help="also write the results as JSON here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compete", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return {}
    policies, states = args.policies.split(","), args.states.split(",")
    unknown = sorted(set(policies) - set(POLICIES)) + sorted(set(states) - set(STATES))
    if unknown:
        p.error(f"unknown policies/states {unknown}")
    results = {}
    for state in states:  # one competitor start per (policy, state): the child's start-up sees it running
        for policy in policies:
            results[(policy, state)] = measure(policy, state, args.batch_size, args.repeats)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"demo step (half-width resnet18, batch {args.batch_size}), median of {args.repeats}, {cores} cores; "
          "ms per step (threads, ratio to default on the idle machine)")
    print(table(results, policies, states))
    shipped = [r["chosen"] for (pol, _), r in results.items() if pol == "shipped"]
    for (policy, state), r in results.items():
        print(f"  {policy} / {state}: load {r['load_at_start']:.2f} at start" + (
            f"; {r['chosen']}" if r["chosen"] else ""))
    out = {"batch_size": args.batch_size, "repeats": args.repeats, "cores": cores, "shipped": shipped,
           "results": [{"policy": pol, "state": st, **r} for (pol, st), r in results.items()]}
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
