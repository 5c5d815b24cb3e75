"""Records reach accelerate's trackers through ``tracker_log`` (duck-typed: the library never imports accelerate)."""

import pytest
import torch

from spectral_ssl import SpectralMonitor
from spectral_ssl.integrations import find_projector, loggable
from spectral_ssl.integrations.trackers import tracker_log


class FakeAccelerator:
    def __init__(self):
        self.calls = []

    def log(self, values, step=None):
        self.calls.append((values, step))


def test_records_go_to_accelerator_log_with_their_step():
    accelerator = FakeAccelerator()
    monitor = SpectralMonitor(every=2, window=32, log=tracker_log(accelerator, prefix="ssl/"))
    for step in range(1, 5):
        monitor.update(torch.randn(8, 4), torch.randn(8, 4), step)
    assert [step for _, step in accelerator.calls] == [2, 4]
    values = accelerator.calls[-1][0]
    assert values["ssl/reff_cov"] == pytest.approx(monitor.last_record["reff_cov"])
    assert all(isinstance(v, float) for v in values.values()) and "ssl/source" not in values
    with pytest.raises(TypeError, match="log"):
        tracker_log(object())


def test_a_real_accelerator_logs_to_its_trackers(tmp_path):
    from accelerate import Accelerator
    from accelerate.tracking import GeneralTracker

    class ListTracker(GeneralTracker):
        name, requires_logging_directory = "list", False

        def __init__(self):
            super().__init__()
            self.rows = []

        @property
        def tracker(self):
            return self.rows

        def store_init_configuration(self, values):
            pass

        def log(self, values, step=None, **kwargs):
            self.rows.append((step, values))

    tracker = ListTracker()
    accelerator = Accelerator(cpu=True, log_with=tracker, project_dir=str(tmp_path))
    accelerator.init_trackers("monitor")
    monitor = SpectralMonitor(every=1, window=16, log=tracker_log(accelerator))
    monitor.update(torch.randn(8, 4), torch.randn(8, 4), 7)
    accelerator.end_training()
    assert tracker.rows[0][0] == 7 and "spectral/reff_rankme" in tracker.rows[0][1]


def test_find_projector_by_name_or_by_convention():
    model = torch.nn.Module()
    model.backbone, model.projection_head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert find_projector(model) is model.projection_head
    assert find_projector(model, "backbone") is model.backbone
    assert find_projector(torch.nn.Linear(2, 2)) is None
    assert loggable({"step": 3, "reff_cov": 2, "centered": True, "source": "x"}) == {
        "spectral/reff_cov": 2.0, "spectral/centered": 1.0}


def test_an_accelerator_without_trackers_is_said_once_and_a_bad_prefix_refused(caplog):
    from spectral_ssl.integrations.trackers import tracker_log

    class NoTrackers:
        trackers = []

        def __init__(self):
            self.calls = []

        def log(self, values, step=None):
            self.calls.append(step)

    acc = NoTrackers()
    log = tracker_log(acc)
    with caplog.at_level("WARNING", logger="spectral_ssl.integrations.trackers"):
        log({"step": 1, "reff_cov": 2.0})
        log({"step": 2, "reff_cov": 2.5})
    assert caplog.text.count("the accelerator has no tracker") == 1 and acc.calls == [1, 2]
    with pytest.raises(ValueError, match="prefix must be a string"):
        tracker_log(acc, prefix=None)
