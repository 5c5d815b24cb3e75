"""Peers in one run: images per second of our SimCLR step against a plain timm + torch loop and lightly's NTXentLoss.

    python benchmarks/bench_peers.py --batch 512                                   (full scale, on a GPU)
    python benchmarks/bench_peers.py --backbone resnet18 --backbone_kwargs '{"channels": [32, 64, 128, 256]}' \\
        --batch 256 --repeats 5 --steps 3 --device cpu                          (CPU, half-width resnet18)
    options: [--backbone resnet18] [--backbone_kwargs '{}'] [--batch 256] [--dim 128] [--image 32] [--repeats 5]
             [--steps 5] [--device cuda|cpu] [--output bench_peers.json]

Three arms, each one full SimCLR training step: two views of ``--batch`` random images at ``--image`` px, forward +
backward + AdamW (lr 1e-3); bf16 autocast on CUDA, fp32 on the CPU. All three use the same backbone
(``timm.create_model(backbone, num_classes=0, **backbone_kwargs)``), the same projection head (Linear-BN-ReLU-Linear,
hidden 2048 -> ``--dim``), the same temperature 0.2, the same seed and the same input tensors:
(1) "spectral_ssl": ``spectral_ssl.SpectralSSL`` + ``spectral_ssl.losses.InfoNCELoss(0.2)`` (``timing.train_step``,
    the step of every benchmark here);
(2) "plain timm + torch": a timm backbone + an ``nn.Sequential`` head + the textbook NT-Xent of ``nt_xent`` below,
    what a user writes without any SSL library;
(3) "lightly NTXentLoss": the model of (2) with ``lightly.loss.NTXentLoss(temperature=0.2)``. lightly is optional:
    without it the row reads "not installed" and the other arms still run.
Note on precision: InfoNCELoss computes its 2B x 2B similarities in fp32 even under autocast; the textbook loss and
lightly's let autocast run that matmul in bf16 (as their users get it). At D=128 the difference in cost is tiny.

The arms alternate (their order rotates every round) for ``--repeats`` rounds; each round runs 2 warm-up steps of an
arm and then times ``--steps`` steps, the round's value being the median step time. Reported: the median over rounds
of IMAGES per second (batch / step time; each image is seen as two views), min and max, and the ratios ours / plain
and ours / lightly (> 1: ours is faster). Before timing, the three losses are evaluated once on the same random
projections (fp32) and their absolute differences printed: all three compute the same NT-Xent (mean over the 2B
anchors of -log softmax over the 2B - 1 other views), so they agree to float rounding. ``--output`` (JSON) keeps the
device, the torch / timm / lightly versions, the settings and every raw step time.
On a CPU shared with other work, prefix OMP_NUM_THREADS=1: with 2 threads on 2 busy cores, steps swung between
about 1.2 s and 9 s (thread oversubscription) and the medians said more about the neighbours than about the arms.

Installing lightly in the benchmark environment only (not in the project's environment): lightly's own requirements
(pytorch_lightning, hydra-core, ...) are not needed for ``lightly.loss``, whose imports (torch, torchvision, numpy,
tqdm) are all dependencies of this project already; so install lightly alone into a separate folder:

    pip install --target <dir> --no-deps lightly
    PYTHONPATH=<dir> python benchmarks/bench_peers.py ...
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

from spectral_ssl import cpu_threads

cpu_threads.configure()  # before torch loads libgomp: the recipes' CPU thread policy (README, "CPU runs")

import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from harness import device_name, model_arguments, step_seconds, train_step, write_results  # noqa: E402
from torch import nn  # noqa: E402

import spectral_ssl as ssl  # noqa: E402

TEMPERATURE = 0.2
HIDDEN = 2048
WARMUP = 2
ARMS = ("spectral_ssl", "plain timm + torch", "lightly NTXentLoss")
NOT_INSTALLED = "not installed (pip install lightly in the benchmark environment only)"


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Textbook NT-Xent (SimCLR): (B, D) and (B, D) projections -> scalar mean loss over the 2B anchors."""
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, D)
    sim = z @ z.T / temperature  # (2B, 2B) cosine similarities / tau
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))  # never yourself
    partner = (torch.arange(2 * b, device=z.device) + b) % (2 * b)  # view 1 of image i <-> view 2 of image i
    return F.cross_entropy(sim, partner)


