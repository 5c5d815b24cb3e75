"""Evaluation of frozen features: linear probe (multinomial logistic regression) and weighted kNN."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from spectral_ssl.transforms import Preprocessing

logger = logging.getLogger(__name__)

# The linear probe's L2 grid: half-decades from 1e-5 to 1 (11 values), each penalty fitted and scored (cross-entropy)
# on held-out train rows, as SimCLR's logistic-regression protocol (Kornblith et al. 2019) sweeps a log grid on a
# validation split. The old grid (1e-5, 1e-4, 1e-3) stopped where all three arms of the demo chose its edge: raw
# pixels (3072 values, 9 000 rows) want 3e-2 to 1e-1 and were under-regularised by about one point
# (docs/benchmarks.md).
WEIGHT_DECAYS = tuple(10.0 ** (e / 2) for e in range(-10, 1))


@dataclass
class ProbeResult:
    """Accuracy of a probe on the test features, in percent, with the settings that produced it."""

    top1: float
    top5: float
    method: str
    n_train: int
    n_test: int
    dim: int
    num_classes: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    unlabeled_dropped: dict[str, int] = field(default_factory=dict)  # rows labelled -1 ("no label"), by split

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _labelled(name: str, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The rows of one split whose label is a class: a negative label (-1, the HF datasets "no label" value) is
    dropped from fitting and scoring and counted."""
    keep = y >= 0
    dropped = int((~keep).sum())
    if dropped == y.numel():
        raise ValueError(f"the {name} split has no labels (all {dropped} rows are labelled -1, \"no label\"); probe "
                         "a labelled split, or set --label_column to a column of integer class labels")
    if dropped:
        logger.info("probe: %d %s rows labelled -1 (no label) left out", dropped, name)
        x, y = x[keep.to(x.device)], y[keep]
    return x, y, dropped


def _validate(train_x, train_y, test_x, test_y) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int,
                                                         dict[str, int]]:
    """Float features of the labelled rows, labels remapped to 0..C-1 by the train classes (unseen test classes
    -> -1), and the number of unlabelled (-1) rows dropped from each split."""
    dropped = {}
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"{name} features must be (N, F) with N labels, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)} labels.")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} features have non-finite values; the backbone diverged or the input is bad.")
    train_x, train_y, dropped["train"] = _labelled("train", train_x, train_y)
    test_x, test_y, dropped["test"] = _labelled("test", test_x, test_y)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train and test features differ in dimension: {train_x.shape[1]} vs {test_x.shape[1]}.")
    classes = torch.unique(train_y)
    if classes.numel() < 2:
        raise ValueError(f"a probe needs at least 2 classes in the train labels, got {classes.tolist()}.")
    lookup = {int(c): i for i, c in enumerate(classes.tolist())}
    remap = lambda y: torch.tensor([lookup.get(int(v), -1) for v in y.tolist()], dtype=torch.long)  # noqa: E731
    return train_x.float(), remap(train_y), test_x.float(), remap(test_y), classes.numel(), dropped


