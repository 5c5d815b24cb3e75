"""Two 224 px SimCLR views per photo from JPEG files: our loader against torchvision's and timm's, side by side.

    python benchmarks/bench_jpeg.py [--images 2000] [--workers 2] [--batch 64] [--batches 0] [--output x.json]

Writes its own photo-like JPEGs (``--width`` x ``--height``, default 500 x 375, quality 90: smooth noise, flat
shapes with edges, grain) as an image folder with class sub-folders, then measures img/s (two views each) of:

- ``ours``: ``spectral_ssl.data.make_loader`` as ``recipes/pretrain.py`` uses it on a CPU (``augment_on=device``):
  ``Uint8Transform`` with JPEGs decoded at the size needed (``decode=cpu``), then ``DeviceAugment`` on each batch;
- ``ours-full-decode``: the same with every JPEG decoded at full size (``decode=full``, the previous behaviour);
- ``ours-loader-views``: ``TwoViewTransform`` (``augment_on=loader``) with the decode at the size its crops need;
- ``ours-decode-only``: ``ours`` without ``DeviceAugment``: the CPU's whole share when the views are made on a GPU
  (``augment_on=device`` there); its "views" are the uint8 batch, not two float views;
- ``ours-glibc-heap``: ``ours`` in a child process with glibc's default heap (``SPECTRAL_SSL_HEAP=glibc``; threads
  and spin as here): what ``cpu_threads``' heap policy gains (only the loader's time is measured, not the child's
  start);
- ``torchvision``: ``ImageFolder`` + the standard SimCLR transforms (RandomResizedCrop 224, flip, ColorJitter
  (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2, GaussianBlur p=0.5, ToTensor, Normalize), twice per image, in a
  ``DataLoader``: the baseline, ratios are to it;
- ``timm``: ``timm.data.create_dataset`` + ``create_transform(224, is_training=True)`` (timm's own training
  recipe: random resized crop, flip, colour jitter 0.4) twice per image, in a ``DataLoader``;

all with ``--workers`` worker processes, batch ``--batch``, the same cores, one after the other in one run, each timed
from opening its loader (worker start-up included, the same for all; amortised over a few thousand images) to the
end of ``--batches`` batches (0: one pass over the images); ``--repeats`` rounds, median reported. The image
folder is opened with ``data.load_images`` before the clock starts (datasets' one-off index of the folder).
Also a per-image decode micro-benchmark (decode + ``to_uint8`` at 224 px, one process): PIL full decode, PIL
``draft`` and ``simplejpeg`` (if installed) at the size each path needs. Prints the table and ratios; ``--output``
writes JSON.
"""

from __future__ import annotations

from spectral_ssl import cpu_threads

cpu_threads.configure()  # before torch loads libgomp: the recipes' CPU thread policy (README, "CPU runs")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from harness import device_name, write_results  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from spectral_ssl import data, decode_need, transforms  # noqa: E402
from spectral_ssl.data import jpeg  # noqa: E402

SIZE = 224
ARMS = ("ours", "ours-full-decode", "ours-loader-views", "ours-decode-only", "ours-glibc-heap", "torchvision",
        "timm")
BASELINE = "torchvision"


