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
    assert "BatchNorm statistics from 1 training batches" in printed  # 96 rows: one batch, not --bn_batches=20
    assert res["random_init"]["bn_batches"] == 1
    for arm in ("pretrained", "random_init"):
        assert res[arm]["n_train"] == 96 and res[arm]["n_test"] == 48 and 0 <= res[arm]["top1"] <= 100
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["spectral_ssl"]["linear_probe"]["top1"] == res["pretrained"]["top1"]
    wd = res["pretrained"]["settings"]["weight_decay"]
    assert cfg["spectral_ssl"]["linear_probe"]["weight_decay"] == wd
    assert (f"Multinomial logistic regression on the standardised features of 96 train images, scored on 48; its L2 "
            f"penalty ({wd:g}) chosen on held-out train rows.") in (out / "README.md").read_text()
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
    assert "spectral_diagnostics.png" in files["README.md"].decode()  # the card still shows the plot
    assert "linear_probe" not in json.loads((out / "config.json").read_text())["spectral_ssl"]  # local untouched
    summary = hub_server.summaries[-1][1]  # public on the Hub: the dataset by its folder name, no local path
    assert summary.startswith("Linear probe: top-1") and tiny_dataset.name in summary and str(tmp_path) not in summary
    assert str(tiny_dataset.parent) not in summary


@pytest.mark.slow
def test_probe_results_are_written_as_each_probe_ends_into_a_new_folder(pretrain, linear_probe_recipe, tiny_dataset,
                                                                        tmp_path, monkeypatch):
    out = pretrain.main(["--dataset", str(tiny_dataset), f"--output_dir={tmp_path / 'run'}",
                         "--backbone=test_resnet", "--proj_hidden_dim=32", "--proj_dim=16", "--batch_size=16",
                         "--max_steps=1", "--reff_samples=32", "--shuffle_buffer=64"])
    results = tmp_path / "new" / "nested" / "probe.json"

    fit = linear_probe_recipe.probe

    def killed(feats, probe_data, cfg, device, name):  # the baseline dies after the pretrained probe was measured
        if name == "random init":
            raise KeyboardInterrupt
        return fit(feats, probe_data, cfg, device, name)

    monkeypatch.setattr(linear_probe_recipe, "probe", killed)
    with pytest.raises(KeyboardInterrupt):
        linear_probe_recipe.main(["--model", str(out), "--compare_random_init", f"--output={results}",
                                  "--record=false"])
    partial = json.loads(results.read_text())
    assert partial["complete"] is False and 0 <= partial["pretrained"]["top1"] <= 100
    assert "random_init" not in partial
    monkeypatch.undo()
    res = linear_probe_recipe.main(["--model", str(out), f"--output={results}", "--record=false"])
    assert json.loads(results.read_text()) == res and res["complete"] is True


@pytest.fixture()
def tiny_export(tmp_path):
    """An export (no training) and tiny splits whose label column holds names, not integer classes."""
    from spectral_ssl import SpectralSSL
    from spectral_ssl.data import synthetic_dataset

    data = tmp_path / "named_labels"
    data.mkdir()
    for split, rows in (("train", 16), ("test", 8)):
        ds = synthetic_dataset(num_rows=rows, image_size=16, num_classes=2, seed=0)
        ds = ds.map(lambda row: {"name": f"class{row['label']}"}).remove_columns("label").rename_column("name", "label")
        ds.to_parquet(str(data / f"{split}-00000-of-00001.parquet"))
    model = SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8)
    model.data_config.update(input_size=(3, 16, 16))
    model.metadata = {"dataset": str(data)}
    model.save_pretrained(tmp_path / "export")
    return tmp_path / "export", data


def test_labels_that_are_no_classes_are_one_line_naming_the_column(linear_probe_recipe, tiny_export):
    export, data = tiny_export
    with pytest.raises(SystemExit) as e:
        linear_probe_recipe.main(["--model", str(export), "--dataset", str(data), "--record=false"])
    message = str(e.value)
    assert message.startswith(f"error: reading {data} split train") and "--label_column=label" in message
    assert "class0" in message and "\n" not in message


