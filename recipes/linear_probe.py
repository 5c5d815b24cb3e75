"""Linear-probe (and kNN-probe) a pretrained backbone on frozen features, beside fair baselines.

    python recipes/linear_probe.py --model outputs/fashion_mnist_simclr [--compare_random_init] [--compare_raw_pixels]
    python recipes/linear_probe.py --help      (every key)

Loads the export with ``SpectralSSL.from_pretrained``, extracts frozen backbone features of the train and test splits
with the export's own preprocessing (``pretrained_cfg``), fits a multinomial logistic regression, prints the result,
writes it as JSON and records it in the export's ``config.json`` and model card. The baselines use the same probe and
the same images: ``--compare_random_init`` the same architecture fairly initialised at random (timm's standard init
without zero-initialised residual branches, BatchNorm statistics recalibrated on training images),
``--compare_raw_pixels`` the normalised pixels themselves.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from spectral_ssl import cpu_threads

# before torch loads libgomp: a short OpenMP spin and threads from the machine's load (README, "CPU runs");
# SPECTRAL_SSL_THREADS=default keeps torch's defaults
cpu_threads.configure()

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from spectral_ssl import hub, run_folder  # noqa: E402
from spectral_ssl.config import ConfigError, ProbeConfig, parse_config  # noqa: E402
from spectral_ssl.data import DataKeyError, LabelsNotIntegerError  # noqa: E402
from spectral_ssl.model import SpectralSSL  # noqa: E402
from spectral_ssl.probe import (  # noqa: E402
    WEIGHT_DECAYS,
    eval_loader,
    extract_features_of,
    fair_random_init,
    knn_probe,
    linear_probe,
    recalibrate_batchnorm,
    split_halves,
)
from spectral_ssl.spectral import effective_rank  # noqa: E402
from spectral_ssl.transforms import Preprocessing  # noqa: E402


def main(argv: list[str] | None = None, *, on_result: Callable[[str, dict], None] | None = None) -> dict:
    """Probe the export (and the baselines asked for); ``on_result(arm, result)`` is called as each arm's result is
    saved (``pretrained``, ``random_init``, ``raw_pixels``), e.g. to report the first before the baselines end."""
    try:
        cfg = parse_config(ProbeConfig, sys.argv[1:] if argv is None else argv, description=__doc__)
        model = SpectralSSL.from_pretrained(cfg.model)
        dataset = cfg.dataset or model.metadata.get("dataset")
        if not dataset:
            raise ConfigError("the export records no training dataset; pass --dataset")
        if not cfg.dataset and model.metadata.get("dataset_local"):
            raise ConfigError(f"the export was trained on a local dataset ('{dataset}', a folder of the machine that "
                              "trained it); pass --dataset PATH")
        run = model.metadata.get("config") or {}  # the run's own columns, when probing the data it trained on
        own = cfg.dataset is None or cfg.dataset == run.get("dataset")
        cfg.image_column = cfg.image_column or (own and run.get("image_column")) or "image"
        cfg.label_column = cfg.label_column or (own and run.get("label_column")) or "label"
        local = Path(str(cfg.model).removeprefix("local-dir:"))
        if cfg.push == "model" and local.is_dir():
            raise ConfigError("--push=model needs a Hub model; pass --push=org/name for a local export")
        if cfg.push:
            hub.require_token("--push")
        out_path = Path(cfg.output) if cfg.output else (local / "linear_probe.json" if local.is_dir() else None)
        if out_path is not None and out_path.is_file() and not is_probe_result(out_path):
            raise ConfigError(f"--output {out_path} is an existing file that is not a linear_probe result and would "
                              "be replaced; name a new file")
        probe_data = split_loaders(model, dataset, cfg)  # opens both splits: a wrong split or column fails here
    except (ConfigError, ValueError, FileNotFoundError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    results = {"model": str(cfg.model), "complete": False}  # written as each probe ends: a killed probe keeps them
    arms = {"pretrained": model}  # every arm's features in one pass over the images (each decoded once)
    if cfg.compare_random_init:
        torch.manual_seed(cfg.seed)
        baseline = fair_random_init(model).to(device)
        calibration = eval_loader(dataset, cfg.train_split, probe_data["preprocessing"],
                                  image_column=cfg.image_column, label_column=None,
                                  batch_size=cfg.batch_size, max_samples=cfg.bn_batches * cfg.batch_size,
                                  shuffle=True, seed=cfg.seed, num_workers=cfg.num_workers,
                                  skip_corrupt=cfg.skip_corrupt)
        used = []  # the batches there were (a small split has fewer than --bn_batches)
        try:  # an undecodable training image: the same one line as the probe's own pass
            layers = recalibrate_batchnorm(baseline, (used.append(1) or b["image"] for b in calibration),
                                           device=device)
        except ValueError as e:
            raise SystemExit(read_error(probe_data, cfg, cfg.train_split, e)) from None
        arms["random_init"] = baseline
    if cfg.compare_raw_pixels:
        arms["raw_pixels"] = None
    features = split_features(arms, probe_data, cfg, device)

    def probed(arm: str, name: str, **facts) -> dict:  # fitted, saved (a killed probe keeps it) and reported
        results[arm] = {**probe(features.pop(arm), probe_data, cfg, device, name), **facts}
        save_results(results, out_path)
        if on_result:
            on_result(arm, results[arm])
        return results[arm]

    pre = probed("pretrained", "pretrained")
    print(f"pretrained   : linear top-1 {pre['top1']:.2f} %  top-5 {pre['top5']:.2f} %"
          f"{knn_text(pre)}  (R_eff of test features {pre['effective_rank']:.1f} / {model.num_features})")
    baselines = {}
    if cfg.compare_random_init:
        rnd = probed("random_init", "random init", bn_recalibrated_layers=layers, bn_batches=len(used),
                     zero_init_last=False)
        # fair: BatchNorm statistics of the data, as the pretrained model's (bn_batches=0 keeps timm's init ones)
        baselines["random init (fair)" if used else "random init (BatchNorm not recalibrated)"] = rnd["top1"]
        print(f"random init  : linear top-1 {rnd['top1']:.2f} %  top-5 {rnd['top5']:.2f} %{knn_text(rnd)}  "
              f"(R_eff {rnd['effective_rank']:.1f}; standard init, BatchNorm statistics from {len(used)} "
              "training batches)")
    if cfg.compare_raw_pixels:
        raw = probed("raw_pixels", "raw pixels")
        baselines["raw pixels"] = raw["top1"]
        print(f"raw pixels   : linear top-1 {raw['top1']:.2f} %  top-5 {raw['top5']:.2f} %{knn_text(raw)}  "
              f"({raw['dim']} normalised pixel values)")
    for name, top1 in baselines.items():
        print(f"pretraining gain over {name}: {pre['top1'] - top1:+.2f} points top-1")
    results["complete"] = True
    if save_results(results, out_path):
        print(f"results written to {out_path}")
    record = {k: pre[k] for k in ("top1", "top5", "dataset", "split", "train_split", "n_train", "n_test")}
    record["weight_decay"] = pre["settings"]["weight_decay"]  # the L2 penalty chosen on held-out train rows
    if "knn" in pre:
        record["knn_top1"] = round(pre["knn"]["top1"], 2)
    if baselines:
        record["baselines"] = {k: round(v, 2) for k, v in baselines.items()}
    if local.is_dir() and cfg.record:
        hub.update_metadata(local, linear_probe=record)
    if cfg.push:
        results["pushed"] = push_probe(cfg, local, record)
        print(f"model card metrics updated on the Hub: {results['pushed']}")
    return results


def is_probe_result(path: Path) -> bool:
    """True when ``path`` holds a results JSON this recipe wrote (which a new probe may replace)."""
    return run_folder.holds_json_with(path, ("model", "complete"))


def save_results(results: dict, path: Path | None) -> bool:
    """Write ``results`` as JSON to ``path`` (its folders created), replacing the file whole; False without a path."""
    if path is None:
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(path)
    except OSError as e:
        raise SystemExit(f"error: --output {path}: {e.strerror or e}; choose another --output") from None
    return True


def split_loaders(model: SpectralSSL, dataset: str, cfg: ProbeConfig) -> dict:
    """Loader factories for the train and test splits with the export's preprocessing (each split opened once
    now, so a missing split or label column is reported before any feature is extracted)."""
    preprocessing = Preprocessing.from_data_config(model.data_config)
    loaders = {}  # by role; one split for both: read once (both caps), then halved by ``probe``
    same = cfg.train_split == cfg.test_split
    caps = (cfg.max_train_samples, cfg.max_test_samples)
    both = None if None in caps else sum(caps)
    roles = ((("test", cfg.test_split, both),) if same else
             (("train", cfg.train_split, cfg.max_train_samples), ("test", cfg.test_split, cfg.max_test_samples)))
    for role, split, limit in roles:
        loaders[role] = (lambda split=split, limit=limit: eval_loader(
            dataset, split, preprocessing, image_column=cfg.image_column, label_column=cfg.label_column,
            batch_size=cfg.batch_size, max_samples=limit, num_workers=cfg.num_workers, skip_corrupt=cfg.skip_corrupt))
        try:
            loaders[role]()  # opens the split: a missing split or label column fails here
        except DataKeyError as e:
            if e.role == "label_column":  # not "or --label_column=null": a probe needs labels
                raise ConfigError(f"--label_column={e.value} not found in {e.dataset}; available columns: "
                                  f"{', '.join(e.available) or 'none'}; the probe needs integer class labels: pass "
                                  "--label_column=<one of them>") from None
            raise ConfigError(e.message(f"--{role}_split")) from None
        except LabelsNotIntegerError as e:  # --label_column=null is "the run's column" here, never "no labels"
            raise ConfigError(e.message(labels_optional=False)) from None
    if same:
        print(f"--train_split and --test_split are both {cfg.test_split}: the probe is fitted on seeded rows of it "
              "(a half, or --max_train_samples) and scored on other rows (--max_test_samples, or the rest)")
    return {"dataset": dataset, "preprocessing": preprocessing, "loaders": loaders}


def split_features(arms: dict[str, SpectralSSL | None], probe_data: dict, cfg: ProbeConfig,
                   device: torch.device) -> dict[str, dict]:
    """Features of both splits for every arm (a model's, or raw pixels for ``None``), reading each split once:
    ``{arm: {role: (features, labels)}}`` with roles ``train`` and ``test`` (``test`` only when both are the same
    split; ``probe`` halves it)."""
    t0, feats = time.perf_counter(), {name: {} for name in arms}
    for role, split in (("train", cfg.train_split), ("test", cfg.test_split)):
        if role not in probe_data["loaders"]:  # the same split for both: halved by probe
            continue
        batches = tqdm(probe_data["loaders"][role](), desc=f"{split} features ({', '.join(arms)})", unit="batch",
                       leave=False)
        try:  # a label that is no integer class, an undecodable image: one line naming the columns
            found = extract_features_of(arms, batches, device=device)
        except ValueError as e:
            raise SystemExit(read_error(probe_data, cfg, split, e)) from None
        for name in arms:
            feats[name][role] = found[name]
    seconds = round(time.perf_counter() - t0, 2)
    for name in arms:
        feats[name]["seconds"] = seconds
    return feats


def read_error(probe_data: dict, cfg: ProbeConfig, split: str, e: ValueError) -> str:
    """One line for a split that cannot be read (a label that is no integer class, an undecodable image)."""
    return (f"error: reading {probe_data['dataset']} split {split} (--image_column={cfg.image_column}, "
            f"--label_column={cfg.label_column}, integer class labels): "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")


def probe(feats: dict, probe_data: dict, cfg: ProbeConfig, device: torch.device, name: str) -> dict:
    """The linear (and kNN) probe of one arm's features (``split_features``)."""
    if "train" in feats:
        (train_f, train_y), (test_f, test_y) = feats["train"], feats["test"]
        fit_on, scored_on = cfg.train_split, cfg.test_split
    else:  # never fitted and scored on the same rows
        train_f, train_y, test_f, test_y = split_halves(*feats["test"], seed=cfg.seed,
                                                        sizes=(cfg.max_train_samples, cfg.max_test_samples))
        part = "a seeded half" if cfg.max_train_samples is None and cfg.max_test_samples is None else "seeded rows"
        fit_on, scored_on = f"{cfg.train_split} ({part})", f"{cfg.test_split} (the other {part.split()[-1]})"
    print(f"{name}: fitting the linear probe on {train_f.shape[0]} x {train_f.shape[1]} features ...", flush=True)
    try:  # rows labelled -1 ("no label") are left out; a split without labels is one line
        result = linear_probe(train_f, train_y, test_f, test_y, seed=cfg.seed, device=device,  # on the GPU if any
                              weight_decays=cfg.weight_decays or WEIGHT_DECAYS)
    except ValueError as e:
        raise SystemExit(f"error: {name} probe on {probe_data['dataset']}: {e}") from None
    out = {**result.to_dict(), "dataset": probe_data["dataset"], "split": scored_on,
           "train_split": fit_on, "feature_seconds": feats["seconds"],
           "effective_rank": reff_of(test_f, name)}
    if cfg.knn:
        out["knn"] = knn_probe(train_f, train_y, test_f, test_y, device=device).to_dict()
    return out


REFF_MAX_SIDE = 4096  # raw pixels of large images: their R_eff (an eigendecomposition) would take minutes of CPU


def reff_of(features: torch.Tensor, name: str) -> float | None:
    """The effective rank of the test features; for raw pixels None when both sides exceed ``REFF_MAX_SIDE``."""
    if name == "raw pixels" and min(features.shape) > REFF_MAX_SIDE:
        print(f"{name}: R_eff of the {features.shape[0]} x {features.shape[1]} test features not computed (both "
              f"sides > {REFF_MAX_SIDE}; recorded as null)")
        return None
    return float(effective_rank(features, "cov"))


def knn_text(result: dict) -> str:
    return f"  kNN top-1 {result['knn']['top1']:.2f} %" if "knn" in result else ""


def push_probe(cfg: ProbeConfig, local: Path, record: dict) -> str:
    """Push the export with the probe recorded in its metadata and card (a copy: the HF cache stays read-only)."""
    repo = str(cfg.model).removeprefix("hf-hub:") if cfg.push == "model" else cfg.push
    source = local if local.is_dir() else hub.resolve_export(cfg.model)
    with tempfile.TemporaryDirectory() as tmp:
        for path in source.iterdir():
            if path.name in hub.PUSH_FILES or path.suffix == ".png":
                shutil.copyfile(path, Path(tmp) / path.name)
        hub.update_metadata(tmp, linear_probe=record)
        try:
            public = hub.public_metadata({"linear_probe": record})["linear_probe"]  # no path of this machine
            return hub.push_export(tmp, repo, commit_message=f"Linear probe: top-1 {record['top1']:.2f} % on "
                                                             f"{public['dataset']} {public['split']}")
        except (ValueError, RuntimeError) as e:
            raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
