"""The input pipeline before and after, side by side in one run: loader-side PIL augmentations, uint8 decoding +
batched augmentations on the training device, and the decoded split cached once (no decoding after the first pass).

    python benchmarks/bench_pipeline.py [--dataset data/fashion_mnist] [--repeats 5] [--steps 12] [--batches 8]
                                     [--batch_size 256] [--recipe_args "--batch_size=64 ..."]

(a) loader img/s: this rank's stream of Fashion-MNIST train, ``--batches`` batches of ``--batch_size``, three ways:
    ``loader``: ``TwoViewTransform`` per sample in the loader (``augment_on=loader``, what every run used before);
    ``device``: ``Uint8Transform`` in the loader, then ``DeviceAugment`` on the batch (``cache_decoded=off``);
    ``cached``: batches gathered from a ``DecodedSplit`` (decoded once, before timing; the one-off decode time is
    reported beside it), then ``DeviceAugment`` (``cache_decoded=ram``, the CPU default);
    all with ``num_workers=0`` (the demo's setting; a worker pool only moves the same work to other cores);
(b) the recipe end to end (``recipes/pretrain.py`` with the demo config, i.e. ``make demo``'s pretrain, ``--steps``
    steps, plus ``--recipe_args``; img/s from metrics.jsonl, the first logged interval dropped as warm-up) the same
    three ways, alternating, ``--repeats`` times each. Prints medians, the spread and the ratios; writes
    ``--output`` JSON.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import tempfile
import time

from spectral_ssl import cpu_threads

cpu_threads.configure()  # before torch loads libgomp: the recipes' CPU thread policy (README, "CPU runs")

import torch  # noqa: E402
from harness import ROOT, device_name, import_file, write_results  # noqa: E402

from spectral_ssl import data, transforms  # noqa: E402

CONFIG = ROOT / "recipes" / "configs" / "fashion_mnist_simclr.yaml"
MEAN, STD = (0.286,) * 3, (0.353,) * 3


ARMS = {  # name -> recipe arguments
    "loader": ["--augment_on=loader", "--cache_decoded=off"],
    "device": ["--augment_on=device", "--cache_decoded=off"],
    "cached": ["--augment_on=device", "--cache_decoded=ram"],
}


def loader_img_per_s(dataset: str, on: str, batches: int, batch_size: int = 256) -> tuple[float, float]:
    """Images per second of ``batches`` batches the ``on`` way, and the one-off decode seconds (cached only)."""
    images = data.load_images(dataset, "train", streaming=True, label_column=None)
    augment = transforms.DeviceAugment(32, mean=MEAN, std=STD)
    decode_s = 0.0
    if on == "cached":
        split = data.DecodedSplit.decode(images, 32)
        decode_s = split.seconds
        loader = iter(data.DecodedEpochLoader(split, batch_size, seed=0)(0))
    elif on == "loader":
        loader = iter(data.make_loader(images, transforms.TwoViewTransform(32, mean=MEAN, std=STD),
                                       batch_size=batch_size, collate="views", seed=0))
    else:
        loader = iter(data.make_loader(images, data.Uint8Transform(32), batch_size=batch_size, collate="eval", seed=0))
    next(loader)  # opening the stream is not part of the rate
    start = time.perf_counter()
    for i in range(batches):
        batch = next(loader)
        if on != "loader":
            augment(batch["image"], torch.Generator().manual_seed(i))
    return batches * batch_size / (time.perf_counter() - start), decode_s


def recipe_img_per_s(on: str, steps: int, dataset: str, extra: tuple[str, ...] = ()) -> float:
    recipe = import_file(ROOT / "recipes" / "pretrain.py")
    with tempfile.TemporaryDirectory() as tmp:
        out = recipe.main(["--config", str(CONFIG), f"--dataset={dataset}", f"--output_dir={tmp}/run",
                           f"--max_steps={steps}", "--log_every=4", "--save_every=null", "--reff_samples=256",
                           *ARMS[on], *extra])
        rates = [json.loads(line)["img_per_s"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(rates[1:] or rates)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):8.0f} img/s (min {min(values):.0f}, max {max(values):.0f}, n={len(values)})"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=str(ROOT / "data" / "fashion_mnist"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch_size", type=int, default=256, help="(a): images per loader batch")
    p.add_argument("--skip_recipe", action="store_true")
    p.add_argument("--recipe_args", default="", help="(b): more pretrain overrides, one string (e.g. "
                   "\"--backbone=test_resnet --batch_size=16\"); they win over the demo config's")
    p.add_argument("--output", default="bench_pipeline.json")
    args = p.parse_args(argv)
    results: dict = {"device": device_name(torch.device("cpu")), "threads": torch.get_num_threads(),
                     "loader": {on: [] for on in ARMS}, "recipe": {on: [] for on in ARMS}, "decode_s": []}
    for _ in range(args.repeats):
        for on in ARMS:
            rate, decode_s = loader_img_per_s(args.dataset, on, args.batches, args.batch_size)
            results["loader"][on].append(rate)
            if on == "cached":
                results["decode_s"].append(decode_s)
    if not args.skip_recipe:
        for _ in range(args.repeats):
            for on in ARMS:
                results["recipe"][on].append(recipe_img_per_s(on, args.steps, args.dataset,
                                                              tuple(shlex.split(args.recipe_args))))
    print(f"device: {results['device']}; torch {torch.__version__}, {results['threads']} threads")
    labels = {"loader": "augment_on=loader (before)", "device": "augment_on=device, not cached",
              "cached": "augment_on=device, cached (after)"}
    for part, label in (("loader", "(a) input pipeline"), ("recipe", "(b) recipe end to end (make demo's pretrain)")):
        if not results[part]["loader"]:
            continue
        before = statistics.median(results[part]["loader"])
        print(label)
        for on in ARMS:
            print(f"  {labels[on]:32s} {summary(results[part][on])}  "
                  f"{statistics.median(results[part][on]) / before:.2f}x before")
    print(f"one-off decode of the split into the cache: {statistics.median(results['decode_s']):.1f} s (median)")
    write_results(args.output, results)
    return results


if __name__ == "__main__":
    main()