def test_push_without_a_token_names_the_push_key_before_the_probe(linear_probe_recipe, tiny_export, tmp_path,
                                                                  monkeypatch):
    import huggingface_hub.constants as constants

    export, _ = tiny_export
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_login" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no_login" / "stored_tokens"))
    with pytest.raises(SystemExit, match=r"^error: --push needs a Hub token and none was found; run `hf auth login` "
                                         r"or set HF_TOKEN$"):
        linear_probe_recipe.main(["--model", str(export), "--push=org/x"])
    assert not (export / "linear_probe.json").exists()


def test_one_split_for_both_is_halved_never_fitted_and_scored_on_the_same_rows(linear_probe_recipe, tmp_path,
                                                                              capsys, monkeypatch):
    from spectral_ssl import SpectralSSL
    from spectral_ssl.data import synthetic_dataset

    data = tmp_path / "train_only"
    data.mkdir()
    synthetic_dataset(num_rows=80, image_size=16, num_classes=2, seed=0).to_parquet(
        str(data / "train-00000-of-00001.parquet"))
    model = SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8)
    model.data_config.update(input_size=(3, 16, 16))
    model.metadata = {"dataset": str(data)}
    model.save_pretrained(tmp_path / "export")
    seen = {}
    real = linear_probe_recipe.linear_probe

    def spy(train_f, train_y, test_f, test_y, **kwargs):
        seen["rows"] = train_f, test_f
        return real(train_f, train_y, test_f, test_y, **kwargs)

    monkeypatch.setattr(linear_probe_recipe, "linear_probe", spy)
    res = linear_probe_recipe.main(["--model", str(tmp_path / "export"), "--train_split=train", "--test_split=train",
                                    "--max_train_samples=40", "--max_test_samples=20", "--record=false"])
    assert "fitted on seeded rows of it (a half, or --max_train_samples)" in capsys.readouterr().out
    pre = res["pretrained"]
    assert (pre["n_train"], pre["n_test"]) == (40, 20)  # one read of 40 + 20 rows, each cap kept
    assert pre["train_split"] == "train (seeded rows)" and pre["split"] == "train (the other rows)"
    fit, scored = seen["rows"]
    assert not (fit[:, None, :] == scored[None, :, :]).all(-1).any()  # no row in both parts
    res = linear_probe_recipe.main(["--model", str(tmp_path / "export"), "--train_split=train", "--test_split=train",
                                    "--max_train_samples=30", "--record=false"])
    assert (res["pretrained"]["n_train"], res["pretrained"]["n_test"]) == (30, 50)  # the cap, then the rest
    res = linear_probe_recipe.main(["--model", str(tmp_path / "export"), "--train_split=train", "--test_split=train",
                                    "--record=false"])
    assert (res["pretrained"]["n_train"], res["pretrained"]["n_test"]) == (40, 40)
    assert res["pretrained"]["train_split"] == "train (a seeded half)"


def test_the_runs_own_columns_are_used_on_its_dataset_and_a_missing_label_column_says_labels_are_needed(
        linear_probe_recipe, tmp_path):
    from spectral_ssl import SpectralSSL
    from spectral_ssl.data import synthetic_dataset

    data = tmp_path / "renamed"
    data.mkdir()
    for split, rows in (("train", 32), ("test", 16)):
        ds = synthetic_dataset(num_rows=rows, image_size=16, num_classes=2, seed=0)
        ds.rename_columns({"image": "img", "label": "y"}).to_parquet(str(data / f"{split}-00000-of-00001.parquet"))
    model = SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8)
    model.data_config.update(input_size=(3, 16, 16))
    model.metadata = {"dataset": str(data), "config": {"dataset": str(data), "image_column": "img",
                                                       "label_column": "y"}}
    model.save_pretrained(tmp_path / "export")
    res = linear_probe_recipe.main(["--model", str(tmp_path / "export"), "--record=false"])
    assert res["pretrained"]["n_train"] == 32 and res["pretrained"]["n_test"] == 16
    with pytest.raises(SystemExit) as e:
        linear_probe_recipe.main(["--model", str(tmp_path / "export"), "--label_column=label", "--record=false"])
    assert str(e.value) == (f"error: --label_column=label not found in {data} split train; available columns: idx, "
                            "img, y; the probe needs integer class labels: pass --label_column=<one of them>")


