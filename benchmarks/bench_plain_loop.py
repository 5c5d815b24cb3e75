"""The recipe against the loop a user writes without spectral_ssl, in one run: same network, data, budget and probe.

    python benchmarks/bench_plain_loop.py [--config recipes/configs/fashion_mnist_simclr.yaml] [--out DIR]
                                          [--num_workers 2] [--max_steps N] [--seed 0] [--probe_train 10000]
                                          [--pretrain_args "--key=value ..."]

Two arms train SimCLR with the settings of one recipe config (backbone and its kwargs, projector widths, batch,
temperature, AdamW lr / weight decay / warm-up + cosine, steps, seed, image size, mean / std, the "simclr"
augmentation parameters):

- **recipe**: ``recipes/pretrain.py --config CONFIG`` as it ships (the split decoded once, augmentations batched on
  the training device, channels_last, fused AdamW);
- **plain loop**: what the lightly / SimCLR examples write: a ``datasets`` split of PIL images, a torchvision
  ``Compose`` of RandomResizedCrop, RandomHorizontalFlip, ColorJitter (p 0.8), RandomGrayscale, GaussianBlur (p 0.5),
  ToTensor and Normalize per sample in DataLoader workers, ``timm.create_model(..., num_classes=0)`` plus a
  Linear-BN-ReLU-Linear head, both views forwarded one after the other, the textbook NT-Xent
  (``bench_peers.nt_xent``; lightly's ``NTXentLoss`` when lightly is importable), ``torch.optim.AdamW`` with decay
  on weight matrices only, the recipe's warm-up + cosine learning rate, on the recipe's device (a GPU when there is
  one, then with bf16 autocast as the recipe's default). Its trained weights are copied into a ``SpectralSSL``
  export only to be probed.

Then ``recipes/linear_probe.py`` probes both exports on the same images (``--probe_train`` train rows, the whole
test split), the recipe's with the fair random network and the raw pixels beside it. Printed: one markdown row per
arm (linear top-1, kNN top-1, training seconds, img/s) and the recipe / plain ratio of training speed;
``OUT/results.json`` keeps them with each arm's last-step loss, the device and the settings. On a CPU run nothing
else beside it: both arms share the cores with their own loaders.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from spectral_ssl import cpu_threads

cpu_threads.configure()  # before torch loads libgomp: the recipes' CPU thread policy (README, "CPU runs")

import torch  # noqa: E402
from bench_peers import lightly_loss, nt_xent  # noqa: E402
from harness import ROOT, device_name, import_file, write_results  # noqa: E402
from torch import nn  # noqa: E402

from spectral_ssl import SpectralSSL, transforms  # noqa: E402
from spectral_ssl.config import PretrainConfig, parse_config  # noqa: E402
from spectral_ssl.lr_schedule import warmup_cosine  # noqa: E402  (the same schedule; the one line not written out)

DEFAULT_CONFIG = ROOT / "recipes" / "configs" / "fashion_mnist_simclr.yaml"


def torchvision_views(cfg: PretrainConfig):
    """The recipe's two "simclr" views as the torchvision ``Compose`` a user writes (same parameters)."""
    from torchvision import transforms as T

    views = transforms.augment_views(cfg.data.augment, cfg.data.image_size, cfg.data.augment_kwargs)
    composed = []
    for v in views:
        ops = [T.RandomResizedCrop(cfg.data.image_size, scale=tuple(v.crop_scale), ratio=tuple(v.crop_ratio)),
               T.RandomHorizontalFlip(v.hflip_p)]
        if v.jitter_on:
            ops.append(T.RandomApply([T.ColorJitter(*v.jitter)], p=v.jitter_p))
        ops.append(T.RandomGrayscale(v.grayscale_p))
        if v.blur_p > 0:
            ops.append(T.RandomApply([T.GaussianBlur(transforms.blur_kernel_size(cfg.data.image_size),
                                                     sigma=tuple(v.blur_sigma))], p=v.blur_p))
        if v.solarize_p > 0:
            ops.append(T.RandomSolarize(int(255 * v.solarize_threshold), p=v.solarize_p))
        ops += [T.ToTensor(), T.Normalize(cfg.data.mean, cfg.data.std)]
        composed.append(T.Compose(ops))
    return composed


class TwoViews(torch.utils.data.Dataset):
    """A ``datasets`` split of PIL images -> (view 1, view 2), per sample (the usual SimCLR dataset wrapper)."""

    def __init__(self, split, column: str, views) -> None:
        self.split, self.column, self.views = split, column, views

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        image = self.split[i][self.column].convert("RGB")
        return self.views[0](image), self.views[1](image)


