"""A Lightning ``Callback`` that runs a ``SpectralMonitor`` (``pip install spectral_ssl[lightning]``).

    from spectral_ssl.integrations.lightning import SpectralMonitorCallback
    trainer = L.Trainer(callbacks=[SpectralMonitorCallback(temperature=0.2, every=50, alarm="stop")])

The projections come from ``outputs[key]`` when ``training_step`` returns ``{"loss": loss, key: (z1, z2)}``; else from
a forward hook on the module's projector (``projector=`` a dotted name, default: the first of ``projection_head``,
``projector``, ...). Records go to ``trainer.callback_metrics`` (``pl_module.log_dict``) and, at the record's step
whatever ``log_every_n_steps`` is, to every logger of the trainer, under ``spectral/``; a ``"stop"`` alarm sets
``trainer.should_stop``. A record is decided once per optimizer step (``accumulate_grad_batches`` micro-batches all
add their pairs), at ``trainer.global_step``. The callback's state (the monitor's) is saved in Lightning checkpoints.
Lightning is imported when the class is first used, never by ``import spectral_ssl``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from spectral_ssl import dist
from spectral_ssl.integrations import check_arguments, find_projector, lazy_class, loggable
from spectral_ssl.monitor import SpectralMonitor

logger = logging.getLogger(__name__)


def _callback_base() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError:
            raise ImportError("the Lightning callback needs Lightning: pip install 'spectral_ssl[lightning]'.") \
                from None
    return Callback


def _build() -> type:
    class SpectralMonitorCallback(_callback_base()):
        """Monitor the projections' spectrum during ``Trainer.fit``.

        Args:
            monitor: A ``SpectralMonitor``; default: one built from ``monitor_kwargs``.
            key: The key of ``(z1, z2)`` in the dict ``training_step`` returns (used when present).
            projector: Dotted name of the submodule to hook when ``training_step`` does not return ``key``.
            prefix: Prepended to the logged metric names.
            **monitor_kwargs: ``SpectralMonitor`` arguments (temperature, every, window, alarm, ...).
        """

        def __init__(self, monitor: SpectralMonitor | None = None, *, key: str = "z", projector: str | None = None,
                     prefix: str = "spectral/", **monitor_kwargs: Any) -> None:
            super().__init__()
            if monitor is not None and monitor_kwargs:
                raise ValueError("pass either a monitor or SpectralMonitor arguments, not both.")
            check_arguments(monitor, prefix)
            self.monitor = monitor if monitor is not None else SpectralMonitor(**monitor_kwargs)
            self.key, self.projector, self.prefix = key, projector, prefix
            self.handle = None
            self._before_hook: dict[str, Any] | None = None
            self._step = 0  # the optimizer step the last micro-batch belonged to

        @property
        def state_key(self) -> str:
            """The class name alone for the default ``key``/``projector``/``prefix`` (the checkpoints of earlier
            versions load), else with those that differ: two callbacks (two projectors) keep their own states."""
            given = {name: value for name, value, default in (("key", self.key, "z"), ("projector", self.projector,
                     None), ("prefix", self.prefix, "spectral/")) if value != default}
            return self._generate_state_key(**given) if given else super().state_key

        def on_train_start(self, trainer, pl_module) -> None:
            self._step = trainer.global_step
            module = find_projector(pl_module, self.projector)
            if module is not None:
                self._before_hook = self.monitor.state_dict()  # undone if training_step returns the views
                self.handle = self.monitor.watch(module, record=False)

        def _views(self, value: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if isinstance(value, torch.Tensor) and value.ndim == 2 and value.shape[0] % 2 == 0 and value.shape[0]:
                return value.chunk(2)  # both views concatenated, as the hook splits them
            if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, torch.Tensor) for v in value):
                return value[0], value[1]
            what = (f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else
                    f"a {type(value).__name__}" + (f" of {len(value)}" if isinstance(value, (tuple, list)) else ""))
            raise ValueError(f"outputs[{self.key!r}] must be the two views (z1, z2), each (B, D), or both "
                             f"concatenated as one (2B, D) tensor; training_step returned {what}.")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            # every micro-batch adds its pairs; a record is decided once per optimizer step (gradient accumulation)
            if isinstance(outputs, Mapping) and self.key in outputs:
                if self.handle is not None:  # the returned views take precedence over the hook
                    self.handle.remove()
                    self.handle = None
                    self.monitor.load_state_dict(self._before_hook)
                z1, z2 = self._views(outputs[self.key])
                self.monitor.add(z1, z2, source=f"outputs[{self.key!r}]")
            elif self.handle is not None:
                self.handle.flush()
            else:
                raise ValueError(f"SpectralMonitorCallback found no projections: return {{'loss': loss, "
                                 f"{self.key!r}: (z1, z2)}} from training_step, or name the projector submodule "
                                 "with projector='...'.")
            if trainer.global_step == self._step:  # inside an accumulation window: no optimizer step yet
                return
            self._step = trainer.global_step
            self.monitor.end_step(trainer.global_step)
            record = self.monitor.take_record()
            if record is not None:
                metrics = loggable(record, self.prefix)
                # callback_metrics (EarlyStopping/ModelCheckpoint can watch them) and, at this step, every logger
                pl_module.log_dict(metrics, on_step=True, on_epoch=False, logger=False, rank_zero_only=True)
                for logger in trainer.loggers:
                    logger.log_metrics(metrics, step=trainer.global_step)
            if self.monitor.should_stop:
                trainer.should_stop = True

        def on_train_end(self, trainer, pl_module) -> None:
            if self.handle is not None:
                self.handle.remove()
                self.handle = None

        def state_dict(self) -> dict[str, Any]:
            # Lightning writes the checkpoint from rank 0 only, but calls this on every rank (dump_checkpoint):
            # gather each process's window so that every rank resumes its own
            return {"ranks": dist.gather_objects(self.monitor.state_dict())}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            if "ranks" not in state_dict:  # a checkpoint of one process's state (older versions)
                self.monitor.load_state_dict(state_dict)
                return
            ranks, rank = state_dict["ranks"], dist.rank()
            if len(ranks) != dist.world_size():
                logger.warning("the checkpoint holds the spectral monitor's state of %d processes, this run has %d: "
                               "each process starts from process %d's window", len(ranks), dist.world_size(),
                               rank % len(ranks))
            self.monitor.load_state_dict(ranks[rank % len(ranks)])

    return SpectralMonitorCallback


__getattr__ = lazy_class(__name__, "SpectralMonitorCallback", _build)  # import time: no Lightning
