"""Overhead of the whole spectral step against a random-batch step, measured side by side in one run.

    python benchmarks/bench_spectral_step.py [--backbone resnet18] [--batch 256] [--dim 128] [--image 32]
                                          [--pool_factor 4] [--greedy_m 0] [--repeats 3] [--log_every 20]
                                          [--embed_size 0]

Every variant runs the same training step (two views, forward + backward + AdamW, bf16 autocast on a GPU) through
``spectral_ssl.batching`` (``CandidatePool`` + ``BatchSelector``), on in-memory images, so only the step differs:

- random: a batch of B from a pool of B (what ``selection=random`` does);
- greedy + zca (cache): Greedy-m from ``pool_factor × B`` candidates whose embeddings are all cached (every epoch
  after the first), ZCA whitening of both views, cache update, and the diagnostics (R_eff cov + RankMe + band)
  amortised over ``log_every`` steps — the full spectral step of the recipe;
- greedy + zca (online): the same with every candidate embedded by a no-grad pass (the first epoch's worst case,
  or ``selection_source=online``);
- pool P3 + zca: Pool-P3 (online pass over 3 candidate batches) with whitening and diagnostics;
- with ``--embed_size S``: greedy + zca (online) again with the candidates embedded at S px (``embed_size``).
Prints milliseconds and the ratio of each to the random step.
"""

from __future__ import annotations

from spectral_ssl import cpu_threads

cpu_threads.configure()  # before torch loads libgomp: the recipes' CPU thread policy (README, "CPU runs")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from harness import device_name, model_arguments, timed  # noqa: E402

import spectral_ssl as ssl  # noqa: E402
from spectral_ssl.diagnostics import batch_diagnostics  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = model_arguments(__doc__, repeats=3)
    p.add_argument("--pool_factor", type=int, default=4)
    p.add_argument("--greedy_m", type=int, default=0, help="0 = exact greedy")
    p.add_argument("--log_every", type=int, default=20)
    p.add_argument("--embed_size", type=int, default=0, help="also time the online variant with candidates embedded "
                   "at this side (0 = not)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    b, factor = args.batch, max(args.pool_factor, 3)
    torch.manual_seed(0)
    model = ssl.SpectralSSL(args.backbone, proj_hidden_dim=2048, proj_dim=args.dim).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = ssl.losses.InfoNCELoss(0.2)
    images = torch.randn(factor * b, 3, args.image, args.image)
    loader = [{"views": (images[i:i + b], images[i:i + b].flip(-1)), "idx": torch.arange(i, i + b), "label": None}
              for i in range(0, factor * b, b)]

    def variant(selection: str, whitening: str, source: str = "cache", pool: int = 1, embed_size: int = 0):
        selector = ssl.batching.BatchSelector(selection, b, args.dim, dataset_size=factor * b, pool_factor=pool,
                                              pool_candidates=3, greedy_m=args.greedy_m or None,
                                              source=source, embed_size=embed_size or None).to(device)
        whiten = ssl.BatchWhitening(args.dim, kind=whitening).to(device) if whitening != "none" else torch.nn.Identity()
        if source == "cache" and selection != "random":  # a later epoch: every candidate has been seen
            with torch.no_grad():
                for batch in loader:
                    selector.observe(batch["idx"], model(batch["views"][0].to(device)), step=0)

        def step() -> None:
            candidates = ssl.batching.CandidatePool(loader, selector.pool_size)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                batch, _ = selector.select(model, candidates, step=1)
                x1, x2 = (v.to(device, non_blocking=True) for v in batch["views"])
                p1 = model(x1)
                loss = loss_fn(whiten(p1), whiten(model(x2)))
            selector.observe(batch["idx"], p1, step=1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    def diagnostics_ms() -> float:
        """What the recipe computes every log_every steps (timed alone, amortised below)."""
        with torch.no_grad():
            z1 = F.normalize(model(images[:b].to(device)).float(), dim=1)
            z2 = F.normalize(model(images[:b].flip(-1).to(device)).float(), dim=1)

        return timed(lambda: batch_diagnostics(z1, z2, 0.2), args.repeats, device)

    variants = {
        "random": ("random", "none", "cache", 1, 0),
        "greedy + zca (cache)": ("greedy", "zca", "cache", args.pool_factor, 0),
        "greedy + zca (online)": ("greedy", "zca", "online", args.pool_factor, 0),
        "pool P3 + zca": ("pool", "zca", "online", 3, 0),
    }
    if args.embed_size:
        variants[f"greedy + zca (online, {args.embed_size} px)"] = ("greedy", "zca", "online", args.pool_factor,
                                                                    args.embed_size)
    results = {}
    for name, arguments in variants.items():
        results[name] = timed(variant(*arguments), args.repeats, device)
    diag = diagnostics_ms() / args.log_every
    base = results["random"]
    name = device_name(device)
    print(f"device: {name}; torch {torch.__version__}; {args.backbone}, B={b}, D={args.dim}, {args.image} px, "
          f"pool_factor={args.pool_factor}, greedy_m={args.greedy_m or 'exact'}; diagnostics every {args.log_every} "
          f"steps add {diag:.2f} ms per step")
    for key, ms in results.items():
        total = ms + (diag if key != "random" else 0.0)
        print(f"  {key:32s} {total:8.1f} ms   ratio to random {total / base:.3f}")
    return {"device": name, **results, "diagnostics_per_step_ms": diag}


if __name__ == "__main__":
    main()
