"""The one command for a GPU: prove the GPU path on the device, measure its speed and the Fashion-MNIST headline.

    python scripts/gpu_check.py --output DIR --budget_s 480            (on a GPU; data/fashion_mnist prepared)
    python scripts/gpu_check.py --output DIR --budget_s 240 --tiny     (CPU smoke run at tiny scale: the test)

Phases, in this order, each with its own time box (scaled by ``--budget_s`` / 480); the results are rewritten to
``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` after every check, so a run stopped by a timeout keeps what it measured:

1. correctness (60 s): the Triton greedy kernel against the torch loop and a slow float64 reference (exact and m=64;
   (k, M, D) with non-powers of two; the CUDA graph replayed twice in a row, then on new data); device augmentation on
   CUDA against the CPU path for the same parameters and generator (max |difference| <= AUGMENT_ATOL on the
   normalised output); a batch of JPEGs decoded by nvJPEG (``decode=device``) against libjpeg on the CPU (mean
   |difference| <= 2 grey levels); the decoded split in GPU memory equal to the one in RAM (``cache_decoded=device``); a
   checkpoint written on CUDA and resumed restores the step, the pool position and every registered state (loss,
   EMA target, whitening, selector) exactly; 10 steps of every loss x {no whitening, ZCA} x {random, pool, greedy}
   under bf16 autocast give finite losses (the recipe in ``--workers`` subprocesses, until the box ends).
2. speed (150 s, and never into the headline's 240 s and its probe): images/s of the model-only SimCLR step
   (channels_last, as the recipe trains; NCHW beside it) against the recipe end to end (random; Greedy-64 + ZCA) for
   the headline config, on SPEED_ROWS rows of the split (a decode per arm; img/s does not depend on the split's
   length); greedy_select k=512 of M=2048,
   D=128 (torch loop vs kernel); the spectral diagnostics' share of a step; ZCA whitening of one view by eigh and by
   Newton–Schulz (``whitening_solver``: ms, difference); then, in this order and only while the box has time left
   (the headline's minutes come first): the host synchronisations of 20 recipe steps by source line
   (``torch.cuda.set_sync_debug_mode``, random and Greedy-64 + ZCA; a line that syncs every step fails: it stalls
   the GPU queue; ``EXPECTED_SYNCS`` names the one the design needs, Greedy-m's picks read back); a torch.profiler
   view of 50 steps, random and Greedy-64 + ZCA (the selection's named ranges, the costliest ops); the opt-in
   persistent greedy kernel against the k + 1 launches (same picks, ms; in a child process with a limit of 90 s or
   the box's time left); JPEG
   photos at 224 px (2048 photo-like 500 x 375 JPEGs written by ``bench_jpeg.photo_jpeg``): the recipe end to end
   with ``decode=device`` (nvJPEG, views on the GPU) against the model-only resnet50 SimCLR step, batch 128; the
   online kNN probe with its images kept against read again (``bench_online_knn.py``, 2000 images of each split); the
   Greedy-64 + ZCA arm with its candidates embedded at half the side (``--selection_embed_size``) against random.
   Targets: recipe >= 0.85x model-only; Greedy-64 + ZCA >= 0.9x random; kernel <= 1 ms; JPEG end to end >= 0.7x.
3. headline (240 s of training, then the probe): ``recipes/configs/fashion_mnist_gpu.yaml`` for as many steps as fit
   in PLAN_FILL of the box at the img/s the speed phase measured (after the decode of the split, scaled from the speed
   arm's), then ``recipes/linear_probe.py`` on the full 60k/10k splits beside the fair random init and raw pixels
   (every arm's features in one pass over the images). The PASS/FAIL row is written as soon as the pretrained probe
   ends, the baselines' row after it. Target: >= 91 % linear top-1 within 240 s.
4. time-to-accuracy (whatever is left, if >= 150 s): one more seed of the five arms at once (``bench_tta.py
   --parallel 5``) at the scale that fits, written to DIR/tta_seed.json for docs/tta/gpu_seeds.jsonl.

The GPU machine has no network: what this needs beyond its image travels with the working tree (``data/`` and
``.whl/``, see docs/benchmarks.md "Running the GPU check"); the preflight lists every import and stops with one line
naming what is missing. ``--tiny`` runs every phase on the CPU at tiny scale (test_resnet, synthetic data unless
data/fashion_mnist exists) and is what the test suite runs.
"""

from __future__ import annotations

import argparse
import collections
import copy
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIBLINGS = [str(ROOT / "scripts"), str(ROOT / "benchmarks")]  # demo (recipe loader), harness, bench_tta


def siblings_importable() -> None:
    for folder in SIBLINGS:
        if folder not in sys.path:
            sys.path.insert(0, folder)


siblings_importable()

REFERENCE_BUDGET_S = 480
BOXES = {"correctness": 60, "speed": 150, "headline": 240}  # seconds at the reference budget
# the headline's export and its linear probes (pretrained, random init, raw pixels: one pass over the 70k images, then
# three fits); the headline's PASS/FAIL row is written as soon as the pretrained probe ends
PROBE_RESERVE_S = 100
PLAN_FILL = 0.9  # the headline plans its steps for this share of its seconds: first steps, logging steps, export
SPEED_ROWS = 16384  # rows the speed arms train on: img/s does not depend on the split's length, a decode does
FULL_ROWS = 60000  # Fashion-MNIST's train split, which the headline decodes
AUGMENT_ATOL = 1e-4  # CUDA vs CPU device augmentation, normalised output (1/255/std ~ 0.011 is one grey level)
TARGETS = {"recipe_over_model": 0.85, "greedy_zca_over_random": 0.9, "kernel_ms": 1.0, "headline_top1": 91.0,
           "jpeg_over_model": 0.7}
GPU_CONFIG = ROOT / "recipes" / "configs" / "fashion_mnist_gpu.yaml"
KERNEL_SHAPES = [(512, 2048, 128), (100, 777, 50), (37, 301, 96)]  # (k, M, D)
IMPORTS = ["torch", "torchvision", "timm", "datasets", "accelerate", "transformers", "safetensors", "huggingface_hub",
           "yaml", "matplotlib", "PIL", "tqdm", "spectral_ssl"]


class Report:
    """Every check's outcome, rewritten as JSON and markdown after each one."""

    def __init__(self, folder: Path, budget_s: float) -> None:
        self.folder, self.budget_s, self.start = folder, budget_s, time.perf_counter()
        self.data: dict = {"checks": [], "figures": {}}
        folder.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def check(self, phase: str, name: str, status: str, detail: str = "", **values) -> None:
        """status: PASS, FAIL, ERROR, SKIP or INFO."""
        row = {"phase": phase, "check": name, "status": status, "detail": detail, "at_s": round(self.elapsed(), 1),
               **values}
        self.data["checks"].append(row)
        print(f"[{row['at_s']:6.1f} s] {phase:<11} {status:<5} {name}: {detail}", flush=True)
        self.save()

    def figure(self, key: str, value) -> None:
        self.data["figures"][key] = value
        self.save()

    def save(self) -> None:
        self.data["wall_s"] = round(self.elapsed(), 1)
        (self.folder / "gpu_check.json").write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        (self.folder / "gpu_check.md").write_text(self.markdown())

    def markdown(self) -> str:
        env = self.data.get("environment", {})
        lines = [f"# GPU check: {env.get('device', '?')}, {env.get('date', '')}", "",
                 f"torch {env.get('torch', '?')}, triton {env.get('triton', '?')}, timm {env.get('timm', '?')}; "
                 f"budget {self.budget_s:.0f} s, wall {self.data.get('wall_s', 0):.0f} s", "",
                 "| phase | check | status | detail |", "|---|---|---|---|"]
        for c in self.data["checks"]:
            lines.append(f"| {c['phase']} | {c['check']} | {c['status']} | {c['detail'].replace('|', '/')} |")
        return "\n".join(lines) + "\n"


