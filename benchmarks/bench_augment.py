"""Two-view augmentation throughput, side by side in one run: loader-side PIL vs batched DeviceAugment vs kornia.

    python benchmarks/bench_augment.py [--batch 256] [--image 32] [--input 28] [--repeats 5] [--presets simclr byol]
    PYTHONPATH=/path/to/kornia python benchmarks/bench_augment.py   # adds the kornia rows when kornia is importable

From one batch of ``--batch`` uint8 gray-like ``--input`` px images (smooth random blobs), two ``--image`` px views:
(a) ``spectral_ssl.transforms.TwoViewTransform``: the loader's per-sample PIL loop (RGB PIL images in, as
    ``data.decode_image`` yields them; the two views stacked into batches, as the collate function does), CPU only;
(b) ``DeviceAugment`` on the uint8 (B, 1, H, W) batch, on each device, and (b3) on the same batch replicated to
    (B, 3, H, W) (no gray shortcut: the cost for colour data);
(c) kornia.augmentation's equivalent pipeline (RandomResizedCrop, RandomHorizontalFlip, ColorJitter, RandomGrayscale,
    RandomGaussianBlur, RandomSolarize, Normalize; it needs 3 channels and float input, so the uint8 -> float and
    1 -> 3 channel conversion is timed with it), called once per view, if kornia is importable.
Prints images per second (two views per image, median of ``--repeats`` timed calls after one warm-up), the device,
and the ratios (b)/(a) and (b)/(c).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from harness import device_name, synchronizer
from PIL import Image

from spectral_ssl.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    DeviceAugment,
    TwoViewTransform,
    augment_preset,
    blur_kernel_size,
)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median milliseconds per call of each function, timed round-robin (one call of each per round, after one
    warm-up round), so that load from other processes on a shared machine hits every method alike."""
    sync = synchronizer(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if round_:
                samples[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in samples.items()}


def gray_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """(batch, 1, size, size) uint8 images of smooth random blobs on a dark background (digit-like statistics)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(batch, 1, size // 4, size // 4, generator=g)
    blobs = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)
    return ((blobs - 0.55).clamp(0, 1) * 2.2 * 255).clamp(0, 255).to(torch.uint8)


def kornia_pipeline(views: tuple[AugmentConfig, AugmentConfig], image_size: int, device: torch.device):
    """kornia.augmentation's version of the two views, or None when kornia is not importable."""
    try:
        import kornia.augmentation as K
    except ImportError:
        return None

    def one(cfg: AugmentConfig):
        ops = [K.RandomResizedCrop((image_size, image_size), scale=cfg.crop_scale, ratio=cfg.crop_ratio),
               K.RandomHorizontalFlip(p=cfg.hflip_p)]
        if cfg.jitter_on:
            ops.append(K.ColorJitter(*cfg.jitter, p=cfg.jitter_p))
        if cfg.grayscale_p > 0:
            ops.append(K.RandomGrayscale(p=cfg.grayscale_p))
        if cfg.blur_p > 0:
            k = blur_kernel_size(image_size)
            ops.append(K.RandomGaussianBlur((k, k), cfg.blur_sigma, p=cfg.blur_p))
        if cfg.solarize_p > 0:
            ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=cfg.solarize_p))
        ops.append(K.Normalize(torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)))
        return K.AugmentationSequential(*ops).to(device)

    first, second = one(views[0]), one(views[1])

    def run(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch.float().div_(255).expand(-1, 3, -1, -1)
        return first(x), second(x)

    return run


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image", type=int, default=32, help="output side of the views")
    p.add_argument("--input", type=int, default=28, help="side of the uint8 gray inputs")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--presets", nargs="+", default=["simclr", "byol"])
    p.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    images = gray_images(args.batch, args.input)
    pil = [Image.fromarray(img[0].numpy()).convert("RGB") for img in images]
    cpu = torch.device("cpu")
    rows = []  # (preset, method, device, img/s)
    for preset in args.presets:
        views = augment_preset(preset, args.image)
        for name in args.devices:
            device = torch.device(name)
            fns: dict[str, Callable[[], object]] = {}
            if device.type == "cpu":
                loader_tf = TwoViewTransform(args.image, views=views)

                def pil_loop(tf=loader_tf) -> None:
                    pairs = [tf(img) for img in pil]
                    torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])

                fns["(a) PIL TwoViewTransform"] = pil_loop
            batch = images.to(device)
            aug = DeviceAugment(args.image, views=views).to(device)
            gen = torch.Generator(device=device).manual_seed(0)
            fns["(b) DeviceAugment"] = lambda aug=aug, batch=batch, gen=gen: aug(batch, gen)
            rgb = batch.expand(-1, 3, -1, -1).contiguous()
            fns["(b3) DeviceAugment, RGB in"] = lambda aug=aug, rgb=rgb, gen=gen: aug(rgb, gen)
            run = kornia_pipeline(views, args.image, device)
            if run is not None:
                fns["(c) kornia.augmentation"] = lambda run=run, batch=batch: run(batch)
            for method, ms in interleaved(fns, args.repeats, device).items():
                rows.append((preset, method, device_name(device), args.batch / ms * 1000))

    print(f"two views per image, batch {args.batch}, {args.input}x{args.input} uint8 gray -> {args.image} px, "
          f"median of {args.repeats}; torch {torch.__version__}")
    print(f"{'preset':<8} {'method':<28} {'device':<40} {'img/s':>10}")
    for preset, method, dev, rate in rows:
        print(f"{preset:<8} {method:<28} {dev:<40} {rate:>10.0f}")
    rate = {(r[0], r[1].split()[0], r[2]): r[3] for r in rows}
    print("ratios (img/s over img/s):")
    ratios = []  # one per (b)/(b3) row: its rate over PIL (a) and over kornia (c), None where that row is absent
    for preset, method, dev, value in rows:
        tag = method.split()[0]
        if tag not in ("(b)", "(b3)"):
            continue
        line = f"  {preset:<8} {tag:<5}{dev:<40}"
        ratio = {"preset": preset, "method": method, "device": dev, "over_pil": None, "over_kornia": None}
        if (preset, "(a)", device_name(cpu)) in rate:
            ratio["over_pil"] = value / rate[(preset, "(a)", device_name(cpu))]
            line += f"  {tag} / PIL (a) = {ratio['over_pil']:6.1f}x"
        if (preset, "(c)", dev) in rate:
            ratio["over_kornia"] = value / rate[(preset, "(c)", dev)]
            line += f"  {tag} / kornia (c) = {ratio['over_kornia']:6.2f}x"
        ratios.append(ratio)
        print(line)
    return {"batch": args.batch, "repeats": args.repeats, "torch": torch.__version__,
            "rows": [{"preset": r[0], "method": r[1], "device": r[2], "img_per_s": r[3]} for r in rows],
            "ratios": ratios}


if __name__ == "__main__":
    main()
