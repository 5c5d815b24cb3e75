"""Label-free ranking of any backbones on your own images: ``python -m spectral_ssl.rank``.

For each model (a SpectralSSL export folder, a timm model as ``hf-hub:org/name`` or ``local-dir:FOLDER``, or a
transformers ``AutoModel`` folder) the frozen features of a split are extracted with the model's own preprocessing
(SpectralSSL's ``data_config``, timm's ``pretrained_cfg`` through ``timm.data.resolve_data_config``, a transformers
image processor's size and normalisation) and scored by their effective rank: R_eff of the centred covariance and
RankMe (Garrido et al. 2023) of the uncentred features. With a label column the kNN and linear probes run as well,
and the Spearman rank correlation between RankMe and linear top-1 says how far the label-free score could be
trusted on these images.

    python -m spectral_ssl.rank --models outputs/run_a local-dir:outputs/run_b hf-hub:timm/resnet18.a1_in1k \\
        --dataset data/fashion_mnist --split test --label_column label --max_samples 2000 --output rank_out

The functions below never print; ``main`` is the command and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spectral_ssl.probe import eval_loader, extract_features, knn_probe, linear_probe, split_halves
from spectral_ssl.run_folder import holds_json_with
from spectral_ssl.spectral import effective_rank
from spectral_ssl.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

logger = logging.getLogger(__name__)

TIMM_PREFIXES = ("hf-hub:", "local-dir:")


class Features(nn.Module):
    """A model behind the ``embed(x) -> (B, F)`` contract ``probe.extract_features`` reads."""

    def __init__(self, model: nn.Module, embed: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self._embed = embed

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._embed(self.model, x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


@dataclass
class LoadedModel:
    """A backbone ready for ``extract_features``, the preprocessing its weights expect and where it came from."""

    source: str
    kind: str  # "spectral_ssl" | "timm" | "transformers"
    model: nn.Module
    preprocessing: Preprocessing


def _transformers_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(pixel_values=x)
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None:
        return pooled
    hidden = out.last_hidden_state
    return hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else hidden.mean(dim=1)  # conv maps or tokens


def _transformers_preprocessing(folder: Path, config: Any) -> Preprocessing:
    """Size and normalisation from the folder's image processor config, else the model config's ``image_size``."""
    size, mean, std = getattr(config, "image_size", None), IMAGENET_MEAN, IMAGENET_STD
    processor_file = folder / "preprocessor_config.json"
    if processor_file.is_file():
        proc = json.loads(processor_file.read_text())
        crop, resize = proc.get("crop_size"), proc.get("size")
        for spec in (crop if proc.get("do_center_crop") else None, resize):
            if isinstance(spec, dict):
                size = spec.get("height") or spec.get("shortest_edge") or size
                break
            if isinstance(spec, int):
                size = spec
                break
        mean, std = tuple(proc.get("image_mean", mean)), tuple(proc.get("image_std", std))
    if not size:
        raise ValueError(f"{folder} states no input size (no preprocessor_config.json size, no config image_size).")
    size = size[0] if isinstance(size, (list, tuple)) else size
    return Preprocessing(int(size), tuple(mean), tuple(std))


def load_model(source: str) -> LoadedModel:
    """The backbone ``source`` names, in eval mode, with its own preprocessing.

    ``hf-hub:org/name`` and ``local-dir:FOLDER`` go through ``timm.create_model(source, pretrained=True,
    num_classes=0)``; a plain folder is a SpectralSSL export (``config.json`` with a ``spectral_ssl`` key), a timm
    export (``architecture``) or a transformers model (``model_type``). Raises ``FileNotFoundError`` or
    ``ValueError`` with one readable line.
    """
    if source.startswith(TIMM_PREFIXES):
        if source.startswith("local-dir:") and not Path(source[len("local-dir:"):]).is_dir():
            raise FileNotFoundError(f"{source} is not a folder")
        return _load_timm(source)
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"{source} is not a folder (use hf-hub:org/name or local-dir:FOLDER for timm models)")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{source} has no config.json: not a SpectralSSL, timm or transformers model folder")
    config = json.loads(config_file.read_text())
    if "spectral_ssl" in config:
        from spectral_ssl.model import SpectralSSL

        model = SpectralSSL.from_pretrained(folder)
        return LoadedModel(source, "spectral_ssl", model.eval(), Preprocessing.from_data_config(model.data_config))
    if "architecture" in config:
        return _load_timm(f"local-dir:{folder}")
    if "model_type" in config:
        from transformers import AutoConfig, AutoModel

        hf_config = AutoConfig.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder).eval()
        return LoadedModel(source, "transformers", Features(model, _transformers_features),
                           _transformers_preprocessing(folder, hf_config))
    raise ValueError(f"{config_file} is neither a SpectralSSL/timm export (architecture) nor a transformers config "
                     "(model_type)")


def _load_timm(source: str) -> LoadedModel:
    import timm
    from timm.data import resolve_data_config

    from spectral_ssl.hub import download_failures

    repo_id, _, revision = source[len("hf-hub:"):].partition("@") if source.startswith("hf-hub:") else ("", "", "")
    with download_failures(repo_id, revision or None) if repo_id else contextlib.nullcontext():  # one line
        model = timm.create_model(source, pretrained=True, num_classes=0).eval()
    data_config = resolve_data_config({}, model=model)
    return LoadedModel(source, "timm", Features(model, lambda m, x: m(x)), Preprocessing.from_data_config(data_config))


@dataclass
class ModelScore:
    """One model's scores on the ranked images; probe fields are None without labels."""

    model: str
    kind: str
    dim: int
    n_samples: int
    rankme: float
    reff_cov: float
    knn_top1: float | None = None
    linear_top1: float | None = None


