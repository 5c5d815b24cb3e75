"""Nothing lost, nothing mixed: kill -9 at chosen moments, reused folders, bad data, one-line user errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.recipes.test_pretrain import tiny_args

ROOT = Path(__file__).resolve().parents[2]

# Runs the recipe in a fresh process and SIGKILLs it right before the N-th call of one function.
KILLER = """
import importlib.util, os, signal, sys
sys.path.insert(0, {root!r})
spec = importlib.util.spec_from_file_location("pretrain", {recipe!r})
recipe = importlib.util.module_from_spec(spec); sys.modules["pretrain"] = recipe; spec.loader.exec_module(recipe)
import torch, safetensors.torch
from spectral_ssl import lr_schedule, run_folder
target, n = sys.argv[1], int(sys.argv[2])
owner, name = {{"step": (lr_schedule, "warmup_cosine"), "torch_save": (torch, "save"),
                "manifest": (run_folder, "write_manifest"), "rename": (os, "replace")}}[target]
original, calls = getattr(owner, name), [0]
def killer(*args, **kwargs):
    calls[0] += 1
    if calls[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(owner, name, killer)
recipe.main(sys.argv[3:])
"""


def run_killed(args, target, n):
    code = KILLER.format(root=str(ROOT), recipe=str(ROOT / "recipes" / "pretrain.py"))
    # the child trains the first steps: with this process's thread count, or its float reductions (channels_last
    # convolutions split by thread) differ from the uninterrupted run's; its own policy would count the load then
    env = {**os.environ, "SPECTRAL_SSL_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, "-c", code, target, str(n), *args], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == -9, (target, n, proc.stderr[-2000:])


@pytest.mark.slow
def test_kill_9_at_any_moment_then_resume_gives_the_uninterrupted_weights(pretrain, tiny_dataset, tmp_path):
    # 96 rows / 16 = 6 steps per epoch, 8 steps: the run crosses an epoch; checkpoints every 2 steps, 2 kept
    extra = ("--max_steps=8", "--save_every=2", "--save_total_limit=2")
    straight = load_file(pretrain.main(tiny_args(tiny_dataset, tmp_path / "straight", *extra)) / "model.safetensors")
    moments = [("step", 4),        # between checkpoints (step 4 not yet trained)
               ("torch_save", 3),  # inside accelerate's save_state of the 2nd checkpoint: a torn .tmp folder
               ("manifest", 2),    # 2nd checkpoint's files written, manifest not yet: never renamed
               ("rename", 3)]      # 3rd checkpoint complete but not renamed into place
    for target, n in moments:
        out = tmp_path / f"{target}_{n}"
        args = tiny_args(tiny_dataset, out, *extra)
        run_killed(args, target, n)
        assert not (out / "model.safetensors").exists()
        resumed = load_file(pretrain.main(args + ["--resume=true"]) / "model.safetensors")
        for key, value in straight.items():
            assert bool((resumed[key] == value).all()), (target, n, key)  # bit-identical
        steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps)), (target, n, steps)  # no repeated step


@pytest.mark.slow
def test_reused_output_dir_and_changed_resume_are_refused_and_a_failed_export_can_be_retried(
        pretrain, tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    pretrain.main(tiny_args(tiny_dataset, out, "--max_steps=2"))
    with pytest.raises(SystemExit, match=r"already holds a run .*--resume=true"):
        pretrain.main(tiny_args(tiny_dataset, out, "--max_steps=2", "--lr=0.5"))
    with pytest.raises(SystemExit, match=r"lr differ from the saved run"):
        pretrain.main(tiny_args(tiny_dataset, out, "--max_steps=2", "--lr=0.5", "--resume=true"))
    # an export that fails after training: the final state is saved, so a resume only exports
    failing = tmp_path / "failing"

    def broken_export(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pretrain, "export", broken_export)
    with pytest.raises(RuntimeError, match="disk full"):
        pretrain.main(tiny_args(tiny_dataset, failing, "--max_steps=3", "--save_every=2"))
    monkeypatch.undo()
    assert (failing / "checkpoints" / "step_000003").is_dir()
    pretrain.main(tiny_args(tiny_dataset, failing, "--max_steps=3", "--save_every=2", "--resume=true"))
    assert json.loads((failing / "config.json").read_text())["spectral_ssl"]["steps"] == 3


def write_images(folder, images):
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        image.save(folder / f"{i}.png")


@pytest.mark.slow
def test_corrupt_rows_are_skipped_counted_and_the_epoch_ends_normally(pretrain, tmp_path):
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    write_images(data / "train", [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
                                  for _ in range(36)])
    for i in (3, 17):
        (data / "train" / f"{i}.png").write_bytes(b"not a png")
    out = pretrain.main(tiny_args(data, tmp_path / "run", "--epochs=2", "--skip_corrupt=true", "--eval_split=train",
                                  "--label_column=null", "--batch_size=8", "--image_size=16", "--log_every=1"))
    meta = json.loads((out / "config.json").read_text())["spectral_ssl"]
    assert meta["skipped_rows"] == 4 and meta["steps"] == 8  # 34 good rows -> 4 batches of 8, twice
    assert "Undecodable rows skipped: 4" in (out / "README.md").read_text()



def test_an_undecodable_image_met_while_streaming_is_one_line_naming_the_file_and_the_run_goes_on(pretrain, tmp_path):
    # uncached (a split over the cache limit, or cache_decoded=off): the bad file is met mid-run, after a checkpoint
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    write_images(data / "train", [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
                                  for _ in range(40)])
    (data / "train" / "25.png").write_bytes(b"not a png")  # row 18 in name order: read for the 3rd batch of 8
    args = tiny_args(data, tmp_path / "run", "--max_steps=4", "--save_every=1", "--eval_split=train",
                     "--label_column=null", "--batch_size=8", "--image_size=16", "--shuffle_buffer=1",
                     cache="off")
    with pytest.raises(SystemExit) as e:
        pretrain.main(args)
    message = str(e.value)
    assert message.startswith("error: image at idx ") and "25.png) cannot be decoded" in message
    assert message.endswith("Then run the same command with --resume=true (from the last checkpoint) "
                            "--skip_corrupt=true") and "\n" not in message
    out = pretrain.main([*args, "--resume=true", "--skip_corrupt=true"])  # skip_corrupt may change on resume
    assert json.loads((out / "config.json").read_text())["spectral_ssl"]["steps"] == 4


@pytest.mark.slow
def test_the_export_needs_no_labels_and_leaves_out_an_undecodable_eval_image(pretrain, tmp_path):
    # a wrong label_column and a corrupt eval image used to fail the run after training, at the export
    data = tmp_path / "data"
    write_images(data / "train", [Image.new("RGB", (16, 16), (i, 2 * i, 3 * i)) for i in range(16)])
    write_images(data / "test", [Image.new("RGB", (16, 16), (i, i, i)) for i in range(8)])
    (data / "test" / "3.png").write_bytes(b"not a png")
    out = pretrain.main(tiny_args(data, tmp_path / "run", "--max_steps=2", "--batch_size=8", "--image_size=16",
                                  "--label_column=no_such_column"))
    assert json.loads((out / "config.json").read_text())["spectral_ssl"]["effective_rank"]["n_samples"] == 7


def test_synced_whitening_needs_a_global_batch_above_proj_dim(pretrain, tiny_dataset, tmp_path):
    # the config cannot know the number of processes; the recipe checks it (one process here: 16 <= 16)
    with pytest.raises(SystemExit, match=r"^error: whitening needs a global batch > proj_dim \(got 16 x 1 process"):
        pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--whitening=zca", "--whitening_sync=true"))


@pytest.mark.slow
def test_a_resume_after_the_dataset_lost_the_waiting_rows_is_one_line(pretrain, tiny_dataset, tmp_path):
    import shutil

    from spectral_ssl.data import synthetic_dataset

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    extra = ("--selection=pool", "--cache_decoded=off", "--shuffle_buffer=1", "--save_every=2")
    pretrain.main(tiny_args(data, tmp_path / "run", "--max_steps=2", *extra))  # candidates wait in the pool
    synthetic_dataset(num_rows=40, image_size=32, num_classes=4, seed=5).to_parquet(
        str(data / "train-00000-of-00001.parquet"))  # replaced by a smaller split: the waiting rows are gone
    with pytest.raises(SystemExit, match=r"^error: resume could not re-read the \d+ samples waiting in the selection "
                                         r"pool; the dataset changed"):
        pretrain.main(tiny_args(data, tmp_path / "run", "--max_steps=4", "--resume=true", *extra))


def test_empty_split_stops_with_one_line(pretrain, tmp_path):
    data = tmp_path / "data"
    write_images(data / "train", [Image.new("RGB", (8, 8))] * 2)
    with pytest.raises(SystemExit, match=r"2 training rows cannot fill one global batch of 16"):
        pretrain.main(tiny_args(data, tmp_path / "run", "--eval_split=train", "--max_steps=3"))


def test_folder_without_images_says_so(pretrain, tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(SystemExit, match=r"no images or data files found under"):
        pretrain.main(tiny_args(tmp_path / "empty", tmp_path / "run"))


def test_missing_eval_split_is_reported_before_training(pretrain, tmp_path):
    data = tmp_path / "data"
    write_images(data / "train", [Image.new("RGB", (8, 8))] * 20)
    with pytest.raises(SystemExit, match=r"^error: --eval_split=test not found in .*; available splits: train; "
                                         r"pass --eval_split=train$"):
        pretrain.main(tiny_args(data, tmp_path / "run", "--max_steps=1"))
    with pytest.raises(SystemExit, match=r"^error: --image_column=img not found in .*; available columns: image; "
                                         r"pass --image_column=<one of them>$"):
        pretrain.main(tiny_args(data, tmp_path / "run", "--max_steps=1", "--image_column=img"))
    assert not (tmp_path / "run" / "train_config.json").exists()  # the folder stays free


@pytest.mark.parametrize("args,fragment", [
    (["--backbone=resnet1"], "Unknown timm backbone 'resnet1'. Did you mean"),
    (["--backbone_kwargs={bogus: 1}"], "rejected backbone_kwargs"),
    (["--lr=nan"], "--lr expects float"),
    (["--lr=-1"], "--lr must be > 0"),
    (["--image_size=4"], "--image_size must be >= 8"),
    (["--proj_dim=0"], "--proj_dim must be a positive integer"),
    (["--log_every=0"], "--log_every must be a positive integer"),
    (["--mean=[0.5, 0.5]"], "--mean needs 3 values"),
    (["--max_steps=-2"], "--max_steps must be a positive integer or null"),
    (["--epochs=-1"], "--epochs must be >= 0"),
    (["--max_train_samples=-5"], "--max_train_samples must be a positive integer or null"),
    (["--reff_samples=0"], "--reff_samples must be >= 2"),
    (["--selection=best"], "--selection expects random | pool | greedy"),
    (["--selection_tail=carry"], "--selection_tail expects train | drop"),
    (["--selection=greedy", "--selection_tail=drop", "--pool_factor=7"],
     "a pool of 112 candidates per process never fills from 96 rows with --selection_tail=drop; lower --pool_factor"),
    (["--loss=nope"], "unknown loss 'nope'"),
    (["--bogus_key=1"], "unknown config key 'bogus_key'; valid keys: dataset"),
    (["--resume=true", "--overwrite_output_dir=true"], "contradict each other"),
    (["--augment_on=loader", "--cache_decoded=ram"], "--cache_decoded set to 'ram' needs --augment_on=device"),
    (["--cache_decoded=disk"], "--cache_decoded expects auto | off | ram | device"),
    (["--push_to_hub=just-a-name"], "--push_to_hub: repo id 'just-a-name' must look like 'org/name'"),
    (["--push_to_hub=org/a/b"], "--push_to_hub: repo id 'org/a/b' must look like 'org/name'"),
    (["--loss_kwargs={1: 2}"], "--loss_kwargs keys must be argument names"),
    (["--seed=-1"], "--seed must be an integer in [0, 2**32 - 1], got -1"),
    (["--seed=99999999999"], "--seed must be an integer in [0, 2**32 - 1]"),
    (["--dataset="], "--dataset is empty"),
    (["--config", "."], "config file . is a directory"),
])
def test_user_mistakes_exit_with_one_line(pretrain, tiny_dataset, tmp_path, args, fragment):
    with pytest.raises(SystemExit) as e:
        pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=1", *args))
    message = str(e.value)
    assert fragment in message and "\n" not in message and message.startswith("error: ")


def test_yaml_syntax_error_names_the_file(pretrain, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\nbatch_size: [1,\n")
    with pytest.raises(SystemExit, match=rf"config file {bad} line \d+ is not valid YAML"):
        pretrain.main(["--config", str(bad)])


def test_push_without_a_token_is_refused_before_training(pretrain, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    with pytest.raises(SystemExit, match=r"needs a Hub token and none was found"):
        pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=1", "--push_to_hub=org/x"))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_non_finite_loss_stops_before_the_weights_change(pretrain, tiny_dataset, tmp_path, monkeypatch):
    from spectral_ssl.objective import Objective

    real, calls = Objective.forward, {"n": 0}

    def poisoned(objective, *args, **kwargs):
        out = real(objective, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(Objective, "forward", poisoned)
    with pytest.raises(SystemExit, match="^error: non-finite loss at step 2; lower --lr"):
        pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=6", "--save_every=null"))
    assert not (tmp_path / "run" / "config.json").exists()  # no export of a diverged model


def test_resume_without_a_run_is_one_line_and_creates_nothing(pretrain, tiny_dataset, tmp_path):
    with pytest.raises(SystemExit) as e:
        pretrain.main(tiny_args(tiny_dataset, tmp_path / "typo", "--max_steps=1", "--resume=true"))
    assert str(e.value).startswith("error: --resume=true: output_dir") and "holds no run to resume" in str(e.value)
    assert not (tmp_path / "typo").exists()


@pytest.mark.slow
def test_a_copied_run_folder_resumes_and_a_hand_edited_config_is_refused(pretrain, tiny_dataset, tmp_path, caplog):
    import shutil

    first = tmp_path / "first"
    extra = ("--max_steps=4", "--save_every=2", "--selection=pool", "--cache_decoded=off")
    pretrain.main(tiny_args(tiny_dataset, first, *extra))
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(first, copy)
    with caplog.at_level("WARNING"):  # resumes from the copy's final checkpoint (only exports)
        out = pretrain.main(tiny_args(tiny_dataset, copy, *extra, "--resume=true"))
    assert out == copy and json.loads((copy / "config.json").read_text())["spectral_ssl"]["steps"] == 4
    assert "resuming selection=pool without the decoded cache (cache_decoded=off" in caplog.text
    assert "--cache_decoded=ram" in caplog.text
    saved = json.loads((copy / "train_config.json").read_text())
    (copy / "train_config.json").write_text(json.dumps({**saved, "lr": 0.5}))
    with pytest.raises(SystemExit, match=r"train_config.json was edited after the run trained \(lr: trained with "
                                         r"0.01, file says 0.5\)"):
        pretrain.main(tiny_args(tiny_dataset, copy, *extra, "--lr=0.5", "--resume=true"))


def test_push_in_offline_mode_is_refused_before_training(pretrain, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    with pytest.raises(SystemExit, match=r"^error: --push_to_hub needs the Hub and HF_HUB_OFFLINE=1 is set"):
        pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=1", "--push_to_hub=org/x"))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--backbone_kwargs={in_chans: 1}"], "drop in_chans: 1 from --backbone_kwargs"),
    (["--backbone=vit_tiny_patch16_224"], "set --image_size to the size the backbone was built for"),
])
def test_a_backbone_that_does_not_take_the_images_is_refused_before_the_folder_is_claimed(
        pretrain, tiny_dataset, tmp_path, args, fragment):
    with pytest.raises(SystemExit) as e:
        pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=1", *args))
    assert str(e.value).startswith("error: ") and fragment in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run" / "train_config.json").exists()  # the corrected command finds the folder free


def test_an_overwrite_whose_command_fails_keeps_the_previous_run(pretrain, tiny_dataset, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / "step_000002").mkdir(parents=True)
    (out / "train_config.json").write_text("{}")
    (out / "metrics.jsonl").write_text('{"step": 2}\n')
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(SystemExit, match="--image_column=img not found"):
        pretrain.main(tiny_args(tiny_dataset, out, "--max_steps=1", "--overwrite_output_dir=true",
                                "--image_column=img"))
    assert sorted(p.name for p in out.rglob("*") if p.name != ".lock") == before


@pytest.fixture(scope="module")
def string_labels(tmp_path_factory):
    """tiny parquet splits whose label column holds names, not integer classes"""
    from spectral_ssl.data import synthetic_dataset

    folder = tmp_path_factory.mktemp("string_labels")
    for split, rows in (("train", 32), ("test", 16)):
        ds = synthetic_dataset(num_rows=rows, image_size=16, num_classes=2, seed=0)
        names = ds.map(lambda row: {"name": f"class{row['label']}"}).remove_columns("label")
        names.rename_column("name", "label").to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    return folder


def test_labels_that_are_no_classes_stop_the_first_probe_in_one_line_and_free_the_folder(
        pretrain, string_labels, tmp_path):
    from spectral_ssl.run_folder import RunFolder

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        pretrain.main(tiny_args(string_labels, out, "--max_steps=2", "--batch_size=8", "--image_size=16",
                                "--probe_every=1", "--log_every=1", "--probe_samples=16"))
    message = str(e.value)  # refused when the probe's split is opened (data.load_images), before any step
    assert message.startswith(f"error: reading {string_labels} split test: the label column (--label_column=label) "
                              "holds text ('class0')") and "\n" not in message
    assert not (out / "train_config.json").exists() and not (out / "metrics.jsonl").exists()
    RunFolder(out, {}).open(resume=False, overwrite=False)  # the corrected command is not refused


def test_a_split_without_labels_stops_the_first_online_probe_in_one_line_and_frees_the_folder(pretrain, tmp_path):
    from spectral_ssl.data import synthetic_dataset
    from spectral_ssl.run_folder import RunFolder

    folder, out = tmp_path / "unlabelled", tmp_path / "run"
    folder.mkdir()
    for split, rows in (("train", 32), ("test", 16)):  # integer labels, all -1 ("no label"): opened, then probed
        ds = synthetic_dataset(num_rows=rows, image_size=16, num_classes=2, seed=0).remove_columns("label")
        ds.add_column("label", [-1] * rows).to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    with pytest.raises(SystemExit) as e:
        pretrain.main(tiny_args(folder, out, "--max_steps=2", "--batch_size=8", "--image_size=16",
                                "--probe_every=1", "--log_every=1", "--probe_samples=16"))
    message = str(e.value)
    assert message.startswith("error: online kNN probe") and "--label_column=label" in message and "\n" not in message
    assert "no labels" in message
    assert not (out / "train_config.json").exists() and not (out / "metrics.jsonl").exists()
    RunFolder(out, {}).open(resume=False, overwrite=False)  # the corrected command is not refused


def test_a_full_disk_at_the_checkpoint_is_one_line_not_torchs_unexpected_pos(pretrain, tiny_dataset, tmp_path,
                                                                             monkeypatch):
    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4096 vs 4032")

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        pretrain.main(tiny_args(tiny_dataset, out, "--max_steps=1"))
    message = str(e.value)
    assert message.startswith("error: checkpoint step 1 could not be written") and "MB free" in message
    assert "run the command again" in message and "\n" not in message
    assert not (out / "checkpoints").exists() and not (out / "train_config.json").exists()


@pytest.mark.slow
def test_each_state_is_saved_once_and_a_resume_that_only_exports_saves_nothing(pretrain, tiny_dataset, tmp_path,
                                                                              monkeypatch):
    from spectral_ssl.run_folder import RunFolder

    saves, real = [], RunFolder.save_checkpoint

    def counted(folder, accelerator, step, keep=None):
        saves.append(step)
        return real(folder, accelerator, step, keep)

    monkeypatch.setattr(RunFolder, "save_checkpoint", counted)
    args = tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=2", "--save_every=2", "--cache_decoded=off",
                     "--augment_on=loader")
    pretrain.main(args)
    assert saves == [2]  # the last step's checkpoint is the final state: not written twice
    checkpoint = tmp_path / "run" / "checkpoints" / "step_000002"
    written = checkpoint.stat().st_mtime_ns
    pretrain.main(args + ["--resume=true"])
    assert saves == [2] and checkpoint.stat().st_mtime_ns == written
    assert json.loads((tmp_path / "run" / "config.json").read_text())["spectral_ssl"]["steps"] == 2


def test_an_export_on_a_full_disk_or_a_failed_push_is_one_line(pretrain, tiny_dataset, tmp_path, monkeypatch):
    from spectral_ssl import hub

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hub, "save_file", full_disk)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        pretrain.main(tiny_args(tiny_dataset, out, "--max_steps=1"))
    message = str(e.value)
    assert message.startswith(f"error: the export to {out} could not be written (OSError: [Errno 28] No space left")
    assert "rerun the command with --resume=true" in message and "\n" not in message
    assert (out / "checkpoints" / "step_000001").is_dir() and not (out / "config.json").exists()
    monkeypatch.undo()

    def server_down(directory, repo_id, **kwargs):
        raise RuntimeError(f"pushing {directory} to {repo_id} failed (HTTP 503: unavailable); the local export is "
                           "unchanged, run the same push again to retry.")

    monkeypatch.setattr(hub, "push_export", server_down)
    monkeypatch.setattr(hub, "require_token", lambda *args: "hf_token")
    with pytest.raises(SystemExit, match=r"^error: pushing .* failed \(HTTP 503: unavailable\).*push it with `python "
                                         r"scripts/push_to_hub.py .* org/x`\)$"):
        pretrain.main(tiny_args(tiny_dataset, out, "--max_steps=1", "--resume=true", "--push_to_hub=org/x"))
    assert (out / "config.json").is_file()  # the resume exported; only the push failed


@pytest.mark.slow
def test_a_resume_with_fewer_steps_than_its_checkpoint_is_refused(pretrain, tiny_dataset, tmp_path):
    # else the longer model would be exported under the shorter config (its card: steps 4, max_steps 2)
    out = tmp_path / "run"
    pretrain.main(tiny_args(tiny_dataset, out, "--max_steps=4", "--save_every=2"))
    with pytest.raises(SystemExit) as e:
        pretrain.main(tiny_args(tiny_dataset, out, "--max_steps=2", "--save_every=2", "--resume=true"))
    assert str(e.value) == ("error: --max_steps=2 (2 steps) is below the step of the checkpoint it resumes (4); "
                            "resume with at least 4 steps, or start a new --output_dir")
    assert json.loads((out / "config.json").read_text())["spectral_ssl"]["steps"] == 4  # the export untouched
