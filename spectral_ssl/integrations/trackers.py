"""Send monitor records to accelerate's trackers (TensorBoard, W&B, trackio, ...) without importing accelerate.

    accelerator = Accelerator(log_with="tensorboard", project_dir="runs"); accelerator.init_trackers("ssl")
    monitor = SpectralMonitor(log=tracker_log(accelerator))

Anything with a ``log(values: dict, step: int)`` method works (duck typing); accelerate's ``Accelerator.log`` already
logs on the main process only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from spectral_ssl.integrations import check_arguments, loggable

__all__ = ["loggable", "tracker_config", "tracker_log"]

logger = logging.getLogger(__name__)


def tracker_log(accelerator: Any, prefix: str = "spectral/") -> Callable[[dict[str, Any]], None]:
    """A ``log=`` callable for ``SpectralMonitor`` that calls ``accelerator.log(numbers, step=record["step"])``.

    Args:
        accelerator: An ``accelerate.Accelerator`` with trackers initialised, or any object with that ``log``.
        prefix: Prepended to every metric name.
    """
    if not callable(getattr(accelerator, "log", None)):
        raise TypeError(f"tracker_log needs an object with a log(values, step=) method (an accelerate.Accelerator), "
                        f"got {type(accelerator).__name__}.")
    check_arguments(None, prefix)
    warned = False

    def log(record: dict[str, Any]) -> None:
        nonlocal warned
        if getattr(accelerator, "trackers", None) == [] and not warned:  # accelerate only warns at init
            warned = True
            logger.warning("tracker_log: the accelerator has no tracker, so the spectral records go nowhere; pass "
                           "log_with= a tracker that is installed (pip install 'spectral_ssl[trackers]' gives "
                           "TensorBoard; wandb and trackio install on their own) and call init_trackers().")
        accelerator.log(loggable(record, prefix), step=record["step"])

    return log


def tracker_config(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """A flat run configuration as the values every tracker's ``store_init_configuration`` takes (TensorBoard's
    hparams refuse lists, mappings and None): numbers, strings and booleans as they are, anything else as JSON."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in config.items()}
