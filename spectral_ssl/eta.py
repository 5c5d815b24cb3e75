"""An estimate of a run's remaining time, measured on its own first steps."""

from __future__ import annotations

import time
from collections.abc import Callable


class EtaClock:
    """Times the steps after a short warm-up (this process's first ``warmup`` steps: allocations, first decodes)
    until ``steps`` steps or ``seconds`` have passed, then calls ``on_eta(seconds_left, img_per_s)`` once: the wall
    time per step (data, selection, logging included) times the steps left. Online probes, checkpoints and the export
    are not in it. Runs with fewer than ``warmup + 2`` steps to go get no estimate."""

    def __init__(self, first_step: int, total_steps: int, on_eta: Callable[[float, float], None] | None,
                 warmup: int = 2, steps: int = 10, seconds: float = 10.0) -> None:
        self.on_eta, self.total, self.steps, self.seconds = on_eta, total_steps, steps, seconds
        self.start_step = first_step + warmup
        self.start, self.images = None, 0

    def stepped(self, step: int, images: int) -> None:
        """``step`` (1-based: steps done so far) just ended and trained on ``images`` images (all processes)."""
        if self.on_eta is None or step < self.start_step:
            return
        if self.start is None:  # the warm-up's last step just ended
            self.start = time.perf_counter()
            return
        self.images += images
        elapsed, timed = time.perf_counter() - self.start, step - self.start_step
        if timed >= self.steps or elapsed >= self.seconds or step + 1 >= self.total:
            if step < self.total:
                self.on_eta(elapsed / timed * (self.total - step), self.images / elapsed)
            self.on_eta = None