def plain_loop(cfg: PretrainConfig, steps: int, out: Path, num_workers: int, device: torch.device) -> dict:
    """Train the plain arm for ``steps`` steps on ``device`` (bf16 autocast on CUDA, as the recipe's default); its
    backbone and head are saved as a SpectralSSL export in ``out``."""
    import datasets
    import timm

    torch.manual_seed(cfg.optim.seed)
    split = datasets.load_dataset(cfg.data.dataset, split=cfg.data.split)
    loader = torch.utils.data.DataLoader(
        TwoViews(split, cfg.data.image_column, torchvision_views(cfg)), batch_size=cfg.optim.batch_size,
        shuffle=True, drop_last=True, num_workers=num_workers, persistent_workers=num_workers > 0,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(cfg.optim.seed))
    backbone = timm.create_model(cfg.model.backbone, num_classes=0, **cfg.model.backbone_kwargs)
    head = nn.Sequential(nn.Linear(backbone.num_features, cfg.model.proj_hidden_dim, bias=False),
                         nn.BatchNorm1d(cfg.model.proj_hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(cfg.model.proj_hidden_dim, cfg.model.proj_dim))
    model = nn.Sequential(backbone, head).to(device)
    lightly, lightly_version = lightly_loss()
    loss_fn = lightly if lightly is not None else (lambda z1, z2: nt_xent(z1, z2, cfg.objective.temperature))
    if lightly is not None:
        lightly.temperature = cfg.objective.temperature
    params = list(model.parameters())
    decay, no_decay = [p for p in params if p.ndim > 1], [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.optim.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.optim.lr)
    model.train()
    step, start = 0, time.perf_counter()
    while step < steps:
        for x1, x2 in loader:
            if step == steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(step, steps, cfg.optim.warmup_steps, cfg.optim.lr)
            x1, x2 = x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = loss_fn(model(x1), model(x2))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    last_loss = loss.item()  # read once, at the end: a read every step would wait for the GPU every step
    seconds = time.perf_counter() - start
    export = SpectralSSL(cfg.model.backbone, cfg.model.proj_hidden_dim, cfg.model.proj_dim, cfg.model.backbone_kwargs)
    export.backbone.load_state_dict(backbone.state_dict())
    export.projector.load_state_dict(head.state_dict())
    export.data_config.update(transforms.Preprocessing(cfg.data.image_size, tuple(cfg.data.mean),
                                                       tuple(cfg.data.std)).data_config())
    export.metadata = {"method": "plain loop (torchvision + timm + torch)", "dataset": cfg.data.dataset,
                       "steps": steps, "train_seconds": round(seconds, 2)}
    export.save_pretrained(out)
    return {"train_seconds": seconds, "img_per_s": steps * cfg.optim.batch_size / seconds, "last_loss": last_loss,
            "loss": f"lightly {lightly_version} NTXentLoss" if lightly is not None else "textbook NT-Xent"}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--out", default="outputs/bench_plain_loop")
    p.add_argument("--num_workers", type=int, default=2, help="the plain arm's DataLoader workers")
    p.add_argument("--max_steps", type=int, default=0, help="both arms (0 = the config's epochs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe_train", type=int, default=10000, help="train rows of the probe (0 = all)")
    p.add_argument("--probe_test", type=int, default=0, help="test rows of the probe (0 = all)")
    p.add_argument("--pretrain_args", default="", help="more overrides for both arms, one string (e.g. "
                   "\"--backbone=test_resnet --batch_size=16\")")
    args = p.parse_args(argv)
    out = Path(args.out)
    overrides = [f"--seed={args.seed}", *shlex.split(args.pretrain_args)]
    if args.max_steps:
        overrides.append(f"--max_steps={args.max_steps}")
    cfg = parse_config(PretrainConfig, ["--config", args.config, *overrides])
    if cfg.objective.loss != "infonce" or cfg.batching.selection != "random" or cfg.objective.whitening != "none":
        raise SystemExit("error: the plain loop is SimCLR with random batches and no whitening; pass a config (or "
                         "--pretrain_args) with loss infonce, selection random, whitening none")
    pretrain = import_file(ROOT / "recipes" / "pretrain.py")
    probe = import_file(ROOT / "recipes" / "linear_probe.py")
    ours = pretrain.main(["--config", args.config, *overrides, f"--output_dir={out / 'recipe'}",
                          "--overwrite_output_dir=true"])
    recipe_model = SpectralSSL.from_pretrained(ours)
    steps = recipe_model.metadata["steps"]  # the recipe's own count (epochs x its steps per epoch)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where the recipe trained too
    plain = plain_loop(cfg, steps, out / "plain", args.num_workers, device)
    caps = [f"--max_train_samples={args.probe_train or 'null'}", f"--max_test_samples={args.probe_test or 'null'}",
            f"--dataset={cfg.data.dataset}", "--knn"]
    probed = {"recipe": probe.main([f"--model={ours}", *caps, "--compare_random_init", "--compare_raw_pixels"]),
              "plain": probe.main([f"--model={out / 'plain'}", *caps])}
    metrics = [line for line in (ours / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = json.loads(metrics[-1])
    recipe_seconds = recipe_model.metadata["train_seconds"]
    rows = {
        "recipe": {"train_seconds": recipe_seconds, "img_per_s": steps * cfg.optim.batch_size / recipe_seconds,
                   "last_loss": last["loss"], **_probe(probed["recipe"]["pretrained"])},
        "plain loop": {**plain, **_probe(probed["plain"]["pretrained"])},
        "fair random init": _probe(probed["recipe"]["random_init"]),
        "raw pixels": _probe(probed["recipe"]["raw_pixels"]),
    }
    speed = rows["recipe"]["img_per_s"] / rows["plain loop"]["img_per_s"]
    print(f"\n{steps} steps of {cfg.optim.batch_size}, {cfg.model.backbone} {cfg.model.backbone_kwargs}, "
          f"{device_name(device)}; plain arm: {args.num_workers} workers, {plain['loss']}")
    print("| arm | linear top-1 | kNN top-1 | training s | img/s |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['linear_top1']:.2f} % | {row['knn_top1']:.2f} % | "
              f"{row.get('train_seconds', float('nan')):.0f} | {row.get('img_per_s', float('nan')):.0f} |")
    print(f"recipe / plain loop training speed: {speed:.2f}x")
    results = {"device": device_name(device), "config": args.config, "overrides": overrides,
               "steps": steps, "num_workers": args.num_workers, "arms": rows, "speed_ratio": speed}
    write_results(out / "results.json", results)
    return results


def _probe(result: dict) -> dict:
    """A linear_probe result -> the row's linear and kNN top-1."""
    return {"linear_top1": result["top1"], "knn_top1": result.get("knn", {}).get("top1", float("nan"))}


if __name__ == "__main__":
    main()
