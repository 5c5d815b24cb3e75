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
