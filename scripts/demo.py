"""The main job (`make demo`): prepare Fashion-MNIST, pretrain the default recipe, probe it against fair baselines.

Prints the linear-probe top-1 of the pretrained backbone next to the same architecture fairly initialised at random
(standard init, BatchNorm statistics recalibrated) and logistic regression on the raw pixels, all with the same
probe on the same images, then the effective rank, where the export is and the line that loads it, with the time of
each stage. A demo run already in outputs/ is replaced (``--overwrite_output_dir=true``). After the first training
steps it prints how long the rest should take on this machine (``eta_line``).
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from pathlib import Path

from spectral_ssl import cpu_threads

# before torch loads libgomp: a short OpenMP spin and threads from the machine's load (README, "CPU runs")
CPU = cpu_threads.configure()

ROOT = Path(__file__).resolve().parents[1]
CPU_CONFIG = ROOT / "recipes" / "configs" / "fashion_mnist_simclr.yaml"  # a pipeline check sized for 2 CPU cores
GPU_CONFIG = ROOT / "recipes" / "configs" / "fashion_mnist_gpu.yaml"  # what pretraining buys (docs/benchmarks.md)
# probe images per split (the same for the model and both baselines): a subset on the CPU, the full 60k/10k on a GPU
# (the whole 10 000-image test split on the CPU too: its first 2 000 images, the demo's test set until 2026-12-07,
# scored every arm 1-2 points higher than the whole split and moved with the seed; docs/benchmarks.md)
CPU_PROBE, GPU_PROBE = (10_000, None), (None, None)
FULL_PROBE = (60_000, 10_000)  # the whole Fashion-MNIST splits
# The probes' cost for the ETA, measured once (docs/benchmarks.md, 2026-12-07, a 2-core Intel Xeon VM, quiet): the
# three probes (pretrained, fair random init, raw pixels; features read once for all three, the 11-value L2 grid)
# took 103 s on 10 000 + 10 000 images while pretraining ran at ~490 img/s over steps 3-12 (what ``on_eta``
# measures). Scaled by the probe images and by this run's measured training speed; an estimate, not a measurement
# of this machine's probes (the fits do not grow with the test images, so more test images overestimate a little).
REFERENCE_PROBE_S_PER_IMAGE = 103 / 20_000
REFERENCE_TRAIN_IMG_PER_S = 490


def probe_seconds(probe_images: int, img_per_s: float) -> float:
    """The three probes' expected seconds on ``probe_images`` images, on a machine that trains at ``img_per_s``."""
    return probe_images * REFERENCE_PROBE_S_PER_IMAGE * REFERENCE_TRAIN_IMG_PER_S / img_per_s


def eta_line(pretrain_left: float, probes: float) -> str:
    """The demo's one-line ETA."""
    return (f"demo: about {math.ceil((pretrain_left + probes) / 60)} min left on this machine (pretraining "
            f"{math.ceil(pretrain_left / 60)} min, probes {math.ceil(probes / 60)} min)")


def choose_config(cuda: bool) -> tuple[Path, tuple[int | None, int | None]]:
    """The demo's config and probe size: the GPU config on a machine with CUDA, the CPU one elsewhere."""
    return (GPU_CONFIG, GPU_PROBE) if cuda else (CPU_CONFIG, CPU_PROBE)


def load_script(path: Path):
    """Import a recipe or script by path (recipes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)  # extra --key=value overrides for the pretrain recipe
    if {"-h", "--help"} & set(argv):  # before anything is prepared or trained
        print(f"{__doc__}\nusage: python scripts/demo.py [--key=value ...]: each --key=value overrides the demo's "
              "config; `python recipes/pretrain.py --help` lists the keys.")
        return
    import torch

    config, (probe_train, probe_test) = choose_config(torch.cuda.is_available())

    prepare = load_script(ROOT / "scripts" / "prepare_fashion_mnist.py")
    pretrain = load_script(ROOT / "recipes" / "pretrain.py")
    probe = load_script(ROOT / "recipes" / "linear_probe.py")
    print(f"demo: {CPU['summary']}")
    images = sum(n if n is not None else full for n, full in zip((probe_train, probe_test), FULL_PROBE, strict=True))

    def on_eta(pretrain_left: float, img_per_s: float) -> None:
        from tqdm.auto import tqdm

        tqdm.write(eta_line(pretrain_left, probe_seconds(images, img_per_s)))

    times = {}
    t = time.perf_counter()
    prepare.main([])
    times["prepare data"] = time.perf_counter() - t
    t = time.perf_counter()
    out = pretrain.main(["--config", str(config), "--overwrite_output_dir=true", *argv], on_eta=on_eta)
    times["pretrain"] = time.perf_counter() - t
    t = time.perf_counter()
    res = probe.main(["--model", str(out), "--compare_random_init", "--compare_raw_pixels",
                      f"--max_train_samples={probe_train or 'null'}", f"--max_test_samples={probe_test or 'null'}",
                      f"--num_workers={8 if config == GPU_CONFIG else 0}"])
    times["linear probes"] = time.perf_counter() - t

    from spectral_ssl import SpectralSSL

    meta = SpectralSSL.from_pretrained(out).metadata
    pre, rnd, raw = res["pretrained"], res["random_init"], res["raw_pixels"]
    print("\n" + "=" * 78)
    print(f"Fashion-MNIST, {meta['config']['backbone']}, {meta['loss']}, {meta['steps']} steps "
          f"(batch {meta['global_batch']}, {meta['epochs']} epochs)")
    print(f"  linear probe on {probe_train or 'all'} train / {probe_test or 'all'} test images, top-1")
    print(f"  linear-probe top-1  pretrained: {pre['top1']:.2f} %   fair random init: {rnd['top1']:.2f} %   "
          f"raw pixels: {raw['top1']:.2f} %")
    print(f"  gain over the best baseline: {pre['top1'] - max(rnd['top1'], raw['top1']):+.2f} points")
    print(f"  effective rank (backbone features, {meta['effective_rank']['n_samples']} test images): "
          f"{meta['effective_rank']['value']:.1f} of {meta['effective_rank']['dim']}")
    print(f"  export: {out.resolve()}")
    print(f"  load:   spectral_ssl.SpectralSSL.from_pretrained('{out}')   or   "
          f"timm.create_model('local-dir:{out}', pretrained=True)")
    print("  times:  " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    print("=" * 78)


if __name__ == "__main__":
    main()
