"""RunFolder: one run per folder, atomic verified checkpoints, metrics without repeats (unit level, no training)."""

import json
import multiprocessing
from pathlib import Path

import pytest
import torch

from spectral_ssl.run_folder import (
    RunFolder,
    RunFolderError,
    TrainState,
    checkpoint_dirs,
    verify_manifest,
    write_manifest,
)


class FakeAccelerator:
    """What RunFolder uses of accelerate.Accelerator: save_state/load_state of registered objects, one process."""

    def __init__(self, state):
        self.state = state

    def wait_for_everyone(self):
        pass

    def print(self, *args):
        pass

    def save_state(self, path):
        torch.save(self.state.state_dict(), Path(path) / "custom_checkpoint_0.pkl")
        (Path(path) / "model.safetensors").write_bytes(b"weights" * 100)

    def load_state(self, path):
        self.state.load_state_dict(torch.load(Path(path) / "custom_checkpoint_0.pkl"))


class Counter:
    def __init__(self, step=0):
        self.step = step

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = state["step"]


def start_run(path, config, resume=False, overwrite=False, state=None):
    folder = RunFolder(path, config)
    folder.open(resume=resume, overwrite=overwrite)
    state = state or Counter()
    acc = FakeAccelerator(state)
    folder.start(acc, state)
    return folder, acc, state


def test_reused_folder_is_refused_unless_resume_or_overwrite(tmp_path):
    folder, acc, state = start_run(tmp_path / "run", {"lr": 1.0, "log_every": 5})
    state.step = 2
    folder.save_checkpoint(acc, 2)
    folder.log_metrics({"step": 2})
    folder.close()
    with pytest.raises(RunFolderError, match=r"already holds a run .*--resume=true.*--overwrite_output_dir=true"):
        RunFolder(tmp_path / "run", {"lr": 1.0}).open(resume=False, overwrite=False)
    # resume: same config except safe keys
    folder, acc, state = start_run(tmp_path / "run", {"lr": 1.0, "log_every": 50}, resume=True)
    assert state.step == 2
    folder.close()
    with pytest.raises(RunFolderError, match=r"lr differ from the saved run .*1\.0 -> 2\.0"):
        RunFolder(tmp_path / "run", {"lr": 2.0, "log_every": 5}).open(resume=True, overwrite=False)
    # overwrite clears everything
    folder, acc, state = start_run(tmp_path / "run", {"lr": 2.0}, overwrite=True)
    assert state.step == 0 and not checkpoint_dirs(tmp_path / "run" / "checkpoints")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    folder.close()


def test_a_run_that_fails_to_start_leaves_the_folder_free(tmp_path):
    folder = RunFolder(tmp_path / "run", {"lr": 1.0})
    folder.open(resume=False, overwrite=False)
    folder.close()  # e.g. the dataset was not found: start() never ran
    RunFolder(tmp_path / "run", {"lr": 2.0}).open(resume=False, overwrite=False)


def _hold_lock(path, ready, release):
    folder = RunFolder(path, {})
    folder.open(resume=False, overwrite=False)
    ready.set()
    release.wait(30)
    folder.close()


