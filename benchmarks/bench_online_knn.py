"""The recipe's online kNN probe (``--probe_every``) with its images kept against read again, in one run.

    python benchmarks/bench_online_knn.py [--config recipes/configs/fashion_mnist_simclr.yaml] [--samples 500,2000]
                                          [--repeats 3] [--output results.json]

``spectral_ssl.OnlineKnn`` decodes the ``--probe_samples`` images of each split at its first call and keeps them, so
a later probe is two forward passes and the vote. For each sample count this times, on the config's network and
data: ``read again`` (``cache_bytes=0``: every probe decodes both splits, as the recipe did before), ``first`` (the
cached probe's first call, which decodes) and ``kept`` (its later calls), alternating call by call so that both
arms see the same machine load. Printed: the medians, the speed-up ``read again / kept`` and the memory the kept
images take (uint8); the top-1 of both arms must agree (the same images, the same features).
"""

from __future__ import annotations

import argparse
import statistics
import time

from spectral_ssl import cpu_threads

cpu_threads.configure()  # before torch loads libgomp: the recipes' CPU thread policy (README, "CPU runs")

import torch  # noqa: E402
from harness import ROOT, device_name, synchronizer, write_results  # noqa: E402

from spectral_ssl import transforms  # noqa: E402
from spectral_ssl.config import PretrainConfig, parse_config  # noqa: E402
from spectral_ssl.model import SpectralSSL  # noqa: E402
from spectral_ssl.probe import OnlineKnn  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "recipes" / "configs" / "fashion_mnist_simclr.yaml"))
    p.add_argument("--samples", default="500,2000", help="comma-separated images of each split")
    p.add_argument("--repeats", type=int, default=3, help="timed calls of each arm (after the cached arm's first)")
    p.add_argument("--output", default=None, help="write the results as JSON here")
    args, overrides = p.parse_known_args(argv)
    counts = [int(n) for n in args.samples.split(",")]
    if args.repeats < 1 or not counts or min(counts) < 1:
        raise SystemExit("error: --repeats and every --samples count must be >= 1")
    cfg = parse_config(PretrainConfig, ["--config", args.config, *overrides])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = synchronizer(device)
    model = SpectralSSL(cfg.model.backbone, cfg.model.proj_hidden_dim, cfg.model.proj_dim,
                        cfg.model.backbone_kwargs).to(device)
    model.data_config.update(transforms.Preprocessing(cfg.data.image_size, tuple(cfg.data.mean),
                                                      tuple(cfg.data.std)).data_config())

    def call(knn: OnlineKnn) -> tuple[float, float]:
        sync()
        start = time.perf_counter()
        top1 = knn(model, device)
        sync()
        return time.perf_counter() - start, top1

    rows = []
    for n in counts:
        keys = dict(samples=n, image_column=cfg.data.image_column, label_column=cfg.data.label_column)
        again = OnlineKnn(cfg.data.dataset, cfg.data.split, cfg.data.eval_split, cache_bytes=0, **keys)
        kept = OnlineKnn(cfg.data.dataset, cfg.data.split, cfg.data.eval_split, **keys)
        call(again)  # warm-up: the dataset's files opened once, the model's kernels chosen
        first, top1_kept = call(kept)
        times = {"read again": [], "kept": []}
        top1s = set()
        for _ in range(args.repeats):
            for name, knn in (("read again", again), ("kept", kept)):
                seconds, top1 = call(knn)
                times[name].append(seconds)
                top1s.add(round(top1, 6))
        if len(top1s | {round(top1_kept, 6)}) != 1:
            raise SystemExit(f"error: the two arms disagree at {n} samples: top-1 {sorted(top1s)}")
        medians = {name: statistics.median(t) for name, t in times.items()}
        kept_mb = sum(b["image"].numel() * b["image"].element_size() for s in kept._cache.values() for b in s) / 2**20
        rows.append({"samples": n, "read_again_s": medians["read again"], "first_s": first,
                     "kept_s": medians["kept"], "speedup": medians["read again"] / medians["kept"], "top1": top1_kept,
                     "kept_mb": kept_mb})
    lines = [f"online kNN probe, {cfg.model.backbone} {cfg.model.backbone_kwargs} at {cfg.data.image_size} px on "
             f"{cfg.data.dataset} ({device_name(device)}), median of {args.repeats} calls per arm",
             "", "| images per split | read again | first call (decodes) | kept | speed-up | kept in memory (both "
             "splits) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['samples']} | {r['read_again_s']:.2f} s | {r['first_s']:.2f} s | {r['kept_s']:.2f} s | "
              f"{r['speedup']:.2f}x | {r['kept_mb']:.1f} MB |" for r in rows]
    print("\n".join(lines))
    results = {"device": device_name(device), "config": args.config, "repeats": args.repeats, "rows": rows}
    if args.output:
        write_results(args.output, results)
    return results


if __name__ == "__main__":
    main()
