"""Pretrain a timm backbone with self-supervision on images read through HF datasets.

    accelerate launch recipes/pretrain.py --config recipes/configs/fashion_mnist_simclr.yaml [--key=value ...]
    python recipes/pretrain.py --config ... [--key=value ...]

Reads top to bottom: config -> data -> model/loss/optimiser -> (resume) -> loop (step, log, checkpoint) -> export.
Output layout (``output_dir``): the Hub-format export at the root (config.json, model.safetensors, README.md),
training state in ``checkpoints/step_NNNNNN/`` (accelerate ``save_state``), metrics in ``metrics.jsonl``.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import importlib.util
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

import spectral_ssl  # noqa: F401  (torchvision shim before accelerate imports timm)
from spectral_ssl import data, effective_rank, hub
from spectral_ssl.batching import SELECTIONS, SOURCES, BatchSelector, CandidatePool, resolve_target
from spectral_ssl.diagnostics import batch_diagnostics
from spectral_ssl.dist import gather_objects
from spectral_ssl.losses import LOSSES
from spectral_ssl.model import SpectralSSL
from spectral_ssl.momentum import cosine_momentum, update_momentum
from spectral_ssl.probe import extract_features, knn_probe
from spectral_ssl.whitening import BatchWhitening


@dataclass
class Config:
    # data
    dataset: str = "data/fashion_mnist"  # HF datasets id or local folder (parquet / image folder)
    split: str = "train"
    eval_split: str = "test"  # used by probe_every and the exported R_eff
    image_column: str = "image"
    label_column: str = "label"
    streaming: bool = True
    shuffle_buffer: int = 10_000
    num_workers: int = 0
    max_train_samples: int = 0  # 0 = the whole split; >0 caps the epoch length (quick runs)
    skip_corrupt: bool = False  # skip undecodable images (counted) instead of stopping with the row's idx
    image_size: int = 32
    mean: list = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # model
    backbone: str = "resnet18"
    backbone_kwargs: dict = field(default_factory=dict)
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    # objective (method keys: official defaults unless noted; 0 = the method's default where stated)
    loss: str = "infonce"  # infonce|simclr, dcl, moco, sogclr, isoloss, byol, simsiam
    temperature: float = 0.2  # contrastive losses (SogCLR/DCL papers use 0.1, MoCo v2 0.2)
    queue_size: int = 4096  # moco: queued keys (65536 on ImageNet; 4096 suits 60k images)
    ema_momentum: float = 0.0  # target EMA base (0 = method default: moco 0.99, byol/isoloss 0.99)
    ema_momentum_final: float = 0.0  # cosine schedule end (0 = method default: moco 0.999, byol/isoloss 1.0)
    sogclr_gamma: float = 0.9  # weight of the new batch estimate in SogCLR's moving average
    dcl_weight_sigma: float = 0.0  # dcl: > 0 gives DCLW's von Mises-Fisher weight (0.5 in the paper)
    iso_alpha: float = 0.5  # isoloss predictor exponent (1 with iso_eps 0.25 = DirectCopy)
    iso_eps: float = 0.0
    iso_metric: str = "cos"  # cos | euc
    iso_ema: bool = False  # isoloss with an EMA target network
    iso_corr_momentum: float = 0.0  # 0 = default (0.998 with EMA, 0.5 without)
    predictor_hidden_dim: int = 0  # byol/simsiam predictor width (0 = default: byol 4096, simsiam 512)
    monitor_temperature: float = 0.2  # NT-Xent monitor logged for every loss (comparable across methods)
    selection: str = "random"  # random | pool (Pool-P) | greedy (Greedy-m log-det)
    pool_factor: int = 4  # greedy: candidates per process = pool_factor x batch_size
    pool_candidates: int = 3  # pool: P candidate batches per step (Pool-P3)
    greedy_m: int = 0  # candidates scored per greedy pick (0 = all: exact greedy; 64 = Greedy-64)
    greedy_window: float = 0.0  # stop greedy once R_eff reaches this and fill at random (0 = off)
    target_reff: str = ""  # pool: target R_eff: a number, a fraction of proj_dim, or "0.96*C" (empty = argmax)
    num_classes: int = 0  # C for "rho*C" targets
    selection_source: str = "cache"  # greedy candidates' embeddings: cache (last visit) | online (no-grad pass)
    selection_eps: float = 1e-2  # ridge of the log-det objective
    selection_space: str = "loss"  # score candidates as the loss sees them (whitened, with whitening on) | projections
    whitening: str = "none"  # none | zca | cholesky: in-batch whitening of each view's projections before the loss
    whitening_eps: float = 1e-4  # ridge relative to the mean eigenvalue
    # optimisation
    batch_size: int = 256  # per process
    epochs: int = 1
    max_steps: int = 0  # 0 = epochs x steps per epoch
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    grad_clip: float = 0.0
    mixed_precision: str = "auto"  # auto (bf16 on GPU, none on CPU) | no | bf16 | fp16
    seed: int = 0
    # bookkeeping
    output_dir: str = "outputs/run"
    save_every: int = 0  # steps between checkpoints (0 = only at the end)
    resume: bool = False  # continue from the newest checkpoint in output_dir
    log_every: int = 10
    probe_every: int = 0  # steps between online kNN probes (0 = off)
    probe_samples: int = 2000
    reff_samples: int = 2000  # eval images used for the exported effective rank
    push_to_hub: str = ""  # repo id to push the export to at the end (empty = no push)


WHITENINGS = ("none", "zca", "cholesky")


def _coerce(key: str, text: str, default: Any) -> Any:
    """Parse an override string to the type of the field's default."""
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--{key} expects true/false, got {text!r}")
    if isinstance(default, (list, dict)):
        value = yaml.safe_load(text)
        if not isinstance(value, type(default)):
            raise ValueError(f"--{key} expects a YAML {type(default).__name__}, got {text!r}")
        return value
    try:
        return type(default)(text)
    except ValueError:
        raise ValueError(f"--{key} expects {type(default).__name__}, got {text!r}") from None


