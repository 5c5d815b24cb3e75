"""Batch selection by spectrum: pure functions on candidate embeddings (any device, deterministic per generator).

- ``greedy_select``: greedy maximisation of ``F(S) = log det(εI + Σ_{s∈S} z_s z_sᵀ)`` (reference/paper-spectral.md
  §4, "Greedy-m"). Every candidate's gain ``log(1 + xᵀA⁻¹x)`` is kept and updated after each pick by the
  Sherman–Morrison rank-1 step: ``A⁻¹ ← A⁻¹ − w wᵀ/(1 + x*ᵀw)`` with ``w = A⁻¹x*``, hence
  ``xᵀA⁻¹x ← xᵀA⁻¹x − (xᵀw)²/(1 + x*ᵀw)``. One pick costs O(M·D + D²), a batch O(k·(M·D + D²)); no M×M kernel
  and no per-candidate inverse. Picks stay on the device (no host synchronisation per pick).
- ``pool_select``: of P candidate batches, the one with the largest effective rank, or the one closest to a target
  (Pool-P; "P3" = 3 candidates, ambiguity A4).
"""

from __future__ import annotations

import logging
import re

import torch

from spectral_ssl.spectral import effective_rank

logger = logging.getLogger(__name__)


def _scores_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


@torch.no_grad()
def greedy_select(
    embeddings: torch.Tensor,
    k: int,
    m: int | None = None,
    eps: float = 1e-2,
    generator: torch.Generator | None = None,
    block: int = 1,
    window: float | None = None,
    groups: torch.Tensor | None = None,
    quota: int | None = None,
) -> torch.Tensor:
    """Greedy log-det batch selection.

    Args:
        embeddings: (M, D) candidate embeddings (L2-normalised projections, typically).
        k: Batch size to select, 1 <= k <= M.
        m: ``None`` scores every remaining candidate at each pick (exact greedy). An int scores ``m`` random
            remaining candidates per pick (stochastic greedy; "Greedy-64" is ``m=64``); ``m >= M`` equals exact.
        eps: Ridge ε of ``A = εI + Σ z zᵀ`` (> 0).
        generator: Random source for ``m`` (must live on the embeddings' device).
        block: Picks per step by top-``block`` gain (block picks; 1 = classic greedy).
        window: Stop greedy picks once the effective rank ("cov") of the selection reaches this bound and fill the
            rest uniformly at random from the remaining candidates (the "moderate diversity window", A12). Checked
            after every ``block`` picks; this check synchronises with the host.
        groups, quota: (M,) group labels 0..G-1 (e.g. the process that holds each candidate) and the number of
            picks each group must contribute, with ``k == G * quota``: a group leaves the race once it has ``quota``
            picks (greedy under a partition-matroid constraint). Used so that every process trains on exactly its
            share of a jointly selected global batch. Needs ``block=1``.

    Returns:
        (k,) LongTensor of unique indices into ``embeddings``, in pick order, on the embeddings' device.
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (M, D), got {tuple(embeddings.shape)}.")
    total, dim = embeddings.shape
    if not isinstance(k, int) or not 1 <= k <= total:
        raise ValueError(f"k must be an integer in [1, {total}] (the pool size), got {k!r}.")
    if m is not None and (not isinstance(m, int) or m < 1):
        raise ValueError(f"m must be None (exact greedy) or a positive integer, got {m!r}.")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}.")
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive integer, got {block!r}.")
    device = embeddings.device
    if (groups is None) != (quota is None):
        raise ValueError("pass groups and quota together (or neither).")
    if groups is not None:
        num_groups = int(groups.max()) + 1 if groups.numel() else 0
        sizes = torch.bincount(groups, minlength=num_groups)
        if groups.shape != (total,) or block != 1 or k != num_groups * quota or bool((sizes < quota).any()):
            raise ValueError(f"groups must be (M,) labels 0..G-1 with at least quota={quota} members each, k must "
                             f"equal G * quota (got k={k}, G={num_groups}) and block must be 1.")
        groups = groups.to(device)
        taken = torch.zeros(num_groups, dtype=torch.long, device=device)
    x = embeddings.detach().to(_scores_dtype(device))
    if not torch.isfinite(x).all():
        raise ValueError("embeddings have non-finite values.")
    a_inv = torch.eye(dim, dtype=x.dtype, device=device) / eps
    quad = x.pow(2).sum(1) / eps  # xᵀA⁻¹x for every candidate
    available = torch.ones(total, dtype=torch.bool, device=device)
    picks = torch.empty(k, dtype=torch.long, device=device)
    neg_inf = torch.tensor(float("-inf"), dtype=x.dtype, device=device)
    count = 0
    while count < k:
        step = min(block, k - count)
        score = torch.where(available, quad, neg_inf)
        if m is not None and m < total - count:
            # m random remaining candidates: the m smallest random keys among the available ones
            keys = torch.rand(total, generator=generator, device=device, dtype=x.dtype)
            keys = torch.where(available, keys, torch.full_like(keys, 2.0))
            sampled = torch.zeros_like(available)
            sampled[keys.topk(max(m, step), largest=False).indices] = True
            score = torch.where(sampled, score, neg_inf)
        # log(1 + q) is monotone in q: rank by q (argmax for one pick is cheaper than topk)
        chosen = score.topk(step).indices if step > 1 else score.argmax().reshape(1)
        for idx in chosen.unbind(0):
            xi = x[idx]
            w = torch.mv(a_inv, xi)
            denom = 1.0 + torch.dot(xi, w)  # stays a device tensor: no host sync
            proj = torch.mv(x, w)
            quad.sub_(proj.mul_(proj).div_(denom))  # in place: no new (M,) / (D, D) tensors per pick
            a_inv.sub_(torch.outer(w, w.div(denom)))
        picks[count:count + step] = chosen
        available[chosen] = False
        if groups is not None:  # a group with its full quota leaves the race (no host sync)
            taken.index_add_(0, groups[chosen], torch.ones_like(chosen))
            available &= taken[groups] < quota
        count += step
        if window is not None and count < k and count >= 2 and \
                float(effective_rank(embeddings[picks[:count]], "cov")) >= window:
            picks[count:] = _random_fill(available, k - count, generator, groups, quota, picks[:count])
            break
    return picks


def _random_fill(available: torch.Tensor, n: int, generator: torch.Generator | None, groups: torch.Tensor | None,
                 quota: int | None, picked: torch.Tensor) -> torch.Tensor:
    """``n`` uniform random available candidates (each group topped up to its quota when groups are given)."""
    device = available.device
    if groups is None:
        rest = torch.nonzero(available).squeeze(1)
        return rest[torch.randperm(rest.numel(), generator=generator, device=device)[:n]]
    fills = []
    for g in range(int(groups.max()) + 1):
        need = quota - int((groups[picked] == g).sum())
        rest = torch.nonzero(available & (groups == g)).squeeze(1)
        fills.append(rest[torch.randperm(rest.numel(), generator=generator, device=device)[:need]])
    return torch.cat(fills)


def log_det_objective(embeddings: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """``F(S) = log det(εI + Σ z zᵀ)`` of a selection (S, D), in float64: the quantity greedy_select maximises."""
    x = embeddings.detach().to(_scores_dtype(embeddings.device))
    gram = eps * torch.eye(x.shape[1], dtype=x.dtype, device=x.device) + x.T @ x
    return torch.linalg.slogdet(gram).logabsdet


def resolve_target(target: float | str | None, dim: int, batch: int, num_classes: int | None = None) -> float | None:
    """Turn a target effective rank into a number, clamped to what a batch can reach.

    ``target`` is an absolute value (>= 1), a fraction of D (0 < t < 1), or a string ``"RHO*C"`` / ``"RHOC"``
    (e.g. ``"0.96*C"``: a multiple of the number of classes, which needs ``num_classes``). The reachable maximum is
    ``min(batch - 1, dim)``; targets above 0.95 of it are clamped there with a warning (ambiguity A3).
    """
    if target is None:
        return None
    if isinstance(target, str):
        match = re.fullmatch(r"\s*([0-9.]+)\s*\*?\s*[cC]\s*", target)
        if not match:
            raise ValueError(f"target {target!r} must be a number, a fraction of D, or 'RHO*C' like '0.96*C'.")
        if not num_classes:
            raise ValueError(f"target {target!r} is a multiple of the number of classes; pass num_classes.")
        value = float(match.group(1)) * num_classes
    else:
        value = float(target)
        if value <= 0:
            raise ValueError(f"target must be positive, got {target!r}.")
        if value < 1:
            value *= dim
    reachable = 0.95 * min(batch - 1, dim)
    if value > reachable:
        logger.warning("target effective rank %.1f is above what a batch of %d in %d dims can reach; clamped to %.1f",
                       value, batch, dim, reachable)
        value = reachable
    return value


@torch.no_grad()
def pool_select(candidates: torch.Tensor, target: float | None = None, estimator: str = "cov") -> int:
    """Index of the candidate batch to train on.

    Args:
        candidates: (P, B, D) embeddings of P candidate batches.
        target: ``None`` picks the largest effective rank; a number picks the batch whose effective rank is
            closest to it (use ``resolve_target`` for fractions of D and multiples of C).
        estimator: Effective-rank estimator (see ``spectral_ssl.effective_rank``).
    """
    if candidates.ndim != 3 or candidates.shape[0] < 1:
        raise ValueError(f"candidates must be (P, B, D) with P >= 1, got {tuple(candidates.shape)}.")
    ranks = torch.stack([effective_rank(c, estimator) for c in candidates])
    if target is None:
        return int(ranks.argmax())
    return int((ranks - target).abs().argmin())
