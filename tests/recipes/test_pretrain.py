import functools
import importlib.util
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from spectral_ssl import SpectralSSL, lr_schedule


def custom_state(checkpoint):
    """All entries of a checkpoint's registered objects (accelerate's custom_checkpoint_N.pkl files), merged."""
    merged = {}
    for path in sorted(checkpoint.glob("custom_checkpoint_*.pkl")):
        merged.update(torch.load(path, weights_only=False))
    return merged


def tiny_args(data, out, *extra, cache="auto"):
    return ["--dataset", str(data), f"--output_dir={out}", "--backbone=test_resnet", "--proj_hidden_dim=32",
            "--proj_dim=16", "--batch_size=16", "--image_size=32", "--log_every=2", "--reff_samples=32",
            "--shuffle_buffer=64", "--lr=0.01", f"--cache_decoded={cache}", *extra]


@pytest.mark.slow
def test_end_to_end_writes_export_metrics_and_checkpoints(pretrain, tiny_dataset, tmp_path):
    out = pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=4", "--save_every=2",
                                  "--probe_every=4", "--probe_samples=32"))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [2, 4]
    for key in ("loss", "lr", "img_per_s", "reff_cov", "reff_rankme", "band_containment", "band_measured_mean",
                "band_lower_mean", "band_upper_mean"):
        assert all(key in m and m[key] == m[key] for m in lines), key  # present and not NaN
    assert lines[-1]["band_containment"] == 1.0
    assert 0 <= lines[-1]["knn_top1"] <= 100
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000002", "step_000004"]
    model = SpectralSSL.from_pretrained(out)
    meta = model.metadata
    assert meta["steps"] == 4 and meta["loss"] == "infonce" and meta["global_batch"] == 16
    assert meta["effective_rank"]["n_samples"] == 32 and meta["effective_rank"]["dim"] == 96
    assert 1.0 <= meta["effective_rank"]["value"] <= 32
    assert model.data_config["input_size"] == (3, 32, 32)
    card = (out / "README.md").read_text()
    assert tiny_dataset.name.replace("_", r"\_") in card and "| 4 |" in card
    assert str(tiny_dataset) not in card and str(tmp_path) not in card  # a card shows no path of this machine
    assert (out / "spectral_diagnostics.png").read_bytes()[:4] == b"\x89PNG" and "(spectral_diagnostics.png)" in card


def stop_then_resume(pretrain, monkeypatch, out, args, stop_at=4):
    """Run ``pretrain.main(args())`` (output_dir ``out``) stopped (Ctrl-C) when it asks for step ``stop_at``'s
    learning rate, check that it left no export, then ``args("--resume=true")`` to the end: the resumed run's
    folder."""
    real_lr_at = lr_schedule.warmup_cosine

    def stopping(step, *more):
        if step == stop_at:
            raise KeyboardInterrupt("simulated stop")
        return real_lr_at(step, *more)

    monkeypatch.setattr(lr_schedule, "warmup_cosine", stopping)
    with pytest.raises(KeyboardInterrupt):
        pretrain.main(args())
    monkeypatch.setattr(lr_schedule, "warmup_cosine", real_lr_at)
    assert not (out / "model.safetensors").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == f"step_{stop_at:06d}"  # stopped after it
    return pretrain.main(args("--resume=true"))


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["ram", "off"])  # epochs from the decoded cache, or decoded from the stream
def test_resume_continues_exactly_where_a_stopped_run_left_off(pretrain, tiny_dataset, tmp_path, monkeypatch, cache):
    # 96 rows / batch 16 = 6 steps per epoch: the crash after step 4 is mid-epoch, the run ends in epoch 2.
    run_args = functools.partial(tiny_args, cache=cache)
    straight = pretrain.main(run_args(tiny_dataset, tmp_path / "straight", "--max_steps=8"))
    stopped = tmp_path / "stopped"
    resumed = stop_then_resume(pretrain, monkeypatch, stopped, lambda *more: run_args(
        tiny_dataset, stopped, "--max_steps=8", "--save_every=4", *more))
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]
    # the two input paths draw different orders: the comparison above is not vacuous
    other = pretrain.main(tiny_args(tiny_dataset, tmp_path / "other", "--max_steps=8",
                                    cache="off" if cache == "ram" else "ram"))
    assert any(not torch.equal(a[key], value) for key, value in load_file(other / "model.safetensors").items())