def test_an_output_that_is_no_probe_result_is_refused_before_the_probe(linear_probe_recipe, tiny_export):
    export, _ = tiny_export
    weights = (export / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit, match=r"^error: --output .*model.safetensors is an existing file that is not a "
                                         r"linear_probe result and would be replaced; name a new file$"):
        linear_probe_recipe.main(["--model", str(export), "--output", str(export / "model.safetensors")])
    assert (export / "model.safetensors").read_bytes() == weights


def test_an_output_that_cannot_be_written_after_the_probe_is_one_line(linear_probe_recipe, tiny_export, monkeypatch,
                                                                       tmp_path):
    path = tmp_path / "out.json"

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(path), "write_text", refuse)
    with pytest.raises(SystemExit, match=r"^error: --output .*out.json: Permission denied; choose another --output$"):
        linear_probe_recipe.save_results({"model": "x", "complete": True}, path)


def test_every_arm_is_extracted_in_one_pass_per_split(pretrain, linear_probe_recipe, tiny_dataset, tmp_path,
                                                      monkeypatch, capsys):
    # the probe's cost on a GPU is reading and decoding the images: the baselines share the pretrained arm's pass
    out = pretrain.main(["--dataset", str(tiny_dataset), f"--output_dir={tmp_path / 'run'}",
                         "--backbone=test_resnet", "--proj_hidden_dim=32", "--proj_dim=16", "--batch_size=16",
                         "--max_steps=1", "--reff_samples=32", "--shuffle_buffer=64"])
    passes, read = [], linear_probe_recipe.extract_features_of

    def counted(arms, batches, **kwargs):
        passes.append(list(arms))
        return read(arms, batches, **kwargs)

    monkeypatch.setattr(linear_probe_recipe, "extract_features_of", counted)
    monkeypatch.setattr(linear_probe_recipe, "REFF_MAX_SIDE", 8)  # raw pixels wider than this: R_eff not computed
    reported = []
    res = linear_probe_recipe.main(["--model", str(out), "--compare_random_init", "--compare_raw_pixels", "--knn",
                                    "--record=false"], on_result=lambda arm, result: reported.append((arm, result)))
    assert passes == [["pretrained", "random_init", "raw_pixels"]] * 2  # train, test
    assert reported == [(arm, res[arm]) for arm in ("pretrained", "random_init", "raw_pixels")]  # as each one ends
    assert res["raw_pixels"]["effective_rank"] is None and "not computed" in capsys.readouterr().out
    assert res["pretrained"]["effective_rank"] > 0 and res["random_init"]["effective_rank"] > 0
    assert res["pretrained"]["n_test"] == res["random_init"]["n_test"] == res["raw_pixels"]["n_test"]
    for arm in ("pretrained", "random_init", "raw_pixels"):  # every arm chose its penalty from the library's grid
        assert len(res[arm]["settings"]["validation_top1"]) == len(linear_probe_recipe.WEIGHT_DECAYS) == 11
    res = linear_probe_recipe.main(["--model", str(out), "--compare_raw_pixels", "--weight_decays=[0.5]",
                                    "--record=false"])
    assert res["pretrained"]["settings"]["weight_decay"] == res["raw_pixels"]["settings"]["weight_decay"] == 0.5


