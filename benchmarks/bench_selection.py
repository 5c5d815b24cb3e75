"""Greedy log-det batch selection against its baselines, side by side in one run.

    python benchmarks/bench_selection.py [--k 512] [--pool 2048] [--dim 128] [--repeats 3] [--device cpu|cuda]
                                      [--no-step] [--backbone resnet18]

On float32 unit vectors (random, and clustered near a low-rank subspace), in milliseconds:
(a) ``spectral_ssl.batching.greedy_select`` (exact greedy, Sherman–Morrison gains, O(k·(M·D + D²))), scored in
    float32 (the default for float32 embeddings) and in float64 (``dtype=torch.float64``); on CUDA also the torch
    loop against the fused Triton kernel;
(b) the usual DPP-MAP greedy (Chen et al. 2018, "Fast greedy MAP inference for DPP") in the input's float32: an
    M×M kernel L = I + X Xᵀ/ε and an incremental Cholesky, O(M²·D + M·k²). Same objective, since
    log det(εI + X_SᵀX_S) = D·log ε + log det(L_S);
(c) block picks (top-``block`` gains per step, gains updated within the block): time, objective against exact
    greedy, share of the exact picks;
(d) one SimCLR training step of timm ``--backbone`` (resnet18) with batch k (two views at 32 px) on the same device.
Objectives are F = log det(εI + X_SᵀX_S) in float64; relative gaps are taken on F − D·log ε (F over the empty set),
since F itself can be near zero or negative.
"""

from __future__ import annotations

import argparse
import math

from spectral_ssl import cpu_threads

cpu_threads.configure()  # before torch loads libgomp: the recipes' CPU thread policy (README, "CPU runs")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from harness import device_name, simclr_step, timed  # noqa: E402

from spectral_ssl.batching import greedy_select, greedy_triton, log_det_objective  # noqa: E402


def dpp_map_greedy(x: torch.Tensor, k: int, eps: float) -> torch.Tensor:
    """Reference DPP-MAP greedy with an explicit M×M kernel and incremental Cholesky (Chen et al. 2018, Alg. 1)."""
    m = x.shape[0]
    kernel = torch.eye(m, dtype=x.dtype, device=x.device) + x @ x.T / eps
    cis = torch.zeros(k, m, dtype=x.dtype, device=x.device)
    d2 = kernel.diagonal().clone()
    picks = torch.empty(k, dtype=torch.long, device=x.device)
    chosen = torch.zeros(m, dtype=torch.bool, device=x.device)
    for t in range(k):
        j = torch.where(chosen, torch.full_like(d2, float("-inf")), d2).argmax()
        picks[t] = j
        chosen[j] = True
        e = (kernel[j] - cis[:t, j] @ cis[:t]) / d2[j].sqrt()
        cis[t] = e
        d2 = d2 - e * e
    return picks


