"""An HF ``transformers.TrainerCallback`` that runs a ``SpectralMonitor`` inside ``Trainer.train``.

    callback = SpectralMonitorCallback(temperature=0.2, every=50, alarm="stop")
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    callback.set_trainer(trainer)   # optional: records then go through trainer.log (every report_to integration)
    trainer.train()

A forward hook on the model's projector is set in ``on_train_begin`` (``projector=`` a dotted name, default: the first
of ``projection_head``, ``projector``, ...): a 2N-row output is split into the two views, two calls are paired. A
``"stop"`` alarm sets ``control.should_training_stop``. Without ``set_trainer`` records are appended to
``state.log_history``. A record is decided once per optimizer step (after ``gradient_accumulation_steps`` forwards),
at ``state.global_step``. The monitor's state is saved in each Trainer checkpoint (``spectral_monitor_<process>.pt``)
and restored by ``trainer.train(resume_from_checkpoint=...)`` from ``output_dir/checkpoint-<step>``, or from the folder
named by ``resume_from=`` (a callback never sees the path given to ``train``: pass the same one when the checkpoint
lies outside ``output_dir``). transformers is imported when the class is first used, never by ``import
spectral_ssl``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from spectral_ssl.integrations import check_arguments, find_projector, lazy_class, loggable
from spectral_ssl.monitor import SpectralMonitor

logger = logging.getLogger(__name__)


def state_path(args: Any, step: int, checkpoint: str | Path | None = None) -> Path:
    """Where the monitor's state of process ``args.process_index`` goes in the Trainer's checkpoint of ``step``
    (``output_dir/checkpoint-<step>``), or in the checkpoint folder ``checkpoint``."""
    folder = Path(checkpoint) if checkpoint is not None else Path(args.output_dir) / f"checkpoint-{step}"
    return folder / f"spectral_monitor_{args.process_index}.pt"


def _build() -> type:
    from transformers import TrainerCallback

    class SpectralMonitorCallback(TrainerCallback):
        """Monitor the projections' spectrum during ``transformers.Trainer.train``.

        Args:
            monitor: A ``SpectralMonitor``; default: one built from ``monitor_kwargs``.
            projector: Dotted name of the submodule to hook; default: found by name.
            trainer: The ``Trainer`` whose ``log`` records go through (or call ``set_trainer`` later).
            prefix: Prepended to the logged metric names.
            resume_from: The checkpoint folder passed to ``trainer.train(resume_from_checkpoint=...)``, when it is
                not ``output_dir/checkpoint-<step>`` (the monitor's state is read from there).
            **monitor_kwargs: ``SpectralMonitor`` arguments (temperature, every, window, alarm, ...).
        """

        def __init__(self, monitor: SpectralMonitor | None = None, *, projector: str | None = None,
                     trainer: Any = None, prefix: str = "spectral/", resume_from: str | Path | None = None,
                     **monitor_kwargs: Any) -> None:
            if monitor is not None and monitor_kwargs:
                raise ValueError("pass either a monitor or SpectralMonitor arguments, not both.")
            check_arguments(monitor, prefix)
            self.monitor = monitor if monitor is not None else SpectralMonitor(**monitor_kwargs)
            self.projector, self.trainer, self.prefix, self.resume_from = projector, trainer, prefix, resume_from
            self.handle = None

        def set_trainer(self, trainer: Any) -> None:
            self.trainer = trainer

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            module = None if model is None else find_projector(model, self.projector)
            if module is None:
                raise ValueError("SpectralMonitorCallback found no projector to watch: name it with "
                                 "projector='submodule.path'.")
            self.handle = self.monitor.watch(module, record=False)  # pairs added per forward, decided per step
            if state.global_step > 0:  # resumed: the Trainer has restored its state from checkpoint-<step>
                path = state_path(args, state.global_step, self.resume_from)
                if path.is_file():
                    self.monitor.load_state_dict(torch.load(path, weights_only=True))
                else:
                    # a TrainerCallback never sees the resume path: a checkpoint outside output_dir is not found
                    logger.warning("resumed at step %d without the spectral monitor's state (no %s): its window and "
                                   "alarm streak start empty; resuming from a checkpoint outside output_dir, pass "
                                   "SpectralMonitorCallback(resume_from=<that checkpoint folder>)", state.global_step,
                                   path)

        def on_save(self, args, state, control, **kwargs):
            path = state_path(args, state.global_step)
            if path.parent.is_dir():  # beside the Trainer's own checkpoint files
                torch.save(self.monitor.state_dict(), path)

        def on_step_end(self, args, state, control, **kwargs):
            # once per optimizer step, after gradient_accumulation_steps forwards
            if self.handle is not None:
                self.handle.flush()
            self.monitor.end_step(state.global_step)
            record = self.monitor.take_record()
            if record is not None:
                logs = loggable(record, self.prefix)
                if self.trainer is not None:
                    self.trainer.log(logs)
                else:
                    state.log_history.append({**logs, "step": state.global_step})
            if self.monitor.should_stop:
                control.should_training_stop = True
            return control

        def on_train_end(self, args, state, control, **kwargs):
            if self.handle is not None:
                self.handle.remove()
                self.handle = None

    return SpectralMonitorCallback


__getattr__ = lazy_class(__name__, "SpectralMonitorCallback", _build)  # import time: no transformers