def guarded(report: Report, phase: str, name: str):
    """Decorator-free guard: run ``fn`` and record an ERROR row (with the traceback's tail) if it raises."""
    def run(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - one failing check must not cost the rest of the run
            tail = traceback.format_exc().strip().splitlines()[-6:]
            report.check(phase, name, "ERROR", f"{type(e).__name__}: {e}", traceback=tail)
            return None
    return run


# ---------------------------------------------------------------- preflight
def preflight(report: Report, device) -> bool:
    missing = []
    versions = {}
    for name in IMPORTS:
        try:
            module = importlib.import_module(name)
            versions[name] = getattr(module, "__version__", "?")
        except Exception as e:  # noqa: BLE001 - listed, then the run stops in one line
            missing.append(f"{name} ({type(e).__name__}: {e})")
    try:
        import triton
        versions["triton"] = triton.__version__
    except ImportError:
        versions["triton"] = None
    import torch
    report.data["environment"] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), **versions,
        "cuda": torch.version.cuda, "cpus": os.cpu_count()}
    if missing:
        report.check("preflight", "imports", "FAIL", "missing: " + "; ".join(missing))
        return False
    report.check("preflight", "imports", "PASS", ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    return True


# ---------------------------------------------------------------- data
def dataset_folder(args, work: Path) -> Path:
    """data/fashion_mnist when prepared, else (tiny runs only) a synthetic parquet folder of the same layout."""
    folder = Path(args.dataset)
    if not folder.exists() and not folder.is_absolute() and (ROOT / folder).exists():
        folder = ROOT / folder
    if (folder / "test-00000-of-00001.parquet").is_file():
        return folder
    if not args.tiny:
        raise SystemExit(f"error: {folder} is not prepared; run python scripts/prepare_fashion_mnist.py first")
    from spectral_ssl.data import synthetic_dataset

    out = work / "data"
    out.mkdir(parents=True, exist_ok=True)
    synthetic_dataset(num_rows=512, image_size=28, num_classes=10, seed=0, mode="L").to_parquet(
        str(out / "train-00000-of-00001.parquet"))
    synthetic_dataset(num_rows=256, image_size=28, num_classes=10, seed=1, mode="L").to_parquet(
        str(out / "test-00000-of-00001.parquet"))
    return out


def scale_args(args) -> dict:
    """The sizes of every phase: full on a GPU, tiny on the CPU."""
    if args.tiny:
        return dict(backbone="test_resnet", backbone_kwargs="{}", image_size=16, batch=32, proj_dim=16, hidden=32,
                    matrix_steps=2, matrix_rows=256, speed_steps=6, log_every=2, kernel_shapes=[(6, 40, 5)],
                    augment_batch=8, cache_rows=64, headline_overrides=["--backbone=test_resnet",
                                                                        "--backbone_kwargs={}", "--image_size=16",
                                                                        "--batch_size=32", "--proj_dim=16",
                                                                        "--proj_hidden_dim=32", "--num_workers=0",
                                                                        "--reff_samples=64",
                                                                        "--max_train_samples=512"],
                    probe_limits=["--max_train_samples=256", "--max_test_samples=128"], headline_max_steps=6,
                    speed_rows=512, headline_rows=512, knn_samples=32,
                    jpeg=dict(images=24, photo=(64, 48), backbone="test_resnet", image_size=32, batch=8, workers=0,
                              steps=4, log_every=2))
    return dict(backbone="resnet18", backbone_kwargs="{channels: [32, 64, 128, 256]}", image_size=32, batch=128,
                proj_dim=64, hidden=512, matrix_steps=10, matrix_rows=2048, speed_steps=200, log_every=20,
                kernel_shapes=KERNEL_SHAPES, augment_batch=256, cache_rows=4096, headline_overrides=[],
                probe_limits=[f"--num_workers={max(1, min(14, (os.cpu_count() or 2) - 2))}"],
                headline_max_steps=None, speed_rows=SPEED_ROWS, headline_rows=FULL_ROWS, knn_samples=2000,
                jpeg=dict(images=2048, photo=(500, 375), backbone="resnet50", image_size=224, batch=128, workers=10,
                          steps=40, log_every=5))


def load_recipe(name: str):
    from demo import load_script

    return load_script(ROOT / "recipes" / f"{name}.py")


def metrics_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- phase 1: correctness
def reference_picks(x, k: int, eps: float, m: int | None = None, keys=None) -> list[int]:
    """Greedy log-det by direct solves in float64 (slow, obviously correct): pick t maximises x_c^T A^-1 x_c with
    A = eps I + sum of the chosen x x^T, among the remaining candidates (for t < min(k, M - m) only those whose key
    is among the m smallest remaining keys); ties -> lowest index."""
    import torch

    x = x.double()
    total, dim = x.shape
    taken = torch.zeros(total, dtype=torch.bool, device=x.device)
    sampled = 0 if m is None else max(0, min(k, total - m))
    picks: list[int] = []
    for t in range(k):
        chosen = x[picks]
        a = eps * torch.eye(dim, dtype=x.dtype, device=x.device) + chosen.T @ chosen
        gains = (x * torch.linalg.solve(a, x.T).T).sum(1)
        gains[taken] = float("-inf")
        if t < sampled:
            key = keys[t].double().masked_fill(taken, 2.0)
            threshold = key.topk(m, largest=False).values.max()
            gains = torch.where(key <= threshold, gains, torch.full_like(gains, float("-inf")))
        best = int(torch.argmax(gains))
        picks.append(best)
        taken[best] = True
    return picks


def kernel_pool(total: int, dim: int, seed: int, device, dtype):
    """Unit vectors with distinct norms (no exact ties in the greedy maxima)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    norms = torch.linspace(0.5, 1.5, total, dtype=torch.float64)[torch.randperm(total, generator=g)]
    x = F.normalize(torch.randn(total, dim, generator=g, dtype=torch.float64), dim=1) * norms[:, None]
    return x.to(device=device, dtype=dtype)


def check_kernel(report: Report, device, shapes) -> None:
    import torch

    from spectral_ssl.batching import greedy_select, greedy_triton, log_det_objective

    if device.type != "cuda" or not greedy_triton.usable(device):
        report.check("correctness", "greedy kernel", "SKIP", "no CUDA or no triton: the kernel runs on CUDA only "
                     "(CPU correctness: tests/batching/test_greedy_triton.py under TRITON_INTERPRET=1)")
        return
    eps = 1e-2
    for k, total, dim in shapes:
        for m in (None, 64):
            label = f"k={k} M={total} D={dim} {'exact' if m is None else f'm={m}'}"
            seeds, mismatches, calls = (11, 11, 12), [], 0
            kernel_gen = torch.Generator(device=device).manual_seed(5)
            ref_gen = torch.Generator(device=device).manual_seed(5)
            for call, seed in enumerate(seeds):  # first call: eager + capture; then two replays (same, new data)
                x = kernel_pool(total, dim, seed, device, torch.float64)
                picks = greedy_triton.greedy_triton(x, k, m=m, eps=eps, generator=kernel_gen).tolist()
                sampled = 0 if m is None else max(0, min(k, total - m))
                keys = (torch.rand(sampled, total, generator=ref_gen, device=device, dtype=torch.float64)
                        if sampled else None)
                expected = reference_picks(x, k, eps, m, keys)
                if m is None:
                    loop = greedy_select(x, k, eps=eps, backend="torch").tolist()
                    if loop != expected:
                        mismatches.append(f"call {call}: torch loop differs from the reference")
                if picks != expected:
                    first = next(i for i, (a, b) in enumerate(zip(picks, expected)) if a != b)
                    mismatches.append(f"call {call}: first differing pick {first}")
                calls += 1
            agree = f"picks equal to the float64 reference in {calls} calls (eager + capture, replay, replay on new " \
                "data)" + (" and to the torch loop" if m is None else "")
            report.check("correctness", f"greedy kernel {label}", "FAIL" if mismatches else "PASS",
                         "; ".join(mismatches) or agree)
        x32 = kernel_pool(total, dim, 21, device, torch.float32)
        kernel = greedy_triton.greedy_triton(x32, k, eps=eps)
        loop = greedy_select(x32, k, eps=eps, backend="torch")
        a, b = float(log_det_objective(x32[kernel], eps)), float(log_det_objective(x32[loop], eps))
        rel = abs(a - b) / max(1.0, abs(b))
        report.check("correctness", f"greedy kernel k={k} M={total} D={dim} float32 objective",
                     "PASS" if rel <= 1e-4 else "FAIL", f"log-det kernel {a:.6f} vs torch loop {b:.6f} "
                     f"(relative {rel:.1e}, tolerance 1e-4)", relative=rel)


def check_augment(report: Report, device, batch: int) -> None:
    import torch

    from spectral_ssl.transforms import DeviceAugment, augment_preset

    worst = 0.0
    cases = []
    for size, channels in ((32, 1), (32, 3), (96, 3)):  # 96 px: the simclr preset blurs above 64 px
        images = torch.randint(0, 256, (batch, channels, 28, 28), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(size + channels))
        aug = DeviceAugment(size, mean=(0.286,) * 3, std=(0.353,) * 3, views=augment_preset("simclr", size))
        cpu = aug(images, torch.Generator().manual_seed(7))
        gpu = aug.to(device)(images.to(device), torch.Generator().manual_seed(7))
        diff = max(float((c - g.cpu()).abs().max()) for c, g in zip(cpu, gpu))
        worst = max(worst, diff)
        cases.append(f"{size} px x{channels}: {diff:.1e}")
    status = ("PASS" if worst <= AUGMENT_ATOL else "FAIL") if device.type == "cuda" else "INFO"  # CPU: code path only
    report.check("correctness", f"device augmentation {device.type.upper()} = CPU", status,
                 f"max |CUDA - CPU| {worst:.2e} (tolerance {AUGMENT_ATOL:g}; one grey level is 1.1e-2): "
                 + ", ".join(cases), max_abs_diff=worst)


def check_jpeg(report: Report, device) -> None:
    """decode=device: a batch of photo JPEGs decoded by nvJPEG (``decode_jpeg_batch``) against libjpeg on the CPU."""
    import numpy as np
    import torch
    from bench_jpeg import photo_jpeg

    from spectral_ssl.data.jpeg import decode_jpeg_batch

    rng = np.random.default_rng(0)
    files = [torch.frombuffer(bytearray(photo_jpeg(rng, w, h)), dtype=torch.uint8)
             for w, h in ((500, 375), (375, 500), (1600, 1200), (224, 224), (97, 301))]
    cpu, gpu = (decode_jpeg_batch(files, 224, d).float().cpu() for d in ("cpu", device))
    diff = float((cpu - gpu).abs().mean())  # nvJPEG's IDCT and chroma upsampling are not libjpeg's: ~1 grey level
    status = ("PASS" if diff <= 2.0 else "FAIL") if device.type == "cuda" else "INFO"
    report.check("correctness", f"decode=device JPEG {device.type.upper()} = CPU", status,
                 f"{len(files)} JPEGs -> (B, 3, 224, 224): mean |device - CPU| {diff:.2f} grey levels (<= 2)",
                 mean_abs_diff=diff)


def check_cache(report: Report, device, dataset: Path, rows: int) -> None:
    import torch

    from spectral_ssl import data
    from spectral_ssl.data import DecodedEpochLoader, DecodedSplit

    images = data.load_images(str(dataset), "train", streaming=True, image_column="image", label_column=None)
    ram = DecodedSplit.decode(images, 32, device="cpu", max_rows=rows)
    gpu = DecodedSplit.decode(images, 32, device=device, max_rows=rows)
    ok = gpu.images.device.type == device.type and torch.equal(ram.images, gpu.images.cpu()) and torch.equal(ram.idx,
                                                                                                         gpu.idx)
    loaders = [DecodedEpochLoader(s, 64, seed=3) for s in (ram, gpu)]
    for a, b in zip(loaders[0](1), loaders[1](1)):
        ok = ok and b["image"].device.type == device.type and torch.equal(a["image"], b["image"].cpu()) \
            and torch.equal(a["idx"], b["idx"])
    report.check("correctness", "cache_decoded=device", ("PASS" if ok else "FAIL") if device.type == "cuda" else
                 ("INFO" if ok else "FAIL"),
                 f"{len(gpu)} rows decoded into {gpu.images.device} ({gpu.images.numel() / 2**20:.1f} MB) equal to "
                 "the RAM cache, and every batch of an epoch served from it equal" if ok else
                 "the GPU cache or its batches differ from the RAM cache")


def snapshot(obj) -> dict:
    """A registered object's state as the checkpoint holds it; a CandidatePool right after loading keeps its
    restored position in ``_drawn_at_start``/``_carried`` until it reads again."""
    import torch

    from spectral_ssl.batching import CandidatePool

    if isinstance(obj, CandidatePool):
        return {"epoch": obj.epoch, "chosen": obj.chosen, "skipped": obj.skipped,
                "drawn": getattr(obj, "_drawn_at_start", None), "carried": getattr(obj, "_carried", None)}
    state = obj.state_dict()
    return {k: (v.detach().cpu().clone(), v.device.type) if isinstance(v, torch.Tensor) else copy.deepcopy(v)
            for k, v in state.items()}


def same(saved, restored) -> bool:
    import torch

    if isinstance(restored, tuple) and isinstance(restored[0], torch.Tensor):
        return isinstance(saved, torch.Tensor) and torch.equal(saved.cpu(), restored[0])
    if isinstance(saved, dict):
        return isinstance(restored, dict) and saved.keys() == restored.keys() and all(
            same(saved[k], restored[k]) for k in saved)
    if isinstance(saved, torch.Tensor):
        return isinstance(restored, torch.Tensor) and torch.equal(saved.cpu(), restored.cpu())
    return saved == restored


def check_resume(report: Report, device, dataset: Path, work: Path, sizes: dict) -> None:
    import torch

    pretrain = load_recipe("pretrain")
    out = work / "resume"
    argv = ["--dataset", str(dataset), f"--output_dir={out}", f"--backbone={sizes['backbone']}",
            f"--backbone_kwargs={sizes['backbone_kwargs']}", f"--image_size={sizes['image_size']}",
            f"--batch_size={sizes['batch']}", f"--proj_dim={sizes['proj_dim']}",
            f"--proj_hidden_dim={sizes['hidden']}", f"--max_train_samples={sizes['matrix_rows']}", "--loss=moco",
            "--selection=greedy", "--greedy_m=16", "--whitening=zca", "--log_every=1", "--reff_samples=64",
            "--save_every=3"]
    pretrain.main([*argv, "--max_steps=3"])
    saved = {}
    checkpoint = out / "checkpoints" / "step_000003"
    for path in sorted(checkpoint.glob("custom_checkpoint_*.pkl")):
        saved[int(path.stem.rsplit("_", 1)[1])] = torch.load(path, weights_only=False)
    restored: dict = {}
    real_train = pretrain.train

    def spy(run, cfg, accelerator, **kwargs):  # registered objects as build() left them
        for i, obj in enumerate(accelerator._custom_objects):
            restored[i] = (type(obj).__name__, snapshot(obj))
        return real_train(run, cfg, accelerator, **kwargs)

    pretrain.train = spy
    try:
        pretrain.main([*argv, "--max_steps=6", "--resume=true"])
    finally:
        pretrain.train = real_train
    for i, (name, snap) in restored.items():  # a resumed run decodes again: its decode pass is training time too
        if name == "TrainState" and i in saved and snap.get("train_seconds", 0) >= saved[i].get("train_seconds", 0):
            snap["train_seconds"] = saved[i]["train_seconds"]
    problems = [f"{restored[i][0]} (object {i})" for i in saved if i not in restored or not same(saved[i],
                                                                                                  restored[i][1])]
    devices = sorted({d for _, snap in restored.values() if isinstance(snap, dict)
                      for v in snap.values() if isinstance(v, tuple) and isinstance(v[1], str) for d in [v[1]]})
    steps = [m["step"] for m in metrics_of(out)]
    if steps != list(range(1, 7)):
        problems.append(f"metrics steps {steps} (expected 1..6 without repeats)")
    names = ", ".join(name for name, _ in restored.values())
    report.check("correctness", "checkpoint + resume on the device", "FAIL" if problems else "PASS",
                 ("differ after resume: " + "; ".join(problems)) if problems else
                 f"step 3 restored with every registered object equal to the checkpoint ({names}; state tensors on "
                 f"{'/'.join(devices)}); resumed to step 6, metrics 1..6 without repeats")


def matrix_jobs(dataset: Path, work: Path, sizes: dict) -> list[dict]:
    from spectral_ssl.losses import LOSSES

    jobs = []
    losses = [name for name in LOSSES if name != "simclr"]  # simclr is infonce's alias
    for loss in losses:
        for whitening in ("none", "zca"):
            for selection in ("random", "pool", "greedy"):
                name = f"{loss}/{whitening}/{selection}"
                out = work / "matrix" / name.replace("/", "_")
                argv = ["--dataset", str(dataset), f"--output_dir={out}", f"--backbone={sizes['backbone']}",
                        f"--backbone_kwargs={sizes['backbone_kwargs']}", f"--image_size={sizes['image_size']}",
                        f"--batch_size={sizes['batch']}", f"--proj_dim={sizes['proj_dim']}",
                        f"--proj_hidden_dim={sizes['hidden']}", f"--max_steps={sizes['matrix_steps']}",
                        "--log_every=1", f"--max_train_samples={sizes['matrix_rows']}", "--reff_samples=64",
                        "--save_every=null", f"--loss={loss}", f"--whitening={whitening}",
                        f"--selection={selection}", "--greedy_m=16", "--mixed_precision=auto"]
                jobs.append({"name": name, "argv": argv, "steps": sizes["matrix_steps"]})
                if (whitening, selection) == ("zca", "greedy") and loss == "infonce":  # the schedule's random half
                    jobs.append({"name": name + "_until", "steps": sizes["matrix_steps"],
                                 "argv": [f"--output_dir={out}_until" if a.startswith("--output_dir=") else a
                                          for a in argv] + ["--selection_until=0.5"]})
    return jobs


def run_jobs(jobs_file: Path, results_file: Path) -> None:
    """Worker: run each job's recipe, append its outcome to results_file (one JSON line each)."""
    import torch

    pretrain = load_recipe("pretrain")
    for job in json.loads(jobs_file.read_text()):
        start, row = time.perf_counter(), {"name": job["name"]}
        try:
            out = pretrain.main(job["argv"])
            losses = [m["loss"] for m in metrics_of(out)]
            finite = len(losses) == job["steps"] and all(math.isfinite(v) for v in losses)
            row.update(ok=finite, losses=losses, precision=json.loads((out / "train_config.json").read_text()).get(
                "mixed_precision"), cuda=torch.cuda.is_available())
        except (Exception, SystemExit) as e:  # noqa: BLE001 - recorded, the next job runs
            row.update(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-1200:])
        row["seconds"] = round(time.perf_counter() - start, 1)
        with results_file.open("a") as f:
            f.write(json.dumps(row) + "\n")


