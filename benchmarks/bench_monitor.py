"""Overhead of ``SpectralMonitor`` on a training step, measured side by side in one run.

    python benchmarks/bench_monitor.py [--batch 128] [--dim 128] [--image 32] [--repeats 60] [--every 50]

The step is the demo's: a half-width resnet18 (``channels: [32, 64, 128, 256]``), SimCLR (InfoNCE) on two views,
forward + backward + AdamW. Arm A is the step; arm B the same step with ``monitor.update(z1, z2, step)`` on its
projections every step (a record every ``every`` steps, window 4096). The arms alternate step by step, so both see
the same machine load. Printed: the median step of each arm, the medians of one ``update`` between records and of
one record (timed alone on the same z), and the overhead at ``every``:
(update + record / every) / step. The target is <= 1 %.
"""

from __future__ import annotations

import statistics
import time

from spectral_ssl import cpu_threads

cpu_threads.configure()  # before torch loads libgomp: the recipes' CPU thread policy (README, "CPU runs")

import torch  # noqa: E402
from harness import device_name, model_arguments, synchronizer, train_step  # noqa: E402

import spectral_ssl as ssl  # noqa: E402

HALF_WIDTH = {"channels": [32, 64, 128, 256]}


def main(argv: list[str] | None = None) -> dict:
    p = model_arguments(__doc__, repeats=60)
    p.set_defaults(batch=128)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--window", type=int, default=4096)
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = synchronizer(device)
    monitor = ssl.SpectralMonitor(temperature=0.2, every=args.every, window=args.window)
    infonce = ssl.losses.InfoNCELoss(0.2)
    state = {"monitor": False, "step": 0, "z": None}

    def loss_fn(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        state["z"] = (z1, z2)
        if state["monitor"]:
            state["step"] += 1
            monitor.update(z1, z2, state["step"])
        return infonce(z1, z2)

    model = ssl.SpectralSSL(args.backbone, proj_hidden_dim=2048, proj_dim=args.dim,
                            backbone_kwargs=HALF_WIDTH if args.backbone == "resnet18" else None)
    x1 = torch.randn(args.batch, 3, args.image, args.image, device=device)
    step = train_step(model, loss_fn, x1, torch.randn_like(x1), device)

    def seconds(fn) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    step()  # warm-up
    arms = {"plain": [], "monitored": []}
    for _ in range(args.repeats):  # alternating arms
        for arm in arms:
            state["monitor"] = arm == "monitored"
            arms[arm].append(seconds(step))
    z1, z2 = (z.detach() for z in state["z"])
    timing = ssl.SpectralMonitor(temperature=0.2, every=10**9, window=args.window)
    for _ in range(args.window // args.batch + 1):  # a full window, as at every record after the first
        timing.update(z1, z2, 1)
    update_s = [seconds(lambda: timing.update(z1, z2, 1)) for _ in range(50)]
    record_s = [seconds(lambda: timing.compute(0)) for _ in range(5)]

    ms = lambda values: 1000 * statistics.median(values)  # noqa: E731
    plain, monitored, update, record = ms(arms["plain"]), ms(arms["monitored"]), ms(update_s), ms(record_s)
    overhead = (update + record / args.every) / plain
    results = {"device": device_name(device), "torch": torch.__version__, "batch": args.batch, "dim": args.dim,
               "image": args.image, "every": args.every, "window": args.window, "steps_per_arm": args.repeats,
               "step_ms": plain, "monitored_step_ms": monitored, "update_ms": update, "record_ms": record,
               "overhead": overhead, "records_in_run": state["step"] // args.every}
    print(f"device: {results['device']}; torch {torch.__version__}")
    print(f"demo step (half-width resnet18, batch {args.batch}, {args.image} px, proj {args.dim}), median of "
          f"{args.repeats} per arm, arms alternating:")
    print(f"  plain step          {plain:9.2f} ms")
    print(f"  with monitor.update {monitored:9.2f} ms  (ratio {monitored / plain:.4f}; the median hides the "
          f"{results['records_in_run']} record steps)")
    print(f"  one update          {update:9.3f} ms   one record (window {args.window}) {record:9.2f} ms")
    print(f"overhead at every={args.every}: (update + record / {args.every}) / step = {100 * overhead:.2f} %  "
          f"(target <= 1 %)")
    return results


if __name__ == "__main__":
    main()
