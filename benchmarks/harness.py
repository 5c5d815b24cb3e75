"""The benchmarks' small shared harness: where the repository is, importing a recipe, naming the device, a median
wall-clock timer, the SimCLR training step every ratio is measured against, the shared options, writing results.

Each ``benchmarks/bench_*.py`` runs as ``python benchmarks/bench_x.py`` (its folder is then on ``sys.path``, so
``from harness import ...`` works) and prints ratios measured side by side; ``scripts/`` are the user tools.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import spectral_ssl as ssl

ROOT = Path(__file__).resolve().parents[1]


def import_file(path: Path) -> ModuleType:
    """A recipe or script imported by path (they are scripts, not a package), e.g. ``ROOT / "recipes" /
    "pretrain.py"``; registered in ``sys.modules`` (dataclasses resolve their annotations there)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_results(path: str | Path, results: Any) -> Path:
    """``results`` as indented JSON at ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def device_name(device: torch.device) -> str:
    """The device as benchmark results name it: the GPU model, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for queued GPU work, so timings cover it; a no-op on the CPU."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def step_seconds(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` calls (GPU work included) after ``warmup`` untimed calls."""
    sync = synchronizer(device)
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return samples


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median milliseconds of ``repeats`` calls after one warm-up call."""
    return 1000 * statistics.median(step_seconds(fn, repeats, device))


def simclr_step(backbone: str, batch: int, proj_dim: int, device: torch.device, image: int = 32,
                backbone_kwargs: dict | None = None,
                memory_format: torch.memory_format = torch.contiguous_format,
                bf16: bool | None = None) -> Callable[[], None]:
    """One SimCLR step of ``SpectralSSL`` + ``InfoNCELoss`` on two random views of ``batch`` images (``train_step``)."""
    model = ssl.SpectralSSL(backbone, proj_hidden_dim=2048, proj_dim=proj_dim, backbone_kwargs=backbone_kwargs)
    x1 = torch.randn(batch, 3, image, image, device=device)
    return train_step(model, ssl.losses.InfoNCELoss(0.2), x1, torch.randn_like(x1), device, memory_format, bf16)


def train_step(model: torch.nn.Module, loss_fn: Callable, x1: torch.Tensor, x2: torch.Tensor,
               device: torch.device,
               memory_format: torch.memory_format = torch.contiguous_format,
               bf16: bool | None = None) -> Callable[[], None]:
    """One SimCLR step on the views x1, x2 (forward + backward + fused AdamW lr 1e-3), as a closure;
    ``memory_format`` lays out the weights and views (``recipes/pretrain.py`` trains ``channels_last``); ``bf16``:
    bf16 autocast (None: on a GPU only, as the recipe's ``mixed_precision=auto``)."""
    model.to(device, memory_format=memory_format).train()
    x1, x2 = x1.contiguous(memory_format=memory_format), x2.contiguous(memory_format=memory_format)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)  # as the recipe
    bf16 = device.type == "cuda" if bf16 is None else bf16

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x1), model(x2))
        loss.backward()
        opt.step()

    return step


def model_arguments(description: str, repeats: int) -> argparse.ArgumentParser:
    """The benchmarks' shared options: backbone, batch, projection dim, image size, repeats."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--repeats", type=int, default=repeats)
    return p
