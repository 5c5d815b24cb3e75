"""Typed recipe configuration: YAML then --key=value, types from the annotations, one-line errors, --help."""

import re
from pathlib import Path

import pytest

from spectral_ssl.config import (
    SAFE_TO_CHANGE_ON_RESUME,
    ConfigError,
    PretrainConfig,
    ProbeConfig,
    config_dict,
    config_keys,
    parse_config,
)
from spectral_ssl.losses import create_loss

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "recipes" / "configs").glob("*.yaml"))


def test_yaml_then_overrides_with_types_from_the_annotations(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("batch_size: 32\nlr: 1\nbackbone_kwargs: {drop_rate: 0.1}\ngreedy_m: 64\n")
    cfg = parse_config(PretrainConfig, ["--config", str(cfg_file), "--batch_size=8", "--mean=[0.5, 0.5, 0.5]",
                                        "--greedy_m", "null", "--target_reff=0.96*C", "--resume"])
    assert cfg.batch_size == 8 and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.backbone_kwargs == {"drop_rate": 0.1} and cfg.mean == [0.5, 0.5, 0.5]
    assert cfg.greedy_m is None and cfg.target_reff == "0.96*C" and cfg.resume is True
    assert parse_config(PretrainConfig, ["--target_reff=0.5"]).target_reff == 0.5
    assert parse_config(PretrainConfig, ["--loss=simclr"]).loss == "infonce"
    # YAML 1.1 reads 1e-4 (no dot) as a string: float keys take it, on the command line and in a file
    cfg_file.write_text("lr: 3e-3\n")
    cfg = parse_config(PretrainConfig, ["--config", str(cfg_file), "--whitening_eps=1e-4", "--weight_decay", "5E-5"])
    assert (cfg.lr, cfg.whitening_eps, cfg.weight_decay) == (3e-3, 1e-4, 5e-5)
    cfg = parse_config(PretrainConfig, ["--max_steps=1e4", "--batch_size=512.0", "--warmup_steps=2.0e2"])
    assert (cfg.max_steps, cfg.batch_size, cfg.warmup_steps) == (10000, 512, 200)
    assert isinstance(cfg.max_steps, int) and isinstance(cfg.batch_size, int)
    for bad in ("--batch_size=2.5", "--batch_size=1e400", "--batch_size=nan"):
        with pytest.raises(ConfigError, match="--batch_size expects int"):
            parse_config(PretrainConfig, [bad])


@pytest.mark.parametrize("args,message", [
    (["--batch_size=abc"], "--batch_size expects int, got 'abc'"),
    (["--streaming=maybe"], "--streaming expects bool"),
    (["--selection=best"], "--selection expects random | pool | greedy, got 'best'"),
    (["--greedy_m=0"], "--greedy_m must be a positive integer or null"),
    (["--whitening=zca", "--batch_size=64", "--proj_dim=128"], "needs batch_size > proj_dim"),
    (["--whitening=cholesky", "--whitening_solver=newton_schulz"],
     "--whitening_solver newton_schulz computes zca's inverse square root; whitening=cholesky takes none"),
    (["--target_accuracy=80"], "--target_accuracy needs --probe_every"),
    (["--collapse_alarm=raise"], "--collapse_alarm expects warn | stop | none, got 'raise'"),
    (["--collapse_patience=0"], "--collapse_patience must be a positive integer, got 0"),
    (["--config", "does/not/exist.yaml"], "config file does/not/exist.yaml not found"),
    (["--nope=1"], "unknown config key 'nope'; valid keys: dataset, split"),
    (["stray"], "unexpected argument 'stray'"),
    (["--selection=greedy", "--greedy_m=64", "--selection_kwargs={m: 32}"],
     "--greedy_m and --selection_kwargs {m: ...} both set the selector's 'm'; keep one"),
    (["--selection=pool", "--selection_kwargs={m: 32}"],
     "--selection_kwargs has 'm', which selection 'pool' does not take; its arguments are ['candidates', 'embed_size', "
     "'space', 'tail', 'target', 'until']"),
    (["--loss_kwargs={1: 2}"], "--loss_kwargs keys must be argument names, e.g. {name: value}; got the key 1"),
    (["--loss_kwargs={temperature: 0.5}"],
     "--loss_kwargs sets 'temperature', which the recipe sets from --temperature; set that instead"),
    (["--loss=byol", "--loss_kwargs={ema_momentum: 0.9}"],
     "--loss_kwargs sets 'ema_momentum', which the recipe sets from --ema_momentum; set that instead"),
    (["--loss_kwargs={dim: 8}"], "--loss_kwargs sets 'dim', which the recipe sets from --proj_dim; set that instead"),
    (["--backbone_kwargs={null: 1}"], "--backbone_kwargs keys must be argument names"),
    (["--selection_kwargs={true: 1}"], "--selection_kwargs keys must be argument names"),
    (["--augment_kwargs={1e-1: 2, grayscale_p: 0}"], "--augment_kwargs keys must be argument names"),
    (["--seed=-1"], "--seed must be an integer in [0, 2**32 - 1], got -1"),
    (["--seed=99999999999"], "--seed must be an integer in [0, 2**32 - 1], got 99999999999"),
    (["--seed=4294967296"], "--seed must be an integer in [0, 2**32 - 1]"),
    (["--dataset="], "--dataset is empty"),
    (["--dataset", "  "], "--dataset is empty"),
    (["--config="], "--config is empty"),
])
def test_mistakes_are_one_line_config_errors(args, message):
    with pytest.raises(ConfigError) as e:
        parse_config(PretrainConfig, args)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_synced_whitening_leaves_the_batch_check_to_the_recipe():
    # the global batch decides, and only the recipe knows the number of processes
    cfg = parse_config(PretrainConfig, ["--whitening=zca", "--whitening_sync=true", "--batch_size=64",
                                        "--proj_dim=128"])
    assert cfg.objective.whitening_sync is True


def test_seed_bounds_are_accepted_by_both_recipes():
    assert parse_config(PretrainConfig, ["--seed=4294967295"]).optim.seed == 2**32 - 1
    assert parse_config(PretrainConfig, ["--seed=0"]).optim.seed == 0
    assert parse_config(ProbeConfig, ["--model=o/n", "--seed=4294967295"]).seed == 2**32 - 1
    for bad in ("-1", "4294967296"):
        with pytest.raises(ConfigError, match=r"^--seed must be an integer in \[0, 2\*\*32 - 1\]"):
            parse_config(ProbeConfig, ["--model=o/n", f"--seed={bad}"])


def test_exponent_numbers_inside_kwargs_are_floats_on_the_command_line_and_in_a_file(tmp_path):
    # YAML 1.1 reads 1e-1 (no dot) as a string; the *_kwargs values are passed on as they are read
    cfg = parse_config(PretrainConfig, ["--loss=sogclr", "--loss_kwargs={gamma: 1e-1}",
                                        "--backbone_kwargs={drop_rate: 1e-1}",
                                        "--augment_kwargs={crop_scale: [1e-1, 1.0]}",
                                        "--selection=greedy", "--selection_kwargs={eps: 1E-3}"])
    assert cfg.objective.loss_kwargs == {"gamma": 0.1} and isinstance(cfg.loss_kwargs["gamma"], float)
    assert cfg.model.backbone_kwargs == {"drop_rate": 0.1}
    assert cfg.data.augment_kwargs == {"crop_scale": [0.1, 1.0]}
    assert cfg.batching.selection_kwargs == {"eps": 0.001}
    loss = create_loss(cfg.loss, dim=cfg.proj_dim, dataset_size=100, temperature=cfg.temperature, **cfg.loss_kwargs)
    assert loss.gamma == 0.1
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("loss: sogclr\nloss_kwargs: {gamma: 1e-1}\naugment_kwargs:\n  crop_scale: [5E-1, 1.0]\n"
                        "  nested: {a: [-2.5e+3, .5e1, 1e5]}\nlr: 2e-3\n")
    cfg = parse_config(PretrainConfig, ["--config", str(cfg_file)])
    assert cfg.objective.loss_kwargs == {"gamma": 0.1} and cfg.optim.lr == 0.002
    assert cfg.data.augment_kwargs == {"crop_scale": [0.5, 1.0], "nested": {"a": [-2500.0, 5.0, 100000.0]}}
    # words that only look like numbers stay strings; other YAML scalars keep their types
    cfg = parse_config(PretrainConfig, ["--backbone_kwargs={a: e5, b: 1e, c: 1.2.3, d: 1e5e5, e: 10, f: true, "
                                        "g: '1e-1', h: 0x10}"])
    assert cfg.backbone_kwargs == {"a": "e5", "b": "1e", "c": "1.2.3", "d": "1e5e5", "e": 10, "f": True,
                                   "g": "1e-1", "h": 16}


def test_a_number_too_large_for_a_float_key_is_refused_as_before():
    for bad in ("--lr=1e400", "--lr=-1e400", "--greedy_window=1e999"):
        with pytest.raises(ConfigError, match=r"^--(lr|greedy_window) expects float"):
            parse_config(PretrainConfig, [bad])


def test_flat_selection_keys_fill_the_selectors_own_arguments():
    cfg = parse_config(PretrainConfig, ["--selection=greedy", "--greedy_m=64", "--selection_source=online",
                                        "--selection_kwargs={window: 12}", "--pool_candidates=5"])
    # pool_candidates is Pool-P's key, not Greedy's: ignored
    assert cfg.batching.selector_arguments() == {"m": 64, "source": "online", "window": 12}
    cfg = parse_config(PretrainConfig, ["--selection=pool", "--pool_candidates=5", "--target_reff=0.5",
                                        "--selection_tail=drop", "--selection_until=100"])
    assert cfg.batching.selector_arguments() == {"candidates": 5, "target": 0.5, "tail": "drop", "until": 100}
    cfg = parse_config(PretrainConfig, ["--selection=greedy", "--selection_until=0.25"])  # a fraction of the run
    assert cfg.batching.selector_arguments() == {"until": 0.25}
    assert isinstance(parse_config(PretrainConfig, ["--selection=greedy", "--selection_until=40"]).batching
                      .selection_until, int)
    for bad in ("0", "1.5", "-3"):
        with pytest.raises(ConfigError, match=r"^--selection_until must be a whole number of steps, a fraction of the "
                                              rf"run \(0 < f < 1\) or null, got {bad}"):
            parse_config(PretrainConfig, ["--selection=greedy", f"--selection_until={bad}"])
    assert parse_config(PretrainConfig, ["--selection=random", "--greedy_m=64"]).batching.selector_arguments() == {}
    cfg = parse_config(PretrainConfig, ["--selection=greedy", "--selection_embed_size=16"])
    assert cfg.batching.selector_arguments() == {"embed_size": 16}
    with pytest.raises(ConfigError, match=r"^--selection_embed_size must be a positive integer or null, got 0"):
        parse_config(PretrainConfig, ["--selection=greedy", "--selection_embed_size=0"])


def refuse_config_file(path, text, message):
    """``--config path`` holding ``text`` is a ConfigError matching ``message``."""
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        parse_config(PretrainConfig, ["--config", str(path)])


def test_yaml_file_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    refuse_config_file(bad, "lr: 0.1\nbatch_size: [1,\n", rf"config file {bad} line 3 is not valid YAML")
    refuse_config_file(bad, "batch_size: [1]\n", r"--batch_size expects int, got \[1\]")
    refuse_config_file(bad, "queue_size: 10\n", rf"unknown config key 'queue_size' in {bad}")


def test_config_files_that_cannot_be_read_are_one_line_naming_the_file(tmp_path, monkeypatch):
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes(b"lr: 0.1\n# caf\xe9\n\xff\n")
    folder = tmp_path / "configs"
    folder.mkdir()
    nul = tmp_path / "nul.yaml"
    nul.write_text("lr: 0.1\x00\n")
    cases = [(binary, f"config file {binary} is not UTF-8 text (byte 0xe9 on line 2); save it as UTF-8"),
             (folder, f"config file {folder} is a directory; pass --config a YAML file"),
             (nul, f"config file {nul} is not valid YAML (unacceptable character #x0000")]
    for path, message in cases:
        with pytest.raises(ConfigError) as e:
            parse_config(PretrainConfig, ["--config", str(path)])
        assert str(e.value).startswith(message) and "\n" not in str(e.value)
    unreadable = tmp_path / "locked.yaml"
    unreadable.write_text("lr: 0.1\n")

    def refuse(self, *args, **kwargs):  # as chmod 000 for a non-root user
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(ConfigError, match=rf"^config file {unreadable} cannot be read \(Permission denied\); check "
                                          r"its permissions$"):
        parse_config(PretrainConfig, ["--config", str(unreadable)])


def test_help_lists_every_key_with_its_default(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(PretrainConfig, ["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for _, f, _ in config_keys(PretrainConfig):
        assert f"--{f.name}" in text, f.name
    assert "default: 256" in text and "{random,pool,greedy}" in text
    for group in ("data", "model", "objective", "batching", "optim", "run"):
        assert f"{group} keys:" in text, group


def test_keys_are_grouped_and_stay_flat_on_the_command_line_and_in_the_saved_config():
    cfg = parse_config(PretrainConfig, ["--lr=0.5", "--batch_size=8", "--selection=pool", "--whitening=zca",
                                        "--proj_dim=4"])
    assert cfg.optim.lr == 0.5 and cfg.lr == 0.5 and cfg.batching.selection == "pool" and cfg.selection == "pool"
    assert cfg.objective.whitening == "zca" and cfg.data.dataset == cfg.dataset
    flat = config_dict(cfg)
    assert flat["lr"] == 0.5 and flat["selection"] == "pool" and "optim" not in flat
    assert sorted(flat) == sorted(f.name for _, f, _ in config_keys(PretrainConfig))
    with pytest.raises(AttributeError, match="no key 'nope'"):
        _ = cfg.nope


def test_probe_config_requires_a_model_and_push_alone_means_the_models_repo():
    with pytest.raises(ConfigError, match="--model is required"):
        parse_config(ProbeConfig, [])
    assert parse_config(ProbeConfig, ["--model=x", "--push"]).push == "model"
    assert parse_config(ProbeConfig, ["--model=x", "--push=org/y"]).push == "org/y"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_parses_and_builds_its_loss(path):
    cfg = parse_config(PretrainConfig, ["--config", str(path)])
    assert cfg.output_dir.endswith(path.stem)
    create_loss(cfg.loss, dim=cfg.proj_dim, dataset_size=60_000, temperature=cfg.temperature, **cfg.loss_kwargs)


def test_every_cpu_recipe_trains_the_demos_network_and_budget():
    """The method configs share the network and budget of the demo's (the README's recipe table measured them so;
    the stock resnet18 ends in a 1 x 1 map at 32 px and trained worse, docs/benchmarks.md); the GPU config differs."""
    shared = ("backbone", "backbone_kwargs", "image_size", "proj_hidden_dim", "proj_dim", "batch_size", "epochs",
              "warmup_steps", "lr")
    configs = {p.stem: parse_config(PretrainConfig, ["--config", str(p)]) for p in CONFIGS}
    demo = configs.pop("fashion_mnist_simclr")
    assert configs.pop("fashion_mnist_gpu").backbone_kwargs != demo.backbone_kwargs
    assert len(configs) == 7
    for name, cfg in configs.items():
        assert {k: getattr(cfg, k) for k in shared} == {k: getattr(demo, k) for k in shared}, name


def test_output_dir_expands_the_home_folder_and_refuses_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = parse_config(PretrainConfig, ["--output_dir=~/runs/x"])
    assert cfg.run.output_dir == str(tmp_path / "runs" / "x") and "~" not in config_dict(cfg)["output_dir"]
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"^--output_dir .*notes.txt is an existing file, not a folder"):
        parse_config(PretrainConfig, [f"--output_dir={tmp_path / 'notes.txt'}"])
    with pytest.raises(ConfigError, match=r"^--output_dir .*notes.txt/run is below .*notes.txt, a file"):
        parse_config(PretrainConfig, ["--output_dir=~/notes.txt/run"])


def test_an_output_dir_that_cannot_be_written_is_refused(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a read-only folder for a non-root user
    with pytest.raises(ConfigError, match=r"^--output_dir .* is not writable; choose another --output_dir"):
        parse_config(PretrainConfig, [f"--output_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()


def test_an_online_probe_needs_labels_and_two_samples():
    with pytest.raises(ConfigError, match=r"^--probe_every needs a --label_column"):
        parse_config(PretrainConfig, ["--probe_every=10", "--label_column=null"])
    with pytest.raises(ConfigError, match=r"^--probe_samples must be >= 2"):
        parse_config(PretrainConfig, ["--probe_samples=1"])
    assert parse_config(PretrainConfig, ["--probe_every=10", "--probe_samples=2"]).run.probe_samples == 2


def test_the_recipes_refuse_a_run_folder_as_dataset_with_the_readers_line(tmp_path):
    from spectral_ssl import data
    from tests.data.test_loader import run_and_export_folders

    for folder, marker in run_and_export_folders(tmp_path).items():
        line = (f"{folder} is a spectral_ssl run or export folder, not a dataset (it holds {marker}); pass the image "
                "folder or dataset it was trained on")
        with pytest.raises(ValueError, match=f"^{re.escape(line)}.$"):  # the library reader
            data.load_images(str(folder), "train")
        for config, args in ((PretrainConfig, [f"--output_dir={tmp_path / 'out'}"]), (ProbeConfig, ["--model=o/n"])):
            with pytest.raises(ConfigError, match=f"^--dataset {re.escape(line)}$"):  # before anything is loaded
                parse_config(config, [f"--dataset={folder}", *args])


def test_a_run_folder_is_no_dataset_and_a_dataset_holds_no_run(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    run.mkdir()
    (run / "train_config.json").write_text("{}")
    (data / "train").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"^--dataset .*run is a spectral_ssl run or export folder, not a dataset"):
        parse_config(PretrainConfig, [f"--dataset={run}", f"--output_dir={tmp_path / 'out'}"])
    with pytest.raises(ConfigError, match=r"^--dataset .*run is a spectral_ssl run or export folder"):
        parse_config(ProbeConfig, ["--model=org/name", f"--dataset={run}"])
    for inside in (data, data / "runs" / "x"):
        with pytest.raises(ConfigError, match=r"^--output_dir .* is inside --dataset .*; choose an --output_dir "
                                              r"outside it"):
            parse_config(PretrainConfig, [f"--dataset={data}", f"--output_dir={inside}"])
    assert parse_config(PretrainConfig, [f"--dataset={data}", f"--output_dir={tmp_path / 'out'}"])


def test_the_probe_output_is_checked_before_the_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_config(ProbeConfig, ["--model=org/name", "--output=~/new/p.json"]).output == str(
        tmp_path / "new" / "p.json")
    with pytest.raises(ConfigError, match=r"^--output .* is an existing folder; name a file in it"):
        parse_config(ProbeConfig, ["--model=org/name", f"--output={tmp_path}"])
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"^--output .*notes.txt is an existing file, not a folder"):
        parse_config(ProbeConfig, ["--model=org/name", "--output=~/notes.txt/p.json"])


def test_the_probe_model_expands_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for given, expanded in (("~/run", str(tmp_path / "run")), ("local-dir:~/run", f"local-dir:{tmp_path / 'run'}"),
                            ("org/name", "org/name"), ("hf-hub:org/name", "hf-hub:org/name")):
        assert parse_config(ProbeConfig, [f"--model={given}"]).model == expanded


def test_a_key_given_twice_and_a_value_that_is_no_yaml_are_one_line(tmp_path):
    # PyYAML keeps the last of two equal keys silently; a command-line value that is no YAML was a traceback
    config = tmp_path / "run.yaml"
    refuse_config_file(config, "dataset: x\nlr: 0.1\nbatch_size: 8\nlr: 0.5\n",
                       r"run.yaml line 4 is not valid YAML \(the key 'lr' appears twice\)")
    refuse_config_file(config, "dataset: x\nloss_kwargs: {queue_size: 8, queue_size: 9}\n",
                       r"line 2 is not valid YAML \(the key 'queue_size' appears twice\)")
    for value, problem in (("{a: 1, a: 2}", "the key 'a' appears twice"), ("{a: ", "expected the node content")):
        with pytest.raises(ConfigError) as e:
            parse_config(PretrainConfig, ["--dataset=x", f"--loss_kwargs={value}"])
        assert str(e.value).startswith(f"--loss_kwargs expects dict written as YAML, got {value!r} ({problem}")
        assert "\n" not in str(e.value)
    config.write_text("dataset: x\nlr: 0.1\noptimizer: sgd\n")  # distinct keys still load
    assert parse_config(PretrainConfig, ["--config", str(config)]).optim.lr == 0.1
    from spectral_ssl.config import _load_yaml  # a merged key (<<: *base) that the mapping overrides is no repeat

    assert _load_yaml("base: &b {lr: 0.1, seed: 1}\nrun:\n  <<: *b\n  lr: 0.2\n")["run"] == {"lr": 0.2, "seed": 1}


def test_a_probe_push_to_a_bad_repo_id_is_refused_before_the_probe():
    with pytest.raises(ConfigError, match="^--push: .*must look like 'org/name'"):
        parse_config(ProbeConfig, ["--model=org/x", "--push=not a repo"])
    assert parse_config(ProbeConfig, ["--model=org/x", "--push"]).push == "model"
    assert parse_config(ProbeConfig, ["--model=org/x", "--push=org/y"]).push == "org/y"


def test_the_probe_grid_is_a_list_of_penalties_or_null():
    assert parse_config(ProbeConfig, ["--model=o/n"]).weight_decays is None  # the library's grid
    assert parse_config(ProbeConfig, ["--model=o/n", "--weight_decays=[1e-4, 1]"]).weight_decays == [1e-4, 1.0]
    for bad in ("[]", "[-1e-3]", "[1e-3, -2]"):
        with pytest.raises(ConfigError, match=r"^--weight_decays must be a list of one or more numbers >= 0, e\.g\. "
                                              r"'\[1e-4, 1e-2, 1\]', got \["):
            parse_config(ProbeConfig, ["--model=o/n", f"--weight_decays={bad}"])
    for bad in ("[true]", "[.inf]", "x"):
        with pytest.raises(ConfigError, match=r"^--weight_decays expects list or null, got "):
            parse_config(ProbeConfig, ["--model=o/n", f"--weight_decays={bad}"])


@pytest.mark.parametrize("config, argv, key", [(ProbeConfig, ["--model=o/n", "--max_train=10"], "max_train"),
                                               (PretrainConfig, ["--epoch=3"], "epoch"),
                                               (PretrainConfig, ["--warmup", "5"], "warmup")])
def test_a_key_is_its_whole_name_never_a_prefix_of_one(config, argv, key):
    # argparse's default took these for --max_train_samples, --epochs and --warmup_steps, silently
    with pytest.raises(ConfigError, match=rf"^unknown config key '{key}'; valid keys: "):
        parse_config(config, argv)


def test_objective_arguments_cover_create_objective_and_pass_the_loss_kwargs():
    import inspect

    from spectral_ssl.config import OBJECTIVE_SET_BY_RECIPE
    from spectral_ssl.objective import create_objective

    cfg = parse_config(PretrainConfig, ["--loss=moco", "--loss_kwargs={queue_size: 64}", "--temperature=0.3",
                                        "--whitening=zca", "--whitening_eps=0.01", "--ema_momentum=0.9",
                                        "--batch_size=256"])
    args = cfg.objective.objective_arguments()
    assert args == {"whitening": "zca", "whitening_eps": 0.01, "whitening_solver": "auto", "whitening_sync": False,
                    "ema_momentum": 0.9, "ema_momentum_final": None, "temperature": 0.3, "queue_size": 64}
    own = set(inspect.signature(create_objective).parameters) - {"model", "loss", "loss_kwargs"}
    assert own | {"temperature"} == set(OBJECTIVE_SET_BY_RECIPE)  # every argument the recipe sets is refused
    assert own - {"dim", "dataset_size", "gather_distributed"} <= set(args)  # ... in loss_kwargs, and passed here


def test_report_to_names_accelerates_trackers():
    run = parse_config(PretrainConfig, ["--report_to=TensorBoard, wandb,tensorboard"]).run
    assert run.report_to == "tensorboard,wandb" and run.trackers() == ["tensorboard", "wandb"]
    assert parse_config(PretrainConfig, []).run.trackers() == [] and parse_config(
        PretrainConfig, ["--report_to=all"]).run.trackers() == ["all"]
    for bad, message in (("tb", r"^--report_to has 'tb'; choose none, all or a comma list of tensorboard, wandb"),
                         ("none,wandb", r"^--report_to 'none,wandb' mixes none or all with other trackers"),
                         ("all,trackio", r"^--report_to 'all,trackio' mixes none or all")):
        with pytest.raises(ConfigError, match=message):
            parse_config(PretrainConfig, [f"--report_to={bad}"])
    assert "report_to" in SAFE_TO_CHANGE_ON_RESUME  # where the metrics also go does not change the run