@pytest.mark.slow  # a second process holding the lock
def test_a_second_concurrent_run_is_stopped_by_the_lock(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(tmp_path / "run", ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(RunFolderError, match=r"in use by another run \(pid \d+\)"):
            RunFolder(tmp_path / "run", {}).open(resume=False, overwrite=False)
    finally:
        release.set()
        holder.join(30)
    RunFolder(tmp_path / "run", {}).open(resume=False, overwrite=False)  # free again


def test_checkpoints_are_renamed_when_complete_pruned_and_verified(tmp_path):
    folder, acc, state = start_run(tmp_path / "run", {})
    for step in (2, 4, 6):
        state.step = step
        folder.save_checkpoint(acc, step, keep=2)
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in checkpoint_dirs(root)] == ["step_000004", "step_000006"]
    assert not list(root.glob(".tmp-*")) and verify_manifest(root / "step_000006") is None
    # a torn save (no rename) and a truncated newest checkpoint: resume takes the newest one that verifies
    (root / ".tmp-step_000008").mkdir()
    newest = root / "step_000006" / "custom_checkpoint_0.pkl"
    newest.write_bytes(newest.read_bytes()[:10])
    assert "truncated" in verify_manifest(root / "step_000006")
    folder.close()
    folder, acc, state = start_run(tmp_path / "run", {}, resume=True)
    assert state.step == 4 and not (root / ".tmp-step_000008").exists()
    folder.close()


def test_metrics_after_a_resume_do_not_repeat_steps(tmp_path):
    folder, acc, state = start_run(tmp_path / "run", {})
    for step in (1, 2, 3, 4):
        folder.log_metrics({"step": step})
        if step == 2:
            state.step = 2
            folder.save_checkpoint(acc, 2)
    folder.close()
    folder, acc, state = start_run(tmp_path / "run", {}, resume=True)  # back at step 2: steps 3, 4 are redone
    for step in (3, 4):
        folder.log_metrics({"step": step})
    assert [m["step"] for m in folder.read_metrics()] == [1, 2, 3, 4]
    folder.close()


def test_manifest_detects_missing_and_changed_files(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"def")
    write_manifest(tmp_path)
    assert verify_manifest(tmp_path) is None
    assert set(json.loads((tmp_path / "manifest.json").read_text())) == {"a.bin", "sub/b.bin"}
    (tmp_path / "a.bin").write_bytes(b"abd")
    assert "a.bin is truncated or corrupted" in verify_manifest(tmp_path)
    (tmp_path / "sub" / "b.bin").unlink()
    assert verify_manifest(tmp_path) in ("a.bin is truncated or corrupted", "sub/b.bin is missing")


def test_overwrite_removes_only_what_a_run_wrote_and_refuses_foreign_files(tmp_path):
    folder, acc, state = start_run(tmp_path / "run", {"lr": 1.0})
    folder.save_checkpoint(acc, 1)
    folder.log_metrics({"step": 1})
    folder.close()
    (tmp_path / "run" / "README.md").write_text("model card")  # a run's card is its own
    (tmp_path / "run" / "notes.txt").write_text("mine")
    (tmp_path / "run" / ".git").mkdir()
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(RunFolderError, match=r"holds files that no run wrote \(\.git/, notes\.txt\).*nothing was"):
        RunFolder(tmp_path / "run", {"lr": 2.0}).open(resume=False, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before  # nothing touched
    (tmp_path / "run" / "notes.txt").unlink()
    (tmp_path / "run" / ".git").rmdir()
    folder, _, _ = start_run(tmp_path / "run", {"lr": 2.0}, overwrite=True)
    folder.close()
    assert not (tmp_path / "run" / "README.md").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_folder_that_holds_no_run_is_refused_even_with_only_a_readme(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "README.md").write_text("dataset card")
    for overwrite in (False, True):
        with pytest.raises(RunFolderError, match=r"no run wrote \(README\.md\)"):
            RunFolder(tmp_path / "data", {"lr": 1.0}).open(resume=False, overwrite=overwrite)
    assert (tmp_path / "data" / "README.md").read_text() == "dataset card"


def test_resume_keeps_files_the_user_added(tmp_path):
    folder, acc, state = start_run(tmp_path / "run", {"lr": 1.0})
    folder.save_checkpoint(acc, 1)
    folder.close()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    folder, _, state = start_run(tmp_path / "run", {"lr": 1.0}, resume=True)
    folder.close()
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_resume_of_a_folder_without_a_run_is_refused(tmp_path):
    for path in (tmp_path / "typo", tmp_path):  # missing, or existing but empty
        with pytest.raises(RunFolderError, match=r"--resume=true: output_dir .* holds no run to resume"):
            RunFolder(path, {"lr": 1.0}).open(resume=True, overwrite=False)
    assert not (tmp_path / "typo").exists()


def test_a_run_named_by_another_path_moved_or_copied_resumes(tmp_path, monkeypatch):
    config = {"lr": 1.0, "output_dir": "run"}
    monkeypatch.chdir(tmp_path)
    folder, acc, state = start_run("run", config)
    state.step = 2
    folder.save_checkpoint(acc, 2)
    folder.close()
    folder, _, state = start_run(tmp_path / "run", {**config, "output_dir": str(tmp_path / "run")}, resume=True)
    assert state.step == 2
    folder.close()
    (tmp_path / "run").rename(tmp_path / "moved")
    folder, _, state = start_run(tmp_path / "moved", {**config, "output_dir": str(tmp_path / "moved")}, resume=True)
    assert state.step == 2
    folder.close()


def test_a_hand_edited_train_config_is_refused_naming_the_key(tmp_path):
    config = {"lr": 1.0, "seed": 0, "log_every": 5}
    folder, acc, state = start_run(tmp_path / "run", config)
    state.step = 2
    folder.save_checkpoint(acc, 2)
    folder.close()
    saved = tmp_path / "run" / "train_config.json"
    saved.write_text(json.dumps({**config, "lr": 0.5, "log_every": 7}))  # log_every is safe to change
    with pytest.raises(RunFolderError, match=r"train_config.json was edited after the run trained \(lr: trained "
                                             r"with 1.0, file says 0.5\); restore lr"):
        RunFolder(tmp_path / "run", {**config, "lr": 0.5}).open(resume=True, overwrite=False)
    saved.write_text(json.dumps({**config, "log_every": 7}))  # only a safe key differs: resumes
    folder, _, state = start_run(tmp_path / "run", {**config, "log_every": 9}, resume=True)
    assert state.step == 2
    folder.close()


def test_a_key_added_after_the_run_started_resumes_at_its_default_and_is_refused_otherwise(tmp_path):
    folder, acc, state = start_run(tmp_path / "run", {"lr": 1.0})  # saved by a version without "sync"
    state.step = 2
    folder.save_checkpoint(acc, 2)
    folder.close()
    defaults = {"lr": 0.1, "sync": False}
    with pytest.raises(RunFolderError, match=r"sync differ from the saved run .*\(sync: None -> True\)"):
        RunFolder(tmp_path / "run", {"lr": 1.0, "sync": True}, defaults=defaults).open(resume=True, overwrite=False)
    with pytest.raises(RunFolderError, match=r"sync differ"):  # without defaults a new key is a change
        RunFolder(tmp_path / "run", {"lr": 1.0, "sync": False}).open(resume=True, overwrite=False)
    folder = RunFolder(tmp_path / "run", {"lr": 1.0, "sync": False}, defaults=defaults)
    folder.open(resume=True, overwrite=False)
    folder.close()


def test_an_overwrite_that_fails_before_the_run_starts_keeps_the_previous_run(tmp_path):
    folder, acc, state = start_run(tmp_path / "run", {"lr": 1.0})
    state.step = 2
    folder.save_checkpoint(acc, 2)
    folder.log_metrics({"step": 2})
    folder.close()
    before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "run").rglob("*"))
    folder = RunFolder(tmp_path / "run", {"lr": 2.0})
    folder.open(resume=False, overwrite=True)
    folder.close()  # e.g. the dataset was not found: start() never ran, nothing was replaced
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "run").rglob("*")) == before
    folder, _, state = start_run(tmp_path / "run", {"lr": 1.0}, resume=True)  # still resumable
    assert state.step == 2
    folder.close()