def lightly_loss() -> tuple[nn.Module | None, str | None]:
    """lightly's ``NTXentLoss(temperature=0.2)`` and lightly's version, or (None, None) when it is not installed."""
    try:
        import lightly
        import lightly.loss
    except ImportError:
        return None, None
    return lightly.loss.NTXentLoss(temperature=TEMPERATURE), lightly.__version__


def plain_model(backbone: str, backbone_kwargs: dict, dim: int) -> nn.Module:
    """A timm backbone and a hand-written SimCLR head, as without any SSL library: images -> (B, dim)."""
    net = timm.create_model(backbone, num_classes=0, **backbone_kwargs)
    head = nn.Sequential(nn.Linear(net.num_features, HIDDEN, bias=False), nn.BatchNorm1d(HIDDEN), nn.ReLU(inplace=True),
                         nn.Linear(HIDDEN, dim))
    return nn.Sequential(net, head)


def loss_check(lightly_fn: nn.Module | None, batch: int, dim: int, device: torch.device) -> dict:
    """The three losses on the same random (batch, dim) fp32 projections, and their absolute differences."""
    g = torch.Generator().manual_seed(1)
    z1, z2 = (3 * torch.randn(batch, dim, generator=g)).to(device), torch.randn(batch, dim, generator=g).to(device)
    with torch.no_grad():
        values = {"spectral_ssl": ssl.losses.InfoNCELoss(TEMPERATURE)(z1, z2).item(),
                  "textbook": nt_xent(z1, z2).item(),
                  "lightly": lightly_fn(z1, z2).item() if lightly_fn is not None else None}
    ours = values["spectral_ssl"]
    return {"values": values, "abs_diff_textbook": abs(values["textbook"] - ours),
            "abs_diff_lightly": None if values["lightly"] is None else abs(values["lightly"] - ours)}