def start_matrix(work: Path, dataset: Path, sizes: dict, workers: int) -> tuple[list[dict], list, list[Path]]:
    """Start the loss-matrix workers (they run beside the other correctness checks)."""
    jobs = matrix_jobs(dataset, work, sizes)
    shares = [jobs[i::workers] for i in range(workers)]
    procs, results = [], []
    for i, share in enumerate(shares):
        jobs_file, results_file = work / f"jobs_{i}.json", work / f"results_{i}.jsonl"
        jobs_file.write_text(json.dumps(share))
        results.append(results_file)
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker_jobs", str(jobs_file), "--worker_results",
                                       str(results_file)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    return jobs, procs, results


def finish_matrix(report: Report, started: tuple[list[dict], list, list[Path]], sizes: dict, workers: int,
                  box_end: float) -> None:
    """Wait for the workers until the box ends (then stop them), and report every run."""
    jobs, procs, results = started
    while any(p.poll() is None for p in procs) and report.elapsed() < box_end:
        time.sleep(0.5)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    rows = [json.loads(line) for f in results if f.is_file() for line in f.read_text().splitlines() if line.strip()]
    failed = [r for r in rows if not r["ok"]]
    done = {r["name"] for r in rows}
    missing = [j["name"] for j in jobs if j["name"] not in done]
    status = "FAIL" if failed else ("PASS" if not missing else "INFO")
    detail = (f"{len(rows) - len(failed)}/{len(jobs)} runs of {sizes['matrix_steps']} steps finite "
              f"(precision {rows[0].get('precision') if rows else '?'}, {workers} workers)")
    if failed:
        detail += "; failed: " + "; ".join(f"{r['name']}: {r.get('error', 'non-finite loss')}"[:200] for r in failed)
    if missing:
        detail += f"; not run within the correctness box: {', '.join(missing)}"
    report.check("correctness", "every loss x whitening x selection (+ Greedy with selection_until), bf16", status,
                 detail, runs=rows)