def parse_config(argv: list[str] | None) -> Config:
    """``--config X.yaml`` then ``--key=value`` overrides, types checked against the defaults."""
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = Config()
    fields = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(Config)}
    values: dict[str, Any] = {}
    overrides: list[tuple[str, str]] = []
    it = iter(argv)
    for arg in it:
        m = re.fullmatch(r"--([A-Za-z_][\w-]*)(?:=(.*))?", arg, flags=re.S)
        if not m:
            raise SystemExit(f"error: unexpected argument {arg!r}; use --config FILE and --key=value overrides")
        key, text = m.group(1).replace("-", "_"), m.group(2)
        if text is None:
            text = next(it, None)
            if text is None:
                raise SystemExit(f"error: --{key} needs a value")
        if key == "config":
            path = Path(text)
            if not path.is_file():
                raise SystemExit(f"error: config file {text} not found")
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise SystemExit(f"error: {text} must hold a mapping of config keys")
            values.update(loaded)
        else:
            overrides.append((key, text))
    for key, text in overrides:
        if key not in fields:
            raise SystemExit(f"error: unknown config key {key!r}; valid keys: {', '.join(fields)}")
        try:
            values[key] = _coerce(key, text, fields[key])
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    for key, value in values.items():
        if key not in fields:
            raise SystemExit(f"error: unknown config key {key!r}; valid keys: {', '.join(fields)}")
        default = fields[key]
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif not isinstance(value, type(default)) or (isinstance(value, bool) != isinstance(default, bool)):
            raise SystemExit(f"error: config key {key!r} expects {type(default).__name__}, got {value!r}")
    cfg = Config(**values)
    checks = [(cfg.loss in LOSSES, f"loss must be one of {sorted(LOSSES)}"),
              (cfg.selection in SELECTIONS, f"selection must be one of {SELECTIONS}"),
              (cfg.selection_source in SOURCES, f"selection_source must be one of {SOURCES}"),
              (min(cfg.pool_factor, cfg.pool_candidates) >= 1 and cfg.greedy_m >= 0,
               "pool_factor and pool_candidates must be >= 1 and greedy_m >= 0"),
              (cfg.whitening in WHITENINGS, f"whitening must be one of {WHITENINGS}"),
              (cfg.selection_space in ("loss", "projections"), "selection_space must be loss or projections"),
              (cfg.whitening == "none" or cfg.batch_size > cfg.proj_dim,
               f"whitening needs batch_size > proj_dim (got {cfg.batch_size} <= {cfg.proj_dim}); raise --batch_size "
               "or lower --proj_dim"),
              (cfg.optimizer in ("adamw", "sgd"), "optimizer must be adamw or sgd"),
              (cfg.batch_size >= 2, "batch_size must be >= 2"),
              (cfg.iso_metric in ("cos", "euc"), "iso_metric must be cos or euc"),
              (cfg.mixed_precision in ("auto", "no", "bf16", "fp16"), "mixed_precision must be auto|no|bf16|fp16")]
    for ok, msg in checks:
        if not ok:
            raise SystemExit(f"error: {msg}")
    return cfg


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up then cosine decay to 0."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class TrainState:
    """Step/epoch counters, saved with accelerate's checkpoints (register_for_checkpointing).

    ``drawn[r]``: loader batches rank r consumed this epoch; ``carried[r]``: idx of the candidates rank r's
    selection pool held (re-read on resume, so no sample of the epoch is lost).
    """

    def __init__(self) -> None:
        self.step, self.epoch, self.batch_in_epoch, self.corrupt = 0, 0, 0, 0
        self.drawn: list[int] = []
        self.carried: list[list[int]] = []

    def state_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.__dict__.update(state)


