"""Shared pieces of the benchmark scripts: a median wall-clock timer and the SimCLR training step baseline."""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

import spectral_ssl as ssl


def device_name(device: torch.device) -> str:
    """The device as benchmark results name it: the GPU model, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for queued GPU work, so timings cover it; a no-op on the CPU."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median milliseconds of ``repeats`` calls after one warm-up call."""
    sync = synchronizer(device)
    fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return 1000 * statistics.median(samples)


def simclr_step(backbone: str, batch: int, proj_dim: int, device: torch.device, image: int = 32) -> Callable[[], None]:
    """One SimCLR step (two views of ``batch`` images, forward + backward + AdamW; bf16 autocast on the GPU)."""
    model = ssl.SpectralSSL(backbone, proj_hidden_dim=2048, proj_dim=proj_dim).to(device)
    loss_fn = ssl.losses.InfoNCELoss(0.2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x1 = torch.randn(batch, 3, image, image, device=device)
    x2 = torch.randn_like(x1)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
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