# ---------------------------------------------------------------- phase 2: speed
def model_step_ms(backbone: str, batch: int, dim: int, device, image: int, kwargs: dict | None = None,
                  layout=None) -> float:
    """Median ms of the model-only SimCLR step (``harness.simclr_step``), its model freed afterwards; ``layout``
    defaults to channels_last, as the recipe trains."""
    import torch
    from harness import simclr_step, timed

    step = simclr_step(backbone, batch, dim, device, image=image, backbone_kwargs=kwargs,
                       memory_format=torch.channels_last if layout is None else layout)
    ms = timed(step, 10 if device.type == "cuda" else 2, device)
    del step
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return ms


def headline_argv(dataset: Path, out: Path, steps: int, sizes: dict, log_every: int) -> list[str]:
    return ["--config", str(GPU_CONFIG), "--dataset", str(dataset), f"--output_dir={out}",
            "--overwrite_output_dir=true", f"--max_steps={steps}", f"--log_every={log_every}",
            *sizes["headline_overrides"]]


def headline_settings(sizes: dict) -> tuple[dict, dict]:
    """(the headline config's keys, the size's overrides of them as strings): a key's value is the override's if
    any, else the config's."""
    import yaml

    return (yaml.safe_load(GPU_CONFIG.read_text()),
            dict(a.lstrip("-").split("=", 1) for a in sizes["headline_overrides"]))


# the recipe arms the speed phase compares (timed, host syncs, profile): name -> their own arguments
SPEED_ARMS = {"random": [], "Greedy-64 + ZCA": ["--selection=greedy", "--greedy_m=64", "--whitening=zca"]}


def arm_argv(dataset: Path, work: Path, phase: str, name: str, steps: int, sizes: dict, log_every: int,
             *extra: str) -> list[str]:
    """The headline config's argv for speed arm ``name`` (``SPEED_ARMS``), in its own folder under work/phase."""
    out = work / phase / name.replace(" + ", "_").replace("-", "").lower()
    return [*headline_argv(dataset, out, steps, sizes, log_every), "--save_every=null", "--reff_samples=64", *extra,
            *SPEED_ARMS[name]]


