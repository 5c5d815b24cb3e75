"""The input pipeline before and after, side by side in one run: loader-side PIL augmentations vs uint8 decoding +
batched augmentations on the training device.

    python scripts/bench_pipeline.py [--dataset data/fashion_mnist] [--repeats 5] [--steps 12] [--batches 8]

(a) loader img/s: this rank's stream of Fashion-MNIST train, ``--batches`` batches of 256, either
    ``TwoViewTransform`` per sample in the loader (``augment_on=loader``, what every run used before) or
    ``Uint8Transform`` in the loader then ``DeviceAugment`` on the batch (``augment_on=device``), both with
    ``num_workers=0`` (the demo's setting; a worker pool only moves the same work to other cores);
(b) the recipe end to end (``recipes/pretrain.py`` with the demo config, ``--max_steps`` steps, img/s from
    metrics.jsonl, the first logged interval dropped as warm-up) with ``--augment_on=loader`` and ``=device``,
    alternating, ``--repeats`` times each. Prints medians, the spread and the ratios; writes ``--output`` JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from demo import load_script
from timing import device_name

from spectral_ssl import data, transforms

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "fashion_mnist_simclr.yaml"
MEAN, STD = (0.286,) * 3, (0.353,) * 3


def loader_img_per_s(dataset: str, on: str, batches: int, batch_size: int = 256) -> float:
    images = data.load_images(dataset, "train", streaming=True, label_column=None)
    if on == "loader":
        transform, collate = transforms.TwoViewTransform(32, mean=MEAN, std=STD), "views"
    else:
        transform, collate = data.Uint8Transform(32), "eval"
    augment = transforms.DeviceAugment(32, mean=MEAN, std=STD)
    loader = iter(data.make_loader(images, transform, batch_size=batch_size, collate=collate, seed=0))
    next(loader)  # opening the stream is not part of the rate
    start = time.perf_counter()
    for i in range(batches):
        batch = next(loader)
        if on == "device":
            augment(batch["image"], torch.Generator().manual_seed(i))
    return batches * batch_size / (time.perf_counter() - start)


def recipe_img_per_s(on: str, steps: int, dataset: str) -> float:
    recipe = load_script(ROOT / "recipes" / "pretrain.py")
    with tempfile.TemporaryDirectory() as tmp:
        out = recipe.main(["--config", str(CONFIG), f"--dataset={dataset}", f"--output_dir={tmp}/run",
                           f"--max_steps={steps}", "--log_every=4", "--save_every=null", "--reff_samples=256",
                           f"--augment_on={on}"])
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
    p.add_argument("--skip_recipe", action="store_true")
    p.add_argument("--output", default="bench_pipeline.json")
    args = p.parse_args(argv)
    results: dict = {"device": device_name(torch.device("cpu")), "threads": torch.get_num_threads(),
                     "loader": {"loader": [], "device": []}, "recipe": {"loader": [], "device": []}}
    for _ in range(args.repeats):
        for on in ("loader", "device"):
            results["loader"][on].append(loader_img_per_s(args.dataset, on, args.batches))
    if not args.skip_recipe:
        for _ in range(args.repeats):
            for on in ("loader", "device"):
                results["recipe"][on].append(recipe_img_per_s(on, args.steps, args.dataset))
    print(f"device: {results['device']}; torch {torch.__version__}, {results['threads']} threads")
    for part, label in (("loader", "(a) input pipeline"), ("recipe", "(b) recipe end to end (resnet18, batch 256)")):
        if not results[part]["loader"]:
            continue
        before, after = results[part]["loader"], results[part]["device"]
        print(f"{label}\n  augment_on=loader (before): {summary(before)}\n  augment_on=device (after):  "
              f"{summary(after)}\n  after / before: {statistics.median(after) / statistics.median(before):.2f}x")
    Path(args.output).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