@dataclass
class RankReport:
    """Every model's scores sorted by RankMe (highest first), and the rank correlation with the linear probe."""

    dataset: str
    split: str
    scores: list[ModelScore]
    spearman_rankme_linear: float | None = None
    spearman_p_value: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spectral_scores(features: torch.Tensor) -> dict[str, float]:
    """RankMe (singular values of the uncentred features, eps 1e-7) and R_eff (centred covariance) of (N, F)."""
    return {"rankme": float(effective_rank(features, "rankme")), "reff_cov": float(effective_rank(features, "cov"))}


def average_ranks(values: Sequence[float]) -> torch.Tensor:
    """1-based ranks of ``values`` (float64); tied values share the mean of the ranks they span."""
    x = torch.as_tensor(values, dtype=torch.float64)
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    sorted_x = x[order]
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: the Pearson correlation of the average ranks (ties handled as scipy does).
    NaN when either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"spearman needs two equally long sequences of >= 2 values, got {len(x)} and {len(y)}")
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = (rx.pow(2).sum() * ry.pow(2).sum()).sqrt()
    return float(rx @ ry / denom) if denom > 0 else math.nan


def spearman_permutation_p(x: Sequence[float], y: Sequence[float], n_permutations: int = 20000,
                           seed: int = 0) -> float:
    """Two-sided permutation p-value of Spearman's rho: the share of random relabellings (y permuted) whose |rho| is
    at least the observed one, counting the observed one (so never 0). Exact in the limit, no normal approximation:
    right for the handful of models a ranking compares."""
    rho = spearman(x, y)
    if math.isnan(rho):
        return math.nan
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = (rx.pow(2).sum() * ry.pow(2).sum()).sqrt()
    gen = torch.Generator().manual_seed(seed)
    perms = torch.argsort(torch.rand(n_permutations, len(ry), generator=gen), dim=1)
    null = (ry[perms] @ rx) / denom
    hits = int((null.abs() >= abs(rho) - 1e-12).sum())
    return (hits + 1) / (n_permutations + 1)


def score_model(loaded: LoadedModel, dataset: str, split: str, *, label_column: str | None = None,
                train_split: str | None = None, image_column: str = "image", max_samples: int | None = None,
                batch_size: int = 256, seed: int = 0, device: str | torch.device = "cpu",
                skip_corrupt: bool = False) -> ModelScore:
    """Extract ``loaded``'s frozen features on ``split`` and score them; with ``label_column`` also the kNN and
    linear probes, fitted on ``train_split`` (or, when None, on a seeded half of ``split`` and scored on the other
    half); ``skip_corrupt`` leaves undecodable images out instead of stopping."""
    model = loaded.model.to(device)
    if train_split == split:  # never fitted and scored on the same rows: a seeded half each, as linear_probe.py does
        train_split = None

    def features(which: str, labelled: bool) -> tuple[torch.Tensor, torch.Tensor]:
        loader = eval_loader(dataset, which, loaded.preprocessing, image_column=image_column,
                             label_column=label_column if labelled else None, batch_size=batch_size,
                             max_samples=max_samples, skip_corrupt=skip_corrupt)
        return extract_features(model, loader, device=device)

    feats, labels = features(split, label_column is not None)
    score = ModelScore(loaded.source, loaded.kind, feats.shape[1], feats.shape[0], **spectral_scores(feats))
    if label_column is not None:
        if train_split is None:
            probe_data = split_halves(feats, labels, seed)
        else:
            probe_data = (*features(train_split, True), feats, labels)
        score.knn_top1 = knn_probe(*probe_data).top1
        score.linear_top1 = linear_probe(*probe_data, seed=seed).top1
    logger.info("%s: RankMe %.2f, R_eff %.2f", loaded.source, score.rankme, score.reff_cov)
    return score


