"""The greedy log-det pick loop as a fused Triton kernel (CUDA; CPU only under ``TRITON_INTERPRET=1``, for tests).

``greedy_select`` dispatches here for CUDA embeddings when triton imports (``backend="auto"``); this module imports
without triton and only imports it on first use, so the library never needs triton on the CPU.

Design. Instead of A⁻¹ (D×D, a global dependency every program would have to read and rewrite), the kernel keeps
``Y = X A⁻¹`` (M×D, row c = A⁻¹x_c) next to the gains ``q_c = x_cᵀA⁻¹x_c``. The row of the chosen candidate x* is
``w = A⁻¹x*``, and Sherman–Morrison with ``p_c = x_c·w`` gives, row by row,
``q_c ← q_c − p_c²/(1 + q*)`` and ``y_c ← y_c − (p_c/(1 + q*))·w``: each program owns a block of BLOCK_M candidates
(their x, y rows and gains) and never touches another block's rows. One launch per pick, grid = M / BLOCK_M:

1. read the per-block maxima the previous launch wrote (value, index and that candidate's y row), reduce them to
   the pick x* (first index among equal gains, as ``torch.argmax``), program 0 records it;
2. update the block's gains and y rows with ``w`` = x*'s y row and mark x* taken (gain −inf); with groups/quota,
   a group whose count reaches the quota is masked too (counts double-buffered, program 0 writes the next copy);
3. write the block's best remaining gain, its index and its y row for the next launch.

The maxima buffers are double-buffered by pick parity, so a launch only reads what the previous launch wrote and
no grid-wide synchronisation is needed. On CUDA the k + 1 launches (plus the initialisation) are captured once per
shape in a CUDA graph and replayed (graphs are cached per device, dtype, M, D, k, m, ε, groups).

Greedy-m: the random keys of every sampled pick are drawn with the caller's generator on the torch side, in one
``torch.rand(steps, M)`` call (on the CPU this is the stream the torch backend draws pick by pick, so the picks
agree; on CUDA the streams differ but have the same distribution). The sample is "the m smallest keys among the
remaining candidates" (not yet picked, group not full). Every row of keys is sorted once per call (one
``torch.sort``); in the launch of pick t each program walks row t's sorted candidates in chunks of BLOCK_S, counts
the remaining ones (a ``gone`` flag per picked candidate, the group counts of the previous launch plus the pick
being taken) and takes the key of the m-th as its threshold. So a sampled pick is one launch, like an exact one
(it was two launches and a ``torch.topk`` between them: 13 ms for k=512 of M=2048 on an H200, against 1.8 ms for
exact greedy). Window and block picks are not fused (they fall back to the torch loop).

Tolerance: the same quantities as the torch loop, in the same dtype, but reassociated (Y instead of A⁻¹, block
reductions), so gains agree to rounding (~1e-6 relative in float32, ~1e-15 in float64) and picks agree except on
near-ties; the tests compare picks in float64 and the objective in float32.
"""

from __future__ import annotations

import collections
import functools
import math
import os

import torch

_GRAPHS: collections.OrderedDict = collections.OrderedDict()
_MAX_GRAPHS = 4


