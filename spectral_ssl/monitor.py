"""Spectral monitoring of any training loop: collapse metrics, the gradient band and a collapse alarm.

``SpectralMonitor.update(z1, z2, step)`` takes the two views' projections of a step. Between records it only copies
them into an on-device ring buffer of the last ``window`` pairs (no host synchronisation); every ``every`` steps it
gathers the buffers of all processes (no gradient; a no-op without a process group), computes one record on the main
process, logs it and returns it. ``spectral_record`` is the one implementation of a record (the recipe's
``diagnostics.batch_diagnostics`` is a thin call to it). Host adapters (Lightning, the HF Trainer, accelerate's
trackers) live in ``spectral_ssl.integrations``; this module imports only torch.

A record (docs/method.md, §Effective rank and §Band):

- ``reff_cov``, ``reff_pr``: effective rank and participation ratio of the centred covariance of the 2N
  L2-normalised projections of the window (``centered``), ``reff_rankme``: RankMe of the uncentred ones
  (smoothing ``eps`` = 1e-7, as in the RankMe paper);
- ``std_of_l2_normalized``: the standard deviation over the samples of each dimension of the L2-normalised
  projections, averaged over dimensions (lightly's ``std_of_l2_normalized``, SimSiam's collapse monitor: 0 when the
  outputs collapse to one vector, about 1/sqrt(D) when they are spread isotropically);
- ``alignment`` (mean ‖u − v‖² over the pairs) and ``uniformity`` (log of the mean of exp(−2‖x − y‖²) over the
  distinct pairs of each view, averaged over the two views), as defined by Wang & Isola (2020) with α = 2, t = 2;
- ``band_*``: the InfoNCE gradient band of the newest batch at ``temperature`` and its containment
  (``spectral_ssl.band``, closed form from z: no autograd), ``cos_views`` and ``ntxent`` (NT-Xent of that batch at
  ``monitor_temperature``);
- ``n_samples`` (rows of the spectrum: 2N), ``dim``, ``centered``, ``eps``, ``source`` (where z came from) and ``step``.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spectral_ssl import dist
from spectral_ssl.band import gradient_band, infonce_band
from spectral_ssl.losses.infonce import InfoNCELoss
from spectral_ssl.spectral import RANKME_EPS, _spectral_dtype, effective_rank, spectrum_stats

logger = logging.getLogger(__name__)

ALARM_ACTIONS = (None, "warn", "raise", "stop")
UNIFORMITY_T = 2.0


class CollapseError(RuntimeError):
    """Raised by a ``SpectralMonitor(alarm="raise")`` when the projections have collapsed for ``patience`` records."""


def is_collapsed(record: dict[str, Any], min_rank_fraction: float = 0.05, min_std_fraction: float = 0.1) -> bool:
    """The collapse test of one record: ``min(reff_cov, reff_rankme) / min(n_samples, dim)`` below
    ``min_rank_fraction``, or ``std_of_l2_normalized · sqrt(dim)`` (about 1 for spread outputs, 0 for one vector)
    below ``min_std_fraction``. ``record`` needs those five keys (a ``spectral_record``, or the recipe's metrics row
    with the batch's ``n_samples`` and ``dim``)."""
    limit = min(record["n_samples"], record["dim"])
    rank = min(record["reff_cov"], record["reff_rankme"])
    std = record["std_of_l2_normalized"] * math.sqrt(record["dim"])
    return rank < min_rank_fraction * limit or std < min_std_fraction


def collapse_streak(streak: int, collapsed: bool, device: torch.device | None = None) -> int:
    """The count of consecutive collapsed records after one more: rank 0's verdict (``collapsed`` there) counts on
    every process, so all of them act alike (a collective under a process group; ``device`` carries the flag)."""
    if dist.is_distributed():
        collapsed = bool(dist.broadcast(torch.tensor([int(collapsed)], device=device), src=0).item())
    return streak + 1 if collapsed else 0


def collapse_message(record: dict[str, Any] | None, streak: int) -> str:
    """The alarm's one line: how long, where and how far the projections collapsed, and what to check."""
    what = "" if record is None else (
        f" at step {record.get('step')}: R_eff {record['reff_cov']:.2f}, RankMe {record['reff_rankme']:.2f} of "
        f"min(N, D) = {min(record['n_samples'], record['dim'])}, std_of_l2_normalized "
        f"{record['std_of_l2_normalized']:.3g} (1/sqrt(D) = {1 / math.sqrt(record['dim']):.3g})")
    return (f"the projections have collapsed for {streak} consecutive records{what}; check the learning rate, the "
            "predictor / stop-gradient / EMA target and the temperature.")


def std_of_l2_normalized(z: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the (unbiased) standard deviation over samples of the L2-normalised rows of z (N, D).

    Equal to lightly's ``lightly.utils.debug.std_of_l2_normalized``; computed in float64 (float32 on MPS).
    """
    if z.ndim != 2:
        raise ValueError(f"z must be an (N, D) tensor, got shape {tuple(z.shape)}.")
    zn = F.normalize(z.detach().to(_spectral_dtype(z.device)), dim=1)
    return zn.std(dim=0).mean()


def alignment(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Wang & Isola's alignment with α = 2: mean over pairs of ‖u − v‖² of the L2-normalised rows."""
    dtype = _spectral_dtype(z1.device)
    return (F.normalize(z1.to(dtype), dim=1) - F.normalize(z2.to(dtype), dim=1)).pow(2).sum(1).mean()


def uniformity(z: torch.Tensor, t: float = UNIFORMITY_T, chunk: int = 512) -> torch.Tensor:
    """Wang & Isola's uniformity: log of the mean over distinct pairs of exp(−t‖x − y‖²), L2-normalised rows.

    Each term is exp(2t·x·y − 2t) (‖x − y‖² = 2 − 2x·y): one fp32 GEMM of the rows scaled by sqrt(2t) with the
    −2t folded in (``addmm``), ``exp_`` in place and a row sum, over the upper triangle of the pair matrix only (the
    off-diagonal blocks count twice, the i = j terms are zeroed), ``chunk`` rows at a time (O(chunk·N) memory); the
    row sums are added in float64. Every term lies in [exp(−4t), 1], so the fp32 terms keep ~1e-7 relative accuracy
    (tests: within 1e-6 of the float64 definition); ~7x faster than the elementwise form on one CPU thread.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}.")
    zn = F.normalize(z.detach().float(), dim=1).mul_(math.sqrt(2 * t))
    n = zn.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 rows, got {n}.")
    dtype = _spectral_dtype(z.device)
    offset = torch.tensor(-2 * t, dtype=zn.dtype, device=zn.device)
    diagonal = torch.zeros((), dtype=dtype, device=z.device)  # the blocks on the diagonal (both orders of a pair)
    upper = torch.zeros((), dtype=dtype, device=z.device)  # the blocks right of it (one order: counted twice)
    for start in range(0, n, chunk):
        rows = zn[start:start + chunk]
        block = torch.addmm(offset, rows, zn[start:].T).exp_()  # (c, n − start): exp(−t‖x − y‖²)
        c = rows.shape[0]
        block[:, :c].diagonal().zero_()  # the i = j terms
        diagonal += block[:, :c].sum(1).sum(dtype=dtype)
        upper += block[:, c:].sum(1).sum(dtype=dtype)
    return ((diagonal + 2 * upper) / (n * (n - 1))).log()


@torch.no_grad()
def spectral_record(z1: torch.Tensor, z2: torch.Tensor, temperature: float, *, monitor_temperature: float = 0.2,
                    negatives: torch.Tensor | None = None, keys: torch.Tensor | None = None,
                    batch_size: int | None = None, source: str = "z") -> dict[str, Any]:
    """One monitoring record of already gathered projections (the single implementation of the diagnostics).

    Args:
        z1, z2: (N, D) projections of the two views (any scale and float dtype; L2-normalised here in fp32, the
            spectra in float64). Row i of ``z1`` pairs with row i of ``z2``.
        temperature: τ of the gradient band (for non-contrastive losses: the band of InfoNCE at this τ).
        monitor_temperature: τ of the NT-Xent monitor ``ntxent``.
        negatives: (K, D) shared negatives (MoCo's queue); with ``keys`` (the newest batch's positives of its
            ``z1`` rows) the band is that of those queries against their keys and these negatives. Default: the
            batch's own negatives (the other 2B − 2 views, as in SimCLR).
        batch_size: The newest batch is the last ``batch_size`` rows (band, ``cos_views``, ``ntxent``); None: all.
        source: Where the projections came from (recorded as is).

    Returns:
        The record described in the module docstring (floats, ints, a bool and strings), plus ``reff_negatives``
        ("cov" of the negatives) with ``negatives``.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both be (N, D) with the same shape, got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}.")
    z1, z2 = (F.normalize(z.detach().float(), dim=1) for z in (z1, z2))
    z = torch.cat([z1, z2])
    last = z1.shape[0] if batch_size is None else min(batch_size, z1.shape[0])
    b1, b2 = z1[-last:], z2[-last:]
    extra = {}
    if negatives is not None:
        if keys is None:
            raise ValueError("pass the queries' keys with negatives (the band needs each query's positive).")
        negatives = F.normalize(negatives.detach().float(), dim=1)
        band = gradient_band(b1, F.normalize(keys.detach().float(), dim=1), negatives, temperature)
        extra["reff_negatives"] = float(effective_rank(negatives, "cov"))
    else:
        band = infonce_band(b1, b2, temperature)
    spectrum = spectrum_stats(z)  # reff_cov and reff_pr from one eigen-solve (equal to effective_rank's, to the bit)
    return {"reff_cov": float(spectrum["reff_cov"]), "reff_rankme": float(effective_rank(z, "rankme")), **extra,
            **{f"band_{k}": v for k, v in band.summary().items()},
            "cos_views": float((b1 * b2).sum(1).mean()),
            "ntxent": float(InfoNCELoss(monitor_temperature)(b1, b2)),
            "reff_pr": float(spectrum["reff_pr"]),
            "std_of_l2_normalized": float(std_of_l2_normalized(z)),
            "alignment": float(alignment(z1, z2)),
            "uniformity": float((uniformity(z1) + uniformity(z2)) / 2),
            "n_samples": z.shape[0], "dim": z.shape[1], "centered": True, "eps": RANKME_EPS, "source": source}


def _first_tensor(output: Any) -> torch.Tensor | None:
    """The projections in a module's output: the tensor itself, or the first tensor of a tuple/list/dict."""
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    return next((v for v in values if isinstance(v, torch.Tensor)), None)


class SpectralMonitor:
    """Watch the spectrum of the projections of any training loop (torch only).

    Args:
        temperature: τ of the InfoNCE gradient band (any loss: for non-contrastive ones it describes InfoNCE at τ).
        every: Compute one record every ``every`` steps (``step % every == 0``).
        window: Pairs kept in the ring buffer; a record covers the last ``window`` pairs of every process.
        alarm: None (no alarm), ``"warn"`` (``logging.warning``), ``"raise"`` (``CollapseError``) or ``"stop"``
            (sets ``should_stop``, which the host adapters turn into their own stop).
        min_rank_fraction: A record is collapsed when ``min(reff_cov, reff_rankme) / min(N, D)`` is below this
            (N = 2·pairs, D = dim) ...
        min_std_fraction: ... or when ``std_of_l2_normalized · sqrt(D)`` (about 1 for spread outputs) is below this.
        patience: The alarm fires after this many consecutive collapsed records.
        log: Called with each record (e.g. ``print``, ``spectral_ssl.integrations.trackers.tracker_log(acc)``).
        monitor_temperature: τ of the NT-Xent monitor ``ntxent``.

    Attributes:
        should_stop: True once a ``"stop"`` alarm fired (hosts read it).
        last_record: The newest record (None before the first).
    """

    def __init__(self, temperature: float = 0.2, every: int = 50, window: int = 4096,
                 alarm: str | None = None, *, min_rank_fraction: float = 0.05, min_std_fraction: float = 0.1,
                 patience: int = 3, log: Callable[[dict[str, Any]], Any] | None = None,
                 monitor_temperature: float = 0.2) -> None:
        for name, value, least in (("every", every, 1), ("window", window, 2), ("patience", patience, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                why = " (a record needs at least 2 pairs)" if name == "window" else ""
                raise ValueError(f"{name} must be an integer >= {least}{why}, got {value!r}.")
        if alarm not in ALARM_ACTIONS:
            raise ValueError(f"alarm must be one of {ALARM_ACTIONS}, got {alarm!r}.")
        for name, value in (("temperature", temperature), ("monitor_temperature", monitor_temperature)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}.")
        for name, value in (("min_rank_fraction", min_rank_fraction), ("min_std_fraction", min_std_fraction)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
        if log is not None and not callable(log):
            raise ValueError(f"log must be a callable taking the record dict, or None; got {log!r}.")
        self.temperature, self.monitor_temperature = float(temperature), float(monitor_temperature)
        self.every, self.window, self.alarm, self.patience = every, window, alarm, patience
        self.min_rank_fraction, self.min_std_fraction = float(min_rank_fraction), float(min_std_fraction)
        self.log = log
        self.source = "update"
        self.should_stop = False
        self.last_record: dict[str, Any] | None = None
        self._new_record = False
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._head = 0  # next row to write
        self._count = 0  # filled rows (<= window)
        self._last_batch = 0
        self._calls = 0
        self._streak = 0  # consecutive collapsed records

    # ---- the ring buffer -------------------------------------------------------------------------------------
    def _append(self, z1: torch.Tensor, z2: torch.Tensor) -> None:
        d = z1.shape[1]
        if self._buffers is None or self._buffers[0].device != z1.device:
            old = self._ordered() if self._buffers is not None else None
            self._buffers = tuple(torch.zeros(self.window, d, device=z1.device) for _ in range(2))
            self._head = self._count = 0
            if old is not None:
                self._write(old[0].to(z1.device), old[1].to(z1.device))
        if self._buffers[0].shape[1] != d:
            raise ValueError(f"the projections changed dimension from {self._buffers[0].shape[1]} to {d}.")
        self._write(z1, z2)
        self._last_batch = min(z1.shape[0], self.window)

    def _write(self, z1: torch.Tensor, z2: torch.Tensor) -> None:
        rows = min(z1.shape[0], self.window)
        z1, z2 = z1[-rows:], z2[-rows:]
        first = min(rows, self.window - self._head)
        for buf, z in zip(self._buffers, (z1, z2)):
            buf[self._head:self._head + first].copy_(z[:first])
            buf[:rows - first].copy_(z[first:])
        self._head = (self._head + rows) % self.window
        self._count = min(self._count + rows, self.window)

    def _ordered(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The filled rows, oldest first."""
        start = (self._head - self._count) % self.window
        index = (torch.arange(self._count, device=self._buffers[0].device) + start) % self.window
        return self._buffers[0][index], self._buffers[1][index]

    # ---- updates and records ---------------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, z1: torch.Tensor, z2: torch.Tensor, step: int | None = None,
               source: str | None = None) -> dict[str, Any] | None:
        """Add one step's pairs (call it on every process); every ``every`` steps return and log a record.

        Args:
            z1, z2: (B, D) projections of the two views (any dtype; stored in fp32, detached).
            step: The training step (``step % every == 0`` computes a record); None counts the calls to update.
            source: Where z comes from, kept in the records (default ``"update"``).

        Returns:
            The record on the main process at a record step, else None.

        Raises:
            CollapseError: with ``alarm="raise"``, on every process, when the alarm fires.
        """
        _check_step(step)  # before the pairs are added: a refused call changes nothing
        self.add(z1, z2, source)
        return self.end_step(step)

    @torch.no_grad()
    def add(self, z1: torch.Tensor, z2: torch.Tensor, source: str | None = None) -> None:
        """Add pairs to the window without counting a step (gradient accumulation: ``add`` every micro-batch, then
        ``end_step`` once per optimizer step; ``update`` is the two in one call)."""
        if not (isinstance(z1, torch.Tensor) and isinstance(z2, torch.Tensor)) or z1.ndim != 2 \
                or z1.shape != z2.shape or z1.shape[0] < 1 or z1.shape[1] < 1:
            shapes = [tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__ for z in (z1, z2)]
            raise ValueError(f"z1 and z2 must both be (B, D) tensors with the same shape, B >= 1 and D >= 1, got "
                             f"{shapes[0]} and {shapes[1]}.")
        if source is not None:
            self.source = source
        self._append(z1.detach().float(), z2.detach().float())

    def end_step(self, step: int | None = None) -> dict[str, Any] | None:
        """One training step is done: at ``step % every == 0`` compute and return a record (collective); None
        counts the steps."""
        _check_step(step)
        self._calls += 1
        step = self._calls if step is None else int(step)
        if step % self.every:
            return None
        return self.compute(step)

    @torch.no_grad()
    def compute(self, step: int | None = None) -> dict[str, Any] | None:
        """Gather the window from every process and compute a record now (collective: call it on every process).

        Returns the record on the main process (None elsewhere, and before any update).
        """
        world = dist.world_size()
        if world == 1:
            if self._buffers is None or self._count < 2:
                return None
            z1, z2 = self._ordered()
            last_total = self._last_batch
        else:  # every process must take part in the same collectives, whatever its own window holds
            device = self._buffers[0].device if self._buffers is not None else dist.collective_device()
            dim = self._buffers[0].shape[1] if self._buffers is not None else 0
            sizes = dist.gather(torch.tensor([[self._count, self._last_batch, dim]], device=device),
                                differentiable=False).tolist()
            counts, lasts = [c for c, _, _ in sizes], [b for _, b, _ in sizes]
            dim = max(d for _, _, d in sizes)
            if sum(counts) < 2:
                return None
            olds = [c - b for c, b in zip(counts, lasts)]
            rows_old, rows_new = max(olds), max(lasts)
            parts = []
            for z in (self._ordered() if self._buffers is not None else (torch.zeros(0, dim, device=device),) * 2):
                older, newest = z.split([self._count - self._last_batch, self._last_batch])
                padded = torch.zeros(rows_old + rows_new, dim, dtype=z.dtype, device=device)
                padded[:older.shape[0]] = older
                padded[rows_old:rows_old + newest.shape[0]] = newest
                full = dist.gather(padded, differentiable=False).view(world, rows_old + rows_new, dim)
                # every process's window, ordered [older rows of each rank; newest batch of each rank]: the last
                # rows are then the newest global batch (the band's); the spectra do not depend on the row order
                parts.append(torch.cat([full[r, :olds[r]] for r in range(world)]
                                       + [full[r, rows_old:rows_old + lasts[r]] for r in range(world)]))
            z1, z2 = parts
            last_total = sum(lasts)
        record, collapsed = None, False
        if dist.rank() == 0:
            step = self._calls if step is None else step
            batch = last_total
            finite = torch.isfinite(z1).all(1) & torch.isfinite(z2).all(1)
            left_out = int((~finite).sum())
            if left_out:  # a NaN/inf batch is left out of the record, said once, never raised
                batch = int(finite[-batch:].sum())
                z1, z2 = z1[finite], z2[finite]
                logger.warning("SpectralMonitor, step %d: %d of %d pairs in the window are not finite (NaN/inf) and "
                               "are left out of the record", step, left_out, finite.shape[0])
            if z1.shape[0] >= 2:
                batch = max(batch, 2)
                if z1.shape[0] == batch:  # one batch in the window: the band of all of it
                    batch = None
                record = {"step": step,
                          **spectral_record(z1, z2, self.temperature, monitor_temperature=self.monitor_temperature,
                                            batch_size=batch, source=self.source)}
                if left_out:
                    record["non_finite_pairs"] = left_out
                collapsed = self._collapsed(record)
        self._streak = collapse_streak(self._streak, collapsed, z1.device)  # every process on rank 0's verdict
        collapsed = self._streak > 0
        fired = self.alarm is not None and self._streak >= self.patience
        if record is not None:
            record.update(collapsed=collapsed, collapse_streak=self._streak)
            self.last_record, self._new_record = record, True
            if self.log is not None:
                self.log(record)
        if fired:
            self._fire(record)
        return record

    def _collapsed(self, record: dict[str, Any]) -> bool:
        return is_collapsed(record, self.min_rank_fraction, self.min_std_fraction)

    def _fire(self, record: dict[str, Any] | None) -> None:
        message = collapse_message(record, self._streak)
        if self.alarm == "warn":
            if dist.rank() == 0:
                logger.warning(message)
        elif self.alarm == "raise":
            raise CollapseError(message)
        else:
            if not self.should_stop and dist.rank() == 0:
                logger.warning("%s Stopping.", message)
            self.should_stop = True

    def take_record(self) -> dict[str, Any] | None:
        """The record computed since the last call (for hosts that log it themselves), else None."""
        if not self._new_record:
            return None
        self._new_record = False
        return self.last_record

    # ---- a forward hook: no loop edit ---------------------------------------------------------------------------
    def watch(self, module: nn.Module, views: str = "auto", *, record: bool = True) -> WatchHandle:
        """Feed the monitor from the outputs of ``module`` (the projector) in training mode.

        Args:
            module: Its output (or the first tensor of a tuple/list/dict output) is (rows, D) projections.
            views: ``"auto"``: two consecutive calls are the two views; a single call before the backward pass
                (a 2N-row output of both views, concatenated) is split into halves. ``"concat"``: every call is
                split. ``"pairs"``: consecutive calls are paired.
            record: True: each pair found is one step (``update``). False: pairs are only added (``add``) and the
                host calls ``end_step(step)`` once per optimizer step (gradient accumulation).

        Returns:
            A handle; ``handle.remove()`` removes the hook. ``handle.flush()`` (hosts, at the end of a step) splits
            a pending single call as ``"auto"`` does at the backward pass.
        """
        if views not in ("auto", "concat", "pairs"):
            raise ValueError(f"views must be 'auto', 'concat' or 'pairs', got {views!r}.")
        return WatchHandle(self, module, views, record)

    # ---- resume ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The ring buffer (oldest first, on the CPU), the call count and the alarm's state."""
        state: dict[str, Any] = {"calls": self._calls, "streak": self._streak, "should_stop": self.should_stop,
                                 "last_batch": self._last_batch, "window": self.window}
        if self._buffers is not None:
            z1, z2 = self._ordered()
            state.update(z1=z1.cpu(), z2=z2.cpu(), dim=self._buffers[0].shape[1])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` (the buffer goes to the CPU; it follows z's device at the next update). A
        monitor with a smaller ``window`` keeps the newest pairs."""
        missing = sorted({"calls", "streak", "should_stop", "last_batch"} - set(state))
        if missing:
            raise ValueError(f"not a SpectralMonitor.state_dict(): missing {', '.join(missing)}.")
        self._calls, self._streak = int(state["calls"]), int(state["streak"])
        self.should_stop, self._last_batch = bool(state["should_stop"]), int(state["last_batch"])
        self._buffers, self._head, self._count = None, 0, 0
        if "z1" in state:
            self._buffers = tuple(torch.zeros(self.window, int(state["dim"])) for _ in range(2))
            self._write(state["z1"].float(), state["z2"].float())
        self._last_batch = min(self._last_batch, self._count)


def _check_step(step: Any) -> None:
    """A step is None, an integer (Python, NumPy) or a one-element integer tensor; else one line naming ``step``."""
    integer = isinstance(step, numbers.Integral) and not isinstance(step, bool) or isinstance(step, torch.Tensor) and \
        step.numel() == 1 and not step.is_floating_point() and step.dtype != torch.bool
    if step is not None and not integer:
        raise ValueError(f"step must be an integer (the training step) or None, got {step!r}.")


class WatchHandle:
    """The forward hook of ``SpectralMonitor.watch``; ``remove()`` detaches it."""

    def __init__(self, monitor: SpectralMonitor, module: nn.Module, views: str, record: bool = True) -> None:
        self.monitor, self.views = monitor, views
        self._feed = monitor.update if record else monitor.add
        self.source = f"watch:{type(module).__name__}"
        self.pending: list[torch.Tensor] = []
        self._warned: set[str] = set()
        self._handle = module.register_forward_hook(self._hook)

    def _skip(self, reason: str, advice: str) -> None:
        """An output the monitor cannot use: said once per reason (never raised: training goes on)."""
        if reason not in self._warned:
            self._warned.add(reason)
            logger.warning("SpectralMonitor.watch(%s): %s are not recorded; %s", self.source[len("watch:"):], reason,
                           advice)

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        z = _first_tensor(output)
        if not module.training or z is None:
            return
        if z.ndim != 2:
            self._skip(f"outputs of shape {tuple(z.shape)} (not (B, D))", "watch the module whose output is the (B, "
                       "D) projection (e.g. after token pooling), or call update(z1, z2, step) with it")
            return
        if self.views == "concat":
            self._split(z.detach())
            return
        self.pending.append(z.detach())
        if len(self.pending) == 2:
            z1, z2 = self.pending
            self.pending = []
            if z1.shape == z2.shape:
                self._feed(z1, z2, source=self.source)
            else:
                self._skip(f"pairs of calls with different shapes ({tuple(z1.shape)}, {tuple(z2.shape)})", "the "
                           "monitor pairs two same-size views (multi-crop: call update(z1, z2, step) with the two "
                           "global views)")
        elif self.views == "auto" and z.requires_grad:
            z.register_hook(self._on_backward)

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.flush()

    def _split(self, z: torch.Tensor) -> None:
        half = z.shape[0] // 2
        if half >= 1 and z.shape[0] == 2 * half:
            self._feed(z[:half], z[half:], source=self.source)
        else:
            self._skip(f"outputs of {z.shape[0]} rows (not two equal views)", "pass views='pairs' when each view is "
                       "its own forward call")

    def flush(self) -> None:
        """End of a step: a single pending 2N-row output is split into its two views ("auto")."""
        if self.views == "auto" and len(self.pending) == 1:
            self._split(self.pending.pop())
        self.pending = []

    def remove(self) -> None:
        self._handle.remove()
        self.pending = []
