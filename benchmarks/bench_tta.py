"""Time-to-accuracy of spectrum control: random batches against Pool-P3, Greedy-64, ZCA and Greedy-64 + ZCA.

    python benchmarks/bench_tta.py [--seeds 3] [--max_steps N | --epochs E] [--probe_every 10] [--parallel 1]
                                [--arms random,pool,greedy,zca,greedy_zca] [--output_dir docs/tta] [--key=value ...]

Every arm trains through ``recipes/pretrain.py`` on the same data, backbone, batch, learning-rate schedule and budget,
once per seed (seeds 0..S-1); the only differences are the arm's own keys (ARMS below). Each run logs the online kNN
top-1 (``--probe_samples`` images of each split) every ``--probe_every`` steps next to ``train_seconds``, the
training wall-clock so far (selection and cache passes included, evaluation excluded), and is then probed offline
with ``recipes/linear_probe.py``. After all runs, from the logged curves (no run needs the target in advance):

* target = ``--target_fraction`` x the random arm's mean final kNN top-1;
* time-to-target of a run = ``train_seconds`` (and step) of its first probe at or above the target; its resolution is
  ``--probe_every`` steps. Mean ± std over the seeds that reached it, with the count of those that did not.

Written to ``--output_dir``: ``tta_wallclock.png`` and ``tta_steps.png`` (kNN top-1 against training seconds and
against steps: per arm the mean over seeds and a min-max band; on the wall-clock plot each probe's x is the seeds'
mean ``train_seconds`` at that step), ``tta.md`` (the table, also printed) and ``tta.json`` (settings, target, every
run's logged curve, linear probe and time-to-target). Run one after another in this process, the timed runs follow a
short throw-away run (``--untimed_warmup`` steps), so that no arm pays the process's one-time set-up in its
seconds; with ``--parallel`` every run is a fresh process and pays its own. Runs go to ``--runs_dir/ARM/seedS``
(``--reuse`` keeps a finished one instead of training it again).

Any other ``--key=value`` (or ``--key value``) goes to every pretrain run, e.g. ``--backbone``, ``--image_size``,
``--batch_size``, ``--dataset``, ``--augment``, ``--max_train_samples``, ``--lr``, ``--warmup_steps``. The arms'
own keys (selection, whitening, seed, output_dir) are not accepted there.

Scales:

* reduced CPU scale (the defaults; 14-30 minutes for 5 arms x 3 seeds on 2 CPU cores): ``data/fashion_mnist``
  (``python scripts/prepare_fashion_mnist.py``), ``make demo``'s network (half-width resnet18 with ``output_stride:
  16``, its last stage dilated to a 2 x 2 map; ``--backbone_kwargs="{channels: [32, 64, 128, 256]}"`` gives the
  stock 1 x 1 last stage of the runs before 2026-12-07) at 32 px, batch 128, projection dim 64 (ZCA needs
  batch > dim), lr 2e-3 with 20 warm-up steps, the first 6000 training rows (46 steps an epoch, decoded once), 120
  steps (2.6 epochs), kNN on 500 + 500 images every 20 steps, linear probe on 3000 train / all 10 000 test images
  (the first 1000 test images before 2026-12-07). Sized from a pilot: the random arm's kNN top-1 climbs from ~60 % at
  step 20 to ~68 % at steps 60-120, so a target of 95 % of its final value is crossed mid-run, not at the first probe
  (with the stock last stage: 47 % -> ~62 %).
* full GPU scale::

      python benchmarks/bench_tta.py --epochs 50 --probe_every 230 --log_every 23 --probe_samples 2000 \\
          --max_train_samples=null --linear_train_samples 0 --linear_test_samples 0 --parallel 5 --warmup_steps=230 \\
          --backbone_kwargs={} --batch_size=256 --proj_dim=128

  (Fashion-MNIST 60k rows, 234 steps per epoch at batch 256; ``--parallel 5`` runs the five arms of a seed at once,
  since a resnet18 at 32 px leaves an H100-class GPU mostly idle; the arms then share the GPU, so compare their
  seconds only within one ``--parallel`` setting; ``--parallel 1`` gives each run the device alone.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from spectral_ssl import cpu_threads

cpu_threads.configure()  # before torch loads libgomp: the recipes' CPU thread policy (README, "CPU runs")

import torch  # noqa: E402
from harness import ROOT, device_name, import_file, write_results  # noqa: E402

from spectral_ssl import hub  # noqa: E402

# arm slug -> (name in the table and plots, the arm's own pretrain keys)
ARMS: dict[str, tuple[str, list[str]]] = {
    "random": ("random", ["--selection=random", "--whitening=none"]),
    "pool": ("Pool-P3", ["--selection=pool", "--pool_candidates=3", "--whitening=none"]),
    "greedy": ("Greedy-64", ["--selection=greedy", "--greedy_m=64", "--whitening=none"]),
    "zca": ("ZCA", ["--selection=random", "--whitening=zca"]),
    "greedy_zca": ("Greedy-64 + ZCA", ["--selection=greedy", "--greedy_m=64", "--whitening=zca"]),
    # a selection schedule (``selection_until``): Greedy-64 for the first third of the budget (40 of the reduced
    # scale's 120 steps), then random batches of the same pool; not a default arm
    "greedy_until": ("Greedy-64 for the first third, then random", ["--selection=greedy", "--greedy_m=64",
                                                                   "--selection_until=0.33", "--whitening=none"]),
    # candidates embedded at 16 px (``selection_embed_size``): at the reduced scale's 32 px a quarter of the
    # no-grad pass; not a default arm
    "greedy_embed16": ("Greedy-64, candidates embedded at 16 px", ["--selection=greedy", "--greedy_m=64",
                                                                  "--selection_embed_size=16", "--whitening=none"]),
}
DEFAULT_ARMS = ("random", "pool", "greedy", "zca", "greedy_zca")
REFERENCE = "random"
# pretrain keys the benchmark sets itself (per arm, per seed or from its own options)
RESERVED = {"selection", "selection_until", "whitening", "seed", "output_dir", "resume", "overwrite_output_dir",
            "target_accuracy", "config", "max_steps", "epochs", "log_every", "probe_every", "probe_samples"}
# reduced CPU scale; any of them can be overridden with --key=value. The data, network, resolution, normalisation,
# batch and lr are make demo's (tests/test_bench_tta_script.py keeps them equal to its config); the projection dim,
# warm-up and rows are the benchmark's own
PRETRAIN_DEFAULTS = {"dataset": "data/fashion_mnist", "backbone": "resnet18",
                     "backbone_kwargs": "{channels: [32, 64, 128, 256], output_stride: 16}", "image_size": "32",
                     "mean": "[0.286, 0.286, 0.286]", "std": "[0.353, 0.353, 0.353]", "batch_size": "128",
                     "proj_dim": "64", "lr": "0.002", "warmup_steps": "20", "max_train_samples": "6000",
                     "save_every": "null", "reff_samples": "1000"}
CURVE_KEYS = ("step", "epoch", "train_seconds", "img_per_s", "loss", "reff_cov", "knn_top1", "sel_reff_chosen",
              "sel_reff_random", "sel_share", "sel_staleness", "sel_cache_hit", "band_measured_mean", "band_lower_mean",
              "band_upper_mean", "band_containment")


def parse_passthrough(tokens: list[str]) -> dict[str, str]:
    """``--key=value`` / ``--key value`` tokens -> {key: value} (dashes in keys read as underscores)."""
    out, i = {}, 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise SystemExit(f"error: unexpected argument {token!r}; pass pretrain keys as --key=value")
        key, sep, value = token[2:].partition("=")
        if not sep:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise SystemExit(f"error: --{key} needs a value; pass it as --{key}=value")
            value, i = tokens[i + 1], i + 1
        key = key.replace("-", "_")
        if key in RESERVED:
            raise SystemExit(f"error: --{key} is set by the benchmark (per arm, per seed or by its own option); "
                             "drop it from the pass-through keys")
        out[key] = value
        i += 1
    return out


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--arms", default=",".join(DEFAULT_ARMS),
                   help=f"comma-separated arms (default {','.join(DEFAULT_ARMS)}): " + ", ".join(ARMS))
    p.add_argument("--seeds", type=int, default=3, help="runs per arm (seeds F..F+S-1, F = --first_seed)")
    p.add_argument("--first_seed", type=int, default=0, help="first seed (a later GPU run adds seeds to earlier ones)")
    p.add_argument("--max_steps", type=int, default=120, help="training budget in steps (ignored with --epochs)")
    p.add_argument("--epochs", type=int, default=None, help="training budget in epochs instead of --max_steps")
    p.add_argument("--log_every", type=int, default=20, help="steps between metrics lines")
    p.add_argument("--probe_every", type=int, default=20, help="steps between online kNN probes (a multiple of "
                   "--log_every)")
    p.add_argument("--probe_samples", type=int, default=500, help="images of each split in the online kNN probe")
    p.add_argument("--target_fraction", type=float, default=0.95,
                   help="target = this fraction of the random arm's mean final kNN top-1")
    p.add_argument("--linear_train_samples", type=int, default=3000, help="linear probe train rows (0 = all)")
    p.add_argument("--linear_test_samples", type=int, default=0,
                   help="linear probe test rows (0 = all; the split's first images are easier than the rest)")
    p.add_argument("--no_linear_probe", action="store_true", help="skip the offline linear probe")
    p.add_argument("--parallel", type=int, default=1,
                   help="runs at once, as subprocesses (1 = one after another, in this process)")
    p.add_argument("--untimed_warmup", type=int, default=2,
                   help="steps of a throw-away run before the timed ones when they share this process, so that no "
                   "arm's first steps pay one-time set-up (0 = none)")
    p.add_argument("--output_dir", default="docs/tta", help="plots, tta.md and tta.json")
    p.add_argument("--runs_dir", default="outputs/tta", help="the pretrain run folders")
    p.add_argument("--reuse", action="store_true",
                   help="keep a run folder that already holds a finished run (export, metrics, probe) as it is")
    args, rest = p.parse_known_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise SystemExit(f"error: unknown or no arm(s) {unknown}; valid: {', '.join(ARMS)}")
    if REFERENCE not in arms:
        raise SystemExit(f"error: the target is relative to the {REFERENCE!r} arm; include it in --arms")
    args.arms = arms
    for key in ("seeds", "log_every", "probe_every", "probe_samples", "parallel", "max_steps"):
        if getattr(args, key) < 1:
            raise SystemExit(f"error: --{key} must be at least 1")
    if args.untimed_warmup < 0:
        raise SystemExit("error: --untimed_warmup must be 0 (none) or more steps")
    if args.probe_every % args.log_every:
        raise SystemExit("error: --probe_every must be a multiple of --log_every (probes are logged with metrics)")
    if not 0 < args.target_fraction <= 1:
        raise SystemExit("error: --target_fraction must be in (0, 1]")
    return args, parse_passthrough(rest)


def pretrain_argv(args: argparse.Namespace, passthrough: dict[str, str], arm: str, seed: int, out: Path) -> list[str]:
    keys = {**PRETRAIN_DEFAULTS, **passthrough}
    budget = [f"--epochs={args.epochs}"] if args.epochs else [f"--max_steps={args.max_steps}"]
    return [*(f"--{k}={v}" for k, v in keys.items()), *budget, f"--log_every={args.log_every}",
            f"--probe_every={args.probe_every}", f"--probe_samples={args.probe_samples}", *ARMS[arm][1],
            f"--seed={seed}", f"--output_dir={out}", "--overwrite_output_dir=true"]


def probe_argv(args: argparse.Namespace, out: Path, baselines: bool = False) -> list[str]:
    return ["--model", str(out), f"--max_train_samples={args.linear_train_samples or 'null'}",
            f"--max_test_samples={args.linear_test_samples or 'null'}",
            *(["--compare_random_init", "--compare_raw_pixels"] if baselines else [])]


def ensure_baselines(args: argparse.Namespace, out: Path) -> dict | None:
    """The fair baselines of the linear probe (the same architecture fairly initialised at random, raw pixels), on
    the same probe images, from ``out``'s probe (the reference arm's first seed), probing it again with them when its
    probe has none; None without a linear probe."""
    if args.no_linear_probe:
        return None
    path = out / "linear_probe.json"
    if "raw_pixels" not in json.loads(path.read_text()):
        import_file(ROOT / "recipes" / "linear_probe.py").main(probe_argv(args, out, baselines=True))
    result = json.loads(path.read_text())
    return {"random_init": result["random_init"]["top1"], "raw_pixels": result["raw_pixels"]["top1"]}


def finished(out: Path, args: argparse.Namespace) -> bool:
    return ((out / "config.json").is_file() and (out / "metrics.jsonl").is_file()
            and (args.no_linear_probe or (out / "linear_probe.json").is_file()))


def run_all(args: argparse.Namespace, passthrough: dict[str, str]) -> dict[tuple[str, int], Path]:
    """Train (and linear-probe) every arm x seed; seeds outermost, so an interrupted benchmark stays balanced."""
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(arm, seed, Path(args.runs_dir) / arm / f"seed{seed}") for seed in seeds for arm in args.arms]
    todo = [j for j in jobs if not (args.reuse and finished(j[2], args))]
    print(f"bench_tta: {len(jobs)} runs ({len(jobs) - len(todo)} reused), {args.parallel} at a time -> "
          f"{args.runs_dir}", flush=True)
    if args.parallel == 1:
        pretrain = import_file(ROOT / "recipes" / "pretrain.py")
        probe = None if args.no_linear_probe else import_file(ROOT / "recipes" / "linear_probe.py")
        if todo and args.untimed_warmup:
            arm, seed, out = todo[0]
            pretrain.main([*pretrain_argv(args, passthrough, arm, seed, Path(args.runs_dir) / "_warmup"),
                           f"--max_steps={args.untimed_warmup}"])
        for arm, seed, out in todo:
            start = time.perf_counter()
            pretrain.main(pretrain_argv(args, passthrough, arm, seed, out))
            if probe is not None:
                probe.main(probe_argv(args, out))
            print(f"bench_tta: {ARMS[arm][0]} seed {seed} done in {time.perf_counter() - start:.0f} s", flush=True)
    else:
        with ThreadPoolExecutor(args.parallel) as pool:
            for _ in pool.map(lambda job: run_subprocess(args, passthrough, *job), todo):
                pass
    return {(arm, seed): out for arm, seed, out in jobs}


def run_subprocess(args: argparse.Namespace, passthrough: dict[str, str], arm: str, seed: int, out: Path) -> None:
    """One run as ``python recipes/pretrain.py`` (+ ``recipes/linear_probe.py``), its output in ``out``.log."""
    log = out.parent / f"{out.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    commands = [[sys.executable, str(ROOT / "recipes" / "pretrain.py"), *pretrain_argv(args, passthrough, arm, seed,
                                                                                         out)]]
    if not args.no_linear_probe:
        commands.append([sys.executable, str(ROOT / "recipes" / "linear_probe.py"), *probe_argv(args, out)])
    start = time.perf_counter()
    with log.open("w") as f:
        for command in commands:
            f.write("$ " + " ".join(command) + "\n")
            f.flush()
            if subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode:
                raise SystemExit(f"error: {ARMS[arm][0]} seed {seed} failed; see {log}")
    print(f"bench_tta: {ARMS[arm][0]} seed {seed} done in {time.perf_counter() - start:.0f} s", flush=True)


def read_run(out: Path) -> dict:
    """One finished run: its logged curve (CURVE_KEYS of every metrics line), linear probe, selection R_eff."""
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    probe = out / "linear_probe.json"
    return {"folder": str(out), "curve": [{k: m[k] for k in CURVE_KEYS if k in m} for m in metrics],
            "linear_top1": json.loads(probe.read_text())["pretrained"]["top1"] if probe.is_file() else None,
            "selection_reff": hub.selection_reff_record(metrics),
            "config": {**json.loads((out / "train_config.json").read_text()),
                       "run_epochs": json.loads((out / "config.json").read_text())["spectral_ssl"].get("epochs")}}


def knn_points(run: dict) -> list[dict]:
    return [p for p in run["curve"] if "knn_top1" in p]


def _when(point: dict) -> dict:
    return {"step": point["step"], "seconds": point["train_seconds"], "epoch": point.get("epoch")}


def time_to_target(run: dict, target: float) -> dict | None:
    """The first probe at or above ``target``: {step, seconds, epoch}, or None."""
    return next((_when(p) for p in knn_points(run) if p["knn_top1"] >= target), None)


def time_to_stay(run: dict, target: float) -> dict | None:
    """The first probe from which every later probe stays at or above ``target`` (an early crossing that is lost
    again, e.g. before a collapse, does not count): {step, seconds, epoch}, or None."""
    hit = None
    for p in reversed(knn_points(run)):
        if p["knn_top1"] < target:
            break
        hit = p
    return None if hit is None else _when(hit)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], spec: str = ".1f") -> str:
    if not values:
        return "–"
    m, s = mean_std(values)
    return f"{m:{spec}} ± {s:{spec}}"


def summarise(runs: dict[str, list[dict]], fraction: float) -> dict:
    """Target from the reference arm's mean final kNN top-1, then each arm's time-to-target and final numbers."""
    finals = {arm: [knn_points(r)[-1]["knn_top1"] for r in rs if knn_points(r)] for arm, rs in runs.items()}
    if len(finals[REFERENCE]) < len(runs[REFERENCE]):
        raise SystemExit(f"error: a {REFERENCE} run logged no knn_top1; check --probe_every against the budget")
    reference = statistics.fmean(finals[REFERENCE])
    target = fraction * reference
    arms = {}
    for arm, rs in runs.items():
        hits = [time_to_target(r, target) for r in rs]
        stays = [time_to_stay(r, target) for r in rs]
        for r, hit, stay in zip(rs, hits, stays):
            r["time_to_target"], r["time_to_stay"] = hit, stay
        reached = [h for h in hits if h is not None]
        stayed = [h for h in stays if h is not None]
        sel = [r["selection_reff"] for r in rs if r["selection_reff"]]
        arms[arm] = {
            "name": ARMS[arm][0], "runs": len(rs), "reached": len(reached),
            "seconds": [h["seconds"] for h in reached], "steps": [h["step"] for h in reached],
            "stayed": len(stayed), "stay_seconds": [h["seconds"] for h in stayed],
            "stay_steps": [h["step"] for h in stayed],
            "final_knn": finals[arm], "linear_top1": [r["linear_top1"] for r in rs if r["linear_top1"] is not None],
            "train_seconds": [r["curve"][-1]["train_seconds"] for r in rs if r["curve"]],
            "reff_chosen": statistics.fmean(s["chosen"] for s in sel) if sel else None,
            "reff_random": statistics.fmean(s["random"] for s in sel) if sel else None,
        }
    return {"reference_final_knn": reference, "target_fraction": fraction, "target": target, "arms": arms}


# the pretrain keys that scale_text states itself; any other key given on the command line is listed after them
STATED = {"dataset", "backbone", "backbone_kwargs", "image_size", "batch_size", "proj_dim", "max_train_samples", "lr",
          "optimizer", "warmup_steps", "loss"}


def scale_text(config: dict, args: argparse.Namespace, device: str, passthrough: dict[str, str]) -> str:
    """The table's "Scale" line: the run's data, network, budget and probes, then every other pretrain key set on the
    command line (e.g. ``--whitening_eps=1.0``), so that a table never hides what its runs were given."""
    rows = f"≤ {config['max_train_samples']}" if config.get("max_train_samples") else "all"
    epochs = f" = {config['run_epochs']} epochs" if config.get("run_epochs") is not None else ""
    budget = f"{config['epochs']} epochs" if args.epochs else f"{config['max_steps']} steps{epochs}"
    linear = ("no linear probe" if args.no_linear_probe else
              f"linear probe on {args.linear_train_samples or 'all'} train / {args.linear_test_samples or 'all'} "
              "test images")
    kwargs = f" {config['backbone_kwargs']}" if config.get("backbone_kwargs") else ""
    extra = {k: v for k, v in passthrough.items() if k not in STATED}
    other = f"; other pretrain keys: {', '.join(f'--{k}={v}' for k, v in extra.items())}" if extra else ""
    return (f"{config['dataset']}, {config['backbone']}{kwargs} at {config['image_size']} px, batch "
            f"{config['batch_size']}, projection dim {config['proj_dim']}, "
            f"{rows} training rows per epoch, {budget}, lr {config['lr']} ({config['optimizer']}, cosine, "
            f"{config['warmup_steps']} warm-up steps), loss {config['loss']}, {args.seeds} seed(s) per arm; online kNN "
            f"top-1 on {config['probe_samples']} images of each split every {config['probe_every']} steps; {linear}; "
            f"{device}, {args.parallel} run(s) at a time{other}")


def table(summary: dict, scale: str, probe_every: int) -> str:
    ref = summary["arms"][REFERENCE]
    ref_time = statistics.fmean(ref["seconds"]) if ref["seconds"] else None
    ref_stay = statistics.fmean(ref["stay_seconds"]) if ref["stay_seconds"] else None
    lines = [
        "## Time to accuracy: spectrum control against random batches", "",
        f"Scale: {scale}.", "",
        f"Target: {summary['target_fraction']:.0%} of the random arm's mean final kNN top-1 "
        f"({summary['reference_final_knn']:.2f} %) = **{summary['target']:.2f} %**. Time-to-target: training "
        f"seconds (selection and cache passes included, evaluation excluded) at the first probe at or above it "
        f"(resolution {probe_every} steps), mean ± std over the seeds that reached it; speed-up = random's mean "
        "time / the arm's. *Stays above from*: the first probe after which no later probe falls below the target "
        "(a crossing lost again, e.g. before an early collapse of the features, does not count), with its speed-up.",
        "",
        "| arm | reached | time to target (s) | steps to target | speed-up | stays above from (s) | steps | speed-up "
        "| final kNN top-1 (%) | linear top-1 (%) | R_eff chosen / random | train s (budget) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in summary["arms"].values():
        reached = f"{arm['reached']}/{arm['runs']}"
        if arm["reached"] < arm["runs"]:
            reached += f" ({arm['runs'] - arm['reached']} not reached)"
        speedup = (f"{ref_time / statistics.fmean(arm['seconds']):.2f}×" if ref_time and arm["seconds"] else "–")
        stay_speedup = (f"{ref_stay / statistics.fmean(arm['stay_seconds']):.2f}×"
                        if ref_stay and arm["stay_seconds"] else "–")
        stay = fmt(arm["stay_seconds"]) if arm["stay_seconds"] else "never"
        if arm["stay_seconds"] and arm["stayed"] < arm["runs"]:
            stay += f" ({arm['stayed']}/{arm['runs']})"
        sel = (f"{arm['reff_chosen']:.1f} / {arm['reff_random']:.1f}" if arm["reff_chosen"] is not None else "–")
        lines.append(f"| {arm['name']} | {reached} | {fmt(arm['seconds']) if arm['seconds'] else 'not reached'} | "
                     f"{fmt(arm['steps'], '.0f')} | {speedup} | {stay} | {fmt(arm['stay_steps'], '.0f')} | "
                     f"{stay_speedup} | {fmt(arm['final_knn'], '.2f')} | "
                     f"{fmt(arm['linear_top1'], '.2f')} | {sel} | {fmt(arm['train_seconds'], '.0f')} |")
    if summary.get("baselines"):
        base = summary["baselines"]
        lines += ["", f"Baselines, the same linear probe on the same images: the same architecture fairly initialised "
                  f"at random {base['random_init']:.2f} %, raw pixels {base['raw_pixels']:.2f} %."]
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, list[dict]], summary: dict, out_dir: Path) -> list[Path]:
    """Two PNGs: kNN top-1 against training seconds and against steps; mean over seeds, min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, x_key, label in (("tta_wallclock.png", "train_seconds", "training wall-clock (s, evaluation excluded)"),
                               ("tta_steps.png", "step", "optimisation step")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for arm, rs in runs.items():
            curves = [knn_points(r) for r in rs]
            n = min(len(c) for c in curves)  # the same probe steps for every seed of an arm
            if n == 0:
                continue
            x = [statistics.fmean(c[i][x_key] for c in curves) for i in range(n)]
            ys = [[c[i]["knn_top1"] for c in curves] for i in range(n)]
            line, = ax.plot(x, [statistics.fmean(y) for y in ys], marker="o", ms=3,
                            label=f"{ARMS[arm][0]} (n={len(rs)})")
            ax.fill_between(x, [min(y) for y in ys], [max(y) for y in ys], color=line.get_color(), alpha=0.2, lw=0)
        ax.axhline(summary["target"], color="grey", ls="--", lw=1,
                   label=f"target {summary['target']:.1f} % ({summary['target_fraction']:.0%} of random's final)")
        ax.set_xlabel(label)
        ax.set_ylabel("online kNN top-1 (%)")
        ax.set_title("kNN top-1 during pretraining (mean over seeds, min-max band)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def band_plot(runs: dict[str, list[dict]], out_dir: Path) -> Path | None:
    """The gradient-norm band's tightness along training: per arm (mean over seeds) the batch-mean measured squared
    gradient norm over the upper bound and the lower bound over the measured one (1 = the bound is exact)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (upper, lower) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    drawn = False
    for arm, rs in runs.items():
        curves = [[p for p in r["curve"] if "band_measured_mean" in p] for r in rs]
        n = min((len(c) for c in curves), default=0)
        if n == 0:
            continue
        steps = [curves[0][i]["step"] for i in range(n)]
        for ax, ratio in ((upper, lambda p: p["band_measured_mean"] / p["band_upper_mean"]),
                          (lower, lambda p: p["band_lower_mean"] / p["band_measured_mean"])):
            ax.plot(steps, [statistics.fmean(ratio(c[i]) for c in curves) for i in range(n)], marker="o", ms=3,
                    label=ARMS[arm][0])
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    upper.set(xlabel="step", ylabel="measured / upper bound", title="Upper bound: how much it over-estimates",
              yscale="log")
    lower.set(xlabel="step", ylabel="lower bound / measured", title="Lower bound: how much it under-estimates",
              yscale="log")
    for ax in (upper, lower):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path = out_dir / "tta_band.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    args, passthrough = parse_args(argv)
    start = time.perf_counter()
    folders = run_all(args, passthrough)
    runs: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    for (arm, seed), out in folders.items():
        runs[arm].append({"seed": seed, **read_run(out)})
    summary = summarise(runs, args.target_fraction)
    summary["baselines"] = ensure_baselines(args, folders[(REFERENCE, args.first_seed)])
    config = runs[REFERENCE][0]["config"]
    device = device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    md = table(summary, scale_text(config, args, device, passthrough), config["probe_every"])
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = plot(runs, summary, out_dir)
    band = band_plot(runs, out_dir)
    plots += [band] if band is not None else []
    (out_dir / "tta.md").write_text(md + "\n" + "".join(f"![{p.stem}]({p.name})\n" for p in plots))
    result = {"settings": {**vars(args), "pretrain": passthrough, "pretrain_defaults": PRETRAIN_DEFAULTS,
                           "device": device, "wall_seconds": round(time.perf_counter() - start, 1)},
              "summary": summary, "runs": runs}
    write_results(out_dir / "tta.json", result)
    print(md)
    print(f"wrote {', '.join(str(p) for p in plots)}, {out_dir / 'tta.md'} and {out_dir / 'tta.json'} "
          f"({time.perf_counter() - start:.0f} s)")
    return result


if __name__ == "__main__":
    main()
