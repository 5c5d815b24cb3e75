"""spectral_ssl.rank: loading each kind of model with its own preprocessing, the scores against slow references,
Spearman with ties, and the command (table, JSON, PNG, one-line errors)."""

import itertools
import json
import math

import pytest
import torch

import spectral_ssl as ssl
from spectral_ssl import rank
from spectral_ssl.data import synthetic_dataset

TINY = {"channels": [8, 16, 16, 16]}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    synthetic_dataset(num_rows=48, image_size=32, num_classes=3, seed=0).to_parquet(
        str(folder / "test-00000-of-00001.parquet"))
    return folder


def export(folder, seed, image_size=32):
    torch.manual_seed(seed)
    model = ssl.SpectralSSL("resnet18", proj_hidden_dim=32, proj_dim=8, backbone_kwargs=TINY)
    model.data_config.update(input_size=(3, image_size, image_size), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    model.save_pretrained(folder)
    return model


def reference_ranks(values):
    """Average ranks by counting: rank_i = #(x_j < x_i) + (#(x_j == x_i) + 1) / 2."""
    return [sum(v < x for v in values) + (sum(v == x for v in values) + 1) / 2 for x in values]


def reference_spearman(x, y):
    rx, ry = reference_ranks(x), reference_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def test_average_ranks_share_the_mean_rank_of_ties():
    assert rank.average_ranks([3.0, 1.0, 2.0, 2.0, 5.0, 2.0]).tolist() == [5.0, 1.0, 3.0, 3.0, 6.0, 3.0]
    values = torch.randint(0, 4, (30,), generator=torch.Generator().manual_seed(1)).tolist()
    assert rank.average_ranks(values).tolist() == reference_ranks(values)


def test_spearman_hand_computed_case_with_ties():
    # ranks x: 1, 2.5, 2.5, 4; y: 1, 3, 2, 4 -> sum dx*dy = 4.5, sum dx^2 = 4.5, sum dy^2 = 5 -> 3 / sqrt(10)
    assert rank.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10), abs=1e-12)
    assert rank.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(rank.spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="equally long"):
        rank.spearman([1, 2], [1])


def tied_samples(n_cases=20):
    gen = torch.Generator().manual_seed(0)
    return [(torch.randint(0, 5, (12,), generator=gen).tolist(),
             torch.randn(12, generator=gen).round(decimals=1).tolist()) for _ in range(n_cases)]


def test_spearman_against_the_counting_reference():
    for x, y in tied_samples():
        assert rank.spearman(x, y) == pytest.approx(reference_spearman(x, y), abs=1e-12)


def test_spearman_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    for x, y in tied_samples():
        assert rank.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_permutation_p_value_matches_the_exact_enumeration():
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2.0, 1.0, 4.0, 3.0, 6.0, 5.0]
    rho = rank.spearman(x, y)
    exact = sum(abs(rank.spearman(x, list(p))) >= abs(rho) - 1e-12 for p in itertools.permutations(y)) / 720
    assert rank.spearman_permutation_p(x, y, n_permutations=20000) == pytest.approx(exact, abs=0.01)
    assert rank.spearman_permutation_p(list(range(8)), list(range(8)), 20000) < 0.001


def test_spectral_scores_are_the_library_estimators():
    feats = torch.randn(64, 16) @ torch.randn(16, 16)
    scores = rank.spectral_scores(feats)
    assert scores["rankme"] == pytest.approx(float(ssl.effective_rank(feats, "rankme")))
    assert scores["reff_cov"] == pytest.approx(float(ssl.effective_rank(feats, "cov")))


def test_load_model_reads_each_kind_with_its_own_preprocessing(tmp_path):
    model = export(tmp_path / "export", seed=0, image_size=24)
    x = torch.randn(2, 3, 24, 24)
    ours = rank.load_model(str(tmp_path / "export"))
    assert ours.kind == "spectral_ssl" and ours.preprocessing.image_size == 24
    assert ours.preprocessing.mean == (0.5, 0.5, 0.5)
    via_timm = rank.load_model(f"local-dir:{tmp_path / 'export'}")  # plain timm reads the same export
    assert via_timm.kind == "timm" and via_timm.preprocessing.image_size == 24
    with torch.no_grad():
        expected = model.eval().embed(x)
        torch.testing.assert_close(ours.model.embed(x), expected)
        torch.testing.assert_close(via_timm.model.embed(x), expected)