def rank_models(models: Sequence[LoadedModel], dataset: str, split: str = "test", *,
                label_column: str | None = None, train_split: str | None = None, image_column: str = "image",
                max_samples: int | None = None, batch_size: int = 256, seed: int = 0,
                device: str | torch.device = "cpu", permutations: int = 20000, skip_corrupt: bool = False
                ) -> RankReport:
    """Score every model (``score_model``) and sort by RankMe, highest first; with labels and >= 3 models also
    Spearman's rho between RankMe and linear top-1 and its permutation p-value."""
    if train_split == split:  # halves of it (score_model): the settings say so
        train_split = None
    scores = [score_model(m, dataset, split, label_column=label_column, train_split=train_split,
                          image_column=image_column, max_samples=max_samples, batch_size=batch_size, seed=seed,
                          device=device, skip_corrupt=skip_corrupt) for m in models]
    scores.sort(key=lambda s: s.rankme, reverse=True)
    report = RankReport(dataset, split, scores, settings={
        "label_column": label_column, "train_split": train_split, "max_samples": max_samples, "seed": seed,
        "probe_fit": train_split or f"seeded half of {split}"})
    if label_column is not None and len(scores) >= 3:
        rankme, linear = [s.rankme for s in scores], [s.linear_top1 for s in scores]
        rho = spearman(rankme, linear)
        if math.isfinite(rho):  # undefined (None, strict JSON) when RankMe or top-1 is the same for every model
            report.spearman_rankme_linear = rho
            report.spearman_p_value = spearman_permutation_p(rankme, linear, permutations, seed)
    return report


def format_table(report: RankReport) -> str:
    """The report as a plain-text table (what the command prints)."""
    labelled = any(s.linear_top1 is not None for s in report.scores)
    head = f"{'model':<40} {'kind':<12} {'dim':>5} {'RankMe':>8} {'R_eff':>8}"
    head += f" {'kNN top-1':>10} {'linear top-1':>13}" if labelled else ""
    lines = [head, "-" * len(head)]
    for s in report.scores:
        name = s.model if len(s.model) <= 40 else "..." + s.model[-37:]
        line = f"{name:<40} {s.kind:<12} {s.dim:>5} {s.rankme:>8.2f} {s.reff_cov:>8.2f}"
        if labelled:
            line += f" {s.knn_top1:>10.2f} {s.linear_top1:>13.2f}"
        lines.append(line)
    n = report.scores[0].n_samples if report.scores else 0
    lines.append(f"{len(report.scores)} models on {n} images of {report.dataset} [{report.split}]")
    if report.spearman_rankme_linear is not None:
        lines.append(f"Spearman rho(RankMe, linear top-1) = {report.spearman_rankme_linear:+.3f} "
                     f"(permutation p = {report.spearman_p_value:.3g}, n = {len(report.scores)})")
    return "\n".join(lines)


def write_report(report: RankReport, output: str | Path) -> tuple[Path, Path]:
    """``rank.json`` and ``rank.png`` (RankMe and R_eff bars per model) in the folder ``output``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "rank.json", out / "rank.png"
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    names = [Path(s.model.split(":", 1)[-1]).name or s.model for s in report.scores]
    pos = torch.arange(len(names), dtype=torch.float64).tolist()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(names) + 2), 4))
    ax.bar([p - 0.2 for p in pos], [s.rankme for s in report.scores], 0.4, label="RankMe")
    ax.bar([p + 0.2 for p in pos], [s.reff_cov for s in report.scores], 0.4, label="R_eff (cov)")
    ax.set_xticks(pos, names, rotation=30, ha="right")
    ax.set_ylabel("effective rank")
    title = f"{report.dataset} [{report.split}]"
    if report.spearman_rankme_linear is not None:
        title += f": Spearman(RankMe, linear) = {report.spearman_rankme_linear:+.2f}"
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return json_path, png_path


def _positive(value: str) -> int:
    """A whole number >= 1 for ``--max_samples`` / ``--batch_size``."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return number