@pytest.fixture()
def corrupt_dataset(tmp_path):
    """Tiny splits whose row 5 holds bytes that are no image."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spectral_ssl.data import synthetic_dataset

    folder = tmp_path / "corrupt"
    folder.mkdir()
    for split, rows in (("train", 32), ("test", 16)):
        path = folder / f"{split}-00000-of-00001.parquet"
        synthetic_dataset(num_rows=rows, image_size=16, num_classes=2, seed=0).to_parquet(str(path))
        table = pq.read_table(path)
        images = table.column("image").to_pylist()
        images[5] = {"bytes": b"not an image", "path": None}
        field = table.schema.field("image")
        pq.write_table(table.set_column(table.schema.get_field_index("image"), field,
                                        pa.array(images, type=field.type)), path)
    return folder


@pytest.mark.parametrize("caps", [[], ["--max_train_samples=4", "--max_test_samples=4", "--batch_size=4"]])
def test_an_undecodable_training_image_is_one_line_with_the_random_init_baseline(linear_probe_recipe,
                                                                                 corrupt_dataset, tmp_path, caps):
    # the BatchNorm calibration pass reads the train split before (or beyond) the probe's pass: its error is the
    # same one line as the probe's, not a traceback
    from spectral_ssl import SpectralSSL

    model = SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8)
    model.data_config.update(input_size=(3, 16, 16))
    model.metadata = {"dataset": str(corrupt_dataset)}
    model.save_pretrained(tmp_path / "export")
    with pytest.raises(SystemExit) as e:
        linear_probe_recipe.main(["--model", str(tmp_path / "export"), "--compare_random_init", "--record=false",
                                  *caps])
    assert str(e.value).startswith(f"error: reading {corrupt_dataset} split train") and "idx 5" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_flat_image_folder_is_one_line_saying_the_probe_needs_labels(linear_probe_recipe, tmp_path):
    from spectral_ssl import SpectralSSL
    from spectral_ssl.data import synthetic_dataset

    folder = tmp_path / "flat"
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
        for i, row in enumerate(synthetic_dataset(num_rows=8, image_size=32, seed=0)):
            row["image"].save(folder / split / f"{i}.png")
    model = SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8)
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(SystemExit) as e:  # was: KeyError 'label' traceback mid-extraction
        linear_probe_recipe.main(["--model", str(tmp_path / "m"), "--dataset", str(folder), "--record=false",
                                  "--output", str(tmp_path / "p.json")])
    assert str(e.value).startswith(f"error: --label_column=label not found in {folder} split train; available "
                                   "columns: image; the probe needs integer class labels")


def test_text_labels_never_suggest_label_column_null(linear_probe_recipe, tmp_path):
    from spectral_ssl import SpectralSSL
    from spectral_ssl.data import synthetic_dataset

    folder = tmp_path / "named"
    folder.mkdir()
    named = synthetic_dataset(num_rows=8, image_size=32, seed=0).remove_columns("label")
    for split in ("train", "test"):
        named.add_column("label", ["cat", "dog"] * 4).to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8).save_pretrained(tmp_path / "m")
    with pytest.raises(SystemExit) as e:  # was: "or pass --label_column=null", which the probe reads as 'label'
        linear_probe_recipe.main(["--model", str(tmp_path / "m"), "--dataset", str(folder), "--record=false",
                                  "--output", str(tmp_path / "p.json")])
    assert "--label_column=null" not in str(e.value) and "the probe needs integer class labels" in str(e.value)


def test_a_random_init_without_recalibrated_batchnorm_is_not_called_fair(linear_probe_recipe, tmp_path, capsys):
    from spectral_ssl import SpectralSSL
    from spectral_ssl.data import synthetic_dataset

    folder = tmp_path / "data"
    folder.mkdir()
    for split, seed in (("train", 0), ("test", 1)):
        synthetic_dataset(num_rows=24, image_size=32, num_classes=2, seed=seed).to_parquet(
            str(folder / f"{split}-00000-of-00001.parquet"))
    SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8).save_pretrained(tmp_path / "m")
    argv = ["--model", str(tmp_path / "m"), "--dataset", str(folder), "--record=false", "--compare_random_init"]
    linear_probe_recipe.main([*argv, "--bn_batches=0"])
    printed = capsys.readouterr().out
    assert "gain over random init (BatchNorm not recalibrated)" in printed and "(fair)" not in printed
    linear_probe_recipe.main(argv)
    assert "gain over random init (fair)" in capsys.readouterr().out
