"""Overhead of ``SpectralMonitor`` on a training step, measured side by side in one run.

    python benchmarks/bench_monitor.py [--batch 128] [--dim 128] [--image 32] [--repeats 60] [--every 50]

The step is the demo's as measured before 2026-12-07 (the demo has since dilated the last stage, ``output_stride:
16``): a half-width resnet18 (``channels: [32, 64, 128, 256]``), SimCLR (InfoNCE) on two views,
forward + backward + AdamW, channels_last as the recipe trains. Three arms alternate step by step, so all see the
same machine load: ``plain`` (the step), ``update`` (the step with ``monitor.update(z1, z2, step)`` at a step
between records) and ``record`` (the same at a record step: the monitor's window, pre-filled, is full, as at every
record after the first). Inside the two monitored arms the ``update`` call itself is timed (synchronised), so the
costs come from the running loop, not from the difference of two noisy step medians. Printed: the median of each
arm, of the in-loop ``update`` and record-step ``update``, and the overhead at ``every`` measured side by side::

    ((every - 1) * update + record-step update) / (every * plain step)

next to the same from one ``update`` and one record (``compute``) timed alone on the same z. The target is <= 1 %.
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
    state = {"step": None, "z": None}
    in_loop = {"update": [], "record": []}

    def seconds(fn) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    def loss_fn(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        state["z"] = (z1, z2)
        if state["step"] is not None:
            arm = "record" if state["step"] % args.every == 0 else "update"
            in_loop[arm].append(seconds(lambda: monitor.update(z1, z2, state["step"])))
        return infonce(z1, z2)

    model = ssl.SpectralSSL(args.backbone, proj_hidden_dim=2048, proj_dim=args.dim,
                            backbone_kwargs=HALF_WIDTH if args.backbone == "resnet18" else None)
    x1 = torch.randn(args.batch, 3, args.image, args.image, device=device)
    step = train_step(model, loss_fn, x1, torch.randn_like(x1), device, torch.channels_last)  # as the recipe

    step()  # warm-up
    z1, z2 = (z.detach() for z in state["z"])
    for _ in range(args.window // args.batch + 1):  # fill the window, as at every record after the first
        monitor.update(z1, z2, 1)
    arms = {"plain": [], "update": [], "record": []}
    for i in range(1, args.repeats + 1):  # alternating arms
        for arm in arms:
            state["step"] = {"plain": None, "update": i * args.every + 1, "record": i * args.every}[arm]
            if arm == "update" and args.every == 1:
                continue  # every step is a record step
            arms[arm].append(seconds(step))
    timing = ssl.SpectralMonitor(temperature=0.2, every=10**9, window=args.window)
    for _ in range(args.window // args.batch + 1):
        timing.update(z1, z2, 1)
    update_s = [seconds(lambda: timing.update(z1, z2, 1)) for _ in range(50)]
    record_s = [seconds(lambda: timing.compute(0)) for _ in range(5)]

    ms = lambda values: 1000 * statistics.median(values) if values else 0.0  # noqa: E731
    plain, update, record = ms(arms["plain"]), ms(update_s), ms(record_s)
    loop_update, loop_record = ms(in_loop["update"]), ms(in_loop["record"])
    overhead = ((args.every - 1) * loop_update + loop_record) / (args.every * plain)
    overhead_alone = (update + record / args.every) / plain
    results = {"device": device_name(device), "torch": torch.__version__, "batch": args.batch, "dim": args.dim,
               "image": args.image, "every": args.every, "window": args.window, "steps_per_arm": args.repeats,
               "step_ms": plain, "update_step_ms": ms(arms["update"]), "record_step_ms": ms(arms["record"]),
               "loop_update_ms": loop_update, "loop_record_ms": loop_record, "overhead": overhead,
               "update_ms": update, "record_ms": record, "overhead_alone": overhead_alone,
               "records_in_run": len(in_loop["record"])}
    print(f"device: {results['device']}; torch {torch.__version__}")
    print(f"demo step (half-width resnet18, batch {args.batch}, {args.image} px, proj {args.dim}), median of "
          f"{args.repeats} per arm, arms alternating; window {args.window} pairs ({2 * args.window} rows):")
    print(f"  plain step                      {plain:9.2f} ms")
    if args.every > 1:
        print(f"  step + update (between records) {results['update_step_ms']:9.2f} ms   (ratio "
              f"{results['update_step_ms'] / plain:.4f}; the update call itself {loop_update:.3f} ms)")
    print(f"  step + update at a record step  {results['record_step_ms']:9.2f} ms   (ratio "
          f"{results['record_step_ms'] / plain:.4f}; the update call itself {loop_record:.2f} ms)")
    print(f"overhead at every={args.every}, side by side: ((every - 1) * update + record-step update) / (every * step)"
          f" = {100 * overhead:.2f} %  (target <= 1 %)")
    print(f"timed alone on the same z: one update {update:.3f} ms, one record {record:.2f} ms; "
          f"(update + record / every) / step = {100 * overhead_alone:.2f} %")
    return results


if __name__ == "__main__":
    main()