def _column_or_none(value: str) -> str | None:
    """A column name for ``--label_column``; ``null``/``none`` (what the one-line errors suggest) = no labels."""
    return None if value.strip().lower() in ("null", "none", "") else value


def _flag(value: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no) for a command-line switch written ``--key=value``."""
    lowered = value.strip().lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return lowered in ("true", "1", "yes")


def main(argv: list[str] | None = None) -> RankReport:
    parser = argparse.ArgumentParser(prog="python -m spectral_ssl.rank", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True,
                        help="SpectralSSL export folders, hf-hub:/local-dir: timm models, transformers folders "
                             "(required)")
    parser.add_argument("--dataset", required=True,
                        help="HF datasets id or local folder of images/parquet (required)")
    parser.add_argument("--split", default="test", help="split whose images are ranked (default: test)")
    parser.add_argument("--image_column", default="image", help="column holding the images (default: image)")
    parser.add_argument("--label_column", default=None, type=_column_or_none,
                        help="column of integer labels: adds kNN, linear probe and Spearman (default: null, "
                             "label-free)")
    parser.add_argument("--train_split", default=None,
                        help="split the probes are fitted on (default: a seeded half of --split)")
    parser.add_argument("--max_samples", type=_positive, default=None,
                        help="cap on the images per split (default: all)")
    parser.add_argument("--batch_size", type=_positive, default=256,
                        help="feature-extraction batch size (default: 256)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the probes' half split and of the permutation p-value (default: 0)")
    parser.add_argument("--skip_corrupt", type=_flag, nargs="?", const=True, default=False,
                        help="leave undecodable images out instead of stopping (--skip_corrupt or =true; "
                             "default: false)")
    parser.add_argument("--output", default=None,
                        help="folder for rank.json and rank.png (default: none, table printed only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.train_split and args.label_column is None:  # the probes it would fit need labels: never ignored
        raise SystemExit(f"error: --train_split={args.train_split} fits the probes, which need labels; pass "
                         "--label_column, or drop --train_split")
    if args.output:  # before any model is scored, not after
        from spectral_ssl.config import ConfigError, check_dataset_folder, check_output_dir

        try:
            args.output = check_output_dir(args.output, "output")
            check_dataset_folder(args.dataset, output_dir=args.output, output_key="output")
        except ConfigError as e:
            raise SystemExit(f"error: {e}") from None
        previous = Path(args.output) / "rank.json"
        if previous.exists() and not holds_json_with(previous, ("scores", "settings")):  # the user's: never replaced
            raise SystemExit(f"error: --output {args.output} holds a rank.json this tool did not write; choose another "
                             "--output")
    loaded = []
    for source in args.models:
        try:
            loaded.append(load_model(source))
        except (FileNotFoundError, ValueError, OSError, RuntimeError) as e:
            raise SystemExit(f"error: --models {source}: {e}") from None
    from spectral_ssl import data

    for name, split, labelled in ((("--split", args.split, True),)
                                  + ((("--train_split", args.train_split, True),) if args.train_split else ())):
        try:
            data.load_images(args.dataset, split, image_column=args.image_column,
                             label_column=args.label_column if labelled else None)
        except FileNotFoundError as e:
            raise SystemExit(f"error: --dataset {args.dataset}: {e}") from None
        except data.DataKeyError as e:
            raise SystemExit("error: " + e.message(name)) from None
        except ValueError as e:  # e.g. a label column of text: the message names the key
            raise SystemExit(f"error: {e}") from None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        report = rank_models(loaded, args.dataset, args.split, label_column=args.label_column,
                             train_split=args.train_split, image_column=args.image_column,
                             max_samples=args.max_samples, batch_size=args.batch_size, seed=args.seed, device=device,
                             skip_corrupt=args.skip_corrupt)
    except ValueError as e:  # e.g. an empty split, too few rows or classes: which data it was about
        cap = f" --max_samples {args.max_samples}" if args.max_samples else ""
        raise SystemExit(f"error: --dataset {args.dataset} --split {args.split}{cap}: {e}") from None
    print(format_table(report))
    if args.output:
        try:
            json_path, png_path = write_report(report, args.output)
        except OSError as e:
            raise SystemExit(f"error: --output {args.output}: {e.strerror or e}; choose another --output") from None
        print(f"written: {json_path}, {png_path}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
