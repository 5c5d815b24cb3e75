"""Memory layout of a training step: channels_last (what ``recipes/pretrain.py`` trains) against contiguous (NCHW).

    python benchmarks/bench_layout.py [--backbone resnet18] [--batch 128] [--image 32] [--repeats 7] [--rounds 3]
                                      [--other_precision]

The step is the demo's as measured before 2026-12-07 (the demo has since dilated the last stage, ``output_stride:
16``): a half-width resnet18 (``channels: [32, 64, 128, 256]``), SimCLR (InfoNCE) on two
``--batch`` views of ``--image`` px, forward + backward + AdamW (``harness.simclr_step``; bf16 autocast on a GPU).
Both layouts are built once, then ``--rounds`` rounds alternate them (``--repeats`` timed steps each after one
warm-up), so both see the same machine load; the median over all rounds is reported with the ratio NCHW /
channels_last (> 1: channels_last is faster). ``--other_precision`` adds a third arm, channels_last at the precision
the recipe does not use on this device (bf16 autocast on a CPU, float32 on a GPU), and its ratio to the first arm.
``--output`` writes JSON.
"""

from __future__ import annotations

from spectral_ssl import cpu_threads

cpu_threads.configure()  # before torch loads libgomp: the recipes' CPU thread policy (README, "CPU runs")

import statistics  # noqa: E402

import torch  # noqa: E402
from harness import device_name, model_arguments, simclr_step, step_seconds, write_results  # noqa: E402

HALF_WIDTH = {"channels": [32, 64, 128, 256]}
LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def main(argv: list[str] | None = None) -> dict:
    p = model_arguments(__doc__, repeats=7)
    p.set_defaults(batch=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--other_precision", action="store_true",
                   help="also time channels_last at the other precision (bf16 on a CPU, float32 on a GPU)")
    p.add_argument("--output", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kwargs = HALF_WIDTH if args.backbone == "resnet18" else None
    steps = {name: simclr_step(args.backbone, args.batch, args.dim, device, image=args.image, backbone_kwargs=kwargs,
                               memory_format=layout) for name, layout in LAYOUTS.items()}
    other = "float32" if device.type == "cuda" else "bf16"
    if args.other_precision:
        steps[other] = simclr_step(args.backbone, args.batch, args.dim, device, image=args.image,
                                   backbone_kwargs=kwargs, memory_format=torch.channels_last, bf16=other == "bf16")
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            seconds[name] += step_seconds(step, args.repeats, device)
    ms = {name: 1000 * statistics.median(values) for name, values in seconds.items()}
    res = {"device": device_name(device), "threads": torch.get_num_threads(), "backbone": args.backbone,
           "batch": args.batch, "image": args.image, "repeats": args.repeats, "rounds": args.rounds,
           "channels_last_ms": ms["channels_last"], "contiguous_ms": ms["contiguous"],
           "speedup": ms["contiguous"] / ms["channels_last"]}
    print(f"device: {res['device']}, {res['threads']} threads; {args.backbone} SimCLR step, 2 x {args.batch} views "
          f"at {args.image} px, median of {args.rounds} x {args.repeats} steps, layouts alternating by round")
    print(f"  channels_last (the recipe)  {ms['channels_last']:8.1f} ms")
    print(f"  contiguous (NCHW)           {ms['contiguous']:8.1f} ms   ({res['speedup']:.2f}x the channels_last time)")
    if args.other_precision:
        res.update(other_precision=other, other_precision_ms=ms[other],
                   precision_speedup=ms["channels_last"] / ms[other])
        print(f"  channels_last, {other:<12} {ms[other]:8.1f} ms   (channels_last / this: "
              f"{res['precision_speedup']:.2f}x)")
    if args.output:
        write_results(args.output, res)
    return res


if __name__ == "__main__":
    main()
