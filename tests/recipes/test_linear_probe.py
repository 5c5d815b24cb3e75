import json

import pytest


@pytest.mark.slow
def test_probe_recipe_records_result_in_export(pretrain, linear_probe_recipe, tiny_dataset, tmp_path, capsys):
    out = pretrain.main(["--dataset", str(tiny_dataset), f"--output_dir={tmp_path / 'run'}",
                         "--backbone=test_resnet", "--proj_hidden_dim=32", "--proj_dim=16", "--batch_size=16",
                         "--max_steps=2", "--reff_samples=32", "--shuffle_buffer=64"])
    res = linear_probe_recipe.main(["--model", str(out), "--compare_random_init", "--knn"])
    printed = capsys.readouterr().out
    assert "pretrained" in printed and "random init" in printed
    for arm in ("pretrained", "random_init"):
        assert res[arm]["n_train"] == 96 and res[arm]["n_test"] == 48 and 0 <= res[arm]["top1"] <= 100
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["spectral_ssl"]["linear_probe"]["top1"] == res["pretrained"]["top1"]
    assert json.loads((out / "linear_probe.json").read_text())["pretrained"]["top1"] == res["pretrained"]["top1"]


@pytest.mark.slow
def test_pretrain_pushes_and_the_probe_updates_the_card_on_the_hub(pretrain, linear_probe_recipe, tiny_dataset,
                                                                   tmp_path, hub_server):
    out = pretrain.main(["--dataset", str(tiny_dataset), f"--output_dir={tmp_path / 'run'}",
                         "--backbone=test_resnet", "--proj_hidden_dim=32", "--proj_dim=16", "--batch_size=16",
                         "--max_steps=2", "--reff_samples=32", "--shuffle_buffer=64", "--save_every=2",
                         "--push_to_hub=org/run"])
    first, files = hub_server.files("org/run", "main")
    assert set(files) == {"config.json", "model.safetensors", "projector.safetensors", "README.md",
                          "spectral_diagnostics.png"}  # the export and its plot, never the training state
    with pytest.raises(SystemExit, match="trained on a local dataset .* pass --dataset PATH"):
        linear_probe_recipe.main(["--model", "hf-hub:org/run"])  # the pushed config names no path of this machine
    res = linear_probe_recipe.main(["--model", "hf-hub:org/run", "--dataset", str(tiny_dataset), "--push"])
    second, files = hub_server.files("org/run", "main")
    assert second != first and res["pushed"].endswith(second)
    config = json.loads(files["config.json"])
    assert config["spectral_ssl"]["linear_probe"]["top1"] == res["pretrained"]["top1"]
    assert f"{res['pretrained']['top1']:.2f}" in files["README.md"].decode()
    assert "linear_probe" not in json.loads((out / "config.json").read_text())["spectral_ssl"]  # local untouched


@pytest.mark.slow
def test_probe_results_are_written_as_each_probe_ends_into_a_new_folder(pretrain, linear_probe_recipe, tiny_dataset,
                                                                        tmp_path, monkeypatch):
    out = pretrain.main(["--dataset", str(tiny_dataset), f"--output_dir={tmp_path / 'run'}",
                         "--backbone=test_resnet", "--proj_hidden_dim=32", "--proj_dim=16", "--batch_size=16",
                         "--max_steps=1", "--reff_samples=32", "--shuffle_buffer=64"])
    results = tmp_path / "new" / "nested" / "probe.json"

    def killed(*args, **kwargs):  # the baseline dies after the pretrained probe was measured
        raise KeyboardInterrupt

    monkeypatch.setattr(linear_probe_recipe, "fair_random_init", killed)
    with pytest.raises(KeyboardInterrupt):
        linear_probe_recipe.main(["--model", str(out), "--compare_random_init", f"--output={results}",
                                  "--record=false"])
    partial = json.loads(results.read_text())
    assert partial["complete"] is False and 0 <= partial["pretrained"]["top1"] <= 100
    assert "random_init" not in partial
    monkeypatch.undo()
    res = linear_probe_recipe.main(["--model", str(out), f"--output={results}", "--record=false"])
    assert json.loads(results.read_text()) == res and res["complete"] is True
