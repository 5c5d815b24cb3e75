import json

import pytest
import torch
import yaml

from spectral_ssl import SpectralSSL, hub


@pytest.fixture()
def export(tmp_path):
    model = SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8).eval()
    model.data_config.update(input_size=(3, 32, 32), crop_pct=1.0)
    model.metadata = {"loss": "infonce", "selection": "random", "whitening": "none", "dataset": "data/fmnist",
                      "split": "train", "steps": 7, "epochs": 0.5, "global_batch": 32,
                      "effective_rank": {"value": 12.34, "estimator": "cov", "n_samples": 100, "dim": 96,
                                         "centered": True, "eps": 1e-12},
                      "config": {"backbone": "test_resnet", "lr": 0.001}}
    model.save_pretrained(tmp_path)
    return model, tmp_path


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_card_yaml_parses_and_states_training_facts(export):
    _, path = export
    card = (path / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["library_name"] == "timm" and meta["pipeline_tag"] == "image-feature-extraction"
    assert {"spectral-ssl", "self-supervised", "infonce", "selection-random"} <= set(meta["tags"])
    for fact in ("fmnist", "12.34", "| 7 |", "test_resnet", "local-dir:"):
        assert fact in card
    assert "data/fmnist" not in card and "datasets" not in meta  # data/ is a local folder: named, never its path


def test_update_metadata_records_probe_without_touching_weights(export):
    model, path = export
    weights = (path / "model.safetensors").read_bytes()
    hub.update_metadata(path, linear_probe={"top1": 81.5, "top5": 99.0, "dataset": "data/fmnist", "split": "test"})
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["spectral_ssl"]["linear_probe"]["top1"] == 81.5
    assert cfg["spectral_ssl"]["effective_rank"]["value"] == 12.34  # other metadata kept
    assert "top-1 **81.50 %**, top-5 99.00 %." in (path / "README.md").read_text()
    assert (path / "model.safetensors").read_bytes() == weights
    assert SpectralSSL.from_pretrained(path).metadata["linear_probe"]["top1"] == 81.5


def test_transformers_automodel_pooler_output_equals_embed(export):
    from transformers import AutoModel

    model, path = export
    auto = AutoModel.from_pretrained(path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = auto(pixel_values=x).pooler_output
    torch.testing.assert_close(pooled, model.embed(x), rtol=0, atol=1e-6)


def test_data_config_missing_keys_is_rejected():
    model = SpectralSSL("test_resnet", proj_hidden_dim=8, proj_dim=4)
    with pytest.raises(ValueError, match="data_config lacks"):
        hub.timm_config(model.backbone, "test_resnet", {}, {"input_size": (3, 32, 32)}, {})


def test_truncated_weights_are_named_in_one_line(tmp_path):
    model = SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8)
    model.save_pretrained(tmp_path)
    for name in ("projector.safetensors", "model.safetensors"):
        path = tmp_path / name
        good = path.read_bytes()
        path.write_bytes(good[:100])
        with pytest.raises(ValueError, match=rf"{name} is truncated or corrupted"):
            SpectralSSL.from_pretrained(tmp_path)
        path.write_bytes(good)
    assert all(oct((tmp_path / n).stat().st_mode)[-3:] == "644" for n in ("model.safetensors", "config.json"))


def _export(folder, value, projector=True, card="card"):
    from torch import nn

    from spectral_ssl import hub

    backbone, head = nn.Linear(2, 2), nn.Linear(2, 1)
    for module in (backbone, head):
        nn.init.constant_(module.weight, value)
        nn.init.constant_(module.bias, value)
    return hub.save_export(folder, backbone, head if projector else None, {"architecture": "linear", "version": value},
                           card=card)


def test_export_killed_during_the_swap_is_completed_whole(tmp_path, monkeypatch):
    import os

    from spectral_ssl import hub

    _export(tmp_path, 1.0)
    real, moves = os.replace, []

    def killed_after_one_move(src, dst):
        if moves:
            raise KeyboardInterrupt("killed")
        moves.append(dst)
        real(src, dst)

    monkeypatch.setattr(hub.os, "replace", killed_after_one_move)
    with pytest.raises(KeyboardInterrupt):
        _export(tmp_path, 2.0, projector=False)
    monkeypatch.setattr(hub.os, "replace", real)
    config, backbone, projector = hub.read_export(tmp_path)  # finishes the swap first
    assert config["version"] == 2.0 and float(backbone["weight"][0, 0]) == 2.0
    assert projector is None and not (tmp_path / hub.PROJECTOR_NAME).exists()  # the old projector went with it
    assert not (tmp_path / hub.STAGING).exists()


def test_export_killed_before_its_commit_point_leaves_the_previous_one(tmp_path, monkeypatch):
    from spectral_ssl import hub

    _export(tmp_path, 1.0)
    real = hub.save_file
    calls = []

    def killed_on_the_projector(tensors, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real(tensors, path)

    monkeypatch.setattr(hub, "save_file", killed_on_the_projector)
    with pytest.raises(KeyboardInterrupt):
        _export(tmp_path, 2.0)
    monkeypatch.setattr(hub, "save_file", real)
    config, backbone, projector = hub.read_export(tmp_path)
    assert config["version"] == 1.0 and float(backbone["weight"][0, 0]) == 1.0 and float(projector["bias"][0]) == 1.0
    _export(tmp_path, 3.0)  # the next export drops the incomplete staging and swaps in whole
    assert hub.read_export(tmp_path)[0]["version"] == 3.0 and not (tmp_path / hub.STAGING).exists()


def test_public_metadata_calls_local_what_the_readers_call_local(tmp_path, monkeypatch):
    """One rule (``data.looks_local``): a dataset under data/ that is not on this machine (a card written elsewhere)
    is still a local folder, published by its name; a Hub id stays as it is."""
    monkeypatch.chdir(tmp_path)
    for given, published, local in (("data/fmnist", "fmnist", True), ("./x", "x", True), ("a/b/c", "c", True),
                                    ("org/name", "org/name", None), ("name", "name", None)):
        meta = hub.public_metadata({"dataset": given, "config": {"dataset": given}})
        assert (meta["dataset"], meta.get("dataset_local")) == (published, local), given
        assert meta["config"]["dataset"] == published


def test_update_metadata_killed_while_writing_leaves_a_whole_export(export, monkeypatch):
    import pathlib

    _, path = export
    real, writes = pathlib.Path.write_text, []

    def killed_mid_write(self, text, *args, **kwargs):
        writes.append(self.name)
        if self.name == "config.json":  # half the JSON on disk, then SIGKILL
            real(self, text[: len(text) // 2], *args, **kwargs)
            raise KeyboardInterrupt("killed")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        hub.update_metadata(path, linear_probe={"top1": 81.5, "top5": 99.0, "dataset": "fmnist", "split": "test"})
    monkeypatch.undo()
    assert writes[0] == "config.json"
    config = json.loads((path / "config.json").read_text())  # the previous export, whole
    assert "linear_probe" not in config["spectral_ssl"] and SpectralSSL.from_pretrained(path).metadata["steps"] == 7
    hub.update_metadata(path, linear_probe={"top1": 81.5, "top5": 99.0, "dataset": "fmnist", "split": "test"})
    assert json.loads((path / "config.json").read_text())["spectral_ssl"]["linear_probe"]["top1"] == 81.5
    assert "top-1 **81.50 %**, top-5 99.00 %." in (path / "README.md").read_text() and not (path / hub.STAGING).exists()


def test_an_export_into_a_folder_keeps_the_files_that_are_not_its_own(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"the user's own checkpoint")
    (tmp_path / "notes.txt").write_text("mine")
    model = SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8)
    model.save_pretrained(tmp_path)
    hub.save_export(tmp_path, model.backbone, None, model.export_config())  # a second export, without projector
    assert (tmp_path / "model.pt").read_bytes() == b"the user's own checkpoint"
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / hub.PROJECTOR_NAME).exists()


def test_an_export_named_with_the_home_folder_resolves(export, monkeypatch):
    _, path = export
    monkeypatch.setenv("HOME", str(path.parent))
    for source in (f"~/{path.name}", f"local-dir:~/{path.name}"):
        assert hub.resolve_export(source) == path
    assert SpectralSSL.from_pretrained(f"~/{path.name}").metadata["steps"] == 7


def test_metadata_json_cannot_hold_is_named_and_leaves_the_old_export(export):
    model, path = export
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    model.metadata = {**model.metadata, "extra": {"curve": [1.0, torch.ones(3)]}}
    with pytest.raises(TypeError, match=r"config\.spectral_ssl\.extra\.curve\[1\]: Tensor is not JSON-serialisable"):
        model.save_pretrained(path)
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()} == before  # config.json included
    fresh = path.parent / "never_made"
    with pytest.raises(TypeError, match="extra"):
        model.save_pretrained(fresh)
    assert not fresh.exists()
    with pytest.raises(TypeError, match=r"metadata\.note: object"):
        hub.update_metadata(path, note=object())
    assert (path / "config.json").read_bytes() == before["config.json"]


def test_numpy_and_torch_scalars_and_paths_are_written_as_plain_json(tmp_path):
    import pathlib

    import numpy as np

    model = SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8)
    model.metadata = {"top1": np.float32(81.5), "steps": np.int64(7), "reff": torch.tensor(3.25),
                      "ok": np.bool_(True), "folder": pathlib.PurePosixPath("data/fmnist"), "shape": (3, 32)}
    model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())["spectral_ssl"]
    assert (meta["top1"], meta["steps"], meta["reff"], meta["ok"], meta["folder"], meta["shape"]) == (
        81.5, 7, 3.25, True, "data/fmnist", [3, 32])
    assert type(meta["steps"]) is int and type(meta["ok"]) is bool


