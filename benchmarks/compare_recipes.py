"""Short Fashion-MNIST runs of every method and selector through the recipe, each probed the same way.

    python benchmarks/compare_recipes.py [--max_steps 200] [--only simclr,moco] [--out outputs/compare]
                                      [--dataset data/fashion_mnist] [--pretrain_args "--batch_size=64 ..."]

Each run is ``recipes/pretrain.py --config CONFIG --max_steps=N`` (plus the run's overrides), then
``recipes/linear_probe.py`` on the export (multinomial logistic regression on frozen backbone features of all 60k
train / 10k test images). Prints one markdown row per run: linear top-1, R_eff of the backbone features, the last
logged projection R_eff / band containment / cosine between views, the selection's share of the step, and wall
times; writes the same as JSON to ``OUT/results.json``. The losses' own values are not comparable across methods;
the NT-Xent monitor at a fixed temperature is.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from spectral_ssl import cpu_threads

cpu_threads.configure()  # before torch loads libgomp: the recipes' CPU thread policy (README, "CPU runs")

from harness import ROOT, import_file, write_results  # noqa: E402

CONFIGS = ROOT / "recipes" / "configs"

# name -> (config, extra overrides)
RUNS: dict[str, tuple[str, list[str]]] = {
    "simclr": ("fashion_mnist_simclr.yaml", []),
    "simclr + Pool-P3": ("fashion_mnist_simclr.yaml", ["--selection=pool", "--pool_candidates=3"]),
    "simclr + Greedy-64": ("fashion_mnist_simclr.yaml", ["--selection=greedy", "--greedy_m=64"]),
    "simclr + ZCA": ("fashion_mnist_simclr.yaml", ["--whitening=zca"]),
    "simclr + Greedy-64 + ZCA": ("fashion_mnist_greedy_zca.yaml", []),
    "dcl": ("fashion_mnist_dcl.yaml", []),
    "moco": ("fashion_mnist_moco.yaml", []),
    "sogclr": ("fashion_mnist_sogclr.yaml", []),
    "isoloss": ("fashion_mnist_isoloss.yaml", []),
    "byol": ("fashion_mnist_byol.yaml", []),
    "simsiam": ("fashion_mnist_simsiam.yaml", []),
}


def last_metrics(path: Path) -> dict:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines[-1] if lines else {}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max_steps", type=int, default=200)
    p.add_argument("--only", default="", help="comma-separated run names (default: all): " + ", ".join(RUNS))
    p.add_argument("--out", default="outputs/compare")
    p.add_argument("--max_train_samples", type=int, default=0, help="probe: cap the train split (0 = all)")
    p.add_argument("--max_test_samples", type=int, default=0, help="probe: cap the test split (0 = all)")
    p.add_argument("--dataset", default="", help="a prepared dataset for every run (default: the configs' "
                   "data/fashion_mnist, prepared first)")
    p.add_argument("--pretrain_args", default="", help="more pretrain overrides for every run, one string "
                   "(e.g. \"--backbone=test_resnet --batch_size=16\"); they win over the run's own")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"error: unknown run(s) {unknown}; valid: {', '.join(RUNS)}")

    if not args.dataset:
        import_file(ROOT / "scripts" / "prepare_fashion_mnist.py").main([])
    common = [f"--dataset={args.dataset}"] if args.dataset else []
    common += shlex.split(args.pretrain_args)
    caps = [f"--{key}={value}" for key, value in (("max_train_samples", args.max_train_samples),
                                                   ("max_test_samples", args.max_test_samples)) if value > 0]
    pretrain = import_file(ROOT / "recipes" / "pretrain.py")
    probe = import_file(ROOT / "recipes" / "linear_probe.py")
    out_root = Path(args.out)
    results = []
    for name in names:
        config, extra = RUNS[name]
        out = out_root / name.replace(" + ", "_").replace(" ", "_").lower()
        t = time.perf_counter()
        pretrain.main(["--config", str(CONFIGS / config), f"--max_steps={args.max_steps}", f"--output_dir={out}",
                       "--save_every=null", "--log_every=25", *extra, *common])
        t_pre = time.perf_counter() - t
        t = time.perf_counter()
        res = probe.main(["--model", str(out), *caps])["pretrained"]
        t_probe = time.perf_counter() - t
        m = last_metrics(out / "metrics.jsonl")
        meta = json.loads((out / "config.json").read_text())["spectral_ssl"]
        row = {"run": name, "config": config, "overrides": extra, "steps": args.max_steps, "top1": res["top1"],
               "reff_backbone": meta["effective_rank"]["value"], "reff_dim": meta["effective_rank"]["dim"],
               "reff_proj": m.get("reff_cov"), "containment": m.get("band_containment"),
               "cos_views": m.get("cos_views"), "ntxent_monitor": m.get("ntxent"),
               "sel_share": m.get("sel_share") if "sel_reff_chosen" in m else None,
               "reff_chosen": m.get("sel_reff_chosen"), "reff_random": m.get("sel_reff_random"),
               "pretrain_s": round(t_pre, 1), "probe_s": round(t_probe, 1)}
        results.append(row)
        out_root.mkdir(parents=True, exist_ok=True)
        write_results(out_root / "results.json", results)
    header = ("| run | linear top-1 | R_eff backbone | R_eff proj (last log) | band containment | cos(views) | "
              "chosen / random R_eff | selection share | pretrain s |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))

    def fmt(v, spec):
        return "–" if v is None else format(v, spec)

    for r in results:
        sel = (f"{r['reff_chosen']:.1f} / {r['reff_random']:.1f}" if r["reff_chosen"] is not None else "–")
        print(f"| {r['run']} | {r['top1']:.2f} % | {r['reff_backbone']:.1f} / {r['reff_dim']} | "
              f"{fmt(r['reff_proj'], '.1f')} | {fmt(r['containment'], '.3f')} | {fmt(r['cos_views'], '.3f')} | {sel} | "
              f"{fmt(r['sel_share'], '.1%')} | {r['pretrain_s']:.0f} |")
    return results


if __name__ == "__main__":
    main()