def recipe_speed(pretrain, argv: list[str], steps: int, log_every: int, rows: int | None = None) -> dict:
    """img/s and ms of a recipe run from its metrics (after the first steps), and the one-off decode of its ``rows``
    (the split's rows it was capped to, if any)."""
    start = time.perf_counter()
    out = pretrain.main(argv)
    wall = time.perf_counter() - start
    lines = metrics_of(out)
    warm = max(log_every, steps // 5)
    kept = [m for m in lines if m["step"] > warm] or lines[-1:]

    def median(key):
        values = [m[key] for m in kept if m.get(key) is not None]
        return statistics.median(values) if values else None

    first = lines[0]  # train_seconds starts with the one-off decode: what the first steps did not take
    decode_s = max(0.0, first["train_seconds"] - first["step"] * (median("step_ms") or 0.0) / 1000)
    return {"img_per_s": median("img_per_s"), "step_ms": median("step_ms"), "select_ms": median("sel_select_ms"),
            "select_share": median("sel_share"), "wall_s": round(wall, 1), "logs": len(kept),
            "decode_s": round(decode_s, 1), "rows": rows}


def phase_speed(report: Report, device, dataset: Path, work: Path, sizes: dict) -> dict:
    import torch
    import torch.nn.functional as F
    import yaml
    from harness import timed

    from spectral_ssl import SpectralSSL
    from spectral_ssl.batching import greedy_select, greedy_triton
    from spectral_ssl.diagnostics import batch_diagnostics

    cfg, over = headline_settings(sizes)
    backbone = over.get("backbone", cfg["backbone"])
    kwargs = yaml.safe_load(over.get("backbone_kwargs", "null")) if "backbone_kwargs" in over else \
        cfg.get("backbone_kwargs") or {}
    batch = int(over.get("batch_size", cfg["batch_size"]))
    image = int(over.get("image_size", cfg["image_size"]))
    dim = int(over.get("proj_dim", cfg["proj_dim"]))
    layouts = {layout: model_step_ms(backbone, batch, dim, device, image, kwargs, layout)
               for layout in (torch.channels_last, torch.contiguous_format)}  # the recipe trains channels_last
    step_ms = layouts[torch.channels_last]
    model_ips = batch / (step_ms / 1000)
    report.figure("model_only", {"img_per_s": model_ips, "step_ms": step_ms, "backbone": backbone, "batch": batch,
                                 "image_size": image, "contiguous_step_ms": layouts[torch.contiguous_format]})
    report.check("speed", "model-only SimCLR step", "INFO", f"{model_ips:.0f} img/s ({step_ms:.2f} ms, {backbone} "
                 f"batch {batch} at {image} px, channels_last as the recipe; contiguous (NCHW) "
                 f"{layouts[torch.contiguous_format]:.2f} ms = {layouts[torch.contiguous_format] / step_ms:.2f}x)")

    z = F.normalize(SpectralSSL(backbone, proj_dim=dim, backbone_kwargs=kwargs).to(device).eval()(
        torch.randn(2 * batch, 3, image, image, device=device)).detach().float(), dim=1)
    diag_ms = timed(lambda: batch_diagnostics(z[:batch], z[batch:], 0.2), 5, device)
    log_every = int(cfg.get("log_every", 10))
    report.figure("diagnostics", {"ms": diag_ms, "share_of_step": diag_ms / step_ms,
                                  "share_at_log_every": diag_ms / (log_every * step_ms), "log_every": log_every})
    report.check("speed", "diagnostics' share of a step", "INFO", f"{diag_ms:.2f} ms = {100 * diag_ms / step_ms:.1f} "
                 f"% of one step; {100 * diag_ms / (log_every * step_ms):.2f} % at log_every={log_every}")

    whitening_solvers(report, device, batch, dim)

    k, total, d = (512, 2048, 128) if not sizes.get("kernel_small") else (64, 256, 32)
    x = F.normalize(torch.randn(total, d, generator=torch.Generator().manual_seed(0)), dim=1).to(device)
    rows = {}
    for label, m in (("exact", None), ("m64", 64)):
        g = torch.Generator(device=device).manual_seed(0)
        rows[f"torch_{label}_ms"] = timed(lambda m=m, g=g: greedy_select(x, k, m=m, generator=g, backend="torch"),
                                          5, device)
        if device.type == "cuda" and greedy_triton.usable(device):
            rows[f"kernel_{label}_ms"] = timed(lambda m=m, g=g: greedy_select(x, k, m=m, generator=g,
                                                                              backend="triton"), 20, device)
    report.figure("greedy_select", {"k": k, "M": total, "D": d, **rows})
    for label in ("exact", "m64"):
        kernel = rows.get(f"kernel_{label}_ms")
        status = "SKIP" if kernel is None else ("PASS" if kernel <= TARGETS["kernel_ms"] else "FAIL")
        report.check("speed", f"greedy kernel {label} k={k} M={total} D={d}", status,
                     f"torch loop {rows[f'torch_{label}_ms']:.2f} ms, kernel "
                     f"{'n/a (CUDA only)' if kernel is None else f'{kernel:.3f} ms'} (target <= 1 ms)")
    if device.type == "cuda":
        torch.cuda.empty_cache()

    pretrain = load_recipe("pretrain")
    steps = sizes["speed_steps"]
    speeds = {}
    for name in SPEED_ARMS:
        argv = arm_argv(dataset, work, "speed", name, steps, sizes, sizes["log_every"],
                        f"--max_train_samples={sizes['speed_rows']}")
        speeds[name] = recipe_speed(pretrain, argv, steps, sizes["log_every"], sizes["speed_rows"])
        report.figure(f"recipe {name}", speeds[name])
    random_ips = speeds["random"]["img_per_s"]
    ratio = random_ips / model_ips
    gpu = device.type == "cuda"
    report.check("speed", "one-off decode of the split", "INFO", f"{speeds['random']['decode_s']:.1f} s for "
                 f"{sizes['speed_rows']} rows (part of train_seconds; the headline plans its steps around it, scaled "
                 f"to the {sizes['headline_rows']} rows it decodes)")
    report.check("speed", "recipe random / model-only", ("PASS" if ratio >= TARGETS["recipe_over_model"] else "FAIL")
                 if gpu else "INFO", f"{random_ips:.0f} / {model_ips:.0f} img/s = {ratio:.3f} (target >= 0.85)",
                 ratio=ratio)
    greedy = speeds["Greedy-64 + ZCA"]
    ratio = greedy["img_per_s"] / random_ips
    report.check("speed", "recipe Greedy-64 + ZCA / random", ("PASS" if ratio >= TARGETS["greedy_zca_over_random"]
                                                              else "FAIL") if gpu else "INFO",
                 f"{greedy['img_per_s']:.0f} / {random_ips:.0f} img/s = {ratio:.3f} (target >= 0.9; selection "
                 f"{greedy['select_ms'] or 0:.2f} ms, {100 * (greedy['select_share'] or 0):.1f} % of a step)",
                 ratio=ratio)
    return speeds


def whitening_solvers(report: Report, device, batch: int, dim: int) -> None:
    """ZCA whitening of two views stacked (as ``Objective`` calls it), forward and backward, with eigh (a host
    synchronisation on CUDA) against the Newton–Schulz iteration (``whitening_solver=auto`` takes it on CUDA): ms,
    and each one's largest error against float64 eigh on the CPU relative to the output's scale (Newton–Schulz fails
    above twice eigh's); and Newton–Schulz called once per view, the launches that stacking saves."""
    import torch
    from harness import timed

    from spectral_ssl import BatchWhitening

    g = torch.Generator().manual_seed(0)
    cpu = (torch.randn(2, batch, dim // 4, generator=g) @ torch.randn(dim // 4, dim, generator=g)
           + 0.05 * torch.randn(2, batch, dim, generator=g))  # two views
    h = cpu.to(device).requires_grad_(True)
    truth = BatchWhitening(dim, solver="eigh")(cpu.double()).detach()  # float64 on the CPU: the reference
    rows = {}
    for solver in ("eigh", "newton_schulz"):
        layer = BatchWhitening(dim, solver=solver).to(device)

        def step(layer=layer):
            out = layer(h)
            out.pow(2).mean().backward()
            return out

        rows[f"{solver}_error"] = float((step().detach().cpu().double() - truth).abs().max() / truth.abs().max())
        rows[f"{solver}_ms"] = timed(step, 20 if device.type == "cuda" else 3, device)
    layer = BatchWhitening(dim, solver="newton_schulz").to(device)
    rows["newton_schulz_per_view_ms"] = timed(lambda: sum(layer(v).pow(2).mean() for v in h).backward(),
                                              20 if device.type == "cuda" else 3, device)
    rows["steps"] = BatchWhitening(dim).steps
    report.figure("whitening_solver", {"batch": batch, "dim": dim, **rows})
    ok = rows["newton_schulz_error"] <= max(2 * rows["eigh_error"], 1e-5)
    report.check("speed", "ZCA solver, two views fwd+bwd", "PASS" if ok else "FAIL",
                 f"eigh {rows['eigh_ms']:.2f} ms, Newton–Schulz ({rows['steps']} steps) {rows['newton_schulz_ms']:.2f} "
                 f"ms stacked, {rows['newton_schulz_per_view_ms']:.2f} ms one call per view (B={batch}, D={dim}); "
                 f"error against float64 eigh: eigh {rows['eigh_error']:.1e}, Newton–Schulz "
                 f"{rows['newton_schulz_error']:.1e} (must be <= 2x eigh's); auto takes Newton–Schulz on CUDA")


# per-step synchronisations that the design needs (source text of the line -> why)
EXPECTED_SYNCS = {"positions = positions.to(self.samples": "Greedy-m's picks are read back once a step, since the "
                  "pool's rows are chosen on the host"}
SYNC_MESSAGE = "synchronizing CUDA operation"  # torch.cuda.set_sync_debug_mode("warn")'s warning


def sync_sites(fn, inside: tuple[str, str], enable=None, disable=None) -> collections.Counter:
    """Call ``fn`` and count the host synchronisations it makes inside the function ``inside`` = (name, file name),
    by the innermost line of spectral_ssl or the recipes on the stack (``enable``/``disable`` switch the warning
    on and off: ``torch.cuda.set_sync_debug_mode``)."""
    sites: collections.Counter = collections.Counter()
    name, file_name = inside
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if SYNC_MESSAGE not in str(message):
            return shown(message, category, filename, lineno, file, line)
        stack = traceback.extract_stack()[:-1]
        if not any(f.name == name and Path(f.filename).name == file_name for f in stack):
            return None
        ours = [f for f in stack if "spectral_ssl" in Path(f.filename).parts or Path(f.filename).name == file_name]
        frame = ours[-1] if ours else stack[-1]
        sites[f"{Path(frame.filename).name}:{frame.lineno} {(frame.line or '').strip()[:80]}"] += 1
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        if enable:
            enable()
        try:
            fn()
        finally:
            if disable:
                disable()
    return sites


def classify_syncs(sites: collections.Counter, steps: int, log_every: int) -> tuple[list[str], list[str], str]:
    """The lines that synchronise every step (all but the logging steps, which read metrics), those of them the
    design does not need, and why it needs the rest (``EXPECTED_SYNCS``)."""
    per_step = [site for site, n in sites.items() if n >= steps - steps // log_every]
    unexpected = [site for site in per_step if not any(known in site for known in EXPECTED_SYNCS)]
    expected = "; ".join(reason for known, reason in EXPECTED_SYNCS.items() if any(known in s for s in per_step))
    return per_step, unexpected, expected


def check_syncs(report: Report, device, dataset: Path, work: Path, sizes: dict) -> None:
    """Host synchronisations per training step of the recipe (random; Greedy-64 + ZCA), by source line: each one
    drains the GPU queue and exposes the CPU's launch time of the next kernels."""
    import torch

    if device.type != "cuda":
        report.check("speed", "host syncs per training step", "SKIP", "CUDA only (torch.cuda.set_sync_debug_mode)")
        return
    pretrain = load_recipe("pretrain")
    steps, log_every = 20, 10
    for name in SPEED_ARMS:
        argv = arm_argv(dataset, work, "syncs", name, steps, sizes, log_every, "--max_train_samples=4096")
        sites = sync_sites(lambda argv=argv: pretrain.main(argv), ("train", "pretrain.py"),
                           enable=lambda: torch.cuda.set_sync_debug_mode("warn"),
                           disable=lambda: torch.cuda.set_sync_debug_mode(0))
        per_step, unexpected, expected = classify_syncs(sites, steps, log_every)
        report.figure(f"syncs {name}", {"steps": steps, "log_every": log_every, "sites": dict(sites.most_common())})
        top = "; ".join(f"{n}x {site}" for site, n in sites.most_common(6)) or "none"
        report.check("speed", f"host syncs in {steps} steps, {name}", "PASS" if not unexpected else "FAIL",
                     f"{sum(sites.values())} in all, {len(per_step)} lines sync every step "
                     f"({len(unexpected)} unexpected): {top}" + (f" (expected: {expected})" if expected else ""),
                     per_step=len(per_step), unexpected=len(unexpected))


PROFILED_RANGES = ("spectral_ssl.select", "spectral_ssl.pool.fill", "spectral_ssl.select.embed",
                   "spectral_ssl.select.decide", "spectral_ssl.pool.take")


def profile_steps(report: Report, device, dataset: Path, work: Path, sizes: dict) -> None:
    """torch.profiler over recipe steps (the first step included) of random batches and of Greedy-64 + ZCA: per
    step, the host and device time of the selection's named ranges (``record_function`` in
    spectral_ssl.batching.step) and the ops that take the most host and device time; what to act on for the 0.85x
    and 0.9x targets."""
    from torch.profiler import ProfilerActivity, profile

    pretrain = load_recipe("pretrain")
    cuda = device.type == "cuda"
    steps = 50 if cuda else 4  # the first step's one-off costs (compiles, graph capture) count 1/50 per step
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])

    def device_us(e, own=False):
        name = "self_device_time_total" if own else "device_time_total"
        return getattr(e, name, None) or getattr(e, name.replace("device", "cuda"), 0) or 0

    def ms(us):
        return round(us / 1000 / steps, 3)

    for name in SPEED_ARMS:
        argv = arm_argv(dataset, work, "profile", name, steps, sizes, 10, "--max_train_samples=4096")
        with profile(activities=activities) as prof:
            pretrain.main(argv)
        events = prof.key_averages()
        ranges = {}
        for e in events:  # on CUDA a range is listed twice (host event, device annotation): keep each one's own part
            if e.key in PROFILED_RANGES:
                seen = ranges.setdefault(e.key, {"cpu_ms": 0.0, "device_ms": 0.0})
                seen["cpu_ms"] = max(seen["cpu_ms"], ms(e.cpu_time_total))
                seen["device_ms"] = max(seen["device_ms"], ms(device_us(e)))
        ops = [e for e in events if e.key not in PROFILED_RANGES]
        top_cpu = [(e.key, ms(e.self_cpu_time_total)) for e in sorted(ops, key=lambda e: -e.self_cpu_time_total)[:8]]
        top_device = [(e.key, ms(device_us(e, own=True))) for e in
                      sorted(ops, key=lambda e: -device_us(e, own=True))[:8] if device_us(e, own=True)]
        report.figure(f"profile {name}", {"steps": steps, "ranges_per_step": ranges, "top_cpu_ms_per_step": top_cpu,
                                          "top_device_ms_per_step": top_device})
        shown = ", ".join(f"{k.removeprefix('spectral_ssl.')} {v['cpu_ms']:.2f}/{v['device_ms']:.2f}"
                          for k, v in ranges.items())
        report.check("speed", f"profile of {steps} steps, {name}", "INFO" if ranges else "FAIL",
                     f"ms per step host/device: {shown or 'no selection range recorded'}; most host time: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in top_cpu[:4])
                     + ("; most device time: " + ", ".join(f"{k[:40]} {v:.2f}" for k, v in top_device[:4])
                        if top_device else ""))


PERSISTENT_PROBE = r"""
import json, sys, torch, torch.nn.functional as F
sys.path[:0] = sys.argv[1:]
from harness import timed
from spectral_ssl.batching import greedy_triton
device = torch.device("cuda")
x = F.normalize(torch.randn(2048, 128, generator=torch.Generator().manual_seed(0)), dim=1).to(device)
out = {}
for label, m in (("exact", None), ("m64", 64)):
    picks = {}
    for persistent in (False, True):
        run = lambda m=m, persistent=persistent: greedy_triton.greedy_triton(
            x, 512, m=m, generator=torch.Generator(device=device).manual_seed(0), persistent=persistent)
        picks[persistent] = run()
        out[("persistent" if persistent else "launches") + f"_{label}_ms"] = timed(run, 20, device)
    out[f"same_{label}"] = bool(torch.equal(picks[False], picks[True]))
print(json.dumps(out))
"""


def check_persistent(report: Report, device, dataset: Path, work: Path, sizes: dict, timeout_s: float = 90) -> None:
    """The opt-in persistent greedy kernel (one launch, grid barriers) against the k + 1 launches: same picks, ms.
    In a child process with a time limit: a grid barrier that never completes must not cost the rest of the run."""
    from spectral_ssl.batching import greedy_triton

    if device.type != "cuda" or not greedy_triton.usable(device):
        report.check("speed", "greedy kernel, persistent (opt-in)", "SKIP", "CUDA and triton only")
        return
    try:
        proc = subprocess.run([sys.executable, "-c", PERSISTENT_PROBE, *SIBLINGS], capture_output=True, text=True,
                              timeout=min(90, timeout_s))  # never past the speed box: the headline's time
    except subprocess.TimeoutExpired:
        report.check("speed", "greedy kernel, persistent (opt-in)", "FAIL", f"no answer in {min(90, timeout_s):.0f} s "
                     "(compiling, or a grid barrier hung; the speed box's time was up)")
        return
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}, nothing on stderr"])[-1]
        report.check("speed", "greedy kernel, persistent (opt-in)", "FAIL", last[:300])
        return
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    report.figure("greedy_persistent", rows)
    same = rows["same_exact"] and rows["same_m64"]
    report.check("speed", "greedy kernel, persistent (opt-in)", "PASS" if same else "FAIL",
                 f"k=512 M=2048 D=128 exact {rows['persistent_exact_ms']:.3f} ms (launches "
                 f"{rows['launches_exact_ms']:.3f}), m=64 {rows['persistent_m64_ms']:.3f} ms (launches "
                 f"{rows['launches_m64_ms']:.3f}); picks {'the same' if same else 'DIFFER'}", **rows)