def _accuracy(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    k = min(5, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    hit = top == labels.unsqueeze(1)
    return 100.0 * hit[:, 0].float().mean().item(), 100.0 * hit.any(dim=1).float().mean().item()


def _fit_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int) -> nn.Linear:
    """Full-batch multinomial logistic regression with L-BFGS (strong Wolfe); deterministic."""
    head = nn.Linear(x.shape[1], num_classes, device=x.device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y) + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    val_fraction: float = 0.1,
    max_iter: int = 200,
    standardize: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> ProbeResult:
    """Multinomial logistic regression on frozen features.

    Features are standardised with train statistics; the L2 penalty is picked from ``weight_decays`` on a held-out
    ``val_fraction`` of train (split by ``seed``; the lowest validation cross-entropy, ties to the stronger penalty),
    then the head is refit on all of train and scored on test. Every penalty's validation top-1 and cross-entropy are
    kept in ``settings["validation_top1"]`` and ``settings["validation_loss"]``; a choice at an end of a grid of
    several values is logged as a warning (the grid may be too narrow for these features).

    Args:
        train_features: (N, F) frozen features.
        train_labels: (N,) integer labels (remapped to 0..C-1); rows labelled -1 ("no label" in HF datasets) are left
            out, and counted in ``unlabeled_dropped``.
        test_features: (M, F).
        test_labels: (M,); classes absent from train count as errors; rows labelled -1 are left out.
        weight_decays: Grid for the L2 penalty (``0.5 * wd * ||W||^2`` beside the mean cross-entropy); default
            ``WEIGHT_DECAYS``, half-decades from 1e-5 to 1.
        val_fraction: Share of train held out to choose the penalty (0 uses the first grid value).
        max_iter: L-BFGS iterations.
        standardize: Standardise features with train mean/std.
        seed: Seed of the validation split.
        device: Where to fit (default: the features' device).
    """
    start = time.perf_counter()
    x_tr, y_tr, x_te, y_te, num_classes, dropped = _validate(train_features, train_labels, test_features,
                                                             test_labels)
    device = torch.device(device) if device is not None else train_features.device
    x_tr, y_tr, x_te, y_te = x_tr.to(device), y_tr.to(device), x_te.to(device), y_te.to(device)
    if standardize:
        mean, std = x_tr.mean(0), x_tr.std(0).clamp_min(1e-6)
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    weight_decays = tuple(float(wd) for wd in weight_decays)
    if not weight_decays or min(weight_decays) < 0:
        raise ValueError(f"weight_decays must be one or more penalties >= 0, got {list(weight_decays)}")
    chosen, scores = weight_decays[0], {}
    if val_fraction > 0 and len(weight_decays) > 1:
        perm = torch.randperm(x_tr.shape[0], generator=torch.Generator().manual_seed(seed)).to(device)
        n_val = max(1, int(val_fraction * x_tr.shape[0]))
        val, fit = perm[:n_val], perm[n_val:]
        for wd in weight_decays:
            head = _fit_logreg(x_tr[fit], y_tr[fit], num_classes, wd, max_iter)
            with torch.no_grad():
                logits = head(x_tr[val])
                scores[wd] = (_accuracy(logits, y_tr[val])[0], float(F.cross_entropy(logits, y_tr[val])))
        # the lowest validation cross-entropy, ties -> stronger regularisation: the top-1 of ~1 000 rows moves in
        # steps of 0.1 point and chose a penalty up to 1 point worse on the test split (docs/benchmarks.md)
        chosen = min(weight_decays, key=lambda wd: (scores[wd][1], -wd))
        logger.info("linear probe validation (top-1, cross-entropy) by weight decay: %s", scores)
        if chosen in (min(weight_decays), max(weight_decays)):
            grid = ", ".join(f"{wd:g}" for wd in sorted(weight_decays))
            logger.warning("linear probe: the chosen weight decay %g is at an end of the grid (%s); a wider grid "
                           "may fit these features better", chosen, grid)
    head = _fit_logreg(x_tr, y_tr, num_classes, chosen, max_iter)
    with torch.no_grad():
        top1, top5 = _accuracy(head(x_te), y_te)
    return ProbeResult(top1, top5, "linear", x_tr.shape[0], x_te.shape[0], x_tr.shape[1], num_classes,
                       time.perf_counter() - start, {"weight_decay": chosen, "max_iter": max_iter,
                                                     "standardize": standardize, "val_fraction": val_fraction,
                                                     "validation_top1": {f"{wd:g}": round(top, 2)
                                                                         for wd, (top, _) in scores.items()},
                                                     "validation_loss": {f"{wd:g}": round(loss, 5)
                                                                         for wd, (_, loss) in scores.items()}},
                       dropped)


def split_halves(features: torch.Tensor, labels: torch.Tensor, seed: int,
                 sizes: tuple[int | None, int | None] = (None, None)) -> tuple[torch.Tensor, ...]:
    """(fit features, fit labels, held-out features, held-out labels): seeded disjoint parts of the rows, for a probe
    of a split that has no separate test split (never fitted and scored on the same rows).

    ``sizes``: (fit rows, held-out rows), each None for "not capped". Both None: a half and the other half. One
    given: that many rows (at most half), the rest for the other part. Both given: those many, or the same
    proportion of the rows there are when the split is shorter.
    """
    n = features.shape[0]
    fit_cap, held_cap = sizes
    if fit_cap is not None and held_cap is not None:
        n_fit = min(fit_cap, round(n * fit_cap / (fit_cap + held_cap)))
        n_held = min(held_cap, n - n_fit)
    elif fit_cap is not None:
        n_fit = min(fit_cap, n // 2)
        n_held = n - n_fit
    elif held_cap is not None:
        n_held = min(held_cap, n // 2)
        n_fit = n - n_held
    else:
        n_fit, n_held = n // 2, n - n // 2
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    fit, held = perm[:n_fit], perm[n_fit:n_fit + n_held]
    return features[fit], labels[fit], features[held], labels[held]


@torch.no_grad()
def knn_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
    device: str | torch.device | None = None,
) -> ProbeResult:
    """Weighted kNN on cosine similarity (Wu et al. 2018; as in DINO): neighbours vote with ``exp(sim / T)``.
    Rows labelled -1 ("no label") neither vote nor are scored (counted in ``unlabeled_dropped``)."""
    start = time.perf_counter()
    if k < 1 or temperature <= 0:
        raise ValueError(f"k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}.")
    x_tr, y_tr, x_te, y_te, num_classes, dropped = _validate(train_features, train_labels, test_features,
                                                             test_labels)
    device = torch.device(device) if device is not None else train_features.device
    x_tr, x_te = F.normalize(x_tr.to(device), dim=1), F.normalize(x_te.to(device), dim=1)
    y_tr, y_te = y_tr.to(device), y_te.to(device)
    k = min(k, x_tr.shape[0])
    scores = []
    for chunk in x_te.split(chunk_size):
        sims, nn_idx = (chunk @ x_tr.T).topk(k, dim=1)
        votes = torch.zeros(chunk.shape[0], num_classes, device=device)
        votes.scatter_add_(1, y_tr[nn_idx], (sims / temperature).exp())
        scores.append(votes)
    top1, top5 = _accuracy(torch.cat(scores), y_te)
    return ProbeResult(top1, top5, "knn", x_tr.shape[0], x_te.shape[0], x_tr.shape[1], num_classes,
                       time.perf_counter() - start, {"k": k, "temperature": temperature}, dropped)


@torch.no_grad()
def extract_features(model: nn.Module, loader: Iterable, device: str | torch.device | None = None,
                     max_batches: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features of every batch: ``model.embed(x)`` (or ``model(x)``) in eval mode, float32 on the CPU.

    ``loader`` yields dicts with ``image`` (B, 3, H, W) and ``label`` (B,), or ``(images, labels)`` tuples. The
    model's train/eval mode is restored afterwards.
    """
    return extract_features_of({"model": model}, loader, device=device, max_batches=max_batches)["model"]


@torch.no_grad()
def extract_features_of(models: dict[str, nn.Module | None], loader: Iterable,
                        device: str | torch.device | None = None, max_batches: int | None = None
                        ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``extract_features`` of several models in one pass over ``loader`` (each image read and decoded once):
    ``{name: (features, labels)}``. A model of ``None`` gives the raw-pixel baseline's features
    (``raw_pixel_features``). ``device``: where the models run (default: the first model's parameters').
    Every model's train/eval mode is restored afterwards.
    """
    if not models:
        raise ValueError("models is empty: pass {name: model (or None for raw pixels)}.")
    nets = {name: m for name, m in models.items() if m is not None}
    modes = {name: m.training for name, m in nets.items()}
    if device is not None:
        device = torch.device(device)
    elif nets:
        device = next(next(iter(nets.values())).parameters()).device
    embeds = {name: m.embed if hasattr(m, "embed") else m for name, m in nets.items()}
    feats: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    labels = []
    try:
        for m in nets.values():
            m.eval()
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            images, y = (batch["image"], batch["label"]) if isinstance(batch, dict) else batch
            on_device = images.to(device) if nets else None
            for name in models:
                feats[name].append(embeds[name](on_device).float().cpu() if name in nets
                                   else images.float().flatten(1).cpu())
            labels.append(torch.as_tensor(y).long().cpu() if y is not None else torch.full((images.shape[0],), -1))
    finally:
        for name, m in nets.items():
            m.train(modes[name])
    if not labels:
        raise ValueError("the loader yielded no batches; check the split and max_samples.")
    y = torch.cat(labels)
    return {name: (torch.cat(f), y) for name, f in feats.items()}


def eval_loader(dataset: str, split: str, preprocessing: Preprocessing | None = None, **kwargs: Any) -> Iterable[dict]:
    """``spectral_ssl.data.eval_loader`` (its home; kept here, where the recipes and users import it from)."""
    from spectral_ssl.data import eval_loader as _eval_loader

    return _eval_loader(dataset, split, preprocessing, **kwargs)


def fair_random_init(model: nn.Module) -> nn.Module:
    """The same architecture as ``model`` (a ``SpectralSSL``) at a fair random initialisation: timm's standard init
    but without zero-initialised last norms in residual branches (``zero_init_last=False`` where the architecture
    has it), which would otherwise make every residual block an identity map and the "random" features far weaker
    than a standard random network's. Recalibrate its BatchNorm statistics (``recalibrate_batchnorm``) before
    probing."""
    from spectral_ssl.model import SpectralSSL

    kwargs = dict(model.backbone_kwargs)
    try:
        baseline = SpectralSSL(model.backbone_name, backbone_kwargs={**kwargs, "zero_init_last": False})
    except ValueError:  # an architecture without residual zero-init (e.g. a ViT)
        baseline = SpectralSSL(model.backbone_name, backbone_kwargs=kwargs)
    baseline.backbone_kwargs = kwargs  # the architecture, not the init flag
    baseline.data_config = dict(model.data_config)
    return baseline


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: Iterable[torch.Tensor], device: str | torch.device | None = None
                          ) -> int:
    """Set every BatchNorm's running statistics to the cumulative average over ``images`` batches (weights
    untouched): an untrained network in eval mode otherwise normalises with the 0/1 statistics it was built with.
    Returns the number of BatchNorm layers recalibrated (0: nothing to do or no batch)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    device = torch.device(device) if device is not None else next(model.parameters()).device
    embed = model.embed if hasattr(model, "embed") else model
    was_training, seen = model.training, 0
    model.train()
    try:
        for x in images:
            embed(x.to(device))
            seen += 1
    finally:
        model.train(was_training)
    return len(norms) if seen else 0


@torch.no_grad()
def raw_pixel_features(loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C·H·W) flattened, normalised pixels and (N,) labels of every batch: the raw-pixel baseline's features
    (``linear_probe`` standardises them per pixel, i.e. logistic regression on standardised pixels)."""
    return extract_features_of({"pixels": None}, loader)["pixels"]


class OnlineProbeError(ValueError):
    """The online kNN probe cannot score a split (no labels, labels that are no integer classes, an empty split)."""


class OnlineKnn:
    """Weighted kNN top-1 (``knn_probe``) of a model's backbone features during training: ``samples`` labelled images
    of ``train_split`` vote for as many of ``eval_split``. The progress signal of the recipe's ``--probe_every`` and
    the time-to-accuracy benchmark.

    The images are read with the model's own preprocessing (``Preprocessing.from_data_config(model.data_config)``),
    as a user of the export reads them. They are decoded at the first call and kept on the CPU as resized uint8
    images (a quarter of the float32 bytes: 2 000 images at 224 px are 301 MB), normalised on the model's device at
    each call (the same floats as the eval loader's), so a later probe is two forward passes and the vote: at 2 000
    Fashion-MNIST images a split on a 2-core CPU the decoding is about half of a probe, and nearly all of it on a
    GPU. A split whose images pass ``cache_bytes`` is read again at every call instead, and so is every split after
    the model's preprocessing changes.

    Args:
        dataset, train_split, eval_split, image_column, label_column: What ``eval_loader`` reads.
        samples: Images of each split (the first ones, in the split's order).
        skip_corrupt: Leave undecodable images out instead of failing.
        cache_bytes: The most bytes of images kept per split (uint8, 3 x S x S bytes an image).
        k, temperature: ``knn_probe``'s.
        preprocessing: The inputs for a model without a ``data_config`` (e.g. a plain ``nn.Module``); None: the
            model's ``data_config``.
    """

    def __init__(self, dataset: str, train_split: str, eval_split: str, *, samples: int, image_column: str = "image",
                 label_column: str = "label", skip_corrupt: bool = False, cache_bytes: int = 2 ** 30, k: int = 20,
                 temperature: float = 0.07, preprocessing: Preprocessing | None = None) -> None:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples!r}.")
        self.fixed_preprocessing = preprocessing
        self.dataset, self.splits, self.samples = dataset, (train_split, eval_split), samples
        self.image_column, self.label_column, self.skip_corrupt = image_column, label_column, skip_corrupt
        self.cache_bytes, self.k, self.temperature = cache_bytes, k, temperature
        self._preprocessing: Preprocessing | None = None
        self._cache: dict[str, list[dict[str, Any]]] = {}  # split -> its preprocessed batches, once read whole
        self._too_big: set[str] = set()

    def __call__(self, model: nn.Module, device: str | torch.device | None = None) -> float:
        """Top-1 in percent. The model's train/eval mode is restored. Raises ``OnlineProbeError`` (one line, naming
        ``--label_column``) when a split cannot be scored."""
        from spectral_ssl.transforms import Preprocessing

        preprocessing = self.fixed_preprocessing
        if preprocessing is None:
            if not isinstance(getattr(model, "data_config", None), dict):
                raise ValueError(f"OnlineKnn reads images with the model's data_config, and this "
                                 f"{type(model).__name__} has none: pass preprocessing=transforms.Preprocessing("
                                 "image_size, mean, std)")
            preprocessing = Preprocessing.from_data_config(model.data_config)
        if preprocessing != self._preprocessing:
            self._preprocessing, self._cache, self._too_big = preprocessing, {}, set()
        device = torch.device(device) if device is not None else next(model.parameters(), torch.empty(0)).device
        finish = preprocessing.eval_transform().normalize  # uint8 -> the eval loader's floats, on the device
        try:
            (train_f, train_y), (test_f, test_y) = (
                extract_features(model, ({"image": finish(b["image"].to(device, non_blocking=True)),
                                          "label": b["label"]} for b in self._batches(split)), device=device)
                for split in self.splits)
            return knn_probe(train_f, train_y, test_f, test_y, k=self.k, temperature=self.temperature).top1
        except ValueError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise OnlineProbeError(f"online kNN probe (--probe_every, --label_column={self.label_column}): "
                                   f"{first}") from None

    def _batches(self, split: str) -> Iterable[dict[str, Any]]:
        if split in self._cache:
            return self._cache[split]
        loader = eval_loader(self.dataset, split, self._preprocessing, image_column=self.image_column,
                             label_column=self.label_column, max_samples=self.samples, skip_corrupt=self.skip_corrupt,
                             normalize=False)
        return loader if split in self._too_big else self._keeping(split, loader)

    def _keeping(self, split: str, loader: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Yield the loader's batches and keep them; the split is cached once the loader is exhausted within
        ``cache_bytes``."""
        kept: list[dict[str, Any]] | None = []
        size = 0
        for batch in loader:
            if kept is not None:
                size += batch["image"].numel() * batch["image"].element_size()
                if size > self.cache_bytes:
                    kept = None
                    self._too_big.add(split)
                    logger.info("online kNN probe: %s's images pass cache_bytes=%d; it is read at every probe",
                                split, self.cache_bytes)
                else:
                    kept.append({"image": batch["image"], "label": batch["label"]})
            yield batch
        if kept is not None:
            self._cache[split] = kept