def test_a_fresh_run_that_fails_before_its_first_checkpoint_leaves_the_folder_free(tmp_path):
    (tmp_path / "run").mkdir()
    folder, acc, state = start_run(tmp_path / "run", {"lr": 1.0})
    folder.log_metrics({"step": 1})  # e.g. a wrong key found at step 1
    (tmp_path / "run" / "checkpoints" / ".tmp-step_000001").mkdir(parents=True)
    assert folder.release()
    folder.close()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]
    folder, _, _ = start_run(tmp_path / "run", {"lr": 2.0})  # the corrected command: a new run, no flag needed
    state.step = 1
    folder.save_checkpoint(acc, 1)
    assert not folder.release()  # a checkpoint to resume: everything stays
    folder.close()
    folder, _, state = start_run(tmp_path / "run", {"lr": 2.0}, resume=True)
    assert not folder.release() and (tmp_path / "run" / "train_config.json").is_file()  # a resumed run: stays
    folder.close()


class FullDisk(FakeAccelerator):
    """torch.save on a full disk: a RuntimeError ("unexpected pos") after part of the files were written."""

    def __init__(self, state, fail_at):
        super().__init__(state)
        self.saves, self.fail_at = 0, fail_at

    def save_state(self, path):
        self.saves += 1
        if self.saves == self.fail_at:
            (Path(path) / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4096 vs 4032\nframe #0 ...")
        super().save_state(path)


def test_a_checkpoint_on_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    folder = RunFolder(tmp_path / "run", {"lr": 1.0})
    folder.open(resume=False, overwrite=False)
    state = Counter()
    acc = FullDisk(state, fail_at=2)
    folder.start(acc, state)
    state.step = 2
    folder.save_checkpoint(acc, 2)
    state.step = 4
    with pytest.raises(RunFolderError) as e:
        folder.save_checkpoint(acc, 4)
    message = str(e.value)
    assert "\n" not in message and "checkpoint step 4 could not be written" in message and "MB free" in message
    assert "unexpected pos" in message and "--resume=true (it continues from step_000002" in message
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step_000002"] and verify_manifest(root / "step_000002") is None
    assert not folder.release()  # step 2 is resumable
    folder.close()


def test_a_model_folder_that_is_not_a_run_is_never_overwritten(tmp_path):
    model = tmp_path / "downloaded"  # a plain timm model folder: the same file names as an export, another owner
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 1000}))
    (model / "model.safetensors").write_bytes(b"their weights")
    for overwrite in (False, True):
        with pytest.raises(RunFolderError, match=r"no run wrote \(config\.json, model\.safetensors\)"):
            RunFolder(model, {"lr": 1.0}).open(resume=False, overwrite=overwrite)
    assert (model / "model.safetensors").read_bytes() == b"their weights"


