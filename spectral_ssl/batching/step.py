"""Selection in training: an oversampled candidate pool per step, one decision for all processes.

A streaming ``IterableDataset`` takes no sampler, so selection is a step over a pool of already-loaded samples:

1. ``CandidatePool.fill`` draws loader batches until this process holds ``pool_size`` candidates (unchosen samples
   from earlier steps stay in the pool, so every sample is still trained on exactly once per epoch: docs/method.md,
   §Candidate pool and ambiguity A11);
2. ``BatchSelector.select`` embeds the candidates (``source="cache"``: the detached, L2-normalised projections from
   each sample's last visit, keyed by ``idx``, misses embedded by a no-grad pass; ``source="online"``: a no-grad
   pass over all of them), gathers them from every process, decides once on rank 0 (random, Pool-P or Greedy-m on
   the global pool, with each process contributing exactly ``batch_size`` samples), broadcasts the decision and
   returns this process's share;
3. after the training forward, ``BatchSelector.observe`` writes the trained samples' projections into the cache.

References: docs/method.md, §Selectors (Pool-P, Greedy-m, candidate pool, embedding source) and ambiguities A4, A5,
A10-A12.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from spectral_ssl import dist
from spectral_ssl.batching.selectors import check_positive, greedy_select, pool_select
from spectral_ssl.spectral import effective_rank


class ResumeError(RuntimeError):
    """A checkpoint that cannot be continued as saved (e.g. the dataset changed under it): one line naming the way
    out; the recipe stops on it without a traceback."""

logger = logging.getLogger(__name__)

SELECTIONS = ("random", "pool", "greedy")
SOURCES = ("cache", "online")
TAILS = ("train", "drop")  # what the end of an epoch does with the pool's leftovers (docs/method.md, A11)


def step_seed(seed: int, offset: int) -> int:
    """The seed of one step's random stream: ``seed * 1_000_003 + offset`` (a prime stride, so the streams of
    nearby seeds do not overlap). Selection draws with ``offset = step``; device augmentations with
    ``offset = epoch * 7_919 + sum of the batch's idx``."""
    return seed * 1_000_003 + offset

Batch = dict[str, Any]


def _take(batch: Batch, positions: torch.Tensor) -> Batch:
    """Rows ``positions`` of a collated two-view batch (``views``, ``idx``, optional ``label``)."""
    idx_positions = positions.to(batch["idx"].device)
    # once for both views (one device); non_blocking: a CPU index copied to a GPU otherwise waits for the whole
    # queue (a host sync every step)
    view_positions = positions.to(batch["views"][0].device, non_blocking=True)
    return {"views": tuple(v[view_positions] for v in batch["views"]), "idx": batch["idx"][idx_positions],
            "label": None if batch.get("label") is None else batch["label"][idx_positions]}


def _concat(a: Batch, b: Batch) -> Batch:
    """Rows of ``a`` then rows of ``b``."""
    return {"views": tuple(torch.cat([u, v]) for u, v in zip(a["views"], b["views"])),
            "idx": torch.cat([a["idx"], b["idx"]]),
            "label": None if a.get("label") is None or b.get("label") is None else torch.cat([a["label"], b["label"]])}


class _FixedBatches:
    """A plain iterable of batches as an epoch loader (the same batches every epoch): tests and benchmarks."""

    def __init__(self, batches: Iterable[Batch]) -> None:
        self.batches = batches

    def __call__(self, epoch: int, skip_batches: int = 0) -> Iterator[Batch]:
        return itertools.islice(iter(self.batches), skip_batches, None)

    def reread(self, epoch: int, read_batches: int, keep_idx: list[int]) -> Batch | None:
        read = list(itertools.islice(iter(self.batches), read_batches))
        if not read:
            return None
        merged = functools.reduce(_concat, read)
        wanted = set(keep_idx)
        return _take(merged, torch.tensor([i for i, v in enumerate(merged["idx"].tolist()) if v in wanted],
                                          dtype=torch.long))