def test_load_model_reads_a_transformers_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    image_size=32, patch_size=8)
    transformers.ViTModel(config).save_pretrained(tmp_path / "vit")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.1] * 3,
                                   image_std=[0.2] * 3).save_pretrained(tmp_path / "vit")
    loaded = rank.load_model(str(tmp_path / "vit"))
    assert loaded.kind == "transformers"
    assert loaded.preprocessing.image_size == 32 and loaded.preprocessing.mean == (0.1, 0.1, 0.1)
    with torch.no_grad():
        assert loaded.model.embed(torch.randn(3, 3, 32, 32)).shape == (3, 16)


def test_load_model_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        rank.load_model(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        rank.load_model(f"local-dir:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        rank.load_model(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"^org/none is not in the Hugging Face cache and the Hub cannot be "
                       "reached"):  # the tests run offline: one line, not the Hub client's paragraph
        rank.load_model("hf-hub:org/none")


def test_a_timm_hub_model_that_does_not_exist_is_one_line(hub_server):
    with pytest.raises(FileNotFoundError, match=r"^Hub repo org/none not found \(or private"):
        rank.load_model("hf-hub:org/none")


def test_score_model_equals_the_scores_of_its_features(images, tmp_path):
    from spectral_ssl.probe import eval_loader, extract_features, knn_probe, linear_probe

    export(tmp_path / "m", seed=0)
    loaded = rank.load_model(str(tmp_path / "m"))
    score = rank.score_model(loaded, str(images), "test", label_column="label")
    feats, labels = extract_features(loaded.model, eval_loader(str(images), "test", loaded.preprocessing))
    assert (score.n_samples, score.dim) == (48, 16)
    assert score.rankme == pytest.approx(float(ssl.effective_rank(feats, "rankme")), rel=1e-5)
    assert score.reff_cov == pytest.approx(float(ssl.effective_rank(feats, "cov")), rel=1e-5)
    halves = rank.split_halves(feats, labels, 0)
    assert halves[0].shape[0] == halves[2].shape[0] == 24
    assert score.knn_top1 == pytest.approx(knn_probe(*halves).top1)
    assert score.linear_top1 == pytest.approx(linear_probe(*halves, seed=0).top1)


def test_command_prints_a_table_sorted_by_rankme_and_writes_json_and_png(images, tmp_path, capsys):
    models = [str(tmp_path / f"m{i}") for i in range(3)]
    for i, folder in enumerate(models):
        export(folder, seed=i)
    report = rank.main(["--models", *models, "--dataset", str(images), "--label_column", "label",
                        "--max_samples", "32", "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "RankMe" in out and "Spearman rho(RankMe, linear top-1)" in out and "n = 3" in out
    rankmes = [s.rankme for s in report.scores]
    assert rankmes == sorted(rankmes, reverse=True) and all(s.n_samples == 32 for s in report.scores)
    saved = json.loads((tmp_path / "out" / "rank.json").read_text())
    assert [s["model"] for s in saved["scores"]] == [s.model for s in report.scores]
    assert saved["spearman_rankme_linear"] == pytest.approx(
        rank.spearman(rankmes, [s.linear_top1 for s in report.scores]))
    assert (tmp_path / "out" / "rank.png").read_bytes()[:4] == b"\x89PNG"


def test_command_without_labels_ranks_only(images, tmp_path, capsys):
    export(tmp_path / "m", seed=0)
    report = rank.main(["--models", str(tmp_path / "m"), "--dataset", str(images), "--max_samples", "16"])
    assert report.scores[0].linear_top1 is None and report.spearman_rankme_linear is None
    assert "linear" not in capsys.readouterr().out



def test_an_undecodable_image_stops_in_one_line_or_is_left_out_with_skip_corrupt(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos" / "test"
    folder.mkdir(parents=True)
    for i in range(6):
        Image.new("RGB", (32, 32), (40 * i, 10, 10)).save(folder / f"{i}.png")
    (folder / "5.png").write_bytes(b"not a png")
    export(tmp_path / "m", seed=0)
    argv = ["--models", str(tmp_path / "m"), "--dataset", str(tmp_path / "photos")]
    with pytest.raises(SystemExit) as e:
        rank.main(argv)
    assert "5.png) cannot be decoded" in str(e.value) and "--skip_corrupt=true" in str(e.value)
    assert rank.main([*argv, "--skip_corrupt=true"]).scores[0].n_samples == 5


@pytest.mark.parametrize("args, named", [
    (["--models", "MISSING"], "--models MISSING"),
    (["--split", "validation"], "--split=validation not found"),
    (["--label_column", "nope"], "--label_column=nope not found"),
])
def test_bad_input_is_one_line_naming_the_argument(images, tmp_path, args, named):
    export(tmp_path / "m", seed=0)
    argv = ["--models", str(tmp_path / "m"), "--dataset", str(images)]
    if args[0] == "--models":
        argv[1] = str(tmp_path / args[1])
        named = f"--models {tmp_path / args[1]}"
    else:
        argv += args
    with pytest.raises(SystemExit) as e:
        rank.main(argv)
    message = str(e.value)
    assert message.startswith(f"error: {named}") and "\n" not in message


def test_a_label_column_of_text_is_one_line_naming_it_before_any_model_runs(tmp_path, monkeypatch):
    folder = tmp_path / "named"
    folder.mkdir()
    named = synthetic_dataset(num_rows=8, image_size=32, seed=0)
    named.add_column("species", ["cat", "dog"] * 4).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    export(tmp_path / "m", seed=0)
    monkeypatch.setattr(rank, "rank_models", None)  # never reached
    with pytest.raises(SystemExit) as e:
        rank.main(["--models", str(tmp_path / "m"), "--dataset", str(folder), "--label_column", "species"])
    message = str(e.value)
    assert message == (f"error: reading {folder} split test: the label column (--label_column=species) holds text "
                       "('cat'), not integer class ids; map it to integer class ids, or pass --label_column=null for "
                       "unlabelled data.")


def test_a_run_folder_as_dataset_is_one_line_naming_it(tmp_path, monkeypatch):
    from tests.data.test_loader import run_and_export_folders

    run = next(iter(run_and_export_folders(tmp_path / "runs")))
    export(tmp_path / "m", seed=0)
    monkeypatch.setattr(rank, "rank_models", None)  # never reached
    with pytest.raises(SystemExit) as e:
        rank.main(["--models", str(tmp_path / "m"), "--dataset", str(run)])
    assert str(e.value) == (f"error: {run} is a spectral_ssl run or export folder, not a dataset (it holds "
                            "train_config.json); pass the image folder or dataset it was trained on.")


def test_a_bad_output_is_refused_before_any_model_is_scored(images, tmp_path, monkeypatch):
    export(tmp_path / "m", seed=0)
    monkeypatch.setattr(rank, "rank_models", None)  # never reached
    (tmp_path / "afile").write_text("x")
    argv = ["--models", str(tmp_path / "m"), "--dataset", str(images)]
    with pytest.raises(SystemExit, match=r"^error: --output .*afile is an existing file, not a folder"):
        rank.main([*argv, "--output", str(tmp_path / "afile")])
    with pytest.raises(SystemExit, match=r"^error: --output .* is inside --dataset .*; choose an --output outside it$"):
        rank.main([*argv, "--output", str(images / "ranked")])
    assert not (images / "ranked").exists()


def test_a_spearman_that_is_undefined_is_none_and_the_json_strict(images, tmp_path, monkeypatch):
    import json

    for k in range(3):
        export(tmp_path / f"m{k}", seed=0)  # three equal models: RankMe and top-1 tie, rho undefined
    report = rank.main(["--models", *(str(tmp_path / f"m{k}") for k in range(3)), "--dataset", str(images),
                        "--label_column", "label", "--output", str(tmp_path / "out")])
    assert report.spearman_rankme_linear is None and report.spearman_p_value is None
    json.loads((tmp_path / "out" / "rank.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))


@pytest.mark.parametrize("flag", ["--max_samples", "--batch_size"])
def test_counts_must_be_positive(images, tmp_path, flag, capsys):
    with pytest.raises(SystemExit):
        rank.main(["--models", str(tmp_path / "m"), "--dataset", str(images), flag, "-3"])
    assert f"argument {flag}: expected a whole number >= 1, got '-3'" in capsys.readouterr().err


def test_train_split_without_label_column_is_one_line_not_ignored(images, tmp_path, monkeypatch):
    export(tmp_path / "m", seed=0)
    monkeypatch.setattr(rank, "rank_models", None)  # never reached
    with pytest.raises(SystemExit) as e:
        rank.main(["--models", str(tmp_path / "m"), "--dataset", str(images), "--train_split", "train"])
    assert str(e.value) == ("error: --train_split=train fits the probes, which need labels; pass --label_column, or "
                            "drop --train_split")


def test_label_column_null_as_the_errors_suggest_ranks_without_labels(images, tmp_path):
    export(tmp_path / "m", seed=0)
    report = rank.main(["--models", str(tmp_path / "m"), "--dataset", str(images), "--label_column=null",
                        "--max_samples", "16"])
    assert report.scores[0].linear_top1 is None and report.settings["label_column"] is None


def test_a_flat_image_folder_has_no_labels_one_line_and_ranks_without(tmp_path, monkeypatch):
    folder = tmp_path / "flat"
    for split, n in (("train", 6), ("test", 6)):
        (folder / split).mkdir(parents=True)
        for i, row in enumerate(synthetic_dataset(num_rows=n, image_size=32, seed=0)):
            row["image"].save(folder / split / f"{i}.png")
    export(tmp_path / "m", seed=0)
    argv = ["--models", str(tmp_path / "m"), "--dataset", str(folder)]
    assert rank.main(argv).scores[0].n_samples == 6
    with pytest.raises(SystemExit) as e:  # was: the split folders' names as one class ("needs at least 2 classes")
        rank.main([*argv, "--label_column", "label"])
    assert str(e.value).startswith(f"error: --label_column=label not found in {folder} split test; available "
                                   "columns: image;")


def test_help_states_every_option_and_its_default(capsys):
    with pytest.raises(SystemExit):
        rank.main(["--help"])
    out = " ".join(capsys.readouterr().out.split("options:")[1].split())
    for option in ("--models", "--dataset", "--split", "--image_column", "--label_column", "--train_split",
                   "--max_samples", "--batch_size", "--seed", "--skip_corrupt", "--output"):
        text = out.split(option, 1)[1].split(" --", 1)[0]
        assert "default" in text or "required" in text, option


def test_train_split_equal_to_split_never_scores_the_rows_it_fitted(images, tmp_path):
    export(tmp_path / "m", seed=0)
    argv = ["--models", str(tmp_path / "m"), "--dataset", str(images), "--label_column", "label", "--seed", "3"]
    same = rank.main([*argv, "--train_split", "test"])
    halves = rank.main(argv)  # was: fitted and scored on all 48 rows (seed-independent, optimistic)
    assert same.scores[0].knn_top1 == halves.scores[0].knn_top1
    assert same.scores[0].linear_top1 == halves.scores[0].linear_top1
    assert same.settings["probe_fit"] == "seeded half of test"


def test_a_users_own_rank_json_is_never_replaced_and_a_report_is(images, tmp_path):
    export(tmp_path / "m", seed=0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "rank.json").write_text('{"my": "notes"}')
    argv = ["--models", str(tmp_path / "m"), "--dataset", str(images), "--max_samples", "16", "--output", str(out)]
    with pytest.raises(SystemExit, match=r"holds a rank.json this tool did not write; choose another --output"):
        rank.main(argv)
    assert (out / "rank.json").read_text() == '{"my": "notes"}'
    (out / "rank.json").unlink()
    rank.main(argv)
    rank.main(argv)  # its own report: replaced
    assert "scores" in json.loads((out / "rank.json").read_text())


def test_a_data_error_while_scoring_names_the_dataset_split_and_cap(images, tmp_path):
    export(tmp_path / "m", seed=0)
    with pytest.raises(SystemExit) as e:
        rank.main(["--models", str(tmp_path / "m"), "--dataset", str(images), "--max_samples", "1"])
    assert str(e.value).startswith(f"error: --dataset {images} --split test --max_samples 1: ")
    assert "\n" not in str(e.value)