def build_loss(cfg: Config, world: int, rows: int | None) -> torch.nn.Module:
    """The ``loss=`` module with its method keys; a bad value exits with the constructor's message."""
    gathered = world > 1
    kwargs = {
        "infonce": dict(temperature=cfg.temperature, gather_distributed=gathered),
        "dcl": dict(temperature=cfg.temperature, gather_distributed=gathered,
                    weight_sigma=cfg.dcl_weight_sigma or None),
        "moco": dict(dim=cfg.proj_dim, queue_size=cfg.queue_size, temperature=cfg.temperature,
                     gather_distributed=gathered),
        "sogclr": dict(dataset_size=rows, temperature=cfg.temperature, gamma=cfg.sogclr_gamma,
                       gather_distributed=gathered),
        "isoloss": dict(dim=cfg.proj_dim, alpha=cfg.iso_alpha, eps=cfg.iso_eps, metric=cfg.iso_metric,
                        corr_momentum=cfg.iso_corr_momentum or None, ema=cfg.iso_ema, gather_distributed=gathered),
        "byol": dict(dim=cfg.proj_dim, hidden_dim=cfg.predictor_hidden_dim or 4096),
        "simsiam": dict(dim=cfg.proj_dim, hidden_dim=cfg.predictor_hidden_dim or 512),
    }
    name = "infonce" if cfg.loss == "simclr" else cfg.loss
    if name == "sogclr" and not rows:
        raise SystemExit("error: loss=sogclr needs the number of training rows (its per-sample state is indexed by "
                         "idx); this stream has no length metadata")
    try:
        return LOSSES[name](**kwargs[name])
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_config(argv)
    out = Path(cfg.output_dir)
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    trackers = "tensorboard" if importlib.util.find_spec("tensorboard") else None
    # cpu=True without CUDA: under torchrun/accelerate launch that gives a gloo process group (MULTI_CPU)
    accelerator = Accelerator(mixed_precision=precision, log_with=trackers, project_dir=str(out),
                              cpu=not torch.cuda.is_available())
    set_seed(cfg.seed)
    main_proc, world, device = accelerator.is_main_process, accelerator.num_processes, accelerator.device

    # ---- data: each rank reads its own share (split by node inside make_loader; the loader is not prepared) ----
    train = data.load_images(cfg.dataset, cfg.split, streaming=cfg.streaming, image_column=cfg.image_column,
                             label_column=None)
    rows = data.num_rows(train)
    if cfg.max_train_samples:
        rows = min(rows or cfg.max_train_samples, cfg.max_train_samples)
    steps_per_epoch = rows // (cfg.batch_size * world) if rows else 0
    if rows is not None and steps_per_epoch == 0:
        raise SystemExit(f"error: {rows} training rows cannot fill one global batch of {cfg.batch_size * world}; "
                         "lower --batch_size")
    if not steps_per_epoch and not cfg.max_steps:
        raise SystemExit("error: the dataset's length is unknown (streaming without metadata); set --max_steps")
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    transform = data.TwoViewTransform(cfg.image_size, mean=cfg.mean, std=cfg.std)

    # ---- model, loss, optimiser ----
    model = SpectralSSL(cfg.backbone, cfg.proj_hidden_dim, cfg.proj_dim, cfg.backbone_kwargs)
    model.data_config.update(input_size=(3, cfg.image_size, cfg.image_size), mean=tuple(cfg.mean),
                             std=tuple(cfg.std), crop_pct=1.0, crop_mode="center",
                             interpolation=data.EVAL_INTERPOLATION)
    loss_fn = build_loss(cfg, world, data.num_rows(train))
    method = loss_fn  # attributes (uses_target, negatives, ...) even after a DDP wrap
    # EMA target network (MoCo key encoder, BYOL / IsoLoss-with-EMA target): a frozen copy, never prepared
    target = copy.deepcopy(model).requires_grad_(False).to(device) if method.uses_target else None
    params = list(model.named_parameters()) + list(loss_fn.named_parameters())  # + BYOL/SimSiam predictor
    trainable = [p for _, p in params]
    decay = [p for n, p in params if p.ndim > 1]
    no_decay = [p for n, p in params if p.ndim <= 1]  # biases and norm weights
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = (torch.optim.AdamW(groups, lr=cfg.lr) if cfg.optimizer == "adamw"
                 else torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9))
    model, optimizer = accelerator.prepare(model, optimizer)
    if any(True for _ in loss_fn.parameters()):  # a learnable predictor: DDP-synchronise its gradients
        loss_fn = accelerator.prepare(loss_fn)
    else:
        loss_fn = loss_fn.to(device)  # not prepared: DDP refuses modules without parameters
    # whitening has no parameters either; its running statistics are checkpointed with the training state
    whiten = (BatchWhitening(cfg.proj_dim, kind=cfg.whitening, eps=cfg.whitening_eps).to(device)
              if cfg.whitening != "none" else torch.nn.Identity())
    reff_target = resolve_target(float(cfg.target_reff) if re.fullmatch(r"[0-9.eE+-]+", cfg.target_reff)
                            else cfg.target_reff or None, cfg.proj_dim, cfg.batch_size * world, cfg.num_classes or None)
    # candidates are scored as the loss sees them: whitened with the running statistics when whitening is on
    score_space = whiten.whiten_running if cfg.whitening != "none" and cfg.selection_space == "loss" else None
    selector = BatchSelector(cfg.selection, cfg.batch_size, cfg.proj_dim, data.num_rows(train),
                             pool_factor=cfg.pool_factor, pool_candidates=cfg.pool_candidates,
                             greedy_m=cfg.greedy_m or None, eps=cfg.selection_eps, target=reff_target,
                             window=cfg.greedy_window or None, source=cfg.selection_source, seed=cfg.seed,
                             transform=score_space).to(device)
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    accelerator.register_for_checkpointing(selector)  # the embedding cache (empty for random selection)
    accelerator.register_for_checkpointing(method)  # queue, u, correlation (predictor weights included)
    if target is not None:
        accelerator.register_for_checkpointing(target)
    if cfg.whitening != "none":
        accelerator.register_for_checkpointing(whiten)

    # ---- resume from the newest checkpoint ----
    ckpt_root = out / "checkpoints"
    if cfg.resume:
        ckpts = sorted(ckpt_root.glob("step_*"))
        if ckpts:
            accelerator.load_state(str(ckpts[-1]))
            accelerator.print(f"resumed from {ckpts[-1]} (step {state.step}, epoch {state.epoch})")
        else:
            accelerator.print(f"--resume=true but {ckpt_root} holds no checkpoint: starting from scratch")
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    if trackers:
        accelerator.init_trackers("spectral_ssl", config={k: v for k, v in dataclasses.asdict(cfg).items()
                                                          if isinstance(v, (int, float, str, bool))})
    metrics_file = (out / "metrics.jsonl").open("a") if main_proc else None

    # ---- training loop ----
    bar = tqdm(total=total_steps, initial=state.step, disable=not main_proc, desc="pretrain", dynamic_ncols=True)
    model.train()
    tick, seen, rank = time.perf_counter(), 0, accelerator.process_index
    loader_args = dict(seed=cfg.seed, rank=rank, world_size=world, shuffle_buffer=cfg.shuffle_buffer,
                       skip_corrupt=cfg.skip_corrupt)
    pool, drawn = None, 0
    while state.step < total_steps:
        # each step: fill the pool from the loader, choose this rank's batch, the rest waits (once per epoch)
        drawn = state.drawn[rank] if state.drawn else 0
        loader = data.make_loader(train, transform, batch_size=cfg.batch_size, epoch=state.epoch,
                                  num_workers=cfg.num_workers, skip_batches=drawn,
                                  max_samples=cfg.max_train_samples or None, **loader_args)
        pool = CandidatePool(loader, selector.pool_size, recover_pool(state, cfg, train, transform, loader_args))
        while state.step < total_steps and (not steps_per_epoch or state.batch_in_epoch < steps_per_epoch):
            logging_step = (state.step + 1) % cfg.log_every == 0 or state.step + 1 == total_steps
            step_start = time.perf_counter()
            with accelerator.autocast():  # candidates' no-grad pass (if any) at the training precision
                batch = selector.select(accelerator.unwrap_model(model), pool, state.step,
                                        measure=logging_step and cfg.selection != "random")
            if batch is None:
                break
            x1, x2 = (v.to(device, non_blocking=True) for v in batch["views"])
            lr = lr_at(state.step, total_steps, cfg.warmup_steps, cfg.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with accelerator.autocast():
                p1, p2 = model(x1), model(x2)
                z1, z2 = whiten(p1), whiten(p2)  # per-view batch statistics (online branch only, A9)
                targets = None
                if target is not None:
                    with torch.no_grad():
                        targets = (target(x1), target(x2))
                loss = loss_fn(z1, z2, index=batch["idx"].to(device), targets=targets)
            selector.observe(batch["idx"], p1, state.step)  # cache for the next epochs' selection
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at step {state.step}; lower --lr or check the data")
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(trainable, cfg.grad_clip or float("inf"))
            if not torch.isfinite(grad_norm):
                raise RuntimeError(f"non-finite gradients at step {state.step} (the weights were not updated); "
                                   "resume from the last checkpoint with a lower --lr, --grad_clip=1 or a larger "
                                   "--whitening_eps")
            optimizer.step()
            if target is not None:
                base, final = method.default_momentum
                update_momentum(target, accelerator.unwrap_model(model), cosine_momentum(
                    state.step, total_steps, cfg.ema_momentum or base, cfg.ema_momentum_final or final))
            if logging_step and device.type == "cuda":
                torch.cuda.synchronize()
            step_ms = 1000 * (time.perf_counter() - step_start)
            state.step += 1
            state.batch_in_epoch += 1
            seen += x1.shape[0] * world
            bar.update(1)

            if state.step % cfg.log_every == 0 or state.step == total_steps:
                elapsed = time.perf_counter() - tick
                metrics = {"step": state.step, "epoch": state.epoch, "lr": lr, "img_per_s": seen / elapsed,
                           "loss": accelerator.reduce(loss.detach(), "mean").item(), "grad_norm": float(grad_norm),
                           **batch_diagnostics(z1, z2, cfg.temperature, monitor_temperature=cfg.monitor_temperature,
                                               negatives=method.negatives() if hasattr(method, "negatives") else None,
                                               keys=None if targets is None else targets[1]),
                           "step_ms": step_ms,
                           **{f"sel_{k}": v for k, v in selector.stats.items()},
                           "sel_share": selector.stats["select_ms"] / step_ms}
                if cfg.probe_every and state.step % cfg.probe_every == 0:
                    metrics["knn_top1"] = online_knn(accelerator.unwrap_model(model), cfg, device)
                    model.train()
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", reff=f"{metrics['reff_cov']:.1f}")
                if main_proc:
                    metrics_file.write(json.dumps(metrics) + "\n")
                    metrics_file.flush()
                if trackers:
                    accelerator.log(metrics, step=state.step)
                tick, seen = time.perf_counter(), 0
            if cfg.save_every and state.step % cfg.save_every == 0:
                save_checkpoint(accelerator, state, pool, drawn, ckpt_root)
        epoch_done = not steps_per_epoch or state.batch_in_epoch >= steps_per_epoch
        if not epoch_done and state.step < total_steps:
            raise RuntimeError(f"epoch {state.epoch} ended after {state.batch_in_epoch} of {steps_per_epoch} batches "
                               f"on rank {accelerator.process_index}: the split has fewer rows than its metadata says")
        if epoch_done:
            state.epoch, state.batch_in_epoch, state.drawn, state.carried = state.epoch + 1, 0, [], []
            pool = None
    bar.close()
    if cfg.save_every and state.step % cfg.save_every:
        save_checkpoint(accelerator, state, pool, drawn, ckpt_root)

    # ---- export (Hub format at the root of output_dir) ----
    accelerator.wait_for_everyone()
    if main_proc:
        metrics_file.close()
        final = accelerator.unwrap_model(model)
        final.metadata = {
            "method": cfg.loss, "loss": cfg.loss, "selection": cfg.selection, "whitening": cfg.whitening,
            "dataset": cfg.dataset, "split": cfg.split, "epochs": round(state.step / max(1, steps_per_epoch), 3),
            "steps": state.step, "global_batch": cfg.batch_size * world, "temperature": cfg.temperature,
            "effective_rank": export_reff(final, cfg, device), "config": dataclasses.asdict(cfg),
        }
        hub.write_training_plot(out / "metrics.jsonl", out / hub.PLOT_NAME)  # R_eff + band, shown in the card
        final.save_pretrained(out)
        accelerator.print(f"export written to {out} (R_eff {final.metadata['effective_rank']['value']:.2f})")
        if cfg.push_to_hub:  # the export just written, never the checkpoints or metrics
            accelerator.print(f"pushed to {hub.push_export(out, cfg.push_to_hub)}")
    accelerator.end_training()
    if torch.distributed.is_initialized():
        del model, loss_fn, optimizer  # the DDP wrappers: their reducers must go before the group
        shut_down_process_group(accelerator)
    return out


def shut_down_process_group(accelerator: Accelerator) -> None:
    """Free DDP's reducer and tear the process group down while gloo's worker threads are idle.

    Gloo's worker threads destroy finished work items, which releases tensors and needs the GIL; the reducer's and
    the group's destructors join those threads while holding the GIL. If the last reference to the DDP model goes
    when ``main`` returns, that join can wait forever on a worker waiting for the GIL (seen: rank 0 hung after its
    export in the 2-process test). So: drop accelerate's references and collect the reducer now (the group is still
    registered, nothing is joined), synchronise, let the workers finish outside the GIL, then destroy the group.
    """
    accelerator.free_memory()  # accelerate's lists held the DDP-wrapped model, loss and optimizer
    gc.collect()
    torch.distributed.barrier()
    time.sleep(0.2)  # releases the GIL: workers finish destroying the barrier's work items
    torch.distributed.destroy_process_group()


def save_checkpoint(accelerator: Accelerator, state: TrainState, pool: CandidatePool | None, skipped: int,
                    root: Path) -> None:
    """accelerate ``save_state`` plus every rank's pool position (only rank 0 writes the custom state)."""
    mine = (skipped + pool.drawn, pool.carried_idx()) if pool is not None else (0, [])
    ranks = gather_objects(mine)
    state.drawn, state.carried = [d for d, _ in ranks], [c for _, c in ranks]
    accelerator.save_state(str(root / f"step_{state.step:06d}"))


def recover_pool(state: TrainState, cfg: Config, train, transform, loader_args: dict) -> dict | None:
    """Re-read the candidates this rank's pool held at the checkpoint (their rows, not decoded twice)."""
    rank = loader_args["rank"]
    if not state.carried or not state.carried[rank]:
        return None
    keep = state.carried[rank]
    read = state.drawn[rank] * cfg.batch_size * loader_args["world_size"]
    loader = data.make_loader(train, transform, batch_size=len(keep), epoch=state.epoch, drop_last=False,
                              max_samples=min(read, cfg.max_train_samples or read), keep_idx=keep, **loader_args)
    batch = next(iter(loader), None)
    if batch is None or len(batch["idx"]) != len(keep):
        raise RuntimeError(f"resume could not re-read the {len(keep)} samples waiting in the selection pool; the "
                           "dataset changed since the checkpoint. Start a new output_dir.")
    return batch


def eval_loader(cfg: Config, limit: int) -> torch.utils.data.DataLoader:
    ds = data.load_images(cfg.dataset, cfg.eval_split, streaming=cfg.streaming, image_column=cfg.image_column,
                          label_column=cfg.label_column or None)
    transform = data.EvalTransform(cfg.image_size, mean=cfg.mean, std=cfg.std)
    return data.make_loader(ds, transform, batch_size=256, shuffle=False, drop_last=False, collate="eval",
                            skip_corrupt=cfg.skip_corrupt, max_samples=limit)


def export_reff(model: SpectralSSL, cfg: Config, device: torch.device) -> dict[str, Any]:
    """Effective rank of the backbone features on ``reff_samples`` eval images (what the card reports)."""
    feats, _ = extract_features(model, eval_loader(cfg, cfg.reff_samples), device=device)
    return {"value": float(effective_rank(feats, "cov")), "estimator": "cov", "n_samples": int(feats.shape[0]),
            "dim": int(feats.shape[1]), "centered": True, "eps": 1e-12, "features": "backbone",
            "split": cfg.eval_split}


def online_knn(model: SpectralSSL, cfg: Config, device: torch.device) -> float:
    """kNN top-1 with ``probe_samples`` images of each split: a cheap progress signal during training."""
    test = eval_loader(cfg, cfg.probe_samples)
    train_cfg = dataclasses.replace(cfg, eval_split=cfg.split)
    train_f, train_y = extract_features(model, eval_loader(train_cfg, cfg.probe_samples), device=device)
    test_f, test_y = extract_features(model, test, device=device)
    return knn_probe(train_f, train_y, test_f, test_y).top1


if __name__ == "__main__":
    main()
