"""The 50-step gradient-variance protocol (docs/method.md, §Whitening): whitening's effect on gradient noise.

    python benchmarks/grad_variance.py [--model OUTPUT_DIR | --backbone resnet18] [--steps 50] [--batch_size 256]
                                    [--kind zca|cholesky] [--dataset data/fashion_mnist]

Parameters are fixed (an export, or a seeded random init); the same ``steps`` batches (same order, same
augmentations) go through both arms, without and with in-batch whitening, and no optimiser step is taken.
For each arm: V = (1/(T-1)) Σ_t ||G_t - mean G||² (trace of the sample covariance of the flattened parameter
gradient G_t = ∇θ L(b_t)), for all trainable parameters and for the backbone only, and the same trace for the
per-anchor gradients g_i = ∂L/∂z_i w.r.t. the normalised embeddings. Prints V_none / V_whiten beside the
predicted factors D·p_max and D/R_eff of the unwhitened projections (docs/method.md, §Whitening; the paper:
1.37x). Whitening changes the loss and so the gradients' size: the scale-free ratio of V / mean ||G_t||² (the
noise share of the gradient) is printed beside the raw one.
"""

from __future__ import annotations

import argparse
import json

from spectral_ssl import cpu_threads

cpu_threads.configure()  # before torch loads libgomp: the recipes' CPU thread policy (README, "CPU runs")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import spectral_ssl as ssl  # noqa: E402
from spectral_ssl import data  # noqa: E402


def _proj_dim(model: ssl.SpectralSSL) -> int:
    return model.projector[-1].out_features


class _Moments:
    """Running first and second moments of flattened vectors, for the trace of their sample covariance."""

    def __init__(self) -> None:
        self.n, self.total, self.square = 0, None, 0.0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().double().reshape(-1, x.shape[-1])
        self.n += x.shape[0]
        self.total = x.sum(0) if self.total is None else self.total + x.sum(0)
        self.square += float(x.pow(2).sum())

    def trace_cov(self) -> float:
        return (self.square - float(self.total.pow(2).sum()) / self.n) / (self.n - 1)

    def relative(self) -> float:
        """Trace of the covariance over the mean squared norm: the noise share of the gradient, free of its scale
        (whitening changes the loss, so the raw variances of the two arms differ by the gradients' size too)."""
        return self.trace_cov() / (self.square / self.n)


def gradient_variance(model: ssl.SpectralSSL, batches: list[tuple[torch.Tensor, torch.Tensor]], whitening: str,
                      temperature: float = 0.2, eps: float = 1e-4) -> dict[str, float]:
    """Trace of the gradient covariance over ``batches`` at fixed parameters (``whitening``: none|zca|cholesky)."""
    whiten = (ssl.BatchWhitening(_proj_dim(model), kind=whitening, eps=eps) if whitening != "none"
              else torch.nn.Identity())
    loss_fn = ssl.losses.InfoNCELoss(temperature)
    params = [p for p in model.parameters() if p.requires_grad]
    backbone = {id(p) for p in model.backbone.parameters()}
    full, back, anchor = _Moments(), _Moments(), _Moments()
    model.train()
    with ssl.batching.frozen_norm_statistics(model):  # every batch sees the same parameters and buffers
        for x1, x2 in batches:
            z1, z2 = (F.normalize(whiten(model(x)), dim=1) for x in (x1, x2))
            z1.retain_grad()
            z2.retain_grad()
            loss = loss_fn(z1, z2)
            grads = torch.autograd.grad(loss, params + [z1, z2])
            flat = torch.cat([g.reshape(-1) for g in grads[:len(params)]])
            full.add(flat[None])
            back.add(torch.cat([g.reshape(-1) for p, g in zip(params, grads) if id(p) in backbone])[None])
            anchor.add(torch.cat(grads[len(params):]) * 2 * len(x1))  # per-anchor ∂L_i/∂z_i (loss is a mean)
    moments = {"all": full, "backbone": back, "anchor": anchor}
    return {**{k: m.trace_cov() for k, m in moments.items()}, **{f"{k}_rel": m.relative() for k, m in moments.items()}}


@torch.no_grad()
def predicted_factors(model: ssl.SpectralSSL, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """D·p_max and D/R_eff of the unwhitened, normalised projections (mean over batches; docs/method.md, §Whitening)."""
    pmax, reff = [], []
    with ssl.batching.frozen_norm_statistics(model):
        for x1, _ in batches:
            z = F.normalize(model(x1).float(), dim=1)
            stats = ssl.spectrum_stats(z)
            pmax.append(float(stats["p_max"]))
            reff.append(float(ssl.effective_rank(z)))
    dim = _proj_dim(model)
    return {"D_pmax": dim * sum(pmax) / len(pmax), "D_over_reff": dim * len(reff) / sum(reff),
            "reff": sum(reff) / len(reff)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="export folder / repo id (default: seeded random init)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--proj_dim", type=int, default=128)
    p.add_argument("--dataset", default="data/fashion_mnist")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--kind", default="zca", choices=["zca", "cholesky"])
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < 2:
        raise SystemExit("error: --steps must be >= 2 (a variance needs two samples)")
    torch.manual_seed(args.seed)
    model = (ssl.SpectralSSL.from_pretrained(args.model) if args.model
             else ssl.SpectralSSL(args.backbone, proj_hidden_dim=2048, proj_dim=args.proj_dim))
    if args.batch_size <= _proj_dim(model):
        raise SystemExit(f"error: whitening needs --batch_size > proj_dim ({_proj_dim(model)})")
    ds = data.load_images(args.dataset, "train")
    transform = data.TwoViewTransform(args.image_size, mean=model.data_config["mean"], std=model.data_config["std"])
    loader = data.make_loader(ds, transform, batch_size=args.batch_size, seed=args.seed,
                              max_samples=args.steps * args.batch_size)
    batches = [batch["views"] for batch in loader][: args.steps]  # the same batches for both arms
    none = gradient_variance(model, batches, "none", args.temperature)
    white = gradient_variance(model, batches, args.kind, args.temperature)
    factors = predicted_factors(model, batches)
    result = {"steps": len(batches), "batch_size": args.batch_size, "kind": args.kind,
              **{f"ratio_{k}": none[k] / white[k] for k in none}, **factors,
              **{f"none_{k}": v for k, v in none.items()}, **{f"{args.kind}_{k}": v for k, v in white.items()},
              "model": args.model or f"{args.backbone} (random init, seed {args.seed})"}
    print(f"{result['model']}, {len(batches)} batches of {args.batch_size}, D={_proj_dim(model)}, "
          f"{args.kind} whitening")
    for key in ("all", "backbone", "anchor"):
        print(f"  V_none / V_{args.kind} ({key:8s}): {none[key] / white[key]:.3f}   "
              f"(V_none {none[key]:.4g}, V_{args.kind} {white[key]:.4g});  relative (V / mean ||G||^2): "
              f"{none[key + '_rel'] / white[key + '_rel']:.3f} ({none[key + '_rel']:.3f} vs {white[key + '_rel']:.3f})")
    print(f"  predicted (unwhitened projections): D*p_max = {factors['D_pmax']:.2f}, "
          f"D/R_eff = {factors['D_over_reff']:.2f} (R_eff {factors['reff']:.1f}); paper: 1.37x")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
