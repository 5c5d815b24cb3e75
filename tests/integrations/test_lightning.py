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


@pytest.mark.parametrize("return_z", [True, False])
def test_gradient_accumulation_decides_once_per_optimizer_step(return_z, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    records = []
    callback = SpectralMonitorCallback(ssl.SpectralMonitor(every=2, window=64, log=records.append))
    fit(TinySimCLR(return_z=return_z), callback, max_steps=4, accumulate_grad_batches=2,
        logger=CSVLogger(tmp_path, name="run"))
    assert [r["step"] for r in records] == [2, 4]  # not at step 0, not twice under one step, not per micro-batch
    assert records[-1]["n_samples"] == 2 * 64  # 4 steps x 2 micro-batches x 16 pairs, the window keeps 64
    lines = (tmp_path / "run" / "version_0" / "metrics.csv").read_text().splitlines()
    step = lines[0].split(",").index("step")
    assert [row.split(",")[step] for row in lines[1:]] == ["2", "4"]


class ReturnsZ(TinySimCLR):
    def __init__(self, make_z):
        super().__init__(return_z=True)
        self.make_z = make_z

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        return {"loss": out["loss"], "z": self.make_z(*out["z"])}


def test_views_returned_concatenated_count_as_the_pair():
    torch.manual_seed(0)
    pair = SpectralMonitorCallback(every=2, window=64)
    fit(ReturnsZ(lambda z1, z2: (z1, z2)), pair, max_steps=2, logger=False)
    torch.manual_seed(0)
    concat = SpectralMonitorCallback(every=2, window=64)
    fit(ReturnsZ(lambda z1, z2: torch.cat([z1, z2])), concat, max_steps=2, logger=False)
    assert concat.monitor.last_record["reff_cov"] == pair.monitor.last_record["reff_cov"]


@pytest.mark.parametrize("make_z,fragment", [
    (lambda z1, z2: (z1,), "training_step returned a tuple of 1"),
    (lambda z1, z2: [z1, z2, z1], "training_step returned a list of 3"),
    (lambda z1, z2: {"a": z1, "b": z2}, "training_step returned a dict"),
    (lambda z1, z2: torch.cat([z1, z2])[:-1], r"training_step returned a tensor of shape \(31, 8\)"),
])
def test_malformed_views_are_one_line_naming_the_output(make_z, fragment):
    with pytest.raises(ValueError, match=r"outputs\['z'\] must be the two views \(z1, z2\).*" + fragment):
        fit(ReturnsZ(make_z), SpectralMonitorCallback(every=2, window=64), max_steps=1, logger=False)


def test_bad_callback_arguments_are_one_line():
    with pytest.raises(ValueError, match="monitor must be a spectral_ssl.SpectralMonitor"):
        SpectralMonitorCallback({"every": 1})
    with pytest.raises(ValueError, match="prefix must be a string"):
        SpectralMonitorCallback(prefix=None)
    with pytest.raises(ValueError, match=r"projector='model.nope': TinySimCLR has no submodule 'model.nope'; its "
                                         r"submodules include \['backbone'"):
        fit(TinySimCLR(), SpectralMonitorCallback(projector="model.nope"), max_steps=1, logger=False)


def test_every_process_resumes_its_own_window(monkeypatch):
    """Lightning writes the checkpoint from rank 0 only: the callback's state must hold every rank's window (was:
    rank 0's, so that rank 1 resumed with rank 0's pairs)."""
    from spectral_ssl import dist

    callbacks = [SpectralMonitorCallback(every=100, window=8) for _ in range(2)]
    for r, callback in enumerate(callbacks):
        callback.monitor.update(torch.full((4, 3), float(r)), torch.full((4, 3), float(r)), 1)
    monkeypatch.setattr(dist, "gather_objects", lambda obj: [c.monitor.state_dict() for c in callbacks])
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    state = callbacks[0].state_dict()  # what rank 0 writes
    monkeypatch.setattr(dist, "rank", lambda: 1)
    resumed = SpectralMonitorCallback(every=100, window=8)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.monitor.state_dict()["z1"], torch.ones(4, 3))  # rank 1's own pairs


def test_two_callbacks_keep_their_own_states_and_the_default_key_is_the_class_name(tmp_path):
    # a second callback on another projector (or prefix) gets its own state key; the default stays the class name
    # (what checkpoints of earlier versions hold)
    assert SpectralMonitorCallback().state_key == SpectralMonitorCallback.__qualname__
    outputs = SpectralMonitorCallback(every=100, window=64)
    hooked = SpectralMonitorCallback(every=100, window=64, projector="projection_head", prefix="head/")
    assert outputs.state_key != hooked.state_key
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 12)), batch_size=16)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, callbacks=[outputs, hooked], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TinySimCLR(return_z=True), data)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]
    assert set(saved) == {outputs.state_key, hooked.state_key}
