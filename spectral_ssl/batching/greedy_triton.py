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

Persistent variant (``persistent=True``, opt-in until a GPU run measures it): one launch runs the k + 1 steps in a
loop, a grid barrier between them (an arrival counter, release on arrival, acquire while polling; reads of what
other programs wrote go through L2). It needs every program resident at once, so the host refuses more programs
than SMs, and a barrier that polls ``SPIN_LIMIT`` times without completing sets a flag and lets the launch finish:
the host raises instead of hanging. Exact greedy with launches is ~3.4 us a launch on an H200 (1.8 ms for k=512);
a barrier should cost less than a launch. The kernels themselves live in ``greedy_kernels`` (imported on first use).

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
SPIN_LIMIT = 1 << 22  # polls of the persistent kernel's grid barrier before it gives up (~seconds on a GPU)


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


def _kernel():
    """The jitted kernels ``(greedy_step, greedy_persistent)`` of ``greedy_kernels``, imported on first use."""
    from spectral_ssl.batching import greedy_kernels

    return greedy_kernels.greedy_step, greedy_kernels.greedy_persistent


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class _Plan:
    """Buffers and launch sequence of one (device, dtype, M, D, k, m, ε, groups) problem."""

    def __init__(self, x: torch.Tensor, k: int, m: int | None, eps: float, num_groups: int, quota: int,
                 block_m: int | None, block_d: int | None, block_s: int | None, persistent: bool = False):
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
        self.persistent = persistent
        self.barrier = torch.zeros(2, dtype=torch.int32, device=dev)  # persistent: arrivals, and the timed-out flag
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
        """Initialise from ``self.x`` and launch the k + 1 steps, or the one persistent launch (capturable: no host
        synchronisation)."""
        kernel, persistent = _kernel()
        self.y.copy_(self.x).div_(self.eps)
        torch.sum(self.x.square(), 1, out=self.quad).div_(self.eps)
        self.taken.zero_()
        self.gone.zero_()
        total, dim = self.x.shape
        common = self.constexprs()
        args = (self.x, self.y, self.quad, self.best_val, self.best_idx, self.best_row, self.picks, self.keys,
                self.sorted, self.order, self.gone, self.groups, self.taken)
        grid = (self.num_blocks,)
        if self.persistent:
            self.barrier.zero_()
            persistent[grid](*args, self.barrier[:1], self.barrier[1:], self.k, total, dim, self.quota,
                             self.num_sampled, self.m or 0, SPIN_LIMIT, **common)
            return
        for t in range(self.k + 1):  # launch t takes pick t - 1 and scores pick t: k + 1 launches in all
            kernel[grid](*args, t, total, dim, self.quota, self.num_sampled, self.m or 0, DO_UPDATE=t > 0,
                         DO_SCORE=t < self.k, **common)


@torch.no_grad()
def greedy_triton(x: torch.Tensor, k: int, m: int | None = None, eps: float = 1e-2,
                  generator: torch.Generator | None = None, groups: torch.Tensor | None = None,
                  quota: int | None = None, block_m: int | None = None, block_d: int | None = None,
                  block_s: int | None = None, cuda_graph: bool = True, persistent: bool = False) -> torch.Tensor:
    """Greedy log-det picks by the fused kernel (arguments validated by ``greedy_select``, which calls this).

    Args:
        x: (M, D) float32 or float64 candidates (the scoring dtype), CUDA or (interpreter) CPU.
        k, m, eps, generator, groups, quota: as ``greedy_select`` (block=1, no window).
        block_m: Candidates per program (a power of two; default 32, 16 for wide float64 rows).
        block_d: Embedding columns per chunk (a power of two; default min(128, D rounded up to a power of two)).
        block_s: Greedy-m: sorted keys each program walks per chunk to find its threshold (a power of two; default
            m + k rounded up to a power of two, at most M and 2048).
        cuda_graph: On CUDA, capture the launches once per problem shape and replay them.
        persistent: One launch for all k picks, a grid barrier (atomics) between picks, instead of k + 1 launches
            (opt-in while it is measured: ``scripts/gpu_check.py``). Needs every program resident at once: at most
            one per SM (M / block_m programs); a barrier that cannot complete raises ``RuntimeError`` (after
            ``SPIN_LIMIT`` polls) instead of hanging. The picks are the launch kernel's.

    Returns:
        (k,) LongTensor of indices into x, in pick order, on x's device.
    """
    for name, size in (("block_m", block_m), ("block_d", block_d), ("block_s", block_s)):
        if size is not None and (size < 1 or size & (size - 1)):
            raise ValueError(f"{name} must be a power of two (or None for the default), got {size!r}.")
    x = x.detach().contiguous()
    total, dim = x.shape
    num_groups = int(groups.max()) + 1 if groups is not None else 0
    key = (x.device, x.dtype, total, dim, k, m, float(eps), num_groups, quota or 0, block_m, block_d, block_s,
           persistent)
    plan = _GRAPHS.get(key)
    if plan is None:
        plan = _Plan(x, k, m, eps, num_groups, quota or 0, block_m, block_d, block_s, persistent)
        if persistent and x.device.type == "cuda":
            sms = torch.cuda.get_device_properties(x.device).multi_processor_count
            if plan.num_blocks > sms:
                raise ValueError(f"persistent=True runs one program per {plan.block_m} candidates and needs them all "
                                 f"resident: {plan.num_blocks} programs for {sms} SMs; pass a larger block_m or "
                                 "persistent=False.")
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
            # thread_local: a DataLoader's pin-memory thread allocating pinned memory meanwhile (streaming input)
            # must not invalidate the capture, as it would under the default "global" mode
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                plan.run()
            plan.graph = graph
            _GRAPHS[key] = plan
            while len(_GRAPHS) > _MAX_GRAPHS:
                _GRAPHS.popitem(last=False)
    if persistent and int(plan.barrier[1]):  # reads the GPU: the opt-in path pays one sync for its watchdog
        raise RuntimeError(f"the persistent greedy kernel's grid barrier timed out ({plan.num_blocks} programs not "
                           "all resident); use persistent=False")
    return plan.picks.clone()
