"""The Triton kernels of greedy log-det selection (``greedy_triton`` holds the design, the host side and the tests'
entry point). Imported only when a kernel runs: importing it needs triton, and triton decides at decoration, i.e.
when this module is first imported, whether the kernels run compiled or in its CPU interpreter
(``TRITON_INTERPRET=1``)."""

import triton
import triton.language as tl


@triton.jit(do_not_specialize=["t"])
def greedy_step(x_ptr, y_ptr, quad_ptr, best_val_ptr, best_idx_ptr, best_row_ptr, picks_ptr,
                keys_ptr, sorted_ptr, order_ptr, gone_ptr, groups_ptr, taken_ptr,
                t, M, D, quota, num_sampled, m,
                NUM_BLOCKS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, D_CHUNKS: tl.constexpr,
                BLOCK_P: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_S: tl.constexpr, DO_UPDATE: tl.constexpr,
                DO_SCORE: tl.constexpr, SAMPLED: tl.constexpr, GROUPED: tl.constexpr):
    """Step t of the pick loop for this program's BLOCK_M candidates: take pick t - 1 from the block maxima the
    previous step wrote and update the block (DO_UPDATE), then write the block's best candidate for pick t
    (DO_SCORE; Greedy-m: among the m remaining candidates with the smallest keys). One launch per step, or called
    k + 1 times by ``greedy_persistent``."""
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
        # what other programs wrote is read through L2 (.cg): in the persistent kernel, after a grid barrier
        vals = tl.load(best_val_ptr + prev * NUM_BLOCKS + offs_p, mask=offs_p < NUM_BLOCKS, other=float("-inf"),
                       cache_modifier=".cg")
        q_star, best = tl.max(vals, 0, return_indices=True, return_indices_tie_break_left=True)
        i_star = tl.load(best_idx_ptr + prev * NUM_BLOCKS + best, cache_modifier=".cg")
        w_row = best_row_ptr + (prev * NUM_BLOCKS + best) * row_len
        inv = 1.0 / (1.0 + q_star)
        proj = tl.zeros([BLOCK_M], dtype=quad.dtype)
        for c in tl.static_range(D_CHUNKS):
            cols = c * BLOCK_D + offs_d
            w = tl.load(w_row + cols, cache_modifier=".cg")
            xs = tl.load(x_ptr + offs_m[:, None] * D + cols[None, :],
                         mask=in_pool[:, None] & (cols < D)[None, :], other=0.0)
            proj += tl.sum(xs * w[None, :], 1)
        quad = quad - proj * proj * inv
        quad = tl.where(offs_m == i_star, float("-inf"), quad)
        coef = proj * inv
        if GROUPED:
            offs_g = tl.arange(0, BLOCK_G)
            g_star = tl.load(groups_ptr + i_star)
            counts = tl.load(taken_ptr + prev * BLOCK_G + offs_g, cache_modifier=".cg") + tl.where(offs_g == g_star,
                                                                                                    1, 0)
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
                out = (tl.load(gone_ptr + cand, mask=valid, other=1, cache_modifier=".cg") != 0) | (cand == i_star)
                if GROUPED:  # a group full after this launch's pick: the previous counts plus that pick
                    g = tl.load(groups_ptr + cand, mask=valid, other=0)
                    had = tl.load(taken_ptr + ((t + 1) % 2) * BLOCK_G + g, mask=valid & (t > 0), other=0,
                                  cache_modifier=".cg")
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
            ys = ys - coef[:, None] * tl.load(w_row + cols, cache_modifier=".cg")[None, :]
            tl.store(ptrs, ys, mask=mask)
        if DO_SCORE:
            row = tl.sum(tl.where(offs_m[:, None] == pid * BLOCK_M + arg, ys, 0.0), 0)
            tl.store(best_row_ptr + (slot * NUM_BLOCKS + pid) * row_len + cols, row)