def interpreting() -> bool:
    """Whether triton runs kernels in its CPU interpreter (env ``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def _triton_imports() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def usable(device: torch.device) -> bool:
    """Whether the kernel can run on ``device``: triton imports, and the device is CUDA or the interpreter is on."""
    if device.type not in ("cuda", "cpu") or not _triton_imports():
        return False
    return device.type == "cuda" or interpreting()


@functools.cache
def _kernel(interpret: bool):
    """The jitted kernel (built on first use; ``interpret`` keys the cache since triton decides it at decoration)."""
    import triton
    import triton.language as tl

    @triton.jit(do_not_specialize=["t"])
    def greedy_step(x_ptr, y_ptr, quad_ptr, best_val_ptr, best_idx_ptr, best_row_ptr, picks_ptr,
                    keys_ptr, sorted_ptr, order_ptr, gone_ptr, groups_ptr, taken_ptr,
                    t, M, D, quota, num_sampled, m,
                    NUM_BLOCKS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, D_CHUNKS: tl.constexpr,
                    BLOCK_P: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_S: tl.constexpr, DO_UPDATE: tl.constexpr,
                    DO_SCORE: tl.constexpr, SAMPLED: tl.constexpr, GROUPED: tl.constexpr):
        pid = tl.program_id(0)
        offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        in_pool = offs_m < M
        offs_d = tl.arange(0, BLOCK_D)
        row_len = D_CHUNKS * BLOCK_D  # padded length of a stored y row
        quad = tl.load(quad_ptr + offs_m, mask=in_pool, other=float("-inf"))
        i_star = tl.full([], -1, tl.int64)  # no pick taken in this launch (t = 0)
        g_star = tl.full([], -1, tl.int64)
        if DO_UPDATE:  # launch t takes pick t-1 (from the maxima launch t-1 wrote) and updates this block
            prev = (t - 1) % 2
            offs_p = tl.arange(0, BLOCK_P)
            vals = tl.load(best_val_ptr + prev * NUM_BLOCKS + offs_p, mask=offs_p < NUM_BLOCKS, other=float("-inf"))
            q_star, best = tl.max(vals, 0, return_indices=True, return_indices_tie_break_left=True)
            i_star = tl.load(best_idx_ptr + prev * NUM_BLOCKS + best)
            w_row = best_row_ptr + (prev * NUM_BLOCKS + best) * row_len
            inv = 1.0 / (1.0 + q_star)
            proj = tl.zeros([BLOCK_M], dtype=quad.dtype)
            for c in tl.static_range(D_CHUNKS):
                cols = c * BLOCK_D + offs_d
                w = tl.load(w_row + cols)
                xs = tl.load(x_ptr + offs_m[:, None] * D + cols[None, :],
                             mask=in_pool[:, None] & (cols < D)[None, :], other=0.0)
                proj += tl.sum(xs * w[None, :], 1)
            quad = quad - proj * proj * inv
            quad = tl.where(offs_m == i_star, float("-inf"), quad)
            coef = proj * inv
            if GROUPED:
                offs_g = tl.arange(0, BLOCK_G)
                g_star = tl.load(groups_ptr + i_star)
                counts = tl.load(taken_ptr + prev * BLOCK_G + offs_g) + tl.where(offs_g == g_star, 1, 0)
                tl.store(taken_ptr + (t % 2) * BLOCK_G + offs_g, counts, mask=(offs_g >= 0) & (pid == 0))
                full = tl.sum(tl.where(offs_g == g_star, counts, 0), 0) >= quota
                g_blk = tl.load(groups_ptr + offs_m, mask=in_pool, other=-1)
                quad = tl.where(full & (g_blk == g_star), float("-inf"), quad)
            tl.store(picks_ptr + (t - 1), i_star, mask=pid == 0)
            tl.store(gone_ptr + i_star, 1, mask=pid == 0)  # the others exclude i_star themselves in this launch
            tl.store(quad_ptr + offs_m, quad, mask=in_pool)
        if DO_SCORE:  # this block's best remaining (sampled) candidate for pick t
            score = quad
            if SAMPLED:  # threshold: the key of the m-th remaining candidate in row t's sorted order
                thresh = tl.full([], 2.0, quad.dtype)  # fewer than m remaining (or t past the sampled picks): all
                count = tl.full([], 0, tl.int32)
                start = tl.full([], 0, tl.int32)
                offs_s = tl.arange(0, BLOCK_S)
                while (count < m) & (start < M) & (t < num_sampled):
                    where = start + offs_s
                    valid = where < M
                    cand = tl.load(order_ptr + t * M + where, mask=valid, other=0)
                    skey = tl.load(sorted_ptr + t * M + where, mask=valid, other=2.0)
                    out = (tl.load(gone_ptr + cand, mask=valid, other=1) != 0) | (cand == i_star)
                    if GROUPED:  # a group full after this launch's pick: the previous counts plus that pick
                        g = tl.load(groups_ptr + cand, mask=valid, other=0)
                        had = tl.load(taken_ptr + ((t + 1) % 2) * BLOCK_G + g, mask=valid & (t > 0), other=0)
                        out = out | (had + tl.where(g == g_star, 1, 0) >= quota)
                    keep = valid & (out == 0)
                    rank = count + tl.cumsum(keep.to(tl.int32), 0)
                    hit = tl.max(tl.where(keep & (rank == m), skey, -1.0), 0)
                    thresh = tl.where(hit >= 0, hit, thresh)
                    count += tl.sum(keep.to(tl.int32), 0)
                    start += BLOCK_S
                keys = tl.load(keys_ptr + t * M + offs_m, mask=in_pool & (t < num_sampled), other=0.0)
                score = tl.where(keys <= thresh, score, float("-inf"))
            top, arg = tl.max(score, 0, return_indices=True, return_indices_tie_break_left=True)
            slot = t % 2
            tl.store(best_val_ptr + slot * NUM_BLOCKS + pid, top)
            tl.store(best_idx_ptr + slot * NUM_BLOCKS + pid, (pid * BLOCK_M + arg).to(tl.int64))
        for c in tl.static_range(D_CHUNKS):
            cols = c * BLOCK_D + offs_d
            ptrs = y_ptr + offs_m[:, None] * D + cols[None, :]
            mask = in_pool[:, None] & (cols < D)[None, :]
            ys = tl.load(ptrs, mask=mask, other=0.0)
            if DO_UPDATE:
                ys = ys - coef[:, None] * tl.load(w_row + cols)[None, :]
                tl.store(ptrs, ys, mask=mask)
            if DO_SCORE:
                row = tl.sum(tl.where(offs_m[:, None] == pid * BLOCK_M + arg, ys, 0.0), 0)
                tl.store(best_row_ptr + (slot * NUM_BLOCKS + pid) * row_len + cols, row)

    return greedy_step


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class _Plan:
    """Buffers and launch sequence of one (device, dtype, M, D, k, m, ε, groups) problem."""

    def __init__(self, x: torch.Tensor, k: int, m: int | None, eps: float, num_groups: int, quota: int,
                 block_m: int | None, block_d: int | None, block_s: int | None):
        total, dim = x.shape
        dev, dt = x.device, x.dtype
        self.k, self.m, self.eps, self.quota = k, m, eps, quota
        self.block_d = block_d or min(128, _next_pow2(dim))
        self.d_chunks = math.ceil(dim / self.block_d)
        self.block_m = block_m or (32 if self.block_d * (2 if dt == torch.float64 else 1) <= 128 else 16)
        self.num_blocks = math.ceil(total / self.block_m)
        self.block_p = _next_pow2(self.num_blocks)
        self.block_g = max(2, _next_pow2(num_groups))
        self.num_sampled = 0 if m is None else max(0, min(k, total - m))
        # sorted keys walked per chunk: without groups the m-th remaining is among the first m + k (one chunk)
        self.block_s = block_s or min(_next_pow2(min(total, (m or 1) + k)), 2048)
        row_len = self.d_chunks * self.block_d
        self.x = torch.empty_like(x)
        self.y = torch.empty_like(x)
        self.quad = torch.empty(total, dtype=dt, device=dev)
        self.best_val = torch.empty(2, self.num_blocks, dtype=dt, device=dev)
        self.best_idx = torch.zeros(2, self.num_blocks, dtype=torch.long, device=dev)
        self.best_row = torch.zeros(2, self.num_blocks, row_len, dtype=dt, device=dev)
        self.picks = torch.empty(k, dtype=torch.long, device=dev)
        self.keys = torch.empty(max(1, self.num_sampled), total, dtype=dt, device=dev)
        self.sorted = torch.empty_like(self.keys)
        self.order = torch.zeros(self.keys.shape, dtype=torch.long, device=dev)
        self.gone = torch.zeros(total, dtype=torch.int8, device=dev)
        self.groups = torch.zeros(total, dtype=torch.long, device=dev)
        self.taken = torch.zeros(2, self.block_g, dtype=torch.int32, device=dev)
        self.graph = None

    def constexprs(self) -> dict:
        """The kernel's compile-time arguments for this problem, less DO_UPDATE and DO_SCORE (set per launch)."""
        return dict(NUM_BLOCKS=self.num_blocks, BLOCK_M=self.block_m, BLOCK_D=self.block_d, D_CHUNKS=self.d_chunks,
                    BLOCK_P=self.block_p, BLOCK_G=self.block_g, BLOCK_S=self.block_s, SAMPLED=self.num_sampled > 0,
                    GROUPED=self.quota > 0)

    def load(self, x: torch.Tensor, keys: torch.Tensor | None, groups: torch.Tensor | None) -> None:
        self.x.copy_(x)
        if keys is not None:
            self.keys.copy_(keys)
            # sorted here, eagerly, not inside the captured graph: a segmented sort's temporary storage is no
            # business of a CUDA graph
            torch.sort(self.keys, dim=1, out=(self.sorted, self.order))
        if groups is not None:
            self.groups.copy_(groups)

    def run(self) -> None:
        """Initialise from ``self.x`` and launch the k + 1 steps (capturable: no host synchronisation)."""
        kernel = _kernel(interpreting())
        self.y.copy_(self.x).div_(self.eps)
        torch.sum(self.x.square(), 1, out=self.quad).div_(self.eps)
        self.taken.zero_()
        self.gone.zero_()
        total, dim = self.x.shape
        common = self.constexprs()
        args = (self.x, self.y, self.quad, self.best_val, self.best_idx, self.best_row, self.picks, self.keys,
                self.sorted, self.order, self.gone, self.groups, self.taken)
        grid = (self.num_blocks,)
        for t in range(self.k + 1):  # launch t takes pick t - 1 and scores pick t: k + 1 launches in all
            kernel[grid](*args, t, total, dim, self.quota, self.num_sampled, self.m or 0, DO_UPDATE=t > 0,
                         DO_SCORE=t < self.k, **common)