def test_a_resume_with_no_checkpoint_yet_says_it_starts_from_step_0(tmp_path, caplog):
    folder, _, _ = start_run(tmp_path / "run", {"lr": 1.0})
    folder.log_metrics({"step": 1})
    folder.close()  # killed (no release) before its first checkpoint
    with caplog.at_level("WARNING"):
        folder, _, state = start_run(tmp_path / "run", {"lr": 1.0}, resume=True)
    folder.close()
    assert state.step == 0 and "holds no checkpoint yet" in caplog.text and "starts from step 0" in caplog.text
    assert not (tmp_path / "run" / "metrics.jsonl").read_text().strip()  # the dead run's lines are dropped


def test_train_state_resumes_its_counters_through_a_checkpoint(tmp_path):
    state = TrainState()
    assert (state.step, state.train_seconds, state.time_to_accuracy, state.collapse_streak) == (0, 0.0, None, 0)
    folder, acc, state = start_run(tmp_path / "run", {"lr": 1.0}, state=state)
    state.step, state.train_seconds, state.time_to_accuracy = 4, 1.5, {"target": 90.0, "step": 4}
    state.collapse_streak = 2
    folder.save_checkpoint(acc, 4, None)
    folder.close()
    folder, acc, resumed = start_run(tmp_path / "run", {"lr": 1.0}, resume=True, state=TrainState())
    assert resumed.state_dict() == {"step": 4, "train_seconds": 1.5, "time_to_accuracy": {"target": 90.0, "step": 4},
                                    "collapse_streak": 2}
    folder.close()
    older = TrainState()  # a checkpoint written before the collapse alarm existed
    older.load_state_dict({"step": 4, "train_seconds": 1.5, "time_to_accuracy": None})
    assert older.collapse_streak == 0 and older.step == 4


def _run_with_checkpoint(path, config, rows=(1, 2, 3)):
    """A run that logged ``rows`` and checkpointed at step 2, then stopped (closed)."""
    folder, acc, state = start_run(path, config)
    for step in rows:
        folder.log_metrics({"step": step})
        if step == 2:
            state.step = 2
            folder.save_checkpoint(acc, 2)
    folder.close()


