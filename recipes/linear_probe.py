"""Linear-probe (and kNN-probe) a pretrained backbone on frozen features.

    python recipes/linear_probe.py --model outputs/fashion_mnist_simclr [--compare_random_init]

Loads the export with ``SpectralSSL.from_pretrained``, extracts frozen backbone features of the train and test splits
with the export's own preprocessing (``pretrained_cfg``), fits a multinomial logistic regression, prints the result,
writes it as JSON and records it in the export's ``config.json`` and model card.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

import spectral_ssl  # noqa: F401  (torchvision shim first)
from spectral_ssl import data, effective_rank, hub
from spectral_ssl.model import SpectralSSL
from spectral_ssl.probe import ProbeResult, extract_features, knn_probe, linear_probe

MODEL_REPO = "<the --model repo>"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="export folder, hf-hub:org/name or org/name")
    p.add_argument("--dataset", default=None, help="dataset to probe on (default: the one the model was trained on)")
    p.add_argument("--train_split", default="train")
    p.add_argument("--test_split", default="test")
    p.add_argument("--image_column", default="image")
    p.add_argument("--label_column", default="label")
    p.add_argument("--max_train_samples", type=int, default=0, help="0 = whole split")
    p.add_argument("--max_test_samples", type=int, default=0, help="0 = whole split")
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--knn", action="store_true", help="also run a weighted kNN probe")
    p.add_argument("--compare_random_init", action="store_true",
                   help="also probe the same architecture at random init (the baseline pretraining must beat)")
    p.add_argument("--bn_batches", type=int, default=20,
                   help="training batches used to set the random-init baseline's BatchNorm statistics (0 = none)")
    p.add_argument("--output", default=None, help="JSON file for the results (default: MODEL/linear_probe.json)")
    p.add_argument("--no_record", action="store_true", help="do not write the result into the export's metadata")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--push", nargs="?", const=MODEL_REPO, default="", metavar="ORG/NAME",
                   help="update the card's metrics on the Hub after the probe (default repo: --model's repo)")
    return p.parse_args(argv)


def features(model: SpectralSSL, dataset: str, split: str, args: argparse.Namespace, limit: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = model.data_config
    ds = data.load_images(dataset, split, streaming=True, image_column=args.image_column,
                          label_column=args.label_column)
    transform = data.EvalTransform(cfg["input_size"][-1], mean=cfg["mean"], std=cfg["std"],
                                   interpolation=cfg["interpolation"])
    loader = data.make_loader(ds, transform, batch_size=args.batch_size, shuffle=False, drop_last=False,
                              collate="eval", max_samples=limit or None)
    return extract_features(model, loader, device=device)


@torch.no_grad()
def recalibrate_batchnorm(model: SpectralSSL, dataset: str, args: argparse.Namespace, device: torch.device) -> int:
    """Set BatchNorm running statistics from training images, weights untouched (a fair random-init baseline).

    A freshly initialised backbone in eval mode normalises with running stats of 0/1 that never saw data, which
    collapses its features; random features are judged with statistics from ``--bn_batches`` training batches.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or args.bn_batches <= 0:
        return 0
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    cfg = model.data_config
    ds = data.load_images(dataset, args.train_split, streaming=True, image_column=args.image_column,
                          label_column=None)
    transform = data.EvalTransform(cfg["input_size"][-1], mean=cfg["mean"], std=cfg["std"],
                                   interpolation=cfg["interpolation"])
    loader = data.make_loader(ds, transform, batch_size=args.batch_size, collate="eval", seed=args.seed,
                              max_samples=args.bn_batches * args.batch_size)
    model.train()
    for batch in loader:
        model.embed(batch["image"].to(device))
    model.eval()
    return len(norms)


def probe(model: SpectralSSL, dataset: str, args: argparse.Namespace, device: torch.device) -> dict:
    t0 = time.perf_counter()
    train_f, train_y = features(model, dataset, args.train_split, args, args.max_train_samples, device)
    test_f, test_y = features(model, dataset, args.test_split, args, args.max_test_samples, device)
    t_feat = time.perf_counter() - t0
    result: ProbeResult = linear_probe(train_f, train_y, test_f, test_y, seed=args.seed)
    out = {**result.to_dict(), "dataset": dataset, "split": args.test_split, "train_split": args.train_split,
           "feature_seconds": round(t_feat, 2),
           "effective_rank": float(effective_rank(test_f, "cov"))}
    if args.knn:
        out["knn"] = knn_probe(train_f, train_y, test_f, test_y).to_dict()
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    model = SpectralSSL.from_pretrained(args.model).to(device)
    dataset = args.dataset or model.metadata.get("dataset")
    if not dataset:
        raise SystemExit("error: the export records no training dataset; pass --dataset")
    results = {"model": str(args.model), "pretrained": probe(model, dataset, args, device)}
    pre = results["pretrained"]
    print(f"pretrained   : linear top-1 {pre['top1']:.2f} %  top-5 {pre['top5']:.2f} %  "
          f"(R_eff of test features {pre['effective_rank']:.1f} / {model.num_features})")
    if args.compare_random_init:
        torch.manual_seed(args.seed)
        baseline = SpectralSSL(model.backbone_name, backbone_kwargs=model.backbone_kwargs).to(device)
        baseline.data_config = dict(model.data_config)
        recalibrated = recalibrate_batchnorm(baseline, dataset, args, device)
        results["random_init"] = rnd = probe(baseline, dataset, args, device)
        rnd["bn_recalibrated_layers"], rnd["bn_batches"] = recalibrated, args.bn_batches
        print(f"random init  : linear top-1 {rnd['top1']:.2f} %  top-5 {rnd['top5']:.2f} %  "
              f"(R_eff {rnd['effective_rank']:.1f}; BatchNorm statistics from {args.bn_batches} training batches)")
        print(f"pretraining gain: {pre['top1'] - rnd['top1']:+.2f} points top-1")
    local = Path(str(args.model).removeprefix("local-dir:"))
    out_path = Path(args.output) if args.output else (local / "linear_probe.json" if local.is_dir() else None)
    if out_path:
        out_path.write_text(json.dumps(results, indent=2))
        print(f"results written to {out_path}")
    record = {k: pre[k] for k in ("top1", "top5", "dataset", "split", "train_split", "n_train", "n_test")}
    if local.is_dir() and not args.no_record:
        hub.update_metadata(local, linear_probe=record)
    if args.push:
        results["pushed"] = push_probe(args, local, record)
        print(f"model card metrics updated on the Hub: {results['pushed']}")
    return results


def push_probe(args: argparse.Namespace, local: Path, record: dict) -> str:
    """Push the export with the probe recorded in its metadata and card (a copy: the HF cache stays read-only)."""
    repo = args.push
    if repo == MODEL_REPO:
        repo = str(args.model).removeprefix("hf-hub:")
        if local.is_dir():
            raise SystemExit("error: --push needs a repo id (--push=org/name) when --model is a local folder")
    source = local if local.is_dir() else hub.resolve_export(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        for path in source.iterdir():
            if path.name in hub.PUSH_FILES or path.suffix == ".png":
                shutil.copyfile(path, Path(tmp) / path.name)
        hub.update_metadata(tmp, linear_probe=record)
        try:
            return hub.push_export(tmp, repo, commit_message=f"Linear probe: top-1 {record['top1']:.2f} % on "
                                                             f"{record['dataset']} {record['split']}")
        except (ValueError, RuntimeError) as e:
            raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
