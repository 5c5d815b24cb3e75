"""The HF TrainerCallback in a real ``transformers.Trainer`` run of a tiny two-view model on the CPU."""

import pytest
import torch
from torch import nn

import spectral_ssl as ssl
from spectral_ssl.integrations.transformers import SpectralMonitorCallback
from tests.integrations.test_lightning import Collapse


class TwoViews(nn.Module):
    """Forward computes both views with one 2N-row projector call and returns the InfoNCE loss (HF convention)."""

    def __init__(self, collapsed: bool = False):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(12, 16), nn.ReLU())
        self.projector = nn.Sequential(nn.Linear(16, 8), *([Collapse()] if collapsed else []))
        self.loss_fn = ssl.losses.InfoNCELoss(0.2)

    def forward(self, x):
        views = torch.cat([x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)])
        z = self.projector(self.backbone(views))
        return {"loss": self.loss_fn(*z.chunk(2))}


class Rows(torch.utils.data.Dataset):
    def __init__(self):
        self.x = torch.randn(64, 12)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}


def train(model, callback, tmp_path, max_steps=6):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=max_steps, per_device_train_batch_size=16,
                             learning_rate=0.1, report_to=[], use_cpu=True, save_strategy="no", logging_steps=1000,
                             disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Rows(), callbacks=[callback])
    callback.set_trainer(trainer)
    trainer.train()
    return trainer


def test_trainer_run_logs_records_through_trainer_log(tmp_path):
    callback = SpectralMonitorCallback(temperature=0.2, every=3, window=64)
    trainer = train(TwoViews(), callback, tmp_path)
    rows = [row for row in trainer.state.log_history if "spectral/reff_cov" in row]
    assert [row["step"] for row in rows] == [3, 6]
    record = callback.monitor.last_record
    assert record["source"] == "watch:Sequential" and record["n_samples"] == 2 * 64  # the 2N rows were split
    assert rows[-1]["spectral/reff_cov"] == pytest.approx(record["reff_cov"])
    assert callback.handle is None


def test_a_collapsed_run_stops_through_control(tmp_path):
    callback = SpectralMonitorCallback(every=1, window=64, alarm="stop", patience=2)
    trainer = train(TwoViews(collapsed=True), callback, tmp_path, max_steps=20)
    assert callback.monitor.should_stop and trainer.state.global_step == 2


def test_gradient_accumulation_decides_once_per_optimizer_step(tmp_path):
    from transformers import Trainer, TrainingArguments

    records = []
    callback = SpectralMonitorCallback(ssl.SpectralMonitor(every=2, window=64, log=records.append))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8,
                             gradient_accumulation_steps=2, learning_rate=0.1, report_to=[], use_cpu=True,
                             save_strategy="no", logging_steps=1000, disable_tqdm=True)
    trainer = Trainer(model=TwoViews(), args=args, train_dataset=Rows(), callbacks=[callback])
    trainer.train()
    assert [r["step"] for r in records] == [2, 4]
    assert [row["step"] for row in trainer.state.log_history if "spectral/reff_cov" in row] == [2, 4]


def test_the_monitor_state_resumes_with_the_trainer_checkpoint(tmp_path, caplog):
    from transformers import Trainer, TrainingArguments

    def trainer_for(callback, max_steps):
        args = TrainingArguments(output_dir=str(tmp_path), max_steps=max_steps, per_device_train_batch_size=16,
                                 learning_rate=0.1, report_to=[], use_cpu=True, save_strategy="steps", save_steps=2,
                                 logging_steps=1000, disable_tqdm=True)
        return Trainer(model=TwoViews(), args=args, train_dataset=Rows(), callbacks=[callback])

    first = SpectralMonitorCallback(every=100, window=64, alarm="stop", patience=5)
    trainer_for(first, 2).train()
    saved = first.monitor.state_dict()
    assert (tmp_path / "checkpoint-2" / "spectral_monitor_0.pt").is_file() and saved["calls"] == 2
    resumed = SpectralMonitorCallback(every=100, window=64, alarm="stop", patience=5)
    trainer_for(resumed, 3).train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    state = resumed.monitor.state_dict()
    assert state["calls"] == 3 and torch.equal(state["z1"][:32], saved["z1"])  # the window went on from step 2
    (tmp_path / "checkpoint-3" / "spectral_monitor_0.pt").unlink()
    fresh = SpectralMonitorCallback(every=100, window=64)
    with caplog.at_level("WARNING", logger="spectral_ssl.integrations.transformers"):
        trainer_for(fresh, 4).train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))
    assert "resumed at step 3 without the spectral monitor's state" in caplog.text
    assert "pass SpectralMonitorCallback(resume_from=<that checkpoint folder>)" in caplog.text


def test_a_checkpoint_outside_output_dir_resumes_the_monitor_with_resume_from(tmp_path):
    from transformers import Trainer, TrainingArguments

    def trainer_for(callback, max_steps, out):
        args = TrainingArguments(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=16,
                                 learning_rate=0.1, report_to=[], use_cpu=True, save_strategy="steps", save_steps=2,
                                 logging_steps=1000, disable_tqdm=True)
        return Trainer(model=TwoViews(), args=args, train_dataset=Rows(), callbacks=[callback])

    first = SpectralMonitorCallback(every=100, window=64)
    trainer_for(first, 2, tmp_path / "first").train()
    saved = first.monitor.state_dict()
    checkpoint = tmp_path / "first" / "checkpoint-2"  # another run's folder: not this run's output_dir
    resumed = SpectralMonitorCallback(every=100, window=64, resume_from=checkpoint)
    trainer_for(resumed, 3, tmp_path / "second").train(resume_from_checkpoint=str(checkpoint))
    state = resumed.monitor.state_dict()
    assert state["calls"] == 3 and torch.equal(state["z1"][:32], saved["z1"])  # the window went on from step 2