def write_photo(args: tuple) -> None:
    """One photo-like JPEG (``bench_jpeg.photo_jpeg``, its own seed) into an image folder with class sub-folders."""
    import numpy as np
    from bench_jpeg import photo_jpeg

    root, i, width, height = args
    folder = Path(root) / "train" / f"class_{i % 10}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{i:06d}.jpg").write_bytes(photo_jpeg(np.random.default_rng(i), width, height))


def embed_size_speed(report: Report, device, dataset: Path, work: Path, sizes: dict) -> dict:
    """The Greedy-64 + ZCA speed arm again with its candidates embedded at half the side
    (``--selection_embed_size``), against the random arm measured before it: what a cheaper no-grad pass buys."""
    cfg, over = headline_settings(sizes)
    image = int(over.get("image_size", cfg["image_size"]))
    steps = sizes["speed_steps"]
    argv = arm_argv(dataset, work, "speed_embed", "Greedy-64 + ZCA", steps, sizes, sizes["log_every"],
                    f"--max_train_samples={sizes['speed_rows']}", f"--selection_embed_size={image // 2}")
    speed = recipe_speed(load_recipe("pretrain"), argv, steps, sizes["log_every"], sizes["speed_rows"])
    report.figure("recipe Greedy-64 + ZCA, embedded at half the side", speed)
    random_ips = report.data["figures"]["recipe random"]["img_per_s"]
    ratio = speed["img_per_s"] / random_ips
    report.check("speed", "recipe Greedy-64 + ZCA, candidates embedded at half the side / random", "INFO",
                 f"{speed['img_per_s']:.0f} / {random_ips:.0f} img/s = {ratio:.3f} (--selection_embed_size="
                 f"{image // 2}; selection {speed['select_ms'] or 0:.2f} ms, {100 * (speed['select_share'] or 0):.1f} "
                 "% of a step)", ratio=ratio)
    return speed


