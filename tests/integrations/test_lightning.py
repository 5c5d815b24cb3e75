"""The Lightning callback in a real ``Trainer.fit`` of a tiny SimCLR module on the CPU."""

import pytest
import torch
from torch import nn

import spectral_ssl as ssl

L = pytest.importorskip("lightning.pytorch")
from spectral_ssl.integrations.lightning import SpectralMonitorCallback  # noqa: E402


class Collapse(nn.Module):
    """Every output the same vector, up to tiny noise: a collapsed projector."""

    def forward(self, z):
        return 1 + 1e-5 * z


class TinySimCLR(L.LightningModule):
    """lightly-style layout (backbone + projection_head); ``return_z`` returns the views under ``"z"``."""

    def __init__(self, return_z: bool = False, collapsed: bool = False):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(12, 16), nn.ReLU())
        self.projection_head = nn.Sequential(nn.Linear(16, 8), *([Collapse()] if collapsed else []))
        self.loss_fn = ssl.losses.InfoNCELoss(0.2)
        self.return_z = return_z

    def forward(self, x):
        return self.projection_head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        z1, z2 = self(x + 0.1 * torch.randn_like(x)), self(x + 0.1 * torch.randn_like(x))
        loss = self.loss_fn(z1, z2)
        return {"loss": loss, "z": (z1, z2)} if self.return_z else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(module, callback, max_steps=6, **trainer_kwargs):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 12)), batch_size=16)
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, callbacks=[callback],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        **trainer_kwargs)
    trainer.fit(module, data)
    return trainer


@pytest.mark.parametrize("return_z", [True, False])
def test_fit_logs_records_from_outputs_or_the_hook(return_z, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    callback = SpectralMonitorCallback(temperature=0.2, every=2, window=64)
    trainer = fit(TinySimCLR(return_z=return_z), callback, logger=CSVLogger(tmp_path, name="run"))
    record = callback.monitor.last_record
    assert record["source"] == ("outputs['z']" if return_z else "watch:Sequential")
    # 96 pairs seen, the window keeps the last 64
    assert record["step"] == 6 and record["n_samples"] == 2 * 64 and record["band_containment"] == 1.0
    assert trainer.callback_metrics["spectral/reff_cov"] == pytest.approx(record["reff_cov"])
    metrics = (tmp_path / "run" / "version_0" / "metrics.csv").read_text()
    assert "spectral/reff_rankme" in metrics.splitlines()[0]
    assert callback.handle is None  # the hook is gone after training


def test_a_collapsed_run_stops_through_trainer_should_stop():
    callback = SpectralMonitorCallback(every=1, window=64, alarm="stop", patience=2)
    trainer = fit(TinySimCLR(collapsed=True), callback, max_steps=20, logger=False)
    assert callback.monitor.should_stop and trainer.global_step == 2


def test_the_monitor_state_resumes_from_a_lightning_checkpoint(tmp_path):
    first = SpectralMonitorCallback(every=100, window=64)
    trainer = fit(TinySimCLR(return_z=True), first, max_steps=4, logger=False)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    resumed = SpectralMonitorCallback(every=100, window=64)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 12)), batch_size=16)
    trainer = L.Trainer(max_steps=5, accelerator="cpu", devices=1, callbacks=[resumed], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TinySimCLR(return_z=True), data, ckpt_path=tmp_path / "last.ckpt")
    state = resumed.monitor.state_dict()
    assert state["calls"] == 5 and torch.equal(state["z1"][:64 - 16], first.monitor.state_dict()["z1"][16:])