def pools(n: int, d: int, device: torch.device) -> dict[str, torch.Tensor]:
    """(n, d) float32 unit vectors: i.i.d. random, and 20 unequal clusters inside a 16-dimensional subspace."""
    g = torch.Generator().manual_seed(0)
    rand = F.normalize(torch.randn(n, d, generator=g), dim=1)
    basis = torch.randn(16, d, generator=g)
    centres = torch.randn(20, 16, generator=g) @ basis
    labels = torch.multinomial(torch.tensor([0.5] + [0.5 / 19] * 19), n, replacement=True, generator=g)
    clustered = F.normalize(centres[labels] + 0.3 * torch.randn(n, 16, generator=g) @ basis
                            + 0.05 * torch.randn(n, d, generator=g), dim=1)
    return {"random": rand.to(device), "low-rank clustered": clustered.to(device)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=512)
    p.add_argument("--pool", type=int, default=2048)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--eps", type=float, default=1e-2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-step", action="store_true", help="skip (d), the SimCLR training step")
    p.add_argument("--backbone", default="resnet18", help="timm backbone of (d)'s training step")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    k, eps = args.k, args.eps
    name = device_name(device)
    print(f"device: {name}; torch {torch.__version__}; k={k}, M={args.pool}, D={args.dim}, eps={eps}, "
          f"float32 inputs, median of {args.repeats}")
    results: dict = {"device": name}

    def objective(x: torch.Tensor, picks: torch.Tensor) -> float:
        return log_det_objective(x[picks].double(), eps).item()

    def gap(f: float, ref: float) -> float:  # relative to the objective's gain over the empty set
        return (f - ref) / (ref - args.dim * math.log(eps))

    def same(a: torch.Tensor, b: torch.Tensor) -> float:
        return len(set(a.tolist()) & set(b.tolist())) / k

    for label, x in pools(args.pool, args.dim, device).items():
        torch_fp32 = timed(lambda x=x: greedy_select(x, k, eps=eps, backend="torch"), args.repeats, device)
        torch_fp64 = timed(lambda x=x: greedy_select(x, k, eps=eps, dtype=torch.float64, backend="torch"),
                           args.repeats, device)
        dpp_ms = timed(lambda x=x: dpp_map_greedy(x, k, eps), args.repeats, device)
        ours32 = greedy_select(x, k, eps=eps, backend="torch")
        ours64 = greedy_select(x, k, eps=eps, dtype=torch.float64, backend="torch")
        dpp = dpp_map_greedy(x, k, eps)
        f32, f64, fdpp = objective(x, ours32), objective(x, ours64), objective(x, dpp)
        print(f"[{label}]")
        print(f"  (a) greedy_select fp32: {torch_fp32:7.1f} ms   objective {f32:.4f}")
        print(f"      greedy_select fp64: {torch_fp64:7.1f} ms   objective {f64:.4f}   "
              f"fp32 vs fp64: gap {gap(f32, f64):+.1e}, picks shared {same(ours32, ours64):.3f}, "
              f"same order {bool(torch.equal(ours32, ours64))}")
        row = {"torch_fp32_ms": torch_fp32, "torch_fp64_ms": torch_fp64, "dpp_map_fp32_ms": dpp_ms,
               "objective_fp32": f32, "objective_fp64": f64, "objective_dpp_map": fdpp}
        if device.type == "cuda" and greedy_triton.usable(device):
            triton_ms = timed(lambda x=x: greedy_select(x, k, eps=eps, backend="triton"), args.repeats, device)
            fused = greedy_select(x, k, eps=eps, backend="triton")
            print(f"      Triton kernel fp32: {triton_ms:7.2f} ms   objective {objective(x, fused):.4f}   "
                  f"picks shared with the torch loop {same(fused, ours32):.3f}")
            row["triton_fp32_ms"] = triton_ms
        print(f"  (b) DPP-MAP greedy fp32: {dpp_ms:6.1f} ms   objective {fdpp:.4f}   picks shared with (a) fp32 "
              f"{same(dpp, ours32):.3f}   DPP-MAP / ours fp32: {dpp_ms / torch_fp32:.2f}x")
        for block in (1, 4, 16):
            ms = timed(lambda x=x, b=block: greedy_select(x, k, eps=eps, block=b), args.repeats, device)
            picks = greedy_select(x, k, eps=eps, block=block)
            fb = objective(x, picks)
            print(f"  (c) block={block:<2}: {ms:7.1f} ms   objective {fb:.4f} (gap to exact {gap(fb, f32):+.1e})   "
                  f"picks shared with exact {same(picks, ours32):.3f}")
            row[f"block{block}_ms"] = ms
        results[label] = row
    if not args.no_step:
        step_ms = timed(simclr_step(args.backbone, k, args.dim, device), args.repeats, device)
        share = 100 * results["random"]["torch_fp32_ms"] / step_ms
        print(f"(d) {args.backbone} SimCLR training step, batch {k} x 2 views @ 32 px: {step_ms:.1f} ms; "
              f"selection (a) fp32 is {share:.1f} % of it")
        results["step_ms"] = step_ms
    return results


if __name__ == "__main__":
    main()