# the recipe, stopped by a KeyboardInterrupt when it asks for the learning rate of step STOP_AT_STEP (if set)
STOPPING_RECIPE = """
import importlib.util, os, sys
from spectral_ssl import lr_schedule
stop, real = int(os.environ.get("STOP_AT_STEP", "-1")), lr_schedule.warmup_cosine
def stopping(step, *args):
    if step == stop:
        raise KeyboardInterrupt("simulated stop")
    return real(step, *args)
lr_schedule.warmup_cosine = stopping
spec = importlib.util.spec_from_file_location("pretrain", {recipe!r})
recipe = importlib.util.module_from_spec(spec); sys.modules["pretrain"] = recipe; spec.loader.exec_module(recipe)
recipe.main(sys.argv[1:])
"""


def torchrun(tiny_dataset, out, *extra: str, stop_at_step: int | None = None):
    """The recipe under a real 2-process launcher (torchrun, gloo on the CPU): the finished process; with
    ``stop_at_step`` both processes are interrupted (Ctrl-C) before that step."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "pretrain.py"
    if stop_at_step is not None:
        script = Path(out).parent / f"stopping_{Path(out).name}.py"
        script.write_text(STOPPING_RECIPE.format(recipe=str(recipe)))
        recipe = script
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2", f"--master_port={port}", str(recipe),
           *tiny_args(tiny_dataset, out, *extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STOP_AT_STEP": str(stop_at_step if stop_at_step is not None else -1)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


@pytest.mark.slow
def test_two_processes_stopped_and_resumed_end_with_the_uninterrupted_weights(tiny_dataset, tmp_path):
    # 2 x 12 rows a step: 4 steps an epoch of 96 rows; stopped after the step-6 checkpoint, mid-epoch 2, with
    # candidates waiting in each rank's pool; global-batch whitening (12 rows a process <= proj_dim 16)
    extra = ("--max_steps=8", "--save_every=2", "--batch_size=12", "--selection=greedy", "--greedy_m=8",
             "--whitening=zca", "--whitening_sync=true")
    straight = torchrun(tiny_dataset, tmp_path / "straight", *extra)
    assert straight.returncode == 0, straight.stderr[-3000:]
    stopped = torchrun(tiny_dataset, tmp_path / "stopped", *extra, stop_at_step=6)
    assert stopped.returncode != 0 and not (tmp_path / "stopped" / "model.safetensors").exists()
    saved = sorted(p.name for p in (tmp_path / "stopped" / "checkpoints").iterdir())
    assert saved[-1] == "step_000006", saved  # stopped after the step-6 checkpoint
    resumed = torchrun(tiny_dataset, tmp_path / "stopped", *extra, "--resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "stopped" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
def test_two_processes_with_torchrun(tiny_dataset, tmp_path):
    """The recipe under a real 2-process launcher (gloo): gathered loss, one export, global batch 2 x B; the main
    process alone writes the tracker logs."""
    out = tmp_path / "ddp"
    report = ["--report_to=tensorboard"] if importlib.util.find_spec("tensorboard") else []
    proc = torchrun(tiny_dataset, out, "--max_steps=3", "--batch_size=8", "--selection=greedy", "--greedy_m=8", *report)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((out / "trackers" / "spectral_ssl").glob("events.out.tfevents.*"))) == (1 if report else 0)
    meta = SpectralSSL.from_pretrained(out).metadata
    assert meta["global_batch"] == 16 and meta["steps"] == 3
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [2, 3] and lines[-1]["band_containment"] == 1.0
    assert lines[0]["sel_pool_size"] == 32 and lines[0]["sel_reff_chosen"] > 0  # 4 x 8 candidates per rank


@pytest.mark.slow
def test_synced_whitening_under_two_processes_whitens_a_global_batch_above_proj_dim(tiny_dataset, tmp_path):
    # 12 rows a process <= proj_dim 16 < 24 rows in all: only the global batch's covariance has full rank
    out = tmp_path / "sync"
    proc = torchrun(tiny_dataset, out, "--max_steps=2", "--batch_size=12", "--whitening=zca", "--whitening_sync=true",
                    "--save_every=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(metrics[-1]["loss"]) and metrics[-1]["reff_cov"] > 8  # whitened, not collapsed
    meta = SpectralSSL.from_pretrained(out).metadata
    assert meta["global_batch"] == 24 and meta["config"]["whitening_sync"] is True
    assert torch.isfinite(custom_state(out / "checkpoints" / "step_000002")["whiten.running_cov"]).all()


@pytest.mark.slow
def test_a_configuration_error_under_two_processes_is_one_line(tiny_dataset, tmp_path):
    # every process meets it: the main process says it, the others exit quietly (torchrun adds its own report)
    proc = torchrun(tiny_dataset, tmp_path / "bad", "--loss=moco", "--loss_kwargs={queue_size: -1}", "--max_steps=2")
    assert proc.returncode != 0
    assert (proc.stdout + proc.stderr).count("error: queue_size must be a positive integer") == 1, proc.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("kind, solver", [("zca", "auto"), ("zca", "newton_schulz"), ("cholesky", "auto")])
def test_whitening_runs_and_its_statistics_are_checkpointed(pretrain, tiny_dataset, tmp_path, monkeypatch, kind,
                                                            solver):
    from spectral_ssl import whitening

    iterations = []
    iterate = whitening.newton_schulz_inverse_sqrt
    monkeypatch.setattr(whitening, "newton_schulz_inverse_sqrt", lambda *a: iterations.append(1) or iterate(*a))
    out = pretrain.main(tiny_args(tiny_dataset, tmp_path / f"{kind}_{solver}", "--max_steps=2", "--batch_size=24",
                                  f"--whitening={kind}", f"--whitening_solver={solver}", "--save_every=2"))
    assert bool(iterations) == (solver == "newton_schulz")  # the key reaches the layer (auto: eigh on the CPU)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["band_containment"] == 1.0 and metrics[-1]["loss"] == metrics[-1]["loss"]
    assert SpectralSSL.from_pretrained(out).metadata["whitening"] == kind
    assert "whiten.running_cov" in custom_state(out / "checkpoints" / "step_000002")  # the objective's whitening


@pytest.mark.slow
@pytest.mark.parametrize("selection", ["greedy", "pool"])
def test_selection_logs_chosen_against_random_and_its_cost(pretrain, tiny_dataset, tmp_path, selection):
    out = pretrain.main(tiny_args(tiny_dataset, tmp_path / selection, "--max_steps=2", "--batch_size=24",
                                  "--log_every=1", f"--selection={selection}", "--whitening=zca",
                                  "--target_reff=0.5" if selection == "pool" else "--greedy_m=16"))
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["sel_pool_size"] == (72 if selection == "pool" else 96)  # 3 x 24 candidates, or the 4 x 24 pool
    assert first["sel_select_ms"] > 0 and 0 < first["sel_share"] < 1
    assert first["sel_reff_chosen"] > 1 and first["sel_reff_random"] > 1
    if selection == "greedy":  # the log-det greedy spreads the batch (untrained net, clustered synthetic data)
        assert first["sel_reff_chosen"] > first["sel_reff_random"]
    assert SpectralSSL.from_pretrained(out).metadata["selection"] == selection


@pytest.mark.slow
def test_greedy_with_a_resume_still_trains_every_sample_once_per_epoch(pretrain, tiny_dataset, tmp_path,
                                                                         monkeypatch):
    # 96 rows / 16 = 6 steps per epoch; the checkpoint at step 2 holds a pool of 48 waiting candidates
    real_lr_at = lr_schedule.warmup_cosine

    def crash_at_step_4(step, *args):
        if step == 3:
            raise KeyboardInterrupt("simulated stop")
        return real_lr_at(step, *args)

    args = tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=6", "--save_every=2", "--selection=greedy")
    monkeypatch.setattr(lr_schedule, "warmup_cosine", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt, match=r"^stopped at step 3; the same command with --resume=true continues "
                                                r"from .*checkpoints/step_000002$"):  # what Ctrl-C prints
        pretrain.main(args)
    monkeypatch.setattr(lr_schedule, "warmup_cosine", real_lr_at)
    saved = torch.load(tmp_path / "run" / "checkpoints" / "step_000002" / "custom_checkpoint_1.pkl",
                       weights_only=False)  # 0: the recipe's counters, 1: the candidate pool
    assert len(saved["carried"][0]) == 48 and saved["drawn"] == [5]
    out = pretrain.main(args + ["--resume=true"])
    selector = custom_state(out / "checkpoints" / "step_000006")
    # 6 steps x 16 = 96 trainings and every one of the 96 rows has been trained: each exactly once
    assert selector["cache_step"].shape == (96,) and bool((selector["cache_step"] >= 0).all())
    assert sorted(selector["cache_step"].tolist()).count(5) == 16
    # the waiting candidates come back with the views they had (decoded cache + device augmentations): exact
    straight = pretrain.main(tiny_args(tiny_dataset, tmp_path / "straight", "--max_steps=6", "--selection=greedy"))
    a, b = load_file(straight / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.slow
def test_greedy_with_tail_drop_ends_each_epoch_at_its_last_full_pool(pretrain, tiny_dataset, tmp_path, capsys):
    # 96 rows / 16 = 6 loader batches; a pool of 4 x 16 is full 3 times, then the epoch ends, its 48 leftovers
    # (the candidates passed over) untrained
    out = pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--epochs=2", "--save_every=3",
                                  "--selection=greedy", "--greedy_m=8", "--selection_tail=drop"))
    assert "96 rows, 3 steps/epoch, 6 steps" in capsys.readouterr().out
    pool = torch.load(out / "checkpoints" / "step_000003" / "custom_checkpoint_1.pkl", weights_only=False)
    assert pool["epoch"] == 0 and pool["chosen"] == 3 and len(pool["carried"][0]) == 48 and pool["drawn"] == [6]
    meta = SpectralSSL.from_pretrained(out).metadata
    assert meta["steps"] == 6 and meta["epochs"] == 2.0


@pytest.mark.slow
def test_selection_until_measures_the_spectrum_only_while_it_chooses_by_it(pretrain, tiny_dataset, tmp_path,
                                                                           capsys):
    out = pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=6", "--selection=greedy",
                                  "--greedy_m=8", "--selection_until=0.34"))  # a third of 6 steps: 2
    assert "selection greedy (random from step 2), augment" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [("sel_reff_chosen" in m, "sel_select_ms" in m) for m in rows] == [(True, True), (False, True),
                                                                               (False, True)]
    meta = SpectralSSL.from_pretrained(out).metadata
    assert meta["steps"] == 6 and meta["selection_reff"]["logged_steps"] == 1  # the card: the greedy steps only
    assert meta["config"]["selection_until"] == 0.34 and meta["selection_until"] == 2
    assert ("(mean over 1 logged steps; chosen by the spectrum for the first 2 steps, random batches of the pool "
            "after)") in (out / "README.md").read_text()


@pytest.mark.slow
def test_collapse_alarm_warns_once_or_stops_saves_exports_and_resumes(pretrain, tiny_dataset, tmp_path, monkeypatch,
                                                                      capsys):
    # the logged rows from step 4 on count as collapsed (the rule itself: tests/test_monitor.py); logs every 2 steps
    seen = []
    monkeypatch.setattr(pretrain, "is_collapsed", lambda row: seen.append(row) or row["step"] >= 4)
    warned = pretrain.main(tiny_args(tiny_dataset, tmp_path / "warn", "--max_steps=10", "--collapse_patience=2"))
    assert seen[0]["n_samples"] == 32 and seen[0]["dim"] == 16 and seen[0]["std_of_l2_normalized"] > 0
    out = capsys.readouterr().out
    assert out.count("collapse alarm: the projections have collapsed for 2 consecutive records at step 6") == 1
    assert "--collapse_alarm=stop stops such a run" in out  # warned once, trained on to the end
    assert SpectralSSL.from_pretrained(warned).metadata["steps"] == 10
    stop_args = functools.partial(tiny_args, tiny_dataset, tmp_path / "stop", "--max_steps=10",
                                  "--collapse_patience=2", "--collapse_alarm=stop")
    stopped = pretrain.main(stop_args())
    assert "Stopped at step 6" in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in (stopped / "metrics.jsonl").read_text().splitlines()] == [2, 4, 6]
    assert SpectralSSL.from_pretrained(stopped).metadata["steps"] == 6  # saved and exported, nothing lost
    assert custom_state(stopped / "checkpoints" / "step_000006")["collapse_streak"] == 2
    resumed = pretrain.main(stop_args("--resume=true"))  # the streak goes on past the patience: trains to the end
    assert "collapse alarm" not in capsys.readouterr().out
    assert SpectralSSL.from_pretrained(resumed).metadata["steps"] == 10
    quiet = pretrain.main(tiny_args(tiny_dataset, tmp_path / "none", "--max_steps=6", "--collapse_patience=1",
                                    "--collapse_alarm=none"))
    assert "collapse alarm" not in capsys.readouterr().out and SpectralSSL.from_pretrained(quiet).metadata["steps"] == 6


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["dcl", "moco", "sogclr", "isoloss", "byol", "simsiam"])
def test_every_loss_trains_logs_monitors_and_checkpoints_its_state(pretrain, tiny_dataset, tmp_path, loss):
    kwargs = {"moco": "{queue_size: 40}", "byol": "{hidden_dim: 16}", "simsiam": "{hidden_dim: 16}"}.get(loss, "{}")
    out = pretrain.main(tiny_args(tiny_dataset, tmp_path / loss, "--max_steps=2", "--save_every=2", f"--loss={loss}",
                                  f"--loss_kwargs={kwargs}"))
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("loss", "cos_views", "ntxent", "reff_cov", "band_containment"):
        assert last[key] == last[key], key  # logged, not NaN
    assert -1 <= last["cos_views"] <= 1 and last["band_containment"] == 1.0
    state = custom_state(out / "checkpoints" / "step_000002")
    expected = {"moco": "loss.queue", "sogclr": "loss.u", "isoloss": "loss.corr", "byol": "loss.predictor.0.weight",
                "simsiam": "loss.predictor.0.weight"}.get(loss)  # the objective's state: loss., target., whiten.
    if expected:
        assert expected in state, sorted(state)
    if loss in ("moco", "byol"):
        assert any(key.startswith("target.") for key in state)  # the EMA target network
    if loss == "moco":
        assert "reff_negatives" in last
        assert int(state["loss.queue_ptr"]) == 2 * 2 * 16 % 40  # 2 steps x 2 views x 16 keys
    if loss == "sogclr":
        assert int((state["loss.u"] > 0).sum()) == 32  # the 32 images of two steps have a moving average
    assert SpectralSSL.from_pretrained(out).metadata["loss"] == loss


def test_bad_method_value_exits_with_the_constructor_message(pretrain, tiny_dataset, tmp_path):
    with pytest.raises(SystemExit, match="queue_size must be a positive integer"):
        pretrain.main(tiny_args(tiny_dataset, tmp_path / "bad", "--loss=moco", "--loss_kwargs={queue_size: 0}"))
    with pytest.raises(SystemExit, match=r"loss 'moco' takes no argument 'gamma'; its arguments are .*queue_size"):
        pretrain.main(tiny_args(tiny_dataset, tmp_path / "bad", "--loss=moco", "--loss_kwargs={gamma: 0.5}"))


def test_candidates_embedded_at_another_size_train_and_a_backbone_that_refuses_it_is_one_line(
        pretrain, tiny_dataset, tmp_path):
    out = pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=2", "--selection=greedy",
                                  "--greedy_m=8", "--selection_embed_size=16"))
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["step"] == 2 and last["sel_reff_chosen"] > 0
    with pytest.raises(SystemExit, match=r"^error: backbone 'test_vit' .* does not take 3x80x80 images .*set "
                                         r"--selection_embed_size to a size the backbone takes"):
        pretrain.main(tiny_args(tiny_dataset, tmp_path / "vit", "--max_steps=2", "--selection=pool",
                                "--backbone=test_vit", "--backbone_kwargs={dynamic_img_size: false}",
                                "--image_size=160", "--selection_embed_size=80"))


def test_report_to_tensorboard_logs_the_metrics_and_config_in_the_run_folder(pretrain, tiny_dataset, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=4", "--report_to=tensorboard",
                                  "--selection=greedy", "--greedy_m=8"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = list((out / "trackers" / "spectral_ssl").glob("events.out.tfevents.*"))
    assert len(events) == 1
    board = EventAccumulator(str(events[0].parent))
    board.Reload()
    for key in ("loss", "reff_cov", "band_containment", "sel_reff_chosen", "lr"):
        logged = board.Scalars(key)
        assert [e.step for e in logged] == [r["step"] for r in rows] == [2, 4], key
        assert [e.value for e in logged] == pytest.approx([r[key] for r in rows], rel=1e-6), key
    hparams = next((out / "trackers" / "spectral_ssl").glob("*/hparams.yml")).read_text()
    assert "greedy_m: 8" in hparams and "mean: '[" in hparams  # lists as JSON text
    again = pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=4", "--report_to=tensorboard",
                                    "--selection=greedy", "--greedy_m=8", "--overwrite_output_dir=true"))
    assert len(list((again / "trackers" / "spectral_ssl").glob("events.out.tfevents.*"))) == 1  # the old run's gone


def test_a_tracker_that_fails_to_start_is_one_line_and_leaves_the_folder_free(pretrain, tiny_dataset, tmp_path,
                                                                             monkeypatch):
    pytest.importorskip("tensorboard")
    from accelerate import Accelerator

    def no_login(self, *args, **kwargs):
        raise RuntimeError("api_key not configured (no-tty). call wandb.login(key=[your_api_key])\nmore lines")

    monkeypatch.setattr(Accelerator, "init_trackers", no_login)
    with pytest.raises(SystemExit, match=r"^error: --report_to=tensorboard: a tracker did not start \(RuntimeError: "
                                         r"api_key not configured \(no-tty\)\. call wandb\.login\(key=\[\w+\]\)\)$"):
        pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=2", "--report_to=tensorboard"))
    monkeypatch.undo()
    pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=2"))  # the same folder, no --overwrite


@pytest.mark.parametrize("value,message", [
    ("wandb", r"^error: --report_to=wandb: wandb is not installed here \(pip install wandb\); installed trackers: "),
    ("tb", r"^error: --report_to has 'tb'; choose none, all or a comma list of tensorboard, wandb"),
])
def test_a_tracker_that_is_unknown_or_not_installed_is_one_line(pretrain, tiny_dataset, tmp_path, value, message):
    if value == "wandb":
        pytest.importorskip("accelerate.tracking")
        from accelerate.tracking import get_available_trackers

        if "wandb" in [str(t) for t in get_available_trackers()]:
            pytest.skip("wandb is installed here")
    with pytest.raises(SystemExit, match=message):
        pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=2", f"--report_to={value}"))
    assert not (tmp_path / "run" / "trackers").exists()


@pytest.mark.slow
def test_on_eta_is_called_once_with_the_seconds_left(pretrain, tiny_dataset, tmp_path):
    calls = []
    pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=6"), on_eta=lambda *a: calls.append(a))
    assert len(calls) == 1
    left, img_per_s = calls[0]
    assert 0 < left < float("inf") and 0 < img_per_s < float("inf")


@pytest.mark.slow
def test_probe_every_probes_at_its_own_steps_each_with_a_metrics_row(pretrain, tiny_dataset, tmp_path):
    out = pretrain.main(tiny_args(tiny_dataset, tmp_path / "run", "--max_steps=4", "--log_every=4",
                                  "--probe_every=1", "--probe_samples=16", "--save_every=null"))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4] and all("knn_top1" in m for m in lines)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [("--selection=greedy", "--greedy_m=8", "--whitening=zca", "--batch_size=24"),
                                   ("--loss=moco", "--selection=pool"), ("--loss=sogclr", "--selection=greedy"),
                                   ("--loss=byol", "--whitening=cholesky", "--batch_size=24"), ("--loss=isoloss",)])
def test_bf16_autocast_on_the_cpu(pretrain, tiny_dataset, tmp_path, extra):
    # what a GPU runs (mixed_precision auto = bf16 there), on the CPU: every loss, selector and whitening under
    # autocast (greedy's gains were once scored in bf16: other picks, and a crash reading them on the CPU)
    from accelerate.state import AcceleratorState, GradientState

    def fresh_state():  # accelerate keeps one precision per process: other tests in this one ran without bf16
        AcceleratorState._reset_state(True)
        GradientState._reset_state()

    fresh_state()
    try:
        out = pretrain.main(tiny_args(tiny_dataset, tmp_path / "bf16", "--max_steps=4", "--mixed_precision=bf16",
                                      *extra))
    finally:
        fresh_state()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4] and all(math.isfinite(m["loss"]) for m in metrics)


RESUME_CASES = {  # loss state: MoCo queue (+ EMA target), SogCLR u, IsoLoss C, BYOL/SimSiam predictor (+ BYOL target)
    "infonce": ("--loss=infonce",), "dcl": ("--loss=dcl",),
    "moco": ("--loss=moco", "--loss_kwargs={queue_size: 40}"), "sogclr": ("--loss=sogclr",),
    "isoloss": ("--loss=isoloss",), "byol": ("--loss=byol", "--loss_kwargs={hidden_dim: 16}"),
    "simsiam": ("--loss=simsiam", "--loss_kwargs={hidden_dim: 16}"),
    "zca": ("--whitening=zca", "--batch_size=24"),  # the whitening's running statistics
    "pool": ("--selection=pool",),  # the candidate pool and the selector's cache
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_every_loss_stopped_mid_epoch_and_resumed_ends_with_the_uninterrupted_weights_and_state(
        pretrain, tiny_dataset, tmp_path, monkeypatch, case):
    # 96 rows / 16 = 6 steps an epoch (4 at batch 24): stopped before step 5, after the step-4 checkpoint, mid-epoch
    extra = RESUME_CASES[case]
    straight = pretrain.main(tiny_args(tiny_dataset, tmp_path / "straight", "--max_steps=8", "--save_every=4", *extra))
    stopped = tmp_path / "stopped"
    resumed = stop_then_resume(pretrain, monkeypatch, stopped, lambda *more: tiny_args(
        tiny_dataset, stopped, "--max_steps=8", "--save_every=4", *extra, *more))
    for name in ("model.safetensors", "projector.safetensors"):
        a, b = load_file(straight / name), load_file(resumed / name)
        assert a.keys() == b.keys(), name
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
    # every registered object's state at the final checkpoint: the objective's (loss., target., whiten.), the pool's
    # position and waiting candidates, the selector's cache, the counters (all but the measured training time)
    a, b = (custom_state(run / "checkpoints" / "step_000008") for run in (straight, resumed))
    assert a.pop("train_seconds") > 0 and b.pop("train_seconds") > 0 and a.keys() == b.keys()
    expected = {"moco": "loss.queue", "sogclr": "loss.u", "isoloss": "loss.corr", "byol": "loss.predictor.",
                "simsiam": "loss.predictor.", "zca": "whiten.running_cov", "pool": "carried"}.get(case)
    assert expected is None or any(key.startswith(expected) for key in a), sorted(a)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=f"checkpointed state: {key}")
