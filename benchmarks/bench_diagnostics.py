"""Cost of the live spectral diagnostics against one training step, measured side by side in one run.

    python benchmarks/bench_diagnostics.py [--backbone resnet18] [--batch 256] [--dim 128] [--image 32] [--repeats 5]

Times (a) one SimCLR training step (two views, forward + backward + AdamW) of the timm backbone and (b) what the
recipe computes every ``log_every`` steps (``spectral_ssl.diagnostics.batch_diagnostics``): R_eff (cov + RankMe),
the NT-Xent and cosine monitors and the InfoNCE band of all 2B anchors. Prints milliseconds, the ratio (b)/(a) and
the overhead at log_every = 1, 10, 20. Device: CUDA if available, else CPU.
"""

from __future__ import annotations

from spectral_ssl import cpu_threads

cpu_threads.configure()  # before torch loads libgomp: the recipes' CPU thread policy (README, "CPU runs")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from harness import device_name, model_arguments, simclr_step, timed  # noqa: E402

import spectral_ssl as ssl  # noqa: E402
from spectral_ssl.diagnostics import batch_diagnostics  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = model_arguments(__doc__, repeats=5)
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    step = simclr_step(args.backbone, args.batch, args.dim, device, args.image)
    model = ssl.SpectralSSL(args.backbone, proj_hidden_dim=2048, proj_dim=args.dim).to(device).eval()
    x1 = torch.randn(args.batch, 3, args.image, args.image, device=device)
    x2 = torch.randn_like(x1)

    with torch.no_grad():
        z1, z2 = F.normalize(model(x1), dim=1), F.normalize(model(x2), dim=1)

    def diagnostics():
        batch_diagnostics(z1, z2, 0.2)

    step_ms = timed(step, args.repeats, device)
    diag_ms = timed(diagnostics, args.repeats, device)
    name = device_name(device)
    ratio = diag_ms / step_ms
    print(f"device: {name}; torch {torch.__version__}")
    print(f"training step ({args.backbone}, 2 x {args.batch} images at {args.image} px): {step_ms:.1f} ms")
    print(f"diagnostics (R_eff cov+RankMe, band of {2 * args.batch} anchors, D={args.dim}): {diag_ms:.1f} ms")
    print(f"ratio diagnostics / step: {ratio:.3f}; overhead at log_every=1/10/20: "
          f"{100 * ratio:.1f} % / {10 * ratio:.1f} % / {5 * ratio:.1f} %")
    return {"device": name, "step_ms": step_ms, "diagnostics_ms": diag_ms, "ratio": ratio}


if __name__ == "__main__":
    main()