def photo_jpeg(rng: np.random.Generator, width: int, height: int, quality: int = 90) -> bytes:
    """A photo-like JPEG: smooth colour noise (bicubic from a 1/16 grid), flat shapes with hard edges, grain."""
    base = (rng.random((height // 16 + 2, width // 16 + 2, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(10):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x, y, x + int(rng.integers(8, width // 3)), y + int(rng.integers(8, height // 3))]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    pixels = np.asarray(image, dtype=np.int16) + rng.normal(0, 6, (height, width, 3)).astype(np.int16)
    out = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(out, "JPEG", quality=quality)
    return out.getvalue()


def write_folder(root: Path, images: int, width: int, height: int, classes: int = 10, seed: int = 0) -> Path:
    """``images`` photo-like JPEGs in ``root/train/class_k/`` (an image folder both loaders read); returns
    ``root/train``."""
    rng = np.random.default_rng(seed)
    for i in range(images):
        folder = root / "train" / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:06d}.jpg").write_bytes(photo_jpeg(rng, width, height))
    return root / "train"


class TwoViews:
    """Two independent draws of one per-image transform (torchvision's and timm's loaders yield one view)."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, image):
        return self.transform(image), self.transform(image)


def torchvision_simclr():
    from torchvision import transforms as T

    return T.Compose([
        T.RandomResizedCrop(SIZE), T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(transforms.blur_kernel_size(SIZE), sigma=(0.1, 2.0))], p=0.5),
        T.ToTensor(), T.Normalize(transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)])


def batches_of(arm: str, folder: Path, images: data.ImageData, workers: int, batch: int):
    """An iterator of batches and a function that makes the two float views of one batch (called in the timing)."""
    if arm in ("torchvision", "timm"):
        if arm == "torchvision":
            from torchvision.datasets import ImageFolder

            dataset = ImageFolder(str(folder), transform=TwoViews(torchvision_simclr()))
        else:
            import timm.data

            dataset = timm.data.create_dataset("", root=str(folder))
            dataset.transform = TwoViews(timm.data.create_transform(SIZE, is_training=True))
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                             drop_last=True, persistent_workers=False)
        return iter(loader), lambda b: b[0]
    if arm == "ours-loader-views":
        loader = data.make_loader(images, transforms.TwoViewTransform(SIZE), batch_size=batch, num_workers=workers)
        return iter(loader), lambda b: b["views"]
    augment = transforms.DeviceAugment(SIZE)
    if arm == "ours-decode-only":
        loader = data.make_loader(images, data.Uint8Transform(SIZE), batch_size=batch, collate="eval",
                                  num_workers=workers)
        return iter(loader), lambda b: (b["image"], b["image"])
    loader = data.make_loader(images, data.Uint8Transform(SIZE), batch_size=batch, collate="eval",
                              num_workers=workers, decode="full" if arm == "ours-full-decode" else "cpu")
    counter = iter(range(1 << 30))
    return iter(loader), lambda b: augment(b["image"], torch.Generator().manual_seed(next(counter)))


def glibc_heap_img_per_s(folder: Path, images: int, workers: int, batch: int, batches: int) -> float:
    """``ours`` measured in a child process whose heap is glibc's default (``SPECTRAL_SSL_HEAP=glibc``) with this
    process's thread count."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k not in cpu_threads.HEAP}  # exported by our heap policy
        env.update({cpu_threads.HEAP_OPT_OUT: "glibc", "OMP_NUM_THREADS": str(torch.get_num_threads())})
        out = Path(tmp) / "child.json"
        subprocess.run([sys.executable, __file__, "--arms=ours", f"--folder={folder.parent}", f"--images={images}",
                        f"--workers={workers}", f"--batch={batch}", f"--batches={batches}", "--decode_repeats=0",
                        f"--output={out}"], env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["img_per_s"]["ours"][0]


def img_per_s(arm: str, folder: Path, images: data.ImageData, workers: int, batch: int, batches: int) -> float:
    """Images per second (two views each) from opening the loader (workers started, nothing prefetched) to the end
    of ``batches`` batches: a warm-up batch would let the workers prefetch unequal amounts (ours sends samples in
    chunks) outside the timing."""
    if arm == "ours-glibc-heap":
        return glibc_heap_img_per_s(folder, data.num_rows(images), workers, batch, batches)
    start = time.perf_counter()
    loader, views = batches_of(arm, folder, images, workers, batch)
    done = 0
    for b in loader:
        x1, _ = views(b)
        assert x1.shape[-3:] == (3, SIZE, SIZE) and (x1.dtype == torch.float32 or arm == "ours-decode-only"), arm
        done += x1.shape[0]
        if done >= batches * batch:
            break
    seconds = time.perf_counter() - start
    del loader
    return done / seconds


def decode_ms(datas: list[bytes], repeats: int = 7) -> dict[str, float]:
    """Best ms per image (of ``repeats`` interleaved rounds: the least disturbed by other work) of decoding and
    ``to_uint8`` at 224 px with each decoder at the size each path needs (PIL full; PIL draft and simplejpeg)."""
    needs = {"short side 224": decode_need.ShortSideNeed(SIZE),
             "simclr crops 224": decode_need.views_need(SIZE, transforms.augment_preset("simclr", SIZE))}
    cases = {"pil full": lambda d: data.to_uint8(data.decode_image(d), SIZE)}
    for label, need in needs.items():
        cases[f"pil draft, {label}"] = lambda d, n=need: data.to_uint8(data.decode_image(d, n, "pil"), SIZE)
        if jpeg._simplejpeg() is not None:
            cases[f"simplejpeg, {label}"] = lambda d, n=need: data.to_uint8(data.decode_image(d, n, "simplejpeg"),
                                                                            SIZE)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            for d in datas:
                fn(d)
            times[name].append((time.perf_counter() - start) / len(datas))
    return {name: 1000 * min(t) for name, t in times.items()}


def table(rates: dict[str, list[float]]) -> str:
    base = statistics.median(rates[BASELINE]) if rates.get(BASELINE) else None
    lines = ["| loader | img/s (two views) | ratio to torchvision |", "|---|---|---|"]
    for arm, values in rates.items():
        rate = statistics.median(values)
        ratio = f"{rate / base:.2f}x" if base else "-"
        lines.append(f"| {arm} | {rate:.1f} (min {min(values):.1f}, max {max(values):.1f}) | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000, help="JPEGs written (a few thousand by default)")
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=0, help="timed batches per arm; 0 = one pass over the images")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--decode_repeats", type=int, default=7, help="rounds of the decode micro-benchmark (0: skip it)")
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of: " + ", ".join(ARMS))
    p.add_argument("--folder", default=None, help="reuse (or keep) the image folder here instead of a temporary one")
    p.add_argument("--output", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",")]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        p.error(f"unknown arms {unknown}; choose from {', '.join(ARMS)}")
    batches = args.batches or args.images // args.batch
    if args.images < args.batch:
        p.error(f"--images {args.images} cannot fill one batch of --batch {args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.folder or tmp)
        folder = root / "train"
        if not folder.is_dir() or sum(1 for _ in folder.rglob("*.jpg")) < args.images:
            write_folder(root, args.images, args.width, args.height)
        datas = [f.read_bytes() for f in sorted(folder.rglob("*.jpg"))[:50]]
        decoders = decode_ms(datas, args.decode_repeats) if args.decode_repeats else {}
        opened = data.load_images(str(root), "train", streaming=False, label_column=None)
        rates = {arm: [] for arm in arms}
        for _ in range(args.repeats):  # arms alternate: a change in the machine's load hits every arm alike
            for arm in arms:
                rates[arm].append(img_per_s(arm, folder, opened, args.workers, args.batch, batches))
    print(f"{args.images} JPEGs {args.width}x{args.height} q90 -> two {SIZE} px views; {args.workers} workers, batch "
          f"{args.batch}, {batches} timed batches x {args.repeats}; {device_name(torch.device('cpu'))}")
    print(table(rates))
    print("decode + to_uint8 224, ms per image (best round): " + ", ".join(f"{k} {v:.2f}" for k, v in decoders.items()))
    out = {"images": args.images, "size": [args.width, args.height], "workers": args.workers, "batch": args.batch,
           "batches": batches, "repeats": args.repeats, "device": device_name(torch.device("cpu")),
           "img_per_s": rates, "decode_ms": decoders,
           "ratio_to_torchvision": {a: statistics.median(v) / statistics.median(rates[BASELINE])
                                    for a, v in rates.items()} if BASELINE in rates else {}}
    if args.output:
        write_results(args.output, out)
    return out


if __name__ == "__main__":
    main()
