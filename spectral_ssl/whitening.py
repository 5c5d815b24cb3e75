"""In-batch whitening of projections (docs/method.md, §Whitening and ambiguity A8).

Sits between the projector and L2 normalisation: ``z = normalize(BatchWhitening(h))``. Each call whitens the batch
it is given with that batch's own statistics: once per (B, D) view, or every view of a (V, B, D) stack at once
(batched kernels: half the launches for two views, one host synchronisation instead of two for eigh), gradients flow
through the mean and the whitening matrix (as in DBN / W-MSE), and the maths runs in float32 or better even under
autocast.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from spectral_ssl import dist
from spectral_ssl.finite_watch import keep_if_finite

SOLVERS = ("auto", "eigh", "newton_schulz")
# auto iterates up to this dimension: float64 products cost O(D³) a step and autograd keeps ~5 D x D matrices a step
# (~250 MB a view at D = 512), where eigh's one synchronisation stops mattering beside its own cost
AUTO_ITERATE_MAX_DIM = 512


class _InverseSqrt(torch.autograd.Function):
    """``Σ^{-1/2} = U diag(λ^{-1/2}) Uᵀ`` of a symmetric positive-definite matrix, with a stable backward.

    ``eigh``'s own backward divides by ``λ_i − λ_j`` and returns inf/NaN when eigenvalues (nearly) coincide, which
    happens in training (e.g. the shrinkage floor of a low-rank batch). The Daleckii–Krein backward needs only the
    divided differences of f(λ) = λ^{-1/2}, which have the cancellation-free closed form
    ``(f(λ_i) − f(λ_j))/(λ_i − λ_j) = −1/(s_i s_j (s_i + s_j))`` with ``s = √λ`` (= f'(λ_i) on the diagonal):
    ``∇Σ = U (F ∘ Uᵀ sym(∇W) U) Uᵀ``.
    """

    @staticmethod
    def forward(ctx, cov: torch.Tensor) -> torch.Tensor:
        lam, vecs = torch.linalg.eigh(cov)
        root = lam.clamp_min(1e-12).sqrt()
        ctx.save_for_backward(vecs, root)
        return (vecs / root.unsqueeze(-2)) @ vecs.mT

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        vecs, root = ctx.saved_tensors
        row, col = root.unsqueeze(-1), root.unsqueeze(-2)
        divided = -1.0 / (row * col * (row + col))
        sym = (grad + grad.mT) / 2
        return vecs @ (divided * (vecs.mT @ sym @ vecs)) @ vecs.mT


def newton_schulz_steps(dim: int, floor: float) -> int:
    """Coupled Newton–Schulz steps that converge to ``Σ^{-1/2}`` when every eigenvalue of the D x D matrix ``Σ`` is
    at least ``floor`` (0 < floor <= 1) times its mean eigenvalue.

    In Σ's eigenbasis the iteration is the scalar ``z ← z (3 − λ z²) / 2`` from ``z = 1`` for each eigenvalue λ of
    ``Σ / tr Σ``, which lie in [floor / D, 1]. For the smallest, z grows by a factor just under 1.5 a step while
    ``λ z²`` is small, so about ``log_1.5 √(D / floor)`` steps bring it near ``λ^{-1/2}``; then it converges
    quadratically: 6 more steps (tests/test_whitening.py runs the scalar iteration over D up to 8192 and floors down
    to 1e-8: converged to 1e-12 in every case).
    """
    if not 0 < floor <= 1:
        raise ValueError(f"floor must be in (0, 1], got {floor!r}.")
    return math.ceil(0.5 * math.log(dim / floor) / math.log(1.5)) + 6


def newton_schulz_inverse_sqrt(cov: torch.Tensor, steps: int) -> torch.Tensor:
    """``Σ^{-1/2}`` of a symmetric positive-definite matrix by the coupled Newton–Schulz iteration (Higham, Functions
    of Matrices §6.7; IterNorm): ``Y₀ = Σ / tr Σ, Z₀ = I, T = (3I − Z Y) / 2, Y ← Y T, Z ← T Z``, then
    ``Z / √(tr Σ)``. Matrix products only: no eigen-solver, no host synchronisation, capturable in a CUDA graph;
    autograd differentiates through the steps. ``cov`` is (D, D) or a (V, D, D) stack (batched products)."""
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-12)[..., None, None]
    y = cov / trace
    z = eye.expand_as(y)
    three_halves = (1.5 * eye).expand_as(y)
    fused = torch.addmm if cov.ndim == 2 else torch.baddbmm
    for _ in range(steps):  # three kernels a step
        t = fused(three_halves, z, y, alpha=-0.5)
        y, z = y @ t, t @ z
    return z / trace.sqrt()


class BatchWhitening(nn.Module):
    """Whiten a (B, D) batch so that its covariance is ~I.

    ``Σ_ε = (1 − s)·Σ + s·(tr Σ / D)·I + eps·(tr Σ / D)·I`` with shrinkage ``s``; then

    - ``kind="zca"``: ``W = U diag(λ^-1/2) Uᵀ`` (rotation-equivariant, stays closest to the input);
    - ``kind="cholesky"``: ``W = L⁻ᵀ`` with ``Σ_ε = L Lᵀ`` (cheaper, not rotation-equivariant).

    ZCA's ``Σ_ε^{-1/2}`` comes from ``solver="eigh"`` (an eigen-decomposition; on CUDA it checks its status on the
    host, one synchronisation per call) or ``solver="newton_schulz"`` (matrix products only, no synchronisation; as
    accurate as float32 eigh with ``newton_schulz_steps`` steps, the default; on CUDA in float64, out of TF32's
    reach; more work on a CPU); ``"auto"`` (default) takes newton_schulz for CUDA tensors of up to
    ``AUTO_ITERATE_MAX_DIM`` (512) dimensions and eigh for the others.

    Output: ``(h − μ) W``. In eval mode the running statistics are used instead (diagnostics; training always uses
    batch statistics). Running mean/covariance are buffers, so they are checkpointed.

    Several processes (a torch.distributed process group): by default each whitens its own batch with that batch's
    statistics (as per-GPU BatchNorm does), and the running statistics are updated with the average of the
    processes' batch statistics (one all-reduce a training call), so every process holds the same running
    statistics: the selection space is the same on every rank, and the checkpoint (written by the main process)
    holds for all of them. With ``sync=True`` (as SyncBatchNorm) the mean and covariance are those of the global
    batch, every process's rows together (two differentiable all-reduces a training call, gradients through both):
    the output is what one process whitening the whole batch gives, so the result does not depend on the number of
    processes, and a process's own batch may be smaller than D as long as the global batch is larger. Either way,
    every process must call it in training mode, as it calls a loss that gathers.

    Input (B, D), or a (V, B, D) stack of V views: each view whitened with its own statistics in one batched call,
    the same as V calls in order (running statistics included), with half the kernel launches for two views.

    Args:
        dim: Feature dimension D.
        kind: ``"zca"`` or ``"cholesky"``.
        eps: Ridge relative to the mean eigenvalue (> 0).
        shrinkage: Share ``s`` in [0, 1) of the covariance replaced by its isotropic part.
        momentum: Running-statistics update rate.
        solver: How ZCA computes ``Σ_ε^{-1/2}``: ``"auto"``, ``"eigh"`` or ``"newton_schulz"``.
        steps: Newton–Schulz steps; ``None`` = ``newton_schulz_steps(dim, (shrinkage + eps) / (1 + eps))`` (the
            ridged covariance's smallest eigenvalue over its mean is at least that).
        sync: Whiten with the statistics of the global batch of every process (no effect without a process group).
    """

    def __init__(self, dim: int, kind: str = "zca", eps: float = 1e-4, shrinkage: float = 0.0,
                 momentum: float = 0.1, solver: str = "auto", steps: int | None = None, sync: bool = False) -> None:
        super().__init__()
        if not isinstance(sync, bool):
            raise ValueError(f"sync must be True or False, got {sync!r}.")
        if kind not in ("zca", "cholesky"):
            raise ValueError(f"kind must be 'zca' or 'cholesky', got {kind!r}.")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}.")
        if solver == "newton_schulz" and kind != "zca":
            raise ValueError(f"solver {solver!r} computes ZCA's inverse square root; kind {kind!r} takes none: use "
                             "solver='auto' (the default) with cholesky.")
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps must be a positive integer or None, got {steps!r}.")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}.")
        numbers = {"eps": eps, "shrinkage": shrinkage, "momentum": momentum}
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
        if not eps > 0 or not 0 <= shrinkage < 1 or not 0 <= momentum <= 1:
            raise ValueError(f"need eps > 0, 0 <= shrinkage < 1 and 0 <= momentum <= 1, got eps={eps!r}, "
                             f"shrinkage={shrinkage!r}, momentum={momentum!r}.")
        self.dim, self.kind, self.eps, self.shrinkage, self.momentum = dim, kind, eps, shrinkage, momentum
        self.solver, self.sync = solver, sync
        self.steps = steps if steps is not None else newton_schulz_steps(dim, (shrinkage + eps) / (1 + eps))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_cov", torch.eye(dim))

    def extra_repr(self) -> str:
        solver = f", solver={self.solver!r}, steps={self.steps}" if self.kind == "zca" else ""
        sync = ", sync=True" if self.sync else ""
        return f"{self.dim}, kind={self.kind!r}, eps={self.eps}, shrinkage={self.shrinkage}{solver}{sync}"

    def solver_for(self, device: torch.device) -> str:
        """The ZCA solver used for tensors on ``device``: ``"auto"`` is newton_schulz on CUDA up to
        ``AUTO_ITERATE_MAX_DIM`` dimensions, eigh elsewhere."""
        if self.solver != "auto":
            return self.solver
        iterate = torch.device(device).type == "cuda" and self.dim <= AUTO_ITERATE_MAX_DIM
        return "newton_schulz" if iterate else "eigh"

    def _matrix(self, cov: torch.Tensor) -> torch.Tensor:
        """W of a (D, D) covariance or of each in a (V, D, D) stack."""
        eye = torch.eye(self.dim, dtype=cov.dtype, device=cov.device)
        scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)[..., None, None]
        cov = (1 - self.shrinkage) * cov + (self.shrinkage + self.eps) * scale * eye
        if self.kind == "zca":
            if self.solver_for(cov.device) == "newton_schulz":
                # float64 on CUDA: a TF32 setting (torch.backends.cuda.matmul) never reaches it, and products of
                # D x D matrices cost launches there, not FLOPs
                work = cov.double() if cov.device.type == "cuda" else cov
                return newton_schulz_inverse_sqrt(work, self.steps).to(cov.dtype)
            finite = torch.isfinite(cov).flatten(-2).all(-1)[..., None, None]  # per view
            if cov.device.type == "cpu" and not finite.all():  # a free check on the CPU
                # eigh raises on NaN; give that view NaN instead (Newton–Schulz gives NaN, Cholesky non-finite
                # values): the loss is then non-finite and the caller's check (the recipes' FiniteWatch) stops or
                # skips the step
                return torch.where(finite, _InverseSqrt.apply(torch.where(finite, cov, eye)), float("nan"))
            return _InverseSqrt.apply(cov)
        # cholesky_ex: no error check, which reads a flag from the GPU every step; the ridge keeps cov positive
        # definite, and a failure would surface as a non-finite loss (the recipes stop on it)
        chol = torch.linalg.cholesky_ex(cov).L
        return torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False).mT  # L⁻ᵀ

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, D), or (V, B, D) -> (V, B, D) with each view whitened by its own statistics; in the input's
        dtype (float32 inside)."""
        if h.ndim not in (2, 3) or h.shape[-1] != self.dim or h.numel() == 0:
            raise ValueError(f"expected (B, {self.dim}) projections or a (V, B, {self.dim}) stack of views, got "
                             f"{tuple(h.shape)}.")
        if not h.dtype.is_floating_point:
            raise ValueError(f"expected floating-point projections, got {h.dtype} (the output is in the input's dtype, "
                             "so integers would be truncated); pass h.float().")
        batch = h.shape[-2]
        synced = self.sync and dist.is_distributed()
        # with sync, the global batch (equal batches per process assumed here; the maths counts the real rows)
        rows = batch * dist.world_size() if synced else batch
        if self.training and rows <= self.dim and (self.shrinkage == 0 or rows < 2):
            what = f"global batch size {rows} (all processes)" if synced else f"batch size {batch}"
            raise ValueError(f"batch whitening needs more samples than dimensions: {what} <= dim {self.dim}. Use a "
                             "bigger batch, whiten sub-batches of size >= 2*dim, lower proj_dim, or set shrinkage > 0 "
                             "(e.g. 0.5) so the covariance has full rank (batch size >= 2).")
        dtype = torch.promote_types(h.dtype, torch.float32)
        with torch.autocast(device_type=h.device.type, enabled=False):
            x = h.to(dtype)
            if self.training:
                if synced:
                    mean, centred, cov = self._global_statistics(x)
                else:
                    mean = x.mean(-2, keepdim=True)
                    centred = x - mean
                    cov = centred.mT @ centred / (batch - 1)
                with torch.no_grad():  # view by view, in order: the same statistics as one call per view
                    means, covs = mean.reshape(-1, self.dim), cov.reshape(-1, self.dim, self.dim)
                    if dist.is_distributed() and not synced:  # every process keeps the same running statistics
                        packed = dist.all_reduce_sum(torch.cat([means, covs.flatten(1)], 1)) / dist.world_size()
                        means, covs = packed[:, :self.dim], packed[:, self.dim:].view_as(covs)
                    running_mean, running_cov = self.running_mean, self.running_cov
                    for view_mean, view_cov in zip(means, covs, strict=True):
                        running_mean = running_mean.lerp(view_mean.to(running_mean.dtype), self.momentum)
                        running_cov = running_cov.lerp(view_cov.to(running_cov.dtype), self.momentum)
                    # all or nothing: a non-finite batch leaves the statistics as they were
                    self.running_mean.copy_(keep_if_finite(running_mean, self.running_mean, running_cov))
                    self.running_cov.copy_(keep_if_finite(running_cov, self.running_cov, running_mean))
                return (centred @ self._matrix(cov)).to(h.dtype)
            return self._with_running_statistics(x).to(h.dtype)

    @staticmethod
    def _global_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean (..., 1, D), ``x`` centred by it and unbiased covariance (..., D, D) of every process's rows of ``x``
        (..., B, D) together, differentiable: the sums and row count in one all-reduce, then the centred products in
        a second (centring first, as one process does, rather than E[xxᵀ] − μμᵀ, which cancels in float32)."""
        count = torch.full((*x.shape[:-2], 1), float(x.shape[-2]), dtype=x.dtype, device=x.device)
        totals = dist.all_reduce_sum(torch.cat([x.sum(-2), count], -1), differentiable=True)
        rows = totals[..., -1:].unsqueeze(-1)  # (..., 1, 1)
        mean = totals[..., :-1].unsqueeze(-2) / rows
        centred = x - mean
        return mean, centred, dist.all_reduce_sum(centred.mT @ centred, differentiable=True) / (rows - 1)

    def _check_shape(self, h: torch.Tensor, rows: str) -> None:
        if h.ndim != 2 or h.shape[1] != self.dim:
            raise ValueError(f"expected ({rows}, {self.dim}) projections, got {tuple(h.shape)}.")

    def _with_running_statistics(self, x: torch.Tensor) -> torch.Tensor:
        """Whiten ``x`` (float32 or wider, autocast off) with the running mean and covariance."""
        return (x - self.running_mean.to(x.dtype)) @ self._matrix(self.running_cov.to(x.dtype))

    @torch.no_grad()
    def whiten_running(self, h: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, D) whitened with the running statistics, in float32, in any mode and without updating
        them: maps embeddings that are not a training batch (selection candidates) into the space the loss sees."""
        self._check_shape(h, "N")
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self._with_running_statistics(h.float())
