"""Publish to and load from a Hub: a real HTTP server on 127.0.0.1 (tests/fake_hub.py) stands in for huggingface.co."""

import functools
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from spectral_ssl import SpectralSSL, hub
from tests.conftest import SCRIPTS, load_module


@pytest.fixture()
def export(tmp_path):
    """A pretrain-like output_dir: the export at its root, plus training state that must never be uploaded."""
    torch.manual_seed(0)
    model = SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8).eval()
    model.data_config.update(input_size=(3, 32, 32), crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    model.metadata = {"loss": "infonce", "selection": "greedy", "whitening": "zca", "dataset": "data/fmnist",
                      "split": "train", "steps": 7, "epochs": 0.5, "global_batch": 32,
                      "effective_rank": {"value": 12.34, "estimator": "cov", "n_samples": 100, "dim": 96,
                                         "centered": True, "eps": 1e-12, "split": "test"},
                      "config": {"backbone": "test_resnet", "lr": 0.001}}
    out = tmp_path / "run"
    model.save_pretrained(out)
    (out / "checkpoints" / "step_000007").mkdir(parents=True)
    (out / "checkpoints" / "step_000007" / "model.safetensors").write_bytes(b"training state")
    (out / "metrics.jsonl").write_text('{"step": 7}\n')
    return model, out


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def images(n=2):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 32, 32, generator=g)


def test_push_uploads_only_the_export_and_loads_back_with_identical_features(hub_server, export):
    model, out = export
    before = snapshot(out)
    url = hub.push_export(out, "org/tiny")
    assert "org/tiny/commit/" in url
    assert snapshot(out) == before  # the local export is only read
    _, files = hub_server.files("org/tiny", "main")
    assert set(files) == {"config.json", "model.safetensors", "projector.safetensors", "README.md"}
    x = (images() - 0.5) / 0.25
    for source in ("org/tiny", "hf-hub:org/tiny"):
        loaded = SpectralSSL.from_pretrained(source)
        torch.testing.assert_close(loaded.embed(x), model.embed(x), rtol=0, atol=0)
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
        assert loaded.metadata["selection"] == "greedy" and loaded.data_config["mean"] == (0.5, 0.5, 0.5)