def report(results: dict) -> str:
    """The table, as printed."""
    s, check = results["settings"], results["loss_check"]
    lines = [f"device: {results['device']}; torch {results['torch']}, timm {results['timm']}, lightly "
             f"{results['lightly'] or 'not installed'}",
             f"backbone {s['backbone']} {json.dumps(s['backbone_kwargs'])}, batch {s['batch']} @ {s['image']} px, "
             f"dim {s['dim']}, tau {TEMPERATURE}, {s['precision']}; {s['repeats']} rounds x {s['steps']} steps "
             f"(+{WARMUP} warm-up)",
             "throughput = IMAGES per second (batch / median step time; each image is two views)", "",
             "losses on the same random projections: " + ", ".join(
                 f"{k} {v:.6f}" for k, v in check["values"].items() if v is not None),
             f"  |textbook - ours| = {check['abs_diff_textbook']:.2e}; |lightly - ours| = "
             + ("n/a" if check["abs_diff_lightly"] is None else f"{check['abs_diff_lightly']:.2e}"), "",
             f"{'arm':<22}{'img/s':>10}{'min':>10}{'max':>10}{'step ms':>10}{'ours / arm':>12}"]
    ours = results["arms"]["spectral_ssl"]["img_per_s"]
    for name, row in results["arms"].items():
        if row["img_per_s"] is None:
            lines.append(f"{name:<22}  {row['status']}")
            continue
        lines.append(f"{name:<22}{row['img_per_s']:>10.1f}{row['min']:>10.1f}{row['max']:>10.1f}"
                     f"{row['step_ms']:>10.2f}{ours / row['img_per_s']:>12.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = model_arguments(__doc__, repeats=5)
    p.add_argument("--backbone_kwargs", default="{}", help="timm.create_model kwargs as a JSON object")
    p.add_argument("--steps", type=int, default=5, help="timed steps per arm and round")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", default="bench_peers.json", help="JSON file of the results")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available; use --device cpu")
    if args.batch < 2 or args.steps < 1 or args.repeats < 1:
        raise SystemExit("error: --batch must be >= 2 (BatchNorm) and --steps, --repeats >= 1")
    kwargs = json.loads(args.backbone_kwargs)
    if not isinstance(kwargs, dict):
        raise SystemExit("error: --backbone_kwargs must be a JSON object, e.g. '{\"channels\": [32, 64, 128, 256]}'")

    lightly_fn, lightly_version = lightly_loss()
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(args.batch, 3, args.image, args.image, generator=g).to(device)
    x2 = torch.randn(args.batch, 3, args.image, args.image, generator=g).to(device)
    steps: dict[str, Callable[[], None] | None] = {}
    torch.manual_seed(0)
    steps["spectral_ssl"] = train_step(ssl.SpectralSSL(args.backbone, proj_hidden_dim=HIDDEN, proj_dim=args.dim,
                                                       backbone_kwargs=kwargs),
                                       ssl.losses.InfoNCELoss(TEMPERATURE), x1, x2, device)
    torch.manual_seed(0)
    steps["plain timm + torch"] = train_step(plain_model(args.backbone, kwargs, args.dim), nt_xent, x1, x2, device)
    torch.manual_seed(0)
    steps["lightly NTXentLoss"] = (None if lightly_fn is None else
                                   train_step(plain_model(args.backbone, kwargs, args.dim), lightly_fn, x1, x2, device))

    results: dict = {
        "device": device_name(device), "torch": torch.__version__, "timm": timm.__version__, "lightly": lightly_version,
        "images_per_second": "batch / median step time",
        "settings": {**{k: v for k, v in vars(args).items() if k != "output"}, "backbone_kwargs": kwargs,
                     "temperature": TEMPERATURE, "proj_hidden_dim": HIDDEN, "warmup_steps": WARMUP, "optimizer":
                     "AdamW lr 1e-3", "precision": "bf16 autocast" if device.type == "cuda" else "fp32"},
        "loss_check": loss_check(lightly_fn, args.batch, args.dim, device)}
    check = results["loss_check"]
    print(f"loss check: {check['values']}; |textbook - ours| {check['abs_diff_textbook']:.2e}, |lightly - ours| "
          f"{check['abs_diff_lightly']}", flush=True)

    samples: dict[str, list[list[float]]] = {name: [] for name in ARMS}
    measured = [name for name in ARMS if steps[name] is not None]
    start = time.perf_counter()
    for r in range(args.repeats):
        for name in measured[r % len(measured):] + measured[:r % len(measured)]:  # rotate the order every round
            samples[name].append(step_seconds(steps[name], args.steps, device, warmup=WARMUP))
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(
            f"{name} {args.batch / statistics.median(samples[name][-1]):.1f} img/s" for name in measured)
              + f" ({time.perf_counter() - start:.0f} s)", flush=True)

    results["arms"] = {}
    for name in ARMS:
        if steps[name] is None:
            results["arms"][name] = {"status": NOT_INSTALLED, "img_per_s": None, "step_s": []}
            continue
        rounds = [args.batch / statistics.median(s) for s in samples[name]]
        img = statistics.median(rounds)
        results["arms"][name] = {"status": "measured", "img_per_s": img, "min": min(rounds), "max": max(rounds),
                                 "step_ms": 1000 * args.batch / img, "rounds_img_per_s": rounds,
                                 "step_s": samples[name]}
    arms = results["arms"]
    ours = arms["spectral_ssl"]["img_per_s"]
    results["ratios"] = {f"ours / {other}": None if arms[name]["img_per_s"] is None else ours / arms[name]["img_per_s"]
                         for name, other in (("plain timm + torch", "plain"), ("lightly NTXentLoss", "lightly"))}
    results["wall_s"] = time.perf_counter() - start
    write_results(args.output, results)
    print(report(results))
    print(f"ratios: {results['ratios']}; results written to {args.output}")
    return results


if __name__ == "__main__":
    main()