@triton.jit
def grid_barrier(bar_ptr, err_ptr, target, spin_limit):
    """Wait until ``target`` arrivals are counted at ``bar_ptr`` (release/acquire at GPU scope); after
    ``spin_limit`` polls (programs not all resident: no progress possible) set ``err_ptr`` and go on, and
    every later barrier skips its wait, so the launch ends with the flag set instead of hanging."""
    tl.debug_barrier()  # this program's stores are all issued before it arrives
    tl.atomic_add(bar_ptr, 1, sem="release")
    seen = tl.atomic_add(bar_ptr, 0, sem="acquire")
    failed = tl.atomic_add(err_ptr, 0, sem="relaxed")
    spins = tl.full([], 0, tl.int32)
    while (seen < target) & (spins < spin_limit) & (failed == 0):
        seen = tl.atomic_add(bar_ptr, 0, sem="acquire")
        spins += 1
    if (seen < target) & (failed == 0):
        tl.atomic_xchg(err_ptr, 1, sem="relaxed")
    tl.debug_barrier()


@triton.jit
def greedy_persistent(x_ptr, y_ptr, quad_ptr, best_val_ptr, best_idx_ptr, best_row_ptr, picks_ptr,
                      keys_ptr, sorted_ptr, order_ptr, gone_ptr, groups_ptr, taken_ptr, bar_ptr, err_ptr,
                      k, M, D, quota, num_sampled, m, spin_limit,
                      NUM_BLOCKS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                      D_CHUNKS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_G: tl.constexpr,
                      BLOCK_S: tl.constexpr, SAMPLED: tl.constexpr, GROUPED: tl.constexpr):
    """All k + 1 steps of ``greedy_step`` in one launch, a grid barrier between them (every program must be
    resident at once: at most one program per SM, checked by the host)."""
    greedy_step(x_ptr, y_ptr, quad_ptr, best_val_ptr, best_idx_ptr, best_row_ptr, picks_ptr, keys_ptr,
                sorted_ptr, order_ptr, gone_ptr, groups_ptr, taken_ptr, 0, M, D, quota, num_sampled, m,
                NUM_BLOCKS=NUM_BLOCKS, BLOCK_M=BLOCK_M, BLOCK_D=BLOCK_D, D_CHUNKS=D_CHUNKS, BLOCK_P=BLOCK_P,
                BLOCK_G=BLOCK_G, BLOCK_S=BLOCK_S, DO_UPDATE=False, DO_SCORE=True, SAMPLED=SAMPLED,
                GROUPED=GROUPED)
    grid_barrier(bar_ptr, err_ptr, NUM_BLOCKS, spin_limit)
    for t in range(1, k):
        greedy_step(x_ptr, y_ptr, quad_ptr, best_val_ptr, best_idx_ptr, best_row_ptr, picks_ptr, keys_ptr,
                    sorted_ptr, order_ptr, gone_ptr, groups_ptr, taken_ptr, t, M, D, quota, num_sampled, m,
                    NUM_BLOCKS=NUM_BLOCKS, BLOCK_M=BLOCK_M, BLOCK_D=BLOCK_D, D_CHUNKS=D_CHUNKS,
                    BLOCK_P=BLOCK_P, BLOCK_G=BLOCK_G, BLOCK_S=BLOCK_S, DO_UPDATE=True, DO_SCORE=True,
                    SAMPLED=SAMPLED, GROUPED=GROUPED)
        grid_barrier(bar_ptr, err_ptr, (t + 1) * NUM_BLOCKS, spin_limit)
    greedy_step(x_ptr, y_ptr, quad_ptr, best_val_ptr, best_idx_ptr, best_row_ptr, picks_ptr, keys_ptr,
                sorted_ptr, order_ptr, gone_ptr, groups_ptr, taken_ptr, k, M, D, quota, num_sampled, m,
                NUM_BLOCKS=NUM_BLOCKS, BLOCK_M=BLOCK_M, BLOCK_D=BLOCK_D, D_CHUNKS=D_CHUNKS, BLOCK_P=BLOCK_P,
                BLOCK_G=BLOCK_G, BLOCK_S=BLOCK_S, DO_UPDATE=True, DO_SCORE=False, SAMPLED=SAMPLED,
                GROUPED=GROUPED)