class CandidatePool:
    """This process's candidates (samples drawn from the loader and not trained on yet) and its place in the epoch.

    Owns the "every sample once per epoch" invariant: candidates not chosen at a step wait for the next one, the
    epoch ends when its stream cannot fill another batch, and ``state_dict`` records (for every process) the epoch,
    the loader batches consumed and the idx of the waiting candidates, so a resumed run skips exactly what was read
    and re-reads exactly what was waiting. Register it for checkpointing; its ``state_dict`` is a collective call
    (every process must call it, as ``accelerator.save_state`` does).

    Args:
        loaders: ``data.EpochLoader`` (or anything with ``__call__(epoch, skip_batches)`` and
            ``reread(epoch, read_batches, keep_idx)``) yielding collated batches with an ``idx`` tensor; a plain
            iterable of batches serves as the same batches every epoch. A loader that also has
            ``origin_batches(epoch, read_batches, keep_idx)`` (``data.DecodedEpochLoader``) gets the
            waiting candidates back with exactly the views they had at the checkpoint.
        size: Candidates to hold before each decision (``BatchSelector.pool_size``).
        prepare: Applied to every batch as it enters the pool (e.g. batched augmentation of a uint8 batch on the
            training device into ``views``); ``None`` = as loaded.
    """

    def __init__(self, loaders: Any, size: int, prepare: Callable[[Batch], Batch] | None = None) -> None:
        _check_count("size", size, " (candidates per decision: BatchSelector.pool_size)")
        self.loaders = loaders if hasattr(loaders, "reread") else _FixedBatches(loaders)
        self.size, self.prepare = size, prepare
        self.epoch = 0
        self.drawn = 0  # loader batches consumed this epoch
        self.chosen = 0  # batches trained on this epoch
        self.skipped = 0  # undecodable rows skipped (whole run)
        self.samples: Batch | None = None
        self._batches: Iterator[Batch] | None = None
        self._carried: list[list[int]] | None = None  # from a checkpoint: every rank's waiting idx
        self._drawn_at_start: list[int] | None = None

    def __len__(self) -> int:
        return 0 if self.samples is None else len(self.samples["idx"])

    def _open(self) -> None:
        """Open the epoch's stream at the saved position and re-read the candidates that were waiting."""
        rank = dist.rank()
        skip = self._drawn_at_start[rank] if self._drawn_at_start else 0
        keep = self._carried[rank] if self._carried else []
        self.drawn, self.samples = skip, None
        if keep:
            batch = self._reread(skip, keep)
            if batch is None or len(batch["idx"]) != len(keep):
                raise ResumeError(f"resume could not re-read the {len(keep)} samples waiting in the selection pool; "
                                  "the dataset changed since the checkpoint. Start a new output_dir.")
            self.samples = batch
        self._carried = self._drawn_at_start = None
        self._batches = iter(self.loaders(self.epoch, skip))

    def _reread(self, skip: int, keep: list[int]) -> Batch | None:
        """The waiting candidates, prepared. Where the loader can hand back the original batches cheaply
        (``origin_batches``: a decoded cache), each is prepared again as a whole, so a per-batch ``prepare`` (seeded
        device augmentations) gives the candidates exactly the views they had; else the rows are re-read as one
        batch and prepared together (same images, other random views)."""
        if self.prepare is None or not hasattr(self.loaders, "origin_batches"):
            batch = self.loaders.reread(self.epoch, skip, keep)
            if batch is not None:
                batch["skipped"] = 0  # counted when they were first read
                batch = self._prepared(batch)
            return batch
        wanted, parts = set(keep), []
        for batch in self.loaders.origin_batches(self.epoch, skip, keep):
            rows = torch.tensor([i for i, v in enumerate(batch["idx"].tolist()) if v in wanted], dtype=torch.long)
            batch["skipped"] = 0
            parts.append(_take(self._prepared(batch), rows))
        return functools.reduce(_concat, parts) if parts else None

    def _prepared(self, batch: Batch) -> Batch:
        self.skipped += int(batch.pop("skipped", 0) or 0)
        batch = self.prepare(batch) if self.prepare is not None else batch
        views, idx = batch.get("views"), batch.get("idx")
        if not isinstance(views, (tuple, list)) or not views or not all(isinstance(v, torch.Tensor) for v in views) \
                or not isinstance(idx, torch.Tensor) or any(len(v) != len(idx) for v in views):
            raise ValueError("a pool batch must be a dict with 'views', a tuple of (N, ...) tensors (the augmented "
                             "views), and 'idx', the (N,) dataset row numbers; got keys "
                             f"{sorted(batch)} with views of type {type(views).__name__}.")
        return batch

    @record_function("spectral_ssl.pool.fill")
    def fill(self) -> int:
        """Draw loader batches until the pool holds ``size`` candidates or the epoch's stream ends; pool size."""
        if self._batches is None:
            self._open()
        while len(self) < self.size:
            batch = next(self._batches, None)
            if batch is None:
                break
            self.drawn += 1
            batch = self._prepared(batch)
            self.samples = batch if self.samples is None else _concat(self.samples, batch)
        return len(self)

    @record_function("spectral_ssl.pool.take")
    def take(self, positions: torch.Tensor) -> Batch:
        """Remove and return the candidates at ``positions`` (the rest stay for the next step)."""
        if positions.device.type == "cpu" and len(positions) == len(self) and bool(
                (positions == torch.arange(len(self))).all()):  # the whole pool in order (random, pool = batch):
            # handed over as is, not copied twice (2 x 1.5 MB per step at 32 px); checked only for positions on
            # the CPU, where reading them waits for nothing
            whole, self.samples = self.samples, None
            self.chosen += 1
            return {"views": tuple(whole["views"]), "idx": whole["idx"], "label": whole.get("label")}
        positions = positions.to(self.samples["idx"].device)
        keep = torch.ones(len(self), dtype=torch.bool, device=positions.device)
        keep[positions] = False
        chosen = _take(self.samples, positions)
        self.samples = _take(self.samples, keep.nonzero().squeeze(1))
        self.chosen += 1
        return chosen

    def next_epoch(self) -> None:
        """Start the next epoch (the last one's leftover candidates, fewer than a batch, are dropped)."""
        self.epoch, self.drawn, self.chosen, self.samples, self._batches = self.epoch + 1, 0, 0, None, None

    def carried_idx(self) -> list[int]:
        """Dataset indices of the candidates waiting in the pool (saved with checkpoints, so none is lost)."""
        return [] if self.samples is None else self.samples["idx"].tolist()

    def state_dict(self) -> dict[str, Any]:
        """Collective: every process's position, gathered (rank 0 writes it)."""
        ranks = dist.gather_objects((self.drawn, self.carried_idx()))
        return {"epoch": self.epoch, "chosen": self.chosen, "skipped": self.skipped,
                "drawn": [d for d, _ in ranks], "carried": [c for _, c in ranks]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.chosen, self.skipped = state["epoch"], state["chosen"], state["skipped"]
        if len(state["drawn"]) != dist.world_size():
            raise ValueError(f"the checkpoint was written by {len(state['drawn'])} processes, this run has "
                             f"{dist.world_size()}; resume with the same number of processes.")
        self._drawn_at_start, self._carried = state["drawn"], state["carried"]
        self.samples, self._batches = None, None


@contextlib.contextmanager
def frozen_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Run a no-grad pass in train mode (batch statistics, as in training) without moving any norm layer's
    running statistics: they are restored on exit."""
    saved = [(b, b.detach().clone()) for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
             for b in m.buffers(recurse=False)]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


class BatchSelector(nn.Module):
    """Chooses each process's training batch from its candidate pool by the spectrum of the global batch.

    The machinery the three selectors share (embedding, cache, gather, one decision on rank 0, broadcast). Build
    one with ``create_selector(name, ...)`` or ``RandomSelector``/``PoolSelector``/``GreedySelector``, which own
    their arguments and defaults; ``BatchSelector(selection, ...)`` itself is kept for existing callers.

    Args:
        selection: ``"random"``, ``"pool"`` (Pool-P: ``pool_candidates`` random candidate batches, the one with the
            largest R_eff or closest to ``target``) or ``"greedy"`` (Greedy-m log-det selection).
        batch_size: Per-process batch size B.
        dim: Projection dimension D (cache width).
        dataset_size: Number of rows; ``idx`` must lie in ``[0, dataset_size)``. Needed for ``source="cache"``.
        pool_factor: Greedy/random pool size in batches (candidates per process = pool_factor × B).
        pool_candidates: P for Pool-P (candidates per process = P × B).
        greedy_m: Candidates scored per greedy pick (``None`` = exact greedy; 64 = Greedy-64).
        eps: Ridge of the log-det objective.
        target: Pool-P target effective rank (already resolved to a number), ``None`` = argmax.
        window: Greedy stops at this R_eff and fills the rest at random (``None`` = off).
        source: ``"cache"`` or ``"online"`` (always online for Pool-P, as in the paper's cost reading; docs/method.md,
            ambiguity A10).
        seed: Decisions are a deterministic function of ``(seed, step)``, so a resumed run repeats them.
        cache_dtype: Storage type of the cache (float16 halves its memory; selection maths runs in float64).
        transform: Maps (N, D) projections into the space the selection scores, before L2 normalisation; with
            in-batch whitening pass ``BatchWhitening.whiten_running`` so candidates are scored as the loss sees
            them (the raw projections of a whitened model can be close to rank one). ``None`` = raw projections.
        tail: The end of an epoch, once its stream runs dry (docs/method.md, ambiguity A11). ``"train"``: the pool
            is trained down to its last full batch, so every sample is trained once per epoch, and the epoch's
            last batches are the candidates passed over all epoch (for Greedy the least diverse: R_eff 2.9 against
            ~12 on the demo). ``"drop"``: the epoch ends at the first pool that cannot be refilled, as
            ``drop_last`` does; its leftovers (fewer than ``pool_size``) are not trained that epoch, and an epoch
            has ``pool_size / batch_size - 1`` fewer steps (``steps_per_epoch``). No effect on random batches.
        until: Pool-P and Greedy-m choose by the spectrum for steps ``0 .. until - 1`` only; from step ``until`` on
            each batch is a random ``batch_size`` of the same pool, with no embedding, decision, measurement or
            cache write (a schedule: the spectrum early, random batches' speed later). ``None`` = the whole run.
            The pool and the epoch are unchanged, so every sample is still trained once per epoch. A fraction of the
            run becomes a step with ``resolve_until``; the attribute may be set once the run's length is known.
        embed_size: Side in pixels at which the no-grad pass embeds candidates: their first view is resized to it
            (bilinear, antialiased) before the model, so a pass at half the side costs about a quarter. ``None`` =
            the views' own size. A trained sample's cached projection (``observe``) stays the training view's.
    """

    def __init__(self, selection: str, batch_size: int, dim: int, dataset_size: int | None = None, *,
                 pool_factor: int = 4, pool_candidates: int = 3, greedy_m: int | None = None, eps: float = 1e-2,
                 target: float | None = None, window: float | None = None, source: str = "cache", seed: int = 0,
                 cache_dtype: torch.dtype = torch.float16,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None, tail: str = "train",
                 until: int | None = None, embed_size: int | None = None) -> None:
        super().__init__()
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}.")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")
        _check_tail(tail)
        if selection == "pool":
            source = "online"
        _check_count("batch_size", batch_size)
        _check_count("dim", dim, " (the projection dimension)")
        if dataset_size is not None:
            _check_count("dataset_size", dataset_size, " (the number of training rows) or None")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}.")
        check_positive("eps", eps)
        check_positive("target", target, none_ok=True)
        check_positive("window", window, none_ok=True)
        if not isinstance(cache_dtype, torch.dtype) or not cache_dtype.is_floating_point:
            raise ValueError(f"cache_dtype must be a floating-point dtype (float16 halves it), got {cache_dtype}.")
        if not isinstance(pool_factor, int) or pool_factor < 1 or not isinstance(pool_candidates, int) \
                or pool_candidates < 1:
            raise ValueError(f"pool_factor and pool_candidates must be positive integers, got {pool_factor!r} and "
                             f"{pool_candidates!r}.")
        if embed_size is not None:
            _check_count("embed_size", embed_size, " (pixels) or None")
        if greedy_m is not None and (not isinstance(greedy_m, int) or greedy_m < 1):
            raise ValueError(f"greedy_m must be None (exact greedy) or a positive integer, got {greedy_m!r}.")
        if source == "cache" and selection != "random" and not dataset_size:
            raise ValueError("source='cache' needs dataset_size (the number of rows, to size the cache); pass it, "
                             "or use source='online' for a stream of unknown length.")
        self.selection, self.batch_size, self.dim, self.source = selection, batch_size, dim, source
        self.pool_factor, self.pool_candidates, self.greedy_m = pool_factor, pool_candidates, greedy_m
        self.eps, self.target, self.window, self.seed = eps, target, window, seed
        self.dataset_size, self.tail, self.embed_size = dataset_size, tail, embed_size
        self.until = until  # validated by the setter; a recipe may set it once the run's length is known
        self.transform = transform
        uses_cache = source == "cache" and selection != "random"
        rows = dataset_size if uses_cache else 0
        self.register_buffer("cache", torch.zeros(rows, dim, dtype=cache_dtype))
        self.register_buffer("cache_step", torch.full((rows,), -1, dtype=torch.long))  # -1 = never embedded

    def _apply(self, fn, recurse=True):
        """Buffers follow the model (``.to(device)``) except ``cache_step``, which stays on the CPU with the pool's
        ``idx``: which candidates miss the cache is then known without reading the GPU (a host sync every step)."""
        steps = self.cache_step
        out = super()._apply(fn, recurse)
        self.cache_step = steps
        return out

    def extra_repr(self) -> str:
        return (f"selection={self.selection}, batch_size={self.batch_size}, pool_size={self.pool_size}, "
                f"source={self.source}, greedy_m={self.greedy_m}, target={self.target}, window={self.window}, "
                f"tail={self.tail}, until={self.until}, embed_size={self.embed_size}")

    @property
    def until(self) -> int | None:
        """The step from which Pool-P / Greedy-m take random batches of the pool (``None`` = never)."""
        return self._until

    @until.setter
    def until(self, value: int | None) -> None:
        if value is not None:
            _check_count("until", value, " (the step from which batches are random) or None")
        self._until = value

    def spectral(self, step: int) -> bool:
        """Whether ``step``'s batch is chosen by the spectrum (Pool-P or Greedy-m before ``until``), not at random."""
        return self.selection != "random" and (self.until is None or step < self.until)

    @property
    def pool_size(self) -> int:
        """Candidates each process holds before a decision."""
        factor = {"random": 1, "pool": self.pool_candidates, "greedy": self.pool_factor}[self.selection]
        return factor * self.batch_size

    @property
    def candidates_needed(self) -> int:
        """The fewest candidates per process a decision is made on: ``batch_size`` (``tail="train"``: the pool is
        trained down to its last full batch) or ``pool_size`` (``"drop"``: the epoch ends at the first pool that
        cannot be refilled)."""
        return self.pool_size if self.tail == "drop" else self.batch_size

    def steps_per_epoch(self, rows: int) -> int:
        """Batches an epoch of ``rows`` rows per process yields (loader batches of ``batch_size``): one decision
        per batch while ``candidates_needed`` are left, so every full batch with ``tail="train"`` and
        ``pool_size / batch_size - 1`` fewer with ``"drop"`` (0 when the pool is larger than the epoch)."""
        return (rows - self.candidates_needed) // self.batch_size + 1 if rows >= self.candidates_needed else 0

    # ---- embeddings ----
    @torch.no_grad()
    def _embed_online(self, model: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """L2-normalised projections of ``images`` from a no-grad pass in chunks of ~batch_size, with batch
        statistics as in training; a handful of images (fewer than B/4, e.g. a few cache misses) would give
        meaningless batch statistics (or none, for one image), so they use the norm layers' running statistics."""
        size = self.embed_size
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images.to(device, non_blocking=True).float(), size=(size, size), mode="bilinear",
                                   antialias=True, align_corners=False)
        chunks = torch.tensor_split(images, max(1, round(len(images) / self.batch_size)))
        few = len(images) < max(2, self.batch_size // 4)
        was_training = model.training
        try:
            model.train(was_training and not few)
            with frozen_norm_statistics(model):
                out = [model(chunk.to(device, non_blocking=True)).float() for chunk in chunks]
        finally:
            model.train(was_training)
        return self._unit(torch.cat(out))

    def _unit(self, projections: torch.Tensor) -> torch.Tensor:
        """Projections -> unit vectors in the selection space (after ``transform``), float32."""
        if projections.ndim != 2 or projections.shape[1] != self.dim:
            raise ValueError(f"the model's projections have shape {tuple(projections.shape)}, but the selector was "
                             f"built with dim={self.dim}; pass the model's projection dimension as dim.")
        z = projections.float()
        return F.normalize(self.transform(z).float() if self.transform is not None else z, dim=1)

    def _check_idx(self, idx: torch.Tensor, values: bool = True) -> None:
        """One line unless ``idx`` is a 1-D integer tensor of rows of the cache (``values=False``: its type only,
        which reads nothing from a GPU)."""
        if not isinstance(idx, torch.Tensor) or idx.ndim != 1 or idx.dtype.is_floating_point \
                or idx.dtype in (torch.bool, torch.complex64, torch.complex128):
            what = f"{idx.dtype} of shape {tuple(idx.shape)}" if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(f"idx must be a 1-D integer tensor of dataset row numbers, got {what}.")
        if not values:
            return
        bad = idx[(idx < 0) | (idx >= self.cache.shape[0])]
        if len(bad):
            raise ValueError(f"dataset idx {int(bad[0])} is outside the selection cache of {self.cache.shape[0]} "
                             "rows; the idx column must number rows 0..N-1 (pass the full dataset_size), or use "
                             "source='online'.")

    @record_function("spectral_ssl.select.embed")
    def embed(self, model: nn.Module, images: torch.Tensor, idx: torch.Tensor, step: int,
              stats: dict[str, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, D) float32 unit embeddings of the candidates (cache hits, the rest by a no-grad pass) and the (n,)
        mask of those computed now; ``stats`` (if given) gets the cache hit rate and mean staleness in steps."""
        device = next(model.parameters()).device
        stats = {} if stats is None else stats
        if self.source == "online" or self.selection == "random":
            stats.update(cache_hit=0.0, staleness=0.0)
            return self._embed_online(model, images, device), torch.ones(len(idx), dtype=torch.bool, device=device)
        idx = idx.cpu()  # the pool's idx live on the CPU, as cache_step does: no GPU read below but the rows
        self._check_idx(idx)
        seen = self.cache_step[idx]
        hit = seen >= 0
        out = self.cache[idx.to(self.cache.device, non_blocking=True)].to(device, torch.float32)
        missing = (~hit).nonzero().squeeze(1)
        if len(missing):
            out[missing.to(device, non_blocking=True)] = self._embed_online(
                model, images[missing.to(images.device, non_blocking=True)], device)
        hits = int(hit.sum())
        stats.update(cache_hit=hits / max(1, len(idx)),
                     staleness=float((step - seen[hit]).float().mean()) if hits else 0.0)
        return F.normalize(out, dim=1), ~hit

    def _store(self, idx: torch.Tensor, z: torch.Tensor, step: int) -> None:
        """Write gathered unit embeddings (identical on every rank, so the caches stay identical)."""
        idx = idx.cpu()  # a CPU index (one process) stays where it is; a gathered one comes back once
        self._check_idx(idx)
        if z.device.type == "cpu":  # a free host check here: non-finite rows keep their last finite embedding (or
            finite = torch.isfinite(z).all(1)  # stay misses), so a recovered model is not stopped by a stale NaN;
            if not bool(finite.all()):  # on a GPU greedy zeroes non-finite values instead, with no host sync
                idx, z = idx[finite], z[finite]
        self.cache[idx.to(self.cache.device, non_blocking=True)] = z.to(self.cache.device, self.cache.dtype)
        self.cache_step[idx] = step

    @torch.no_grad()
    def observe(self, idx: torch.Tensor, projections: torch.Tensor, step: int) -> None:
        """Store the trained samples' (gathered) projections in the cache; call after each training forward."""
        if not self.cache.shape[0] or not self.spectral(step + 1):  # no decision will read the cache again
            return
        self._check_idx(idx, values=False)  # the values once on the CPU (_store): no extra read of a GPU idx
        if projections.ndim != 2 or projections.shape[0] != len(idx):
            raise ValueError(f"projections must be (len(idx), dim) = ({len(idx)}, {self.dim}), got "
                             f"{tuple(projections.shape)}.")
        if dist.is_distributed():
            idx = dist.gather(idx.to(projections.device), differentiable=False)
        self._store(idx, self._unit(dist.gather(projections.detach().float(), differentiable=False)), step)

    # ---- the decision ----
    @record_function("spectral_ssl.select.decide")
    def _decide(self, z: torch.Tensor, per_rank: int, world: int, step: int,
                stats: dict[str, float]) -> torch.Tensor:
        """Global positions (world·B,) into the gathered pool z (world·per_rank, D), B from each rank's block."""
        b = self.batch_size
        gen = torch.Generator(device=z.device).manual_seed(step_seed(self.seed, step))
        blocks = torch.arange(world, device=z.device) * per_rank
        if self.selection == "greedy":
            groups = torch.arange(world, device=z.device).repeat_interleave(per_rank) if world > 1 else None
            # on a GPU no finiteness check (a host sync every step; non-finite values are zeroed instead): z are the
            # loss's projections, and the recipe's FiniteWatch stops on a non-finite loss at the next logging step
            return greedy_select(z, world * b, m=self.greedy_m, eps=self.eps, generator=gen, window=self.window,
                                 groups=groups, quota=b if world > 1 else None, check_finite=z.device.type != "cuda")
        # random and Pool-P: a random partition of each rank's candidates into batches of B
        orders = torch.stack([torch.randperm(per_rank, generator=gen, device=z.device) for _ in range(world)])
        count = per_rank // b if self.selection == "pool" else 1
        batches = [(orders[:, c * b:(c + 1) * b] + blocks[:, None]).reshape(-1) for c in range(count)]
        if count == 1:
            return batches[0]
        best = pool_select(torch.stack([z[p] for p in batches]), target=self.target)
        stats["pool_choice"] = float(best)
        return batches[best]

    @record_function("spectral_ssl.select")  # named ranges for torch.profiler (scripts/gpu_check.py)
    def select(self, model: nn.Module, pool: CandidatePool, step: int,
               measure: bool = False) -> tuple[Batch | None, dict[str, float]]:
        """This process's batch for ``step`` and what the selection measured: ``(batch, stats)``; ``batch`` is
        ``None`` when the epoch's pools cannot fill a batch anywhere.

        ``model`` is the unwrapped model (projections = ``model(x)``); it is run without gradients and without
        touching its norm statistics. ``stats`` holds ``select_ms`` (the wall time of this call: the pool's refill +
        embedding + gather + decision + broadcast; not the measurement), ``fill_ms`` (the refill's share of it: the
        loading and augmentation of the new candidates, which a random batch's step pays too) and ``pool_size``;
        with embeddings, ``cache_hit`` and ``staleness``; Pool-P's ``pool_choice``; with ``measure=True`` the R_eff
        of the chosen global batch and of a random batch from the same pool (``reff_chosen``, ``reff_random``) and
        the time that took (``measure_ms``; random selection embeds only to measure, so its embedding counts there).
        From step ``until`` on, Pool-P and Greedy-m take a random batch of the pool, and ``measure`` is ignored
        (nothing is embedded).
        """
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"step must be an integer (the decision is a function of seed and step), got {step!r}.")
        if pool.size < self.batch_size:  # no batch could ever be made: not the end of an epoch
            raise ValueError(f"the CandidatePool holds {pool.size} candidates, fewer than batch_size={self.batch_size}"
                             f"; build it with CandidatePool(loaders, selector.pool_size) ({self.pool_size}).")
        start, stats = time.perf_counter(), {}
        device = next(model.parameters()).device
        world, rank = dist.world_size(), dist.rank()
        # every rank decides on the same number of candidates (shares can differ by a few rows)
        per_rank = pool.fill()
        stats["fill_ms"] = 1000 * (time.perf_counter() - start)  # the loading a random batch's step does too
        if world > 1:  # one process needs no device round trip (a host sync every step on a GPU)
            per_rank = int(dist.gather(torch.tensor([per_rank], device=device), differentiable=False).min())
        if per_rank < self.candidates_needed:
            return None, stats  # the end of the epoch
        spectral = self.spectral(step)
        if not spectral and self.selection != "random":
            measure = False  # past ``until``: random batches of the pool, nothing embedded (_decide never sees it)
        if not spectral and not measure:
            z = None
            local = torch.randperm(per_rank, generator=torch.Generator().manual_seed(step_seed(self.seed, step)))
            local = local[: self.batch_size].sort().values  # pool order (= loader order when pool == batch)
        else:
            # the first per_rank candidates, scored on their first view
            embed_start = time.perf_counter()
            head_images, head_idx = pool.samples["views"][0][:per_rank], pool.samples["idx"][:per_rank]
            local_z, fresh = self.embed(model, head_images, head_idx, step, stats)
            z = dist.gather(local_z, differentiable=False)
            if self.cache.shape[0]:  # candidates embedded now wait in the pool: cache them, no second pass
                if world > 1:
                    fresh = dist.gather(fresh.to(device, torch.uint8), differentiable=False).bool()
                    head_idx = dist.gather(head_idx.to(device), differentiable=False)
                rows = fresh.cpu().nonzero().squeeze(1)  # on the CPU with one process: no host sync
                self._store(head_idx.cpu()[rows], z[rows.to(z.device, non_blocking=True)], step)
            picks = self._decide(z, per_rank, world, step, stats) if rank == 0 else \
                torch.empty(world * self.batch_size, dtype=torch.long, device=device)
            picks = dist.broadcast(picks.contiguous(), src=0).sort().values  # rank blocks in rank order
            local = picks[rank * self.batch_size:(rank + 1) * self.batch_size] - rank * per_rank
            if measure:
                measure_start = time.perf_counter()
                gen = torch.Generator(device=z.device).manual_seed(step_seed(self.seed, step + 1))
                random_pick = torch.cat([torch.randperm(per_rank, generator=gen, device=z.device)[: self.batch_size]
                                         + r * per_rank for r in range(world)])
                stats.update(reff_chosen=float(effective_rank(z[picks])),
                             reff_random=float(effective_rank(z[random_pick])))
                # random batches embed only to be measured: that pass is measurement too
                stats["measure_ms"] = 1000 * (time.perf_counter() - (embed_start if self.selection == "random"
                                                                      else measure_start))
        batch = pool.take(local)
        stats.update(select_ms=1000 * (time.perf_counter() - start) - stats.get("measure_ms", 0.0),
                     pool_size=float(per_rank))
        return batch, stats


class RandomSelector(BatchSelector):
    """Random batches (no spectrum): B of the B candidates each step, in loader order; takes no arguments of its
    own. Run facts (``batch_size``, ``dim``, ``dataset_size``, ``seed``, ``transform``) as ``BatchSelector``."""

    def __init__(self, batch_size: int, dim: int, dataset_size: int | None = None, *, seed: int = 0,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__("random", batch_size, dim, dataset_size, seed=seed, transform=transform)


class PoolSelector(BatchSelector):
    """Pool-P: ``candidates`` random batches embedded by a no-grad pass, the one with the largest R_eff (or the
    closest to ``target``).

    Args:
        candidates: P (Pool-P3: 3); candidates per process = P x B.
        target: Target R_eff, a number (``resolve_target`` turns fractions and ``RHO*C`` into one); ``None`` =
            the largest.
        space: ``"loss"`` scores candidates through ``transform`` (as the loss sees them), ``"projections"`` raw.
        tail: ``"train"`` (every sample once per epoch) or ``"drop"`` (the epoch ends at the first pool that
            cannot be refilled): ``BatchSelector``.
        until: Choose by R_eff for the first ``until`` steps, then random batches (``BatchSelector``); ``None`` =
            the whole run.
        embed_size: Side at which candidates are embedded (``BatchSelector``); ``None`` = the views' size.
    """

    def __init__(self, batch_size: int, dim: int, dataset_size: int | None = None, *, candidates: int = 3,
                 target: float | None = None, space: str = "loss", tail: str = "train", until: int | None = None,
                 embed_size: int | None = None, seed: int = 0,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        _check_space(space)
        _check_count("candidates", candidates)
        super().__init__("pool", batch_size, dim, dataset_size, pool_candidates=candidates, target=target,
                         source="online", seed=seed, transform=transform if space == "loss" else None, tail=tail,
                         until=until, embed_size=embed_size)


class GreedySelector(BatchSelector):
    """Greedy-m: each batch built from ``pool_factor`` x B candidates by greedy log-det gain.

    Args:
        pool_factor: Candidates per process = pool_factor x B.
        m: Candidates scored per pick (``None`` = exact greedy; 64 = Greedy-64).
        eps: Ridge of the log-det objective.
        window: Stop once the batch's R_eff reaches this and fill the rest at random (``None`` = off).
        source: ``"cache"`` (last visit's projections, misses by a no-grad pass) or ``"online"`` (a no-grad pass).
        space: ``"loss"`` scores candidates through ``transform`` (as the loss sees them), ``"projections"`` raw.
        tail: ``"train"`` (every sample once per epoch; the epoch's last batches are the candidates passed over)
            or ``"drop"`` (the epoch ends at the first pool that cannot be refilled): ``BatchSelector``.
        until: Greedy picks for the first ``until`` steps, then random batches of the pool with no embedding or
            cache (``BatchSelector``); ``None`` = the whole run.
        embed_size: Side at which the no-grad pass embeds candidates (``BatchSelector``); ``None`` = the views'.
        cache_dtype: Storage type of the cache.
    """

    def __init__(self, batch_size: int, dim: int, dataset_size: int | None = None, *, pool_factor: int = 4,
                 m: int | None = None, eps: float = 1e-2, window: float | None = None, source: str = "cache",
                 space: str = "loss", tail: str = "train", until: int | None = None, embed_size: int | None = None,
                 cache_dtype: torch.dtype = torch.float16, seed: int = 0,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        _check_space(space)
        _check_count("pool_factor", pool_factor)
        if m is not None:
            _check_count("m", m, " (None = exact greedy)")
        super().__init__("greedy", batch_size, dim, dataset_size, pool_factor=pool_factor, greedy_m=m, eps=eps,
                         window=window, source=source, seed=seed, cache_dtype=cache_dtype,
                         transform=transform if space == "loss" else None, tail=tail, until=until,
                         embed_size=embed_size)


SPACES = ("loss", "projections")


def _check_count(key: str, value: Any, note: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a positive integer{note}, got {value!r}.")


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}.")


def _check_tail(tail: str) -> None:
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS} (the end of an epoch: train the pool's leftovers, or drop "
                         f"them as drop_last does), got {tail!r}.")


SELECTORS: dict[str, type[BatchSelector]] = {"random": RandomSelector, "pool": PoolSelector,
                                             "greedy": GreedySelector}
_RUN_FACTS = ("self", "batch_size", "dim", "dataset_size", "seed", "transform")


def selector_arguments(name: str) -> dict[str, Any]:
    """The own arguments of selector ``name`` with their defaults (the run facts excluded)."""
    if name not in SELECTORS:
        raise ValueError(f"unknown selection {name!r}; choose one of {sorted(SELECTORS)}.")
    params = inspect.signature(SELECTORS[name].__init__).parameters
    return {n: p.default for n, p in params.items() if n not in _RUN_FACTS}


def create_selector(name: str, *, batch_size: int, dim: int, dataset_size: int | None = None, seed: int = 0,
                    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    **kwargs: Any) -> BatchSelector:
    """Build selector ``name`` (a key of ``SELECTORS``), as ``losses.create_loss`` builds a loss: each class owns
    its defaults and validates its own arguments.

    Args:
        name: ``random``, ``pool`` (Pool-P) or ``greedy`` (Greedy-m).
        batch_size, dim, dataset_size, seed, transform: Facts of the run (``BatchSelector``).
        **kwargs: The selector's own arguments (``pool``: candidates, target, space, tail, until; ``greedy``:
            pool_factor, m, eps, window, source, space, tail, until, cache_dtype). Unknown names raise a ValueError
            listing the accepted ones.
    """
    accepted = selector_arguments(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"selection {name!r} takes no argument {', '.join(map(repr, unknown))}; its arguments are "
                         f"{sorted(accepted)}.")
    return SELECTORS[name](batch_size, dim, dataset_size, seed=seed, transform=transform, **kwargs)