def test_a_torn_metrics_line_never_blocks_a_resume_or_a_read(tmp_path, caplog):
    # a full disk or a kill during a write leaves half a row at the end: dropped with a warning naming it
    run = tmp_path / "run"
    _run_with_checkpoint(run, {})
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "loss')
    with caplog.at_level("WARNING"):
        assert [m["step"] for m in RunFolder(run, {}).read_metrics()] == [1, 2, 3]
        folder, acc, state = start_run(run, {}, resume=True)
    assert "metrics.jsonl line 4 is not a metrics row" in caplog.text and state.step == 2
    folder.log_metrics({"step": 3})
    folder.close()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]  # every line parses


def test_a_full_disk_while_logging_metrics_is_one_line_naming_the_checkpoint_to_resume(tmp_path, monkeypatch):
    import errno

    folder, acc, state = start_run(tmp_path / "run", {})
    folder.log_metrics({"step": 1})
    state.step = 2
    folder.save_checkpoint(acc, 2)

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            raise OSError(errno.ENOSPC, "No space left on device")  # its flush fails again

    folder._metrics = Full()
    with pytest.raises(RunFolderError) as e:
        folder.log_metrics({"step": 3})
    message = str(e.value)
    assert message.startswith("metrics could not be written to") and "No space left on device" in message
    assert "MB free" in message and "--resume=true (it continues from step_000002)" in message
    folder.close()  # tolerates the failing close, and unlocks
    RunFolder(tmp_path / "run", {}).open(resume=True, overwrite=False)


@pytest.mark.parametrize("damage", ["missing", "torn"])
def test_a_lost_train_config_resumes_from_the_checkpoints_copy(tmp_path, caplog, damage):
    # each checkpoint keeps the config it trained with: a missing or unreadable train_config.json is not a reason
    # to overwrite the run (which would delete the checkpoints)
    config = {"lr": 1.0, "seed": 0}
    run = tmp_path / "run"
    _run_with_checkpoint(run, config)
    saved = run / "train_config.json"
    if damage == "missing":
        saved.unlink()
    else:
        saved.write_text(saved.read_text()[:10])
    with pytest.raises(RunFolderError, match=r"lr differ from the saved run"):  # still checked against the copy
        RunFolder(run, {**config, "lr": 0.5}).open(resume=True, overwrite=False)
    with caplog.at_level("WARNING"):
        folder, _, state = start_run(run, config, resume=True)
    assert "the copy the newest checkpoint trained with" in caplog.text and state.step == 2
    assert json.loads(saved.read_text()) == config  # written back whole
    folder.close()


@pytest.mark.parametrize("name", ["train_config.json", "metrics.jsonl"])
def test_metrics_and_train_config_are_replaced_whole(tmp_path, monkeypatch, name):
    # a resume rewrites both files: a failure (a kill) mid-write must leave the old file, not an emptied one
    import os

    from spectral_ssl import run_folder

    run = tmp_path / "run"
    _run_with_checkpoint(run, {})  # metrics of steps 1-3, checkpoint at 2: a resume rewrites both files
    before = {file: (run / file).read_text() for file in ("metrics.jsonl", "train_config.json")}

    class Killed(BaseException):
        pass

    replace = os.replace

    def killed(src, dst, *args, **kwargs):  # os is everyone's module: only this run's renames die
        if Path(dst) == run / name:
            raise Killed
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(run_folder.os, "replace", killed)
    with pytest.raises(Killed):
        start_run(run, {}, resume=True)
    monkeypatch.undo()
    assert {file: (run / file).read_text() for file in before} == before
    folder, _, state = start_run(run, {}, resume=True)  # the leftover .tmp files are the run's own
    assert state.step == 2 and [m["step"] for m in folder.read_metrics()] == [1, 2]
    folder.close()


def test_a_dataset_path_with_a_trailing_slash_and_a_new_reff_samples_resume(tmp_path):
    config = {"dataset": "data/fashion_mnist", "reff_samples": 2000, "lr": 1.0}
    _run_with_checkpoint(tmp_path / "run", config)
    folder, _, state = start_run(tmp_path / "run", {**config, "dataset": "data/fashion_mnist/", "reff_samples": 64},
                                 resume=True)  # the same folder; the export's sample count is not training
    assert state.step == 2
    folder.close()
    with pytest.raises(RunFolderError, match="dataset differ"):
        RunFolder(tmp_path / "run", {**config, "dataset": "data/other"}).open(resume=True, overwrite=False)