@torch.no_grad()
def greedy_triton(x: torch.Tensor, k: int, m: int | None = None, eps: float = 1e-2,
                  generator: torch.Generator | None = None, groups: torch.Tensor | None = None,
                  quota: int | None = None, block_m: int | None = None, block_d: int | None = None,
                  block_s: int | None = None, cuda_graph: bool = True) -> torch.Tensor:
    """Greedy log-det picks by the fused kernel (arguments validated by ``greedy_select``, which calls this).

    Args:
        x: (M, D) float32 or float64 candidates (the scoring dtype), CUDA or (interpreter) CPU.
        k, m, eps, generator, groups, quota: as ``greedy_select`` (block=1, no window).
        block_m: Candidates per program (a power of two; default 32, 16 for wide float64 rows).
        block_d: Embedding columns per chunk (a power of two; default min(128, D rounded up to a power of two)).
        block_s: Greedy-m: sorted keys each program walks per chunk to find its threshold (a power of two; default
            m + k rounded up to a power of two, at most M and 2048).
        cuda_graph: On CUDA, capture the launches once per problem shape and replay them.

    Returns:
        (k,) LongTensor of indices into x, in pick order, on x's device.
    """
    for name, size in (("block_m", block_m), ("block_d", block_d), ("block_s", block_s)):
        if size is not None and (size < 1 or size & (size - 1)):
            raise ValueError(f"{name} must be a power of two (or None for the default), got {size!r}.")
    x = x.detach().contiguous()
    total, dim = x.shape
    num_groups = int(groups.max()) + 1 if groups is not None else 0
    key = (x.device, x.dtype, total, dim, k, m, float(eps), num_groups, quota or 0, block_m, block_d, block_s)
    plan = _GRAPHS.get(key)
    if plan is None:
        plan = _Plan(x, k, m, eps, num_groups, quota or 0, block_m, block_d, block_s)
    keys = None
    if plan.num_sampled:
        keys = torch.rand(plan.num_sampled, total, generator=generator, device=x.device, dtype=x.dtype)
    plan.load(x, keys, groups)
    use_graph = cuda_graph and x.device.type == "cuda" and not interpreting()
    if plan.graph is not None:
        plan.graph.replay()
        _GRAPHS.move_to_end(key)
    else:
        plan.run()  # eager (also compiles every kernel variant before a capture)
        if use_graph:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                plan.run()
            plan.graph = graph
            _GRAPHS[key] = plan
            while len(_GRAPHS) > _MAX_GRAPHS:
                _GRAPHS.popitem(last=False)
    return plan.picks.clone()
