"""Batch selection by spectrum: pure functions on candidate embeddings (any device, deterministic per generator).

- ``greedy_select``: greedy maximisation of ``F(S) = log det(εI + Σ_{s∈S} z_s z_sᵀ)`` (exact greedy, or the
  stochastic "Greedy-m" that scores m random remaining candidates per pick). Every candidate's gain
  ``log(1 + xᵀA⁻¹x)`` is kept and updated after each pick by the Sherman–Morrison rank-1 step:
  ``A⁻¹ ← A⁻¹ − w wᵀ/(1 + x*ᵀw)`` with ``w = A⁻¹x*``, hence ``xᵀA⁻¹x ← xᵀA⁻¹x − (xᵀw)²/(1 + x*ᵀw)``. One pick
  costs O(M·D + D²), a batch O(k·(M·D + D²)); no M×M kernel and no per-candidate inverse. On accelerators the
  picks stay on the device (no host synchronisation per pick). On CUDA (with triton installed) the pick loop runs
  as one fused Triton kernel per pick, replayed from a CUDA graph (``spectral_ssl.batching.greedy_triton``);
  elsewhere as a loop of about ten ops per pick (on the CPU on numpy views of the torch buffers, whose per-call
  overhead is lower).
- Precision: scores are computed in the embeddings' dtype promoted to at least float32 (``dtype=torch.float64``
  for float64 scoring). The gains only rank candidates, so float32 changes a pick only where two gains tie to
  ~1e-6 relative. On pools without exact ties (rows of distinct norms; random, low-rank and clustered, M=512…2048,
  D=64…128, k=M/4) the float32 picks equal the float64 ones (as a set at M=2048, k=512; checked in the tests at
  M=512). Unit rows all tie at the first pick, which float32 and float64 break differently; the runs then follow
  different, equally greedy paths whose objectives F − D·log ε differ by ~1e-3 relative, as much as two float64
  runs on permutations of the same pool do.
- ``pool_select``: of P candidate batches, the one with the largest effective rank, or the one closest to a target
  (Pool-P; "P3" = 3 candidates: docs/method.md, §Pool-P and ambiguity A4).
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import numpy as np
import torch

from spectral_ssl.batching import greedy_triton
from spectral_ssl.spectral import effective_rank

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "triton")


def _scores_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def check_positive(key: str, value: Any, none_ok: bool = False) -> None:
    """One line naming ``key`` unless ``value`` is a finite number > 0 (or None with ``none_ok``)."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{key} must be a finite number > 0{' or None' if none_ok else ''}, got {value!r}.")


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
    *,
    dtype: torch.dtype | None = None,
    backend: str = "auto",
    check_finite: bool = True,
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
            rest uniformly at random from the remaining candidates (the "moderate diversity window",
            docs/method.md A12). Checked
            after every ``block`` picks; this check synchronises with the host.
        groups, quota: (M,) group labels 0..G-1 (e.g. the process that holds each candidate) and the number of
            picks each group must contribute, with ``k == G * quota``: a group leaves the race once it has ``quota``
            picks (greedy under a partition-matroid constraint). Used so that every process trains on exactly its
            share of a jointly selected global batch. Needs ``block=1``.
        dtype: Scoring dtype, float32 or float64; ``None`` = the embeddings' dtype promoted to at least float32
            (float32 on MPS). float64 is the reference; float32 is ~1.5x faster on the CPU (see the module notes).
        backend: ``"auto"`` runs the fused Triton kernel for CUDA embeddings when triton imports and the options
            allow it (``block=1``, no ``window``), else the torch loop; ``"torch"`` / ``"triton"`` force one
            (``"triton"`` on CPU tensors only under ``TRITON_INTERPRET=1``, for tests). The backends draw the
            Greedy-m keys differently on CUDA, so their stochastic picks differ there (same distribution).
        check_finite: Refuse non-finite embeddings with a ValueError. On a GPU the check reads a flag on the host
            (a synchronisation that drains the GPU queue): a training loop that already stops on a non-finite loss
            (whose projections these are) can pass ``False``, which zeroes non-finite values instead (the picks stay
            k distinct valid indices; rows that were non-finite carry no information).

    Returns:
        (k,) LongTensor of unique indices into ``embeddings``, in pick order, on the embeddings' device.
    """
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
        shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
        raise ValueError(f"embeddings must be an (M, D) tensor, got {shape}.")
    total, dim = embeddings.shape
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= total:
        raise ValueError(f"k must be an integer in [1, {total}] (the pool size), got {k!r}.")
    if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
        raise ValueError(f"m must be None (exact greedy) or a positive integer, got {m!r}.")
    check_positive("eps", eps)
    check_positive("window", window, none_ok=True)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive integer, got {block!r}.")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    device = embeddings.device
    if dtype is None:
        dtype = torch.float32 if device.type == "mps" else torch.promote_types(embeddings.dtype, torch.float32)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64 (or None), got {dtype!r}.")
    if (groups is None) != (quota is None):
        raise ValueError("pass groups and quota together (or neither).")
    if groups is not None:
        if not isinstance(groups, torch.Tensor) or groups.dtype.is_floating_point or groups.dtype == torch.bool \
                or groups.ndim != 1 or (groups.numel() and int(groups.min()) < 0):
            raise ValueError("groups must be an integer tensor of (M,) labels 0..G-1 (the process that holds each "
                             "candidate).")
        if isinstance(quota, bool) or not isinstance(quota, int) or quota < 1:
            raise ValueError(f"quota must be a positive integer, got {quota!r}.")
        num_groups = int(groups.max()) + 1 if groups.numel() else 0
        sizes = torch.bincount(groups, minlength=num_groups)
        if groups.shape != (total,) or block != 1 or k != num_groups * quota or bool((sizes < quota).any()):
            raise ValueError(f"groups must be (M,) labels 0..G-1 with at least quota={quota} members each, k must "
                             f"equal G * quota (got k={k}, G={num_groups}) and block must be 1.")
        groups = groups.to(device)
    # autocast off: vecdot and the pick loop's mat-vecs are on autocast's lower-precision list, so under a caller's
    # bf16 autocast the gains would be scored in bf16 (other picks, a lower log det)
    with torch.autocast(device.type, enabled=False):
        x = embeddings.detach().to(dtype)
        if not check_finite:  # no host read: non-finite values become 0 on the device (picks stay distinct, valid)
            x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        squares = torch.linalg.vecdot(x, x)  # (M,) |x|²: non-finite iff a row has a non-finite value (or overflows)
        if check_finite and not torch.isfinite(squares).all():
            raise ValueError("embeddings have non-finite values (or overflow the scoring dtype).")
        fused = block == 1 and window is None
        if backend == "triton":
            if not fused:
                raise ValueError("backend='triton' supports block=1 and window=None only; use backend='auto' or "
                                 "'torch'.")
            if not greedy_triton.usable(device):
                raise ValueError("backend='triton' needs triton and CUDA embeddings (or TRITON_INTERPRET=1 for CPU "
                                 "tensors); use backend='auto' or 'torch'.")
        if backend == "triton" or (backend == "auto" and fused and device.type == "cuda"
                                   and greedy_triton.usable(device)):
            return greedy_triton.greedy_triton(x, k, m=m, eps=eps, generator=generator, groups=groups, quota=quota)
        return _greedy_torch(x, squares, embeddings, k, m, eps, generator, block, window, groups, quota)


def _greedy_torch(x: torch.Tensor, squares: torch.Tensor, embeddings: torch.Tensor, k: int, m: int | None,
                  eps: float, generator: torch.Generator | None, block: int, window: float | None,
                  groups: torch.Tensor | None, quota: int | None, host: bool | None = None) -> torch.Tensor:
    """The pick loop in torch ops: x (M, D) in the scoring dtype, squares (M,) its row norms²; arguments as
    ``greedy_select`` (validated); ``host``: read picks to the host (default: on the CPU).

    Taken (and quota-exhausted) candidates carry the gain -inf, so no availability mask is kept. Each pick is two
    matrix-vector products, an update of the gains and one ``addr_`` on A⁻¹, into preallocated buffers. On the CPU
    the pick is read to the host (free there) and the per-pick vector work runs on numpy views of the same memory
    (numpy's per-call overhead is about a tenth of torch's, and its mat-vec is faster at these sizes); on other
    devices it stays on the device with ``u = A⁻¹x*/√(1 + q*)``: ``q ← q − (x·u)²``, ``A⁻¹ ← A⁻¹ − u uᵀ``.
    """
    total, dim = x.shape
    device = x.device
    host = device.type == "cpu" if host is None else host
    if host:
        x = x.cpu().contiguous()
    a_inv = torch.eye(dim, dtype=x.dtype, device=device).div_(eps)
    quad = squares.div(eps)  # xᵀA⁻¹x for every candidate; -inf once taken
    proj = torch.empty(total, dtype=x.dtype, device=device)
    u = torch.empty(dim, dtype=x.dtype, device=device)
    picks = torch.empty(k, dtype=torch.long, device=device)
    if groups is not None:
        taken = torch.zeros(int(groups.max()) + 1, dtype=torch.long, device=device)
        group_of, taken_on_host = groups.tolist(), taken.tolist()
    neg_inf = float("-inf")
    picked: list[int] = []  # the host loop's picks
    count = 0
    while count < k:
        step = min(block, k - count)
        if m is not None and m < total - count:
            # m random remaining candidates: the m smallest random keys among the available ones
            keys = torch.rand(total, generator=generator, device=device, dtype=x.dtype)
            keys.masked_fill_(quad == neg_inf, 2.0)
            sampled = keys.topk(max(m, step), largest=False).indices
            score = torch.full_like(quad, neg_inf).index_copy_(0, sampled, quad[sampled])
        else:
            score = quad
        # log(1 + q) is monotone in q: rank by q (argmax for one pick is cheaper than topk); the gains of the later
        # members of a block are the ones updated by the earlier members
        if host:
            chosen = [int(score.numpy().argmax())] if step == 1 else score.topk(step).indices.tolist()
            for i in chosen:
                _take_on_host(x, a_inv, quad, proj, u, i)
            picked.extend(chosen)
            if groups is not None:  # a group with its full quota leaves the race
                for i in chosen:
                    taken_on_host[group_of[i]] += 1
                    if taken_on_host[group_of[i]] >= quota:
                        quad.masked_fill_(groups == group_of[i], neg_inf)
        else:
            if step == 1:
                top, chosen = score.max(0)
                _take(x, a_inv, quad, proj, u, chosen, top)
                chosen = chosen.reshape(1)
            else:
                chosen = score.topk(step).indices
                for idx in chosen.unbind(0):
                    _take(x, a_inv, quad, proj, u, idx, quad[idx])
            picks[count:count + step] = chosen
            if groups is not None:  # a group with its full quota leaves the race (no host sync)
                taken.index_add_(0, groups[chosen], torch.ones_like(chosen))
                quad.masked_fill_(taken[groups] >= quota, neg_inf)
        count += step
        if window is not None and count < k and count >= 2:  # host sync: the effective rank's check
            if host:
                picks[:count] = torch.tensor(picked)
            if float(effective_rank(embeddings[picks[:count]], "cov")) >= window:
                picks[count:] = _random_fill(quad != neg_inf, k - count, generator, groups, quota, picks[:count])
                return picks
    if host:
        picks.copy_(torch.tensor(picked))
    return picks


def _take_on_host(x: torch.Tensor, a_inv: torch.Tensor, quad: torch.Tensor, proj: torch.Tensor, u: torch.Tensor,
                  i: int) -> None:
    """Take candidate ``i`` (contiguous CPU tensors): update A⁻¹ and every gain in place, on numpy views."""
    xs, gains, p, w = x.numpy(), quad.numpy(), proj.numpy(), u.numpy()
    scale = -1.0 / (1.0 + float(gains[i]))
    np.matmul(a_inv.numpy(), xs[i], out=w)
    np.matmul(xs, w, out=p)
    np.multiply(p, p, out=p)
    p *= scale
    gains += p
    a_inv.addr_(u, u, alpha=scale)
    gains[i] = float("-inf")


def _take(x: torch.Tensor, a_inv: torch.Tensor, quad: torch.Tensor, proj: torch.Tensor, u: torch.Tensor,
          idx: torch.Tensor, q_star: torch.Tensor) -> None:
    """Take candidate ``idx`` (``q_star``: its current xᵀA⁻¹x, 0-d) without host synchronisation."""
    torch.mv(a_inv, x[idx], out=u)
    u.mul_(q_star.add(1).rsqrt_())
    torch.mv(x, u, out=proj)
    quad.addcmul_(proj, proj, value=-1)
    a_inv.addr_(u, u, alpha=-1)
    quad.index_fill_(0, idx.reshape(1), float("-inf"))


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
    ``min(batch - 1, dim)``; targets above 0.95 of it are clamped there with a warning (docs/method.md, A3).
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
        check_positive("target", target)
        value = float(target)
        if value < 1:
            value *= dim
    reachable = 0.95 * min(batch - 1, dim)
    if value > reachable:
        logger.warning("target effective rank %.1f is above what a batch of %d in %d dims can reach; clamped to %.1f",
                       value, batch, dim, reachable)
        value = reachable
    return value


def resolve_until(until: float | None, total_steps: int) -> int | None:
    """The step from which a scheduled selection takes random batches (``BatchSelector.until``): a whole number of
    steps (>= 1) as it is, or a fraction of the run (0 < f < 1) of ``total_steps``, rounded, at least 1; ``None`` =
    the whole run."""
    if until is None:
        return None
    if isinstance(until, bool) or not isinstance(until, (int, float)) or not until > 0 or until != until:
        raise ValueError(f"until must be a number of steps (>= 1), a fraction of the run (0 < f < 1) or None, got "
                         f"{until!r}.")
    if until < 1:
        return max(1, round(until * total_steps))
    if until != int(until):
        raise ValueError(f"until={until!r} is neither a whole number of steps nor a fraction of the run (0 < f < 1).")
    return int(until)


@torch.no_grad()
def pool_select(candidates: torch.Tensor, target: float | None = None, estimator: str = "cov") -> int:
    """Index of the candidate batch to train on.

    Args:
        candidates: (P, B, D) embeddings of P candidate batches.
        target: ``None`` picks the largest effective rank; a number picks the batch whose effective rank is
            closest to it (use ``resolve_target`` for fractions of D and multiples of C).
        estimator: Effective-rank estimator (see ``spectral_ssl.effective_rank``).
    """
    if not isinstance(candidates, torch.Tensor) or candidates.ndim != 3 or candidates.shape[0] < 1:
        shape = tuple(candidates.shape) if isinstance(candidates, torch.Tensor) else type(candidates).__name__
        raise ValueError(f"candidates must be a (P, B, D) tensor with P >= 1, got {shape}.")
    check_positive("target", target, none_ok=True)
    ranks = torch.stack([effective_rank(c, estimator) for c in candidates])
    if target is None:
        return int(ranks.argmax())
    return int((ranks - target).abs().argmin())
