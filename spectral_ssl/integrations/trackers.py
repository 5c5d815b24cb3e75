"""Send monitor records to accelerate's trackers (TensorBoard, W&B, trackio, ...) without importing accelerate.

    accelerator = Accelerator(log_with="tensorboard", project_dir="runs"); accelerator.init_trackers("ssl")
    monitor = SpectralMonitor(log=tracker_log(accelerator))

Anything with a ``log(values: dict, step: int)`` method works (duck typing); accelerate's ``Accelerator.log`` already
logs on the main process only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spectral_ssl.integrations import loggable


def tracker_log(accelerator: Any, prefix: str = "spectral/") -> Callable[[dict[str, Any]], None]:
    """A ``log=`` callable for ``SpectralMonitor`` that calls ``accelerator.log(numbers, step=record["step"])``.

    Args:
        accelerator: An ``accelerate.Accelerator`` with trackers initialised, or any object with that ``log``.
        prefix: Prepended to every metric name.
    """
    if not callable(getattr(accelerator, "log", None)):
        raise TypeError(f"tracker_log needs an object with a log(values, step=) method (an accelerate.Accelerator), "
                        f"got {type(accelerator).__name__}.")

    def log(record: dict[str, Any]) -> None:
        accelerator.log(loggable(record, prefix), step=record["step"])

    return log