def knn_probe_speed(report: Report, device, dataset: Path, work: Path, sizes: dict) -> dict:
    """The online kNN probe (``--probe_every``) on the headline's network and images: its images kept (uint8,
    normalised on the device) against read again at every probe (``benchmarks/bench_online_knn.py``)."""
    import bench_online_knn

    n = sizes["knn_samples"]
    result = bench_online_knn.main(["--config", str(GPU_CONFIG), f"--samples={n}", "--repeats=2",
                                    f"--dataset={dataset}", *sizes["headline_overrides"]])
    row = result["rows"][0]
    report.figure("online_knn", result)
    report.check("speed", "online kNN probe, images kept / read again", "INFO",
                 f"{row['kept_s']:.2f} s against {row['read_again_s']:.2f} s = {row['speedup']:.1f}x faster "
                 f"({n} images of each split, {row['kept_mb']:.0f} MB kept; first call {row['first_s']:.2f} s)",
                 ratio=row["speedup"])
    return result


def jpeg_speed(report: Report, device, dataset: Path, work: Path, sizes: dict) -> dict:
    """Photos at 224 px: the recipe end to end on a folder of JPEGs (decode=device: nvJPEG and the views on the GPU;
    decode=cpu on the CPU) against the model-only SimCLR step of the same backbone, batch and resolution."""
    import multiprocessing

    import bench_jpeg  # noqa: F401 - imported before the fork: the children find it loaded

    j = sizes["jpeg"]
    root = work / "photos"
    start = time.perf_counter()
    jobs = [(str(root), i, *j["photo"]) for i in range(j["images"])]
    processes = min(16, os.cpu_count() or 1, max(1, len(jobs) // 64))
    if processes == 1:
        for job in jobs:
            write_photo(job)
    else:  # forked children use numpy and PIL only (never CUDA, which the parent has initialised)
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pool.map(write_photo, jobs, chunksize=16)
    write_s = time.perf_counter() - start

    step_ms = model_step_ms(j["backbone"], j["batch"], 128, device, j["image_size"])
    model_ips = j["batch"] / (step_ms / 1000)
    decode = "device" if device.type == "cuda" else "cpu"
    argv = ["--dataset", str(root), "--eval_split=train", f"--output_dir={work / 'speed' / 'jpeg'}",
            "--overwrite_output_dir=true", f"--backbone={j['backbone']}", f"--image_size={j['image_size']}",
            f"--batch_size={j['batch']}", "--proj_dim=128", "--proj_hidden_dim=2048", "--augment_on=device",
            "--cache_decoded=off", f"--decode={decode}", f"--num_workers={j['workers']}", f"--max_steps={j['steps']}",
            f"--log_every={j['log_every']}", "--save_every=null", "--reff_samples=64"]
    recipe = recipe_speed(load_recipe("pretrain"), argv, j["steps"], j["log_every"])
    ratio = recipe["img_per_s"] / model_ips
    figure = {"backbone": j["backbone"], "image_size": j["image_size"], "batch": j["batch"], "decode": decode,
              "images": j["images"], "photo": j["photo"], "workers": j["workers"], "write_s": round(write_s, 1),
              "model_only_img_per_s": model_ips, "model_only_step_ms": step_ms, "recipe": recipe, "ratio": ratio}
    report.figure("jpeg", figure)
    report.check("speed", f"JPEG photos end to end (decode={decode}) / model-only",
                 ("PASS" if ratio >= TARGETS["jpeg_over_model"] else "FAIL") if device.type == "cuda" else "INFO",
                 f"{recipe['img_per_s']:.0f} / {model_ips:.0f} img/s = {ratio:.3f} (target >= "
                 f"{TARGETS['jpeg_over_model']}; {j['backbone']} batch {j['batch']} at {j['image_size']} px, "
                 f"{j['images']} JPEGs {j['photo'][0]}x{j['photo'][1]}, {j['workers']} workers)", ratio=ratio)
    return figure


# ---------------------------------------------------------------- phase 3: headline
def phase_headline(report: Report, device, dataset: Path, work: Path, sizes: dict, train_s: float,
                   measured_ips: float | None, output: Path) -> None:
    cfg, over = headline_settings(sizes)
    batch = int(over.get("batch_size", cfg["batch_size"]))
    measured = report.data["figures"].get("recipe random", {})
    if measured.get("rows"):  # the speed arm decoded its rows: the headline decodes the whole split
        decode_s = measured["decode_s"] * sizes["headline_rows"] / measured["rows"]
    else:
        decode_s = 40 if device.type == "cuda" else 5
    ips = measured_ips or 1000.0
    steps = max(2, int((PLAN_FILL * train_s - decode_s) * ips / batch))
    steps = min(steps, sizes["headline_max_steps"] or steps)
    out = work / "headline"
    report.check("headline", "plan", "INFO", f"{steps} steps of batch {batch} ({steps * batch / 60000:.1f} epochs of "
                 f"60k) to fit {PLAN_FILL:.0%} of {train_s:.0f} s at {ips:.0f} img/s"
                 f"{'' if measured_ips else ' (assumed)'} after a {decode_s:.0f} s decode")
    pretrain = load_recipe("pretrain")
    pretrain.main([*headline_argv(dataset, out, steps, sizes, int(cfg.get("log_every", 50))), "--save_every=null",
                   f"--warmup_steps={min(int(cfg.get('warmup_steps', 0)), steps // 10)}"])
    meta = json.loads((out / "config.json").read_text())["spectral_ssl"]
    report.figure("headline_train", {"steps": meta["steps"], "epochs": meta["epochs"],
                                     "train_seconds": meta["train_seconds"],
                                     "effective_rank": meta["effective_rank"]["value"]})
    (output / "headline_metrics.jsonl").write_text((out / "metrics.jsonl").read_text())
    probe = load_recipe("linear_probe")
    gpu = device.type == "cuda"

    def reported(arm: str, result: dict) -> None:  # the verdict as soon as the pretrained probe ends
        if arm != "pretrained":
            return
        ok = result["top1"] >= TARGETS["headline_top1"] and meta["train_seconds"] <= 240
        report.figure("headline", {"linear_top1": result["top1"], "knn_top1": result.get("knn", {}).get("top1"),
                                   "n_train": result["n_train"], "n_test": result["n_test"],
                                   "train_seconds": meta["train_seconds"], "steps": meta["steps"]})
        report.check("headline", "Fashion-MNIST linear top-1", ("PASS" if ok else "FAIL") if gpu else "INFO",
                     f"{result['top1']:.2f} % after {meta['train_seconds']:.0f} s of training ({meta['steps']} steps, "
                     f"{meta['epochs']} epochs) on {result['n_train']}/{result['n_test']} images (target >= 91 % "
                     "within 240 s)")

    result = probe.main(["--model", str(out), "--compare_random_init", "--compare_raw_pixels", "--knn",
                         f"--output={output / 'headline_probe.json'}", *sizes["probe_limits"]], on_result=reported)
    pre, rnd, raw = result["pretrained"], result["random_init"], result["raw_pixels"]
    report.figure("headline", {**report.data["figures"]["headline"], "random_init_top1": rnd["top1"],
                               "raw_pixels_top1": raw["top1"], "raw_pixels_knn_top1": raw.get("knn", {}).get("top1")})
    knn = " / ".join(f"{r['knn']['top1']:.2f}" if "knn" in r else "n/a" for r in (pre, rnd, raw))
    report.check("headline", "baselines (same probe, same images)", "INFO",
                 f"pretrained {pre['top1']:.2f} %, fair random init {rnd['top1']:.2f} %, raw pixels "
                 f"{raw['top1']:.2f} % (kNN {knn} %)")


# ---------------------------------------------------------------- phase 4: time to accuracy
def phase_tta(report: Report, device, dataset: Path, work: Path, sizes: dict, seconds: float, seed: int,
              output: Path) -> None:
    import bench_tta

    runs = work / "tta_runs"
    if sizes["headline_overrides"]:  # tiny: the reduced keys of the CPU smoke run
        steps, extra = 4, [*sizes["headline_overrides"], "--log_every=2", "--probe_every=2", "--probe_samples=64",
                           "--linear_train_samples=128", "--linear_test_samples=64", "--parallel=1",
                           "--untimed_warmup=0", "--max_train_samples=256"]
        extra = [a for a in extra if not a.startswith(("--reff", "--num_workers"))]
    else:  # five arms share the GPU: their rate is about a fifth of one run's each
        rate = 0.2 * (report.data["figures"].get("recipe random", {}).get("img_per_s") or 5000) / 256
        steps = max(230, int(0.6 * seconds * rate) // 230 * 230)
        extra = ["--probe_every=230", "--log_every=23", "--probe_samples=2000", "--max_train_samples=null",
                 "--linear_train_samples=0", "--linear_test_samples=0", "--parallel=5", "--warmup_steps=230",
                 "--backbone_kwargs={}", "--batch_size=256", "--proj_dim=128"]
    argv = [f"--max_steps={steps}", "--seeds=1", f"--first_seed={seed}", f"--output_dir={work / 'tta'}",
            f"--runs_dir={runs}", f"--dataset={dataset}", *extra]
    report.check("tta", "plan", "INFO", f"seed {seed}, {steps} steps per arm: bench_tta {' '.join(argv)}")
    bench_tta.main(argv)
    result = json.loads((work / "tta" / "tta.json").read_text())
    record = {"device": report.data["environment"]["device"], "date": report.data["environment"]["date"],
              "seed": seed, "steps": steps, "tta": result}
    (output / "tta_seed.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    arms = result["summary"]["arms"]
    report.check("tta", "one more seed", "INFO", "final kNN top-1: " + ", ".join(
        f"{a['name']} {a['final_knn'][0]:.1f} %" for a in arms.values() if a["final_knn"]) + " (tta_seed.json)")


# ---------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="outputs/gpu_check", help="folder of gpu_check.json/.md and the run's files")
    p.add_argument("--budget_s", type=float, default=REFERENCE_BUDGET_S, help="seconds the whole check may take")
    p.add_argument("--dataset", default="data/fashion_mnist", help="prepared Fashion-MNIST folder (relative: to the "
                   "working directory, else to the repository root)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke run at tiny scale (what the test runs)")
    p.add_argument("--workers", type=int, default=None, help="subprocesses of the loss matrix (default 6 on CUDA)")
    p.add_argument("--tta_seed", type=int, default=None, help="seed of the time-to-accuracy phase (default: the next "
                   "after those in docs/tta/gpu_seeds.jsonl)")
    p.add_argument("--phases", default="correctness,speed,headline,tta", help="comma-separated phases to run")
    p.add_argument("--worker_jobs", help=argparse.SUPPRESS)
    p.add_argument("--worker_results", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.budget_s <= 0:
        raise SystemExit("error: --budget_s must be > 0")
    return args


def next_tta_seed() -> int:
    path = ROOT / "docs" / "tta" / "gpu_seeds.jsonl"
    seeds = [json.loads(line)["seed"] for line in path.read_text().splitlines() if line.strip()] if path.is_file() \
        else []
    return max(seeds, default=-1) + 1


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    siblings_importable()  # also when this module was imported by path and sys.path restored since
    if args.worker_jobs:
        run_jobs(Path(args.worker_jobs), Path(args.worker_results))
        return {}
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny and torch.cuda.is_available():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the recipe trains on CUDA whenever it sees one
    output = Path(args.output)
    report = Report(output, args.budget_s)
    if not preflight(report, device):
        raise SystemExit(f"error: imports missing on this machine; see {output / 'gpu_check.md'}")
    scale = args.budget_s / REFERENCE_BUDGET_S
    sizes = scale_args(args)
    sizes["kernel_small"] = args.tiny
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    workers = args.workers or (6 if device.type == "cuda" else 1)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        dataset = dataset_folder(args, work)
        if "correctness" in phases:
            box_end = report.elapsed() + BOXES["correctness"] * scale
            started = guarded(report, "correctness", "loss matrix")(start_matrix, work, dataset, sizes, workers)
            guarded(report, "correctness", "greedy kernel")(check_kernel, report, device, sizes["kernel_shapes"])
            guarded(report, "correctness", "device augmentation")(check_augment, report, device,
                                                                  sizes["augment_batch"])
            guarded(report, "correctness", "decode=device")(check_jpeg, report, device)
            guarded(report, "correctness", "cache_decoded=device")(check_cache, report, device, dataset,
                                                                   sizes["cache_rows"])
            guarded(report, "correctness", "checkpoint + resume")(check_resume, report, device, dataset, work, sizes)
            if started is not None:
                guarded(report, "correctness", "loss matrix")(finish_matrix, report, started, sizes, workers,
                                                              max(box_end, report.elapsed() + 10))
        speeds = None
        if "speed" in phases:  # its box ends early enough to leave the headline its seconds and its probe
            box_end = min(report.elapsed() + BOXES["speed"] * scale,
                          args.budget_s - (BOXES["headline"] + PROBE_RESERVE_S) * scale if "headline" in phases
                          else float("inf"))
            speeds = guarded(report, "speed", "speed")(phase_speed, report, device, dataset, work, sizes)
            for name, extra, need_s in (("host syncs", check_syncs, 25), ("profile", profile_steps, 30),
                                        ("greedy kernel, persistent", check_persistent, 40),
                                        ("JPEG photos end to end", jpeg_speed, 30),
                                        ("online kNN probe", knn_probe_speed, 20),
                                        ("Greedy-64 + ZCA, embedded at half the side", embed_size_speed, 25)):
                left = box_end - report.elapsed()  # the headline's 4 minutes come first: only what fits the box
                if left < need_s * scale:
                    report.check("speed", name, "SKIP", f"{left:.0f} s left in the speed box (needs "
                                 f"{need_s * scale:.0f})")
                    continue
                limit = {"timeout_s": left} if extra is check_persistent else {}
                guarded(report, "speed", name)(extra, report, device, dataset, work, sizes, **limit)
        if "headline" in phases:
            train_s = min(BOXES["headline"] * scale, report.remaining() - PROBE_RESERVE_S * scale)
            if train_s < 20 * scale:
                report.check("headline", "Fashion-MNIST linear top-1", "SKIP", f"only {report.remaining():.0f} s left")
            else:
                ips = speeds["random"]["img_per_s"] if speeds else (
                    0.8 * report.data["figures"]["model_only"]["img_per_s"] if "model_only" in report.data["figures"]
                    else None)
                guarded(report, "headline", "headline")(phase_headline, report, device, dataset, work, sizes,
                                                        train_s, ips, output)
        if "tta" in phases:
            left = report.remaining()
            if left < 150 * scale:
                report.check("tta", "one more seed", "SKIP", f"{left:.0f} s left (needs >= {150 * scale:.0f} s)")
            else:
                seed = args.tta_seed if args.tta_seed is not None else next_tta_seed()
                guarded(report, "tta", "one more seed")(phase_tta, report, device, dataset, work, sizes, left, seed,
                                                        output)
    report.save()
    bad = [c for c in report.data["checks"] if c["status"] in ("FAIL", "ERROR")]
    print(f"gpu_check: {len(report.data['checks'])} rows, {len(bad)} failed, {report.elapsed():.0f} s; "
          f"{output / 'gpu_check.md'}")
    return report.data


if __name__ == "__main__":
    main()