@pytest.mark.slow
def test_plain_timm_transformers_and_pipeline_load_the_pushed_repo_in_a_fresh_process(hub_server, export, tmp_path):
    model, out = export
    hub.push_export(out, "org/tiny")
    x = images()
    torch.save(x, tmp_path / "x.pt")
    # a fresh process: timm/transformers alone, spectral_ssl never imported
    code = f"""
import json, sys, torch, timm, PIL.Image
x = torch.load({str(tmp_path / 'x.pt')!r})
m = timm.create_model("hf-hub:org/tiny", pretrained=True).eval()
cfg = timm.data.resolve_model_data_config(m)
xn = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
from transformers import AutoModel, pipeline
auto = AutoModel.from_pretrained("org/tiny").eval()
with torch.no_grad():
    out = {{"timm": m(xn), "auto": auto(pixel_values=xn).pooler_output}}
pipe = pipeline("image-feature-extraction", model="org/tiny")
feats = pipe(PIL.Image.new("RGB", (40, 40), (120, 30, 200)))
torch.save({{**out, "cfg": cfg, "pipe_numel": torch.tensor(feats).numel()}}, {str(tmp_path / 'y.pt')!r})
assert not any(name.startswith("spectral_ssl") for name in sys.modules)  # never imported spectral_ssl
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    y = torch.load(tmp_path / "y.pt", weights_only=False)
    xn = (x - 0.5) / 0.25
    expected = model.embed(xn)
    torch.testing.assert_close(y["timm"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y["auto"], expected, rtol=1e-5, atol=1e-5)
    assert tuple(y["cfg"]["input_size"]) == (3, 32, 32) and tuple(y["cfg"]["mean"]) == (0.5, 0.5, 0.5)
    assert y["pipe_numel"] == model.num_features  # one pooled feature vector for the PIL image


def test_card_yaml_parses_with_model_index_and_validates(hub_server, export):
    from huggingface_hub import ModelCard

    _, out = export
    hub.update_metadata(out, linear_probe={"top1": 81.5, "top5": 99.0, "dataset": "data/fmnist", "split": "test"})
    hub.push_export(out, "org/tiny")
    _, files = hub_server.files("org/tiny", "main")
    text = files["README.md"].decode()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["library_name"] == "timm" and meta["pipeline_tag"] == "image-feature-extraction"
    assert {"spectral-ssl", "self-supervised", "infonce", "selection-greedy"} <= set(meta["tags"])
    results = {r["metrics"][0]["type"]: r for r in meta["model-index"][0]["results"]}
    assert results["accuracy"]["metrics"][0]["value"] == 81.5
    assert results["accuracy"]["task"]["type"] == "image-classification"
    assert results["effective_rank"]["metrics"][0]["value"] == 12.34
    card = ModelCard(text)
    card.validate()  # POST /api/validate-yaml
    assert [r.metric_value for r in card.data.eval_results] == [81.5, 12.34]
    assert 'hf-hub:org/tiny' in text and 'from_pretrained("org/tiny")' in text


def test_a_second_push_is_a_new_revision_and_old_revisions_stay_loadable(hub_server, export):
    _, out = export
    hub.push_export(out, "org/tiny")
    first, _ = hub_server.files("org/tiny", "main")
    hub.update_metadata(out, linear_probe={"top1": 80.0, "dataset": "data/fmnist", "split": "test"})
    hub.push_export(out, "org/tiny", commit_message="probe")
    second, _ = hub_server.files("org/tiny", "main")
    assert first != second
    assert SpectralSSL.from_pretrained("org/tiny").metadata["linear_probe"]["top1"] == 80.0
    assert "linear_probe" not in SpectralSSL.from_pretrained("org/tiny", revision=first).metadata
    hub.push_export(out, "org/tiny", revision="v1")  # a branch, created from main
    assert SpectralSSL.from_pretrained("org/tiny", revision="v1").metadata["linear_probe"]["top1"] == 80.0


@pytest.mark.parametrize("route,kind", [("commit", "500"), ("commit", "drop"), ("preupload", "500")])
def test_a_failing_server_gives_a_clear_error_leaves_the_export_and_a_retry_succeeds(hub_server, export, route,
                                                                                     kind, monkeypatch):
    import huggingface_hub._commit_api
    import huggingface_hub.hf_api
    from huggingface_hub.utils import http_backoff

    # the client retries a 5xx with exponential back-off (1 + 2 + 4 + 8 + 8 s); what is tested is our error, not
    # its waiting: one try only
    for module in (huggingface_hub._commit_api, huggingface_hub.hf_api):
        monkeypatch.setattr(module, "http_backoff", functools.partial(http_backoff, max_retries=0))
    _, out = export
    before = snapshot(out)
    hub_server.fail[route] = [kind] * 10  # also defeats any other client-side retries
    with pytest.raises(RuntimeError, match="local export is unchanged, run the same push again"):
        hub.push_export(out, "org/tiny")
    assert snapshot(out) == before
    hub_server.fail.clear()
    hub.push_export(out, "org/tiny")
    assert "model.safetensors" in hub_server.files("org/tiny", "main")[1]


def test_download_once_then_load_offline(hub_server, export, monkeypatch):
    from huggingface_hub import constants

    model, out = export
    hub.push_export(out, "org/tiny")
    SpectralSSL.from_pretrained("org/tiny")  # fills the cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub_server.fail["commit"] = []  # the server is not consulted any more:
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    x = images()
    torch.testing.assert_close(SpectralSSL.from_pretrained("org/tiny").embed(x), model.embed(x), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        SpectralSSL.from_pretrained("org/other")


def test_missing_repo_revision_and_bad_inputs_have_clear_errors(hub_server, export, tmp_path):
    _, out = export
    with pytest.raises(FileNotFoundError, match="Hub repo org/missing not found"):
        SpectralSSL.from_pretrained("org/missing")
    hub.push_export(out, "org/tiny")
    with pytest.raises(FileNotFoundError, match="revision 'nope' does not exist"):
        SpectralSSL.from_pretrained("org/tiny", revision="nope")
    with pytest.raises(ValueError, match="must look like 'org/name'"):
        hub.push_export(out, "not a repo")
    (tmp_path / "pickle_only").mkdir()
    (tmp_path / "pickle_only" / "config.json").write_text(json.dumps({"architecture": "test_resnet"}))
    (tmp_path / "pickle_only" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="safetensors only"):
        hub.push_export(tmp_path / "pickle_only", "org/tiny")


def test_push_script_and_model_push_to_hub(hub_server, export, capsys):
    model, out = export
    script = load_module(SCRIPTS / "push_to_hub.py")
    url = script.main([str(out), "org/scripted", "--commit-message", "first release"])
    assert "org/scripted" in url and "pushed" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="error: .*must look like 'org/name'"):
        script.main([str(out), "bad id"])
    with pytest.raises(SystemExit, match="error: .*no config.json"):
        script.main([str(out / "checkpoints"), "org/scripted"])
    url = script.main([str(out), "org/scripted", "--create-pr"])  # main untouched, a pull request opened
    assert url.endswith("/org/scripted/discussions/1") and "refs/pr/1" in hub_server.get("org/scripted")["branches"]
    model.push_to_hub("org/from-model")
    assert set(hub_server.files("org/from-model", "main")[1]) >= {"config.json", "model.safetensors"}
    assert not any("token" in r.lower() for r in hub_server.requests)  # never in a URL


def test_pushed_config_and_card_carry_no_local_path_and_escape_the_dataset_name(hub_server, export, tmp_path):
    _, out = export
    data = tmp_path / "my <img src=x> *set*"
    data.mkdir()
    hub.update_metadata(out, dataset=str(data), config={"dataset": str(data), "output_dir": str(out), "lr": 0.001},
                        linear_probe={"top1": 81.5, "top5": 99.0, "dataset": str(data), "split": "test"})
    hub.push_export(out, "org/private-paths")
    _, files = hub_server.files("org/private-paths", "main")
    config, card = files["config.json"].decode(), files["README.md"].decode()
    for text in (config, card):
        assert str(tmp_path) not in text  # neither the dataset's nor the output folder's path
    meta = json.loads(config)["spectral_ssl"]
    assert meta["dataset"] == data.name and meta["dataset_local"] is True
    assert meta["config"]["dataset"] == data.name and meta["config"]["output_dir"] == "run"
    header = yaml.safe_load(card.split("---\n")[1])
    assert "datasets" not in header  # a local folder is never named as a Hub dataset
    assert {r["dataset"]["type"] for r in header["model-index"][0]["results"]} == {data.name}
    prose = card.split("---\n", 2)[2].split("```")[::2]  # outside the fenced training config
    assert not any("<img" in part for part in prose)
    assert any(r"| my &lt;img src=x&gt; \*set\* |" in part for part in prose)
    assert json.loads((out / "config.json").read_text())["spectral_ssl"]["dataset"] == str(data)  # local: unchanged


def test_non_finite_weights_warn_on_load_and_are_not_pushed(hub_server, export, caplog):
    from safetensors.torch import load_file, save_file

    _, out = export
    weights = load_file(out / "model.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name][0] = float("nan")
    save_file(weights, out / "model.safetensors")
    with caplog.at_level("WARNING"):
        SpectralSSL.from_pretrained(out)
    assert "holds non-finite (NaN/Inf) weights in 1 tensors" in caplog.text and name in caplog.text
    with pytest.raises(ValueError, match=r"non-finite \(NaN/Inf\) weights .*; not pushed"):
        hub.push_export(out, "org/nan")


def test_the_push_script_without_a_token_or_offline_is_one_line_before_any_request(hub_server, export, tmp_path,
                                                                                  monkeypatch):
    import huggingface_hub.constants as constants

    _, out = export
    script = load_module(SCRIPTS / "push_to_hub.py")
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_login" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no_login" / "stored_tokens"))
    requests = len(hub_server.requests)
    with pytest.raises(SystemExit, match=r"^error: pushing to the Hub needs a Hub token and none was found; run "
                                         r"`hf auth login` or set HF_TOKEN$"):
        script.main([str(out), "org/no-token"])
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match=r"^error: pushing to the Hub needs the Hub and HF_HUB_OFFLINE=1 is set"):
        script.main([str(out), "org/offline"])
    with pytest.raises(SystemExit, match=r"^error: .*typo.* (does not exist|has no config.json)"):
        script.main([str(tmp_path / "typo"), "org/offline"])  # the folder is checked before the Hub is needed
    assert len(hub_server.requests) == requests  # nothing was sent


def test_push_to_a_branch_or_a_pull_request_leaves_main_and_other_arguments_are_refused(hub_server, export):
    # PyTorchModelHubMixin's branch= and create_pr= were swallowed: such a push landed on main
    model, _ = export
    model.push_to_hub("org/tiny")
    main = hub_server.files("org/tiny", "main")[0]
    model.push_to_hub("org/tiny", branch="dev")
    assert "dev" in hub_server.get("org/tiny")["branches"] and hub_server.files("org/tiny", "main")[0] == main
    url = model.push_to_hub("org/tiny", create_pr=True)
    assert url.endswith("/org/tiny/discussions/1") and hub_server.files("org/tiny", "main")[0] == main
    assert "model.safetensors" in hub_server.files("org/tiny", "refs/pr/1")[1]
    with pytest.raises(TypeError, match="does not take allow_patterns"):
        model.push_to_hub("org/tiny", allow_patterns=["*.json"])
    with pytest.raises(TypeError, match="branch='a' and revision='b'"):
        model.push_to_hub("org/tiny", branch="a", revision="b")
    assert hub_server.files("org/tiny", "main")[0] == main


def test_a_broken_download_is_one_line_and_timms_revision_form_and_map_location_load(hub_server, export, tmp_path,
                                                                                     monkeypatch):
    _, out = export
    hub.push_export(out, "org/tiny")
    hub.push_export(out, "org/tiny", revision="v1")
    hub_server.fail["resolve"] = ["drop"] * 20  # more than the client's retries
    with pytest.raises(ConnectionError, match="downloading org/tiny from the Hub failed"):
        SpectralSSL.from_pretrained("org/tiny")
    hub_server.fail.clear()
    v1 = SpectralSSL.from_pretrained("hf-hub:org/tiny@v1", map_location="cpu")  # timm's form; the mixin's keyword
    assert v1.metadata == SpectralSSL.from_pretrained("org/tiny", revision="v1").metadata
    with pytest.raises(ValueError, match="names revision 'v1' and revision='main'"):
        SpectralSSL.from_pretrained("org/tiny@v1", revision="main")
    shadow = tmp_path / "cwd" / "org" / "tiny"  # a local folder named like the repo
    shadow.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(FileNotFoundError, match="pass 'hf-hub:org/tiny'"):
        SpectralSSL.from_pretrained("org/tiny")
    assert SpectralSSL.from_pretrained("hf-hub:org/tiny").metadata


def test_only_safetensors_and_the_plot_are_downloaded_and_a_users_own_card_is_kept(hub_server, export, caplog):
    _, out = export
    (out / "spectral_diagnostics.png").write_bytes(b"\x89PNG fake")
    hub.push_export(out, "org/tiny")
    hub_server.put("org/tiny", {"pytorch_model.bin": b"pickle"}, repo_type="model")
    folder = hub.resolve_export("org/tiny")
    assert (folder / "spectral_diagnostics.png").is_file() and not (folder / "pytorch_model.bin").exists()
    hub_server.put("org/pickled", {"config.json": b'{"architecture": "test_resnet"}', "pytorch_model.bin": b"x"},
                   repo_type="model")
    with pytest.raises(ValueError, match="holds only pickle weights \\(pytorch_model.bin\\).*not downloaded"):
        SpectralSSL.from_pretrained("org/pickled")
    mine = b"---\nlicense: mit\n---\n# my model\n"
    hub_server.put("org/mine", {"README.md": mine}, repo_type="model")
    with caplog.at_level("WARNING"):
        hub.push_export(out, "org/mine")
    files = hub_server.files("org/mine", "main")[1]
    assert files["README.md"] == mine and "model.safetensors" in files  # the user's card (and license) kept
    assert "already has a README.md that spectral_ssl did not write" in caplog.text
    hub.push_export(out, "org/tiny", commit_message="again")  # a card spectral_ssl wrote is re-rendered
    assert b"spectral-ssl" in hub_server.files("org/tiny", "main")[1]["README.md"]