def test_a_stream_of_unknown_length_says_so_in_the_card_not_none(export):
    _, path = export
    hub.update_metadata(path, epochs=None)  # pretrain records None when the stream's length is unknown
    card = (path / "README.md").read_text()
    assert "| 7 | n/a (stream of unknown length) | 32 |" in card and "None" not in card


def test_hub_failures_are_one_line_and_other_errors_pass_through():
    import httpx2 as httpx  # huggingface_hub's HTTP client
    from huggingface_hub.errors import HfHubHTTPError

    response = httpx.Response(503, request=httpx.Request("POST", "http://hub/api/x"))
    cases = [(HfHubHTTPError("503 Server Error: busy\ndetails", response=response), False,
              r"^pushing failed \(HTTP 503: 503 Server Error: busy\); retry\.$"),
             (httpx.ReadTimeout("timed out"), False,
              r"^pushing failed: the connection broke \(ReadTimeout: timed out\)"),
             (ConnectionRefusedError(111, "refused"), True,
              r"^pushing failed \(ConnectionRefusedError: .*refused\); retry")]
    for raised, os_errors, message in cases:
        with pytest.raises(RuntimeError, match=message) as caught:
            with hub.hub_failures(RuntimeError, "pushing failed", "retry.", os_errors=os_errors):
                raise raised
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    for raised in (ConnectionRefusedError(111, "refused"), FileNotFoundError("x"), KeyError("k")):  # not Hub errors
        with pytest.raises(type(raised)):
            with hub.hub_failures(ConnectionError, "downloading failed", "retry."):
                raise raised
