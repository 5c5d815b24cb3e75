"""Pretrain a timm backbone with self-supervision on images read through HF datasets.

    accelerate launch recipes/pretrain.py --config recipes/configs/fashion_mnist_simclr.yaml [--key=value ...]
    python recipes/pretrain.py --config ... [--key=value ...]        (--help lists every key)

Reads top to bottom: config -> run folder -> build (data, model, loss, selection) -> train -> export. The recipe only
wires library objects; every key is typed and checked in ``spectral_ssl.config.PretrainConfig``.
Output layout (``output_dir``): the Hub-format export at the root (config.json, model.safetensors, README.md),
training state in ``checkpoints/step_NNNNNN/`` (complete ones only: written under a temporary name, verified by a
manifest on resume), metrics in ``metrics.jsonl``, ``train_config.json``; one run at a time (a lock).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from spectral_ssl import cpu_threads

# before torch loads libgomp: a short OpenMP spin and threads from the machine's load (README, "CPU runs");
# SPECTRAL_SSL_THREADS=default keeps torch's defaults
cpu_threads.configure()

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.tracking import get_available_trackers  # noqa: E402
from accelerate.utils import ProjectConfiguration, set_seed  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from spectral_ssl import data, dist, hub, lr_schedule, run_folder, transforms  # noqa: E402
from spectral_ssl.batching import CandidatePool, ResumeError, create_selector, resolve_target, resolve_until  # noqa: E402
from spectral_ssl.config import ConfigError, PretrainConfig, config_defaults, config_dict, parse_config  # noqa: E402
from spectral_ssl.diagnostics import batch_diagnostics, write_training_plot  # noqa: E402
from spectral_ssl.eta import EtaClock  # noqa: E402
from spectral_ssl.finite_watch import FiniteWatch, NonFiniteError  # noqa: E402
from spectral_ssl.integrations.trackers import loggable, tracker_config  # noqa: E402
from spectral_ssl.model import SpectralSSL  # noqa: E402
from spectral_ssl.monitor import collapse_message, collapse_streak, is_collapsed  # noqa: E402
from spectral_ssl.objective import create_objective  # noqa: E402
from spectral_ssl.probe import OnlineKnn, OnlineProbeError, eval_loader, extract_features  # noqa: E402

USER_ERRORS = (ConfigError, ValueError, FileNotFoundError, run_folder.RunFolderError)
logger = logging.getLogger("pretrain")


def main(argv: list[str] | None = None, *, on_eta: Callable[[float, float], None] | None = None) -> Path:
    """Run the recipe; ``on_eta(seconds_left, img_per_s)``, if given, is called once on the main process after the
    first steps (``EtaClock``) with the time the remaining training steps should take on this machine."""
    folder = None
    try:
        cfg = parse_config(PretrainConfig, sys.argv[1:] if argv is None else argv, description=__doc__)
        accelerator = make_accelerator(cfg)
        folder = run_folder.RunFolder(cfg.run.output_dir, config_dict(cfg), main_process=accelerator.is_main_process,
                                      defaults=config_defaults(PretrainConfig))
        folder.open(resume=cfg.run.resume, overwrite=cfg.run.overwrite_output_dir)  # lock, refuse another run's folder
        run = build(cfg, accelerator, folder)
    except USER_ERRORS as e:  # a user mistake: one line, no traceback
        if folder is not None:
            folder.close()
        # a configuration error is the same on every process: one line from the main process, not N
        same_everywhere = isinstance(e, (ConfigError, ValueError)) and not isinstance(e, data.UndecodableImageError)
        raise SystemExit(1 if same_everywhere and int(os.environ.get("RANK", "0")) != 0 else f"error: {e}") from None
    try:
        train(run, cfg, accelerator, on_eta=on_eta if accelerator.is_main_process else None)
        return export(run, cfg, accelerator)
    except BaseException as e:
        released = folder.release()  # a fresh run that failed before its first checkpoint leaves the folder free
        if isinstance(e, (run_folder.RunFolderError, NonFiniteError, ResumeError, OnlineProbeError)):  # one line
            raise SystemExit(f"error: {e}") from None
        if isinstance(e, KeyboardInterrupt):  # Ctrl-C: what to run next (said by the script; a caller gets the error)
            saved = run_folder.checkpoint_dirs(folder.checkpoints)
            e.args = (f"stopped at step {run.state.step}; " + (
                f"the same command with --resume=true continues from {saved[-1]}" if saved
                else "no checkpoint was saved yet: run the command again"),)
            raise
        if isinstance(e, data.UndecodableImageError):  # met while streaming (the decoded cache meets it in build)
            again = "" if released else " --resume=true (from the last checkpoint)"
            raise SystemExit(f"error: {data.UndecodableImageError.one_line(e)} Then run the same command with"
                             f"{again} --skip_corrupt=true") from None
        raise
    finally:
        folder.close()
        accelerator.end_training()
        run.model = run.objective = run.optimizer = None  # no DDP reference may outlive the process group (gloo)
        dist.shut_down(release=accelerator.free_memory)


def make_accelerator(cfg: PretrainConfig) -> Accelerator:
    precision = cfg.optim.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    trackers, installed = cfg.run.trackers(), sorted(map(str, get_available_trackers()))  # accelerate's log_with
    missing = [t for t in trackers if t not in (*installed, "all")]  # accelerate would only warn and drop them
    if missing:
        raise ConfigError(f"--report_to={cfg.run.report_to}: {', '.join(missing)} is not installed here (pip install "
                          f"{' '.join(missing)}); installed trackers: {', '.join(installed) or 'none'}")
    project = ProjectConfiguration(project_dir=cfg.run.output_dir,
                                   logging_dir=str(Path(cfg.run.output_dir) / run_folder.TRACKERS))
    # cpu=True without CUDA: under torchrun/accelerate launch that gives a gloo process group (MULTI_CPU)
    accelerator = Accelerator(mixed_precision=precision, project_config=project, log_with=trackers or None,
                              cpu=not torch.cuda.is_available())
    set_seed(cfg.optim.seed)
    return accelerator


def build(cfg: PretrainConfig, accelerator: Accelerator, folder: run_folder.RunFolder) -> SimpleNamespace:
    """Data, model, objective, selection and optimiser; everything the export needs is checked here, before training."""
    world, device = accelerator.num_processes, accelerator.device
    if cfg.run.push_to_hub:  # a token, and not offline: known before anything is read
        hub.require_token()
    train_data = open_split(cfg, "split", streaming=cfg.data.streaming, label_column=None)
    # the export's R_eff and the online probe read eval_split: open it now, not after hours of training
    open_split(cfg, "eval_split", streaming=True, label_column=cfg.data.label_column if cfg.run.probe_every else None)
    if cfg.run.probe_every:  # the online probe reads the training split's labels too
        open_split(cfg, "split", streaming=True, label_column=cfg.data.label_column)
    cap = cfg.data.max_train_samples
    rows = train_data.num_rows if cap is None else min(train_data.num_rows or cap, cap)
    if rows is not None and rows < cfg.optim.batch_size * world:
        raise ValueError(f"{rows} training rows cannot fill one global batch of {cfg.optim.batch_size * world}; lower "
                         "--batch_size")
    if rows is None and cfg.optim.max_steps is None:
        raise ValueError(f"the length of {cfg.data.dataset} split {cfg.data.split} is unknown (a stream without "
                         "metadata); set --max_steps")
    if cfg.objective.whitening != "none" and cfg.optim.batch_size * world <= cfg.model.proj_dim:
        raise ConfigError(f"whitening needs a global batch > proj_dim (got {cfg.optim.batch_size} x {world} "
                          f"process(es) <= {cfg.model.proj_dim}); raise --batch_size or lower --proj_dim")
    views = transforms.augment_views(cfg.data.augment, cfg.data.image_size, cfg.data.augment_kwargs)
    on_device = cfg.data.augment_on in ("auto", "device")
    # the inputs, in one place: written into the model's data_config (exported), read back by every eval loader
    prep = transforms.Preprocessing(cfg.data.image_size, tuple(cfg.data.mean), tuple(cfg.data.std))

    model = SpectralSSL(cfg.model.backbone, cfg.model.proj_hidden_dim, cfg.model.proj_dim, cfg.model.backbone_kwargs)
    layout = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}[cfg.model.memory_format]
    model = model.to(memory_format=layout)  # the views follow in train(); the export is contiguous
    model.check_input(prep.image_size)  # the images the loaders make (RGB): a mismatch is found now, not at step 1
    model.data_config.update(prep.data_config())
    # loss (+ predictor, state), whitening and EMA target: two views -> loss, one call per step
    objective = create_objective(model, cfg.objective.loss, dim=cfg.model.proj_dim, dataset_size=train_data.num_rows,
                                 gather_distributed=world > 1, **cfg.objective.objective_arguments()).to(device)
    selection_kwargs = cfg.batching.selector_arguments()
    if selection_kwargs.get("embed_size"):  # candidates embedded at another size than the training views
        model.check_input(selection_kwargs["embed_size"], key="--selection_embed_size")
    until = selection_kwargs.pop("until", None)  # steps or a fraction of the run: set once its length is known
    if "target" in selection_kwargs:  # a fraction of D or 'RHO*C' -> a reachable number
        selection_kwargs["target"] = resolve_target(selection_kwargs["target"], cfg.model.proj_dim,
                                                    cfg.optim.batch_size * world, cfg.batching.num_classes)
    selector = create_selector(cfg.batching.selection, batch_size=cfg.optim.batch_size, dim=cfg.model.proj_dim,
                               dataset_size=train_data.num_rows, seed=cfg.optim.seed, transform=objective.loss_space(),
                               **selection_kwargs).to(device)
    # rows // world: the epoch of the process with the fewest rows (selection_tail=drop ends each at its last full pool)
    steps_per_epoch = selector.steps_per_epoch(rows // world) if rows is not None else None
    if steps_per_epoch == 0:
        raise ValueError(f"a pool of {selector.pool_size} candidates per process never fills from {rows // world} "
                         "rows with --selection_tail=drop; lower --pool_factor (or --pool_candidates) or pass "
                         "--selection_tail=train")
    # the decoded cache, or JPEGs decoded in the loader (or on the GPU); the two views made there or on the device
    inputs = data.training_input(train_data, prep, views, device=device, augment_on_device=on_device,
                                 cache=cfg.data.cache_decoded, decode=cfg.data.decode, rows=rows,
                                 batch_size=cfg.optim.batch_size, seed=cfg.optim.seed, epoch=lambda: pool.epoch,
                                 rank=accelerator.process_index, world_size=world, num_workers=cfg.data.num_workers,
                                 shuffle_buffer=cfg.data.shuffle_buffer, skip_corrupt=cfg.data.skip_corrupt,
                                 max_rows=cfg.data.max_train_samples)
    pool = CandidatePool(inputs.batches, selector.pool_size, prepare=inputs.prepare)

    optimizer_groups = model.parameter_groups(cfg.optim.weight_decay, extra=objective.loss)  # + BYOL/SimSiam predictor
    # AdamW's fused kernel where it has one (CPU: its optimizer step 28.6 -> 6.4 ms, ~8 % of the demo's step)
    fused = True if device.type in ("cpu", "cuda") else None
    optimizer = (torch.optim.AdamW(optimizer_groups, lr=cfg.optim.lr, fused=fused) if cfg.optim.optimizer == "adamw"
                 else torch.optim.SGD(optimizer_groups, lr=cfg.optim.lr, momentum=0.9))
    model, optimizer = accelerator.prepare(model, optimizer)
    # a learnable predictor is DDP-synchronised (DDP refuses modules without parameters); objective.loss stays unwrapped
    objective.attach(model, loss=accelerator.prepare(objective.loss) if objective.learnable_loss else None)
    state = run_folder.TrainState()
    for obj in (state, pool, selector, objective):  # counters, pool position, selection cache, loss state + EMA +
        accelerator.register_for_checkpointing(obj)  # whitening statistics
    resumed = folder.start(accelerator, state)  # claims the folder; loads the newest verified checkpoint if resuming
    if cfg.run.report_to != "none":  # after start(): an overwrite has cleared the old run's tracker logs
        name = Path(cfg.run.output_dir).name  # the run's name in a W&B / trackio project "spectral_ssl"
        try:
            accelerator.init_trackers("spectral_ssl", config=tracker_config(config_dict(cfg)),
                                      init_kwargs={"wandb": {"name": name}, "trackio": {"name": name}})
        except Exception as e:  # noqa: BLE001  (a tracker's own start-up: a login, a server) one line, folder free
            folder.release()
            raise ConfigError(f"--report_to={cfg.run.report_to}: a tracker did not start ({type(e).__name__}: "
                              f"{(str(e).strip().splitlines() or [''])[0][:200]})") from None
    if resumed is not None and inputs.cache is None and cfg.batching.selection != "random":
        logger.warning("resuming selection=%s without the decoded cache (cache_decoded=%s, augment_on=%s) is not "
                       "exact: the candidate batches after step %d differ from an uninterrupted run's; runs started "
                       "with --cache_decoded=ram (--augment_on=device) resume exactly", cfg.batching.selection,
                       cfg.data.cache_decoded, cfg.data.augment_on, resumed)
    state.train_seconds += inputs.decode_seconds  # the cache's decode pass is training time
    total = cfg.optim.max_steps or cfg.optim.epochs * steps_per_epoch
    selector.until = resolve_until(until, total)
    if resumed is not None and resumed > total:  # else it would export the longer model under the shorter config
        key = f"--max_steps={cfg.optim.max_steps}" if cfg.optim.max_steps else f"--epochs={cfg.optim.epochs}"
        raise ConfigError(f"{key} ({total} steps) is below the step of the checkpoint it resumes ({resumed}); resume "
                          f"with at least {resumed} steps, or start a new --output_dir")
    accelerator.print(f"pretrain: {cfg.data.dataset} [{cfg.data.split}] {rows or 'unknown'} rows, "
                      f"{steps_per_epoch or '?'} steps/epoch, {total} steps, global batch "
                      f"{cfg.optim.batch_size * world} ({world} process{'es' * (world > 1)}), {cfg.model.backbone} on "
                      f"{device.type} ({accelerator.mixed_precision}), loss {cfg.objective.loss}, selection "
                      f"{cfg.batching.selection}{f' (random from step {selector.until})' if selector.until else ''}"
                      f", augment {cfg.data.augment} on {'device' if on_device else 'loader'}, {inputs.describe()} -> "
                      f"{cfg.run.output_dir}")
    # kNN top-1 of the backbone every probe_every steps; both splits are decoded at the first probe, then kept
    knn = OnlineKnn(cfg.data.dataset, cfg.data.split, cfg.data.eval_split, samples=cfg.run.probe_samples,
                    image_column=cfg.data.image_column, label_column=cfg.data.label_column,
                    skip_corrupt=cfg.data.skip_corrupt) if cfg.run.probe_every else None
    return SimpleNamespace(model=model, objective=objective, selector=selector, pool=pool, optimizer=optimizer,
                           state=state, folder=folder, memory_format=layout, knn=knn,
                           total_steps=total, steps_per_epoch=steps_per_epoch, device=device, views=views,
                           train_rows=rows, trainable=[p for g in optimizer.param_groups for p in g["params"]])


def train(run: SimpleNamespace, cfg: PretrainConfig, accelerator: Accelerator,
          on_eta: Callable[[float, float], None] | None = None) -> None:
    """The loop: select a batch, step, log, probe, checkpoint; the final state is always saved."""
    model, state, pool, selector, device = run.model, run.state, run.pool, run.selector, run.device
    bar = tqdm(total=run.total_steps, initial=state.step, disable=not accelerator.is_main_process, desc="pretrain",
               dynamic_ncols=True)
    model.train()
    tick, seen = time.perf_counter(), 0
    health = FiniteWatch(device)
    eta = EtaClock(state.step, run.total_steps, on_eta)
    saved = state.step or None  # a resumed run's step is the checkpoint it loaded
    collapsed_stop = False
    while state.step < run.total_steps and not collapsed_stop:
        logging_step = (state.step + 1) % cfg.run.log_every == 0 or state.step + 1 == run.total_steps
        step_start = time.perf_counter()
        with accelerator.autocast():  # candidates' no-grad pass (if any) at the training precision
            batch, selected = selector.select(accelerator.unwrap_model(model), pool, state.step,
                                              measure=logging_step and cfg.batching.selection != "random")
        if batch is None:  # the epoch's stream cannot fill another batch
            if pool.chosen == 0:
                raise SystemExit(f"error: epoch {pool.epoch} of {cfg.data.dataset} split {cfg.data.split} yielded no "
                                 f"batch of {cfg.optim.batch_size} (empty split, or every row undecodable); check "
                                 "--dataset/--split")
            pool.next_epoch()
            continue
        x1, x2 = (v.to(device, non_blocking=True, memory_format=run.memory_format) for v in batch["views"])
        lr = lr_schedule.warmup_cosine(state.step, run.total_steps, cfg.optim.warmup_steps, cfg.optim.lr)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        with accelerator.autocast():
            out = run.objective(x1, x2, index=batch["idx"])  # on the CPU: SogCLR checks it there (no host sync)
        loss = out.loss
        selector.observe(batch["idx"], out.p1, state.step)  # cache for the next epochs' selection
        run.optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(run.trainable, cfg.optim.grad_clip or float("inf"))
        health.record(state.step, loss, grad_norm)
        if device.type != "cuda" or logging_step or (cfg.run.save_every and (state.step + 1) % cfg.run.save_every == 0):
            health.check()  # on a GPU only here: reading a flag waits for the GPU, every step would stall it
        run.optimizer.step()
        run.objective.update_target(state.step, run.total_steps)
        if logging_step and device.type == "cuda":
            torch.cuda.synchronize()
        step_ms = 1000 * (time.perf_counter() - step_start)
        state.step += 1
        state.train_seconds += step_ms / 1000
        seen += x1.shape[0] * accelerator.num_processes
        probe_step = bool(cfg.run.probe_every) and state.step % cfg.run.probe_every == 0
        if state.step % cfg.run.log_every == 0 or state.step == run.total_steps or probe_step:  # a row per probe
            elapsed = time.perf_counter() - tick
            metrics = {"step": state.step, "epoch": pool.epoch, "lr": lr, "img_per_s": seen / elapsed,
                       "loss": accelerator.reduce(loss.detach(), "mean").item(), "grad_norm": float(grad_norm),
                       "step_ms": step_ms, "train_seconds": state.train_seconds, "skipped_rows": pool.skipped,
                       **batch_diagnostics(out.z1, out.z2, cfg.objective.temperature,
                                           monitor_temperature=cfg.objective.monitor_temperature,
                                           negatives=run.objective.negatives(), keys=out.keys)}
            if cfg.batching.selection != "random":
                metrics.update({f"sel_{k}": v for k, v in selected.items()},  # share of a step not measuring
                               sel_share=selected["select_ms"] / (step_ms - selected.get("measure_ms", 0.0)))
            if probe_step:
                metrics["knn_top1"] = run.knn(accelerator.unwrap_model(model), device)  # restores train mode
                reached = cfg.run.target_accuracy and metrics["knn_top1"] >= cfg.run.target_accuracy
                if reached and state.time_to_accuracy is None:
                    state.time_to_accuracy = {"target": cfg.run.target_accuracy, "step": state.step,
                                              "seconds": round(state.train_seconds, 2), "epoch": pool.epoch}
            collapsed_stop = collapse_alarm(metrics, out.z1, state, cfg, bar)
            show = {"loss": f"{metrics['loss']:.3f}", "reff(batch proj)": f"{metrics['reff_cov']:.1f}"}
            if "sel_reff_chosen" in metrics:
                show["reff chosen/random"] = f"{metrics['sel_reff_chosen']:.1f}/{metrics['sel_reff_random']:.1f}"
            bar.set_postfix(show)
            run.folder.log_metrics(metrics)
            if cfg.run.report_to != "none":  # the same numbers (main process only)
                accelerator.log(loggable(metrics, prefix=""), step=state.step)
            tick, seen = time.perf_counter(), 0
        elif state.step == 1:
            bar.set_postfix({"loss": f"{loss.item():.3f}"})
        bar.update(1)
        eta.stepped(state.step, x1.shape[0] * accelerator.num_processes)
        if cfg.run.save_every and state.step % cfg.run.save_every == 0:
            run.folder.save_checkpoint(accelerator, state.step, cfg.run.save_total_limit)
            saved = state.step
    bar.close()
    if saved != state.step:  # the final state, once (a resume that only exports has it already)
        run.folder.save_checkpoint(accelerator, state.step, cfg.run.save_total_limit)  # a failed export can be retried


def collapse_alarm(metrics: dict, z1: torch.Tensor, state: run_folder.TrainState, cfg: PretrainConfig, bar: tqdm
                   ) -> bool:
    """Count consecutive collapsed logs (``monitor.is_collapsed``, decided on rank 0); at ``collapse_patience`` warn
    or, with ``--collapse_alarm=stop``, return True: the loop ends, and the state is saved and exported as usual."""
    record = {**metrics, "n_samples": 2 * z1.shape[0] * dist.world_size(), "dim": z1.shape[1]}
    state.collapse_streak = collapse_streak(state.collapse_streak, is_collapsed(record), z1.device)  # rank 0 decides
    if cfg.run.collapse_alarm == "none" or state.collapse_streak != cfg.run.collapse_patience:
        return False
    stop = cfg.run.collapse_alarm == "stop"
    if dist.rank() == 0:
        bar.write(f"collapse alarm: {collapse_message(record, state.collapse_streak)} " + (
            f"Stopped at step {state.step}: the checkpoint and the export hold this state; --resume=true trains on."
            if stop else "(--collapse_alarm=stop stops such a run, --collapse_alarm=none silences this)"))
    return stop


def export(run: SimpleNamespace, cfg: PretrainConfig, accelerator: Accelerator) -> Path:
    """The Hub-format export at the root of output_dir (and the push, if asked)."""
    out = Path(cfg.run.output_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(run.model)
        # R_eff needs images only: no labels, and an undecodable one is left out rather than failing the export
        loader = eval_loader(cfg.data.dataset, cfg.data.eval_split,
                             transforms.Preprocessing.from_data_config(final.data_config), label_column=None,
                             image_column=cfg.data.image_column, max_samples=cfg.run.reff_samples, skip_corrupt=True)
        features, _ = extract_features(final, loader, device=run.device)
        metrics = run.folder.read_metrics()
        final.metadata = {
            "method": cfg.objective.loss, "loss": cfg.objective.loss, "selection": cfg.batching.selection,
            "selection_until": run.selector.until,
            "whitening": cfg.objective.whitening,
            "dataset": cfg.data.dataset, "split": cfg.data.split, "steps": run.state.step,
            "epochs": round(run.state.step / run.steps_per_epoch, 3) if run.steps_per_epoch else None,
            "global_batch": cfg.optim.batch_size * accelerator.num_processes, "temperature": cfg.objective.temperature,
            "augment": {"preset": cfg.data.augment, "on": "loader" if cfg.data.augment_on == "loader" else "device",
                        "views": [dataclasses.asdict(v) for v in run.views]},
            "effective_rank": hub.effective_rank_record(features, cfg.data.eval_split),
            "selection_reff": hub.selection_reff_record(metrics), "skipped_rows": run.pool.skipped,
            "time_to_accuracy": run.state.time_to_accuracy, "train_seconds": round(run.state.train_seconds, 2),
            "config": config_dict(cfg),
        }
        try:
            write_training_plot(metrics, out / hub.PLOT_NAME)  # R_eff (chosen vs random) + band, shown in the card
            final.save_pretrained(out)  # staged and swapped in whole: a failure leaves the previous export
        except OSError as e:  # a full disk, a folder made read-only during training
            raise SystemExit(f"error: the export to {out} could not be written ({type(e).__name__}: {e}); the "
                             f"trained state is saved in {run.folder.checkpoints}: fix that, then rerun the command "
                             "with --resume=true to export it") from None
        accelerator.print(f"export written to {out} (R_eff of the backbone's features on {cfg.data.eval_split}: "
                          f"{final.metadata['effective_rank']['value']:.2f} / {features.shape[1]})")
        if cfg.run.push_to_hub:  # the export just written, never the checkpoints or metrics
            try:
                accelerator.print(f"pushed to {hub.push_export(out, cfg.run.push_to_hub)}")
            except (RuntimeError, ValueError) as e:  # the server, the connection, non-finite weights: one line
                raise SystemExit(f"error: {e} (the export in {out} is complete: push it with `python "
                                 f"scripts/push_to_hub.py {out} {cfg.run.push_to_hub}`)") from None
    accelerator.wait_for_everyone()
    return out


def open_split(cfg: PretrainConfig, split_key: str, **kwargs) -> data.ImageData:
    """``cfg.data.<split_key>`` of the dataset; a missing split or column is named by the key that sets it."""
    try:
        return data.load_images(cfg.data.dataset, getattr(cfg.data, split_key), image_column=cfg.data.image_column,
                                **kwargs)
    except data.DataKeyError as e:
        raise ConfigError(e.message(f"--{split_key}")) from None


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        main()
    except KeyboardInterrupt as e:  # one line, not a traceback (exit status 130, as a shell's for Ctrl-C)
        print(f"\ninterrupted: {e}" if e.args else "\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None
