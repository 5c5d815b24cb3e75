"""timm-native export of a SpectralSSL model, and its model card.

An export folder holds:

- ``model.safetensors``: the backbone's ``state_dict`` with unprefixed keys, exactly what
  ``timm.create_model(architecture, num_classes=0, **model_args)`` expects;
- ``config.json``: timm's Hub schema (``architecture``, ``num_classes: 0``, ``num_features``, ``global_pool``,
  ``model_args`` without ``num_classes``, ``pretrained_cfg`` describing the real training preprocessing) plus one
  namespaced ``spectral_ssl`` key with the training metadata; timm and transformers ignore unknown root keys;
- ``projector.safetensors``: the projector head, which plain timm ignores;
- ``README.md``: the model card rendered from ``model_card_template.md`` with ``huggingface_hub.ModelCard``.

``model_args`` never carries ``num_classes``: transformers' ``TimmWrapperModel`` passes ``num_classes=0`` itself and
fails with "got multiple values for keyword argument 'num_classes'" otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PROJECTOR_NAME = "projector.safetensors"
CARD_NAME = "README.md"
PLOT_NAME = "spectral_diagnostics.png"
PICKLE_NAMES = ("pytorch_model.bin", "model.pth", "model.pt", "open_clip_pytorch_model.bin")
TEMPLATE_PATH = Path(__file__).with_name("model_card_template.md")

# pretrained_cfg keys that describe the architecture (kept); everything else inherited from the timm registry
# (tag, license, url, hf_hub_id, origin_url, paper_ids, test_* sizes, ...) describes supervised weights we did not
# train, so it is dropped and replaced by the training preprocessing and our own tag/license.
_ARCH_CFG_KEYS = ("fixed_input_size", "first_conv", "classifier", "pool_size")
_DATA_CFG_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")


def _jsonable(value: Any, key: str = "config") -> Any:
    """``value`` as plain JSON types: tuples as lists, numpy and 0-d torch scalars as numbers, paths as strings.

    Anything else (a tensor, an object) raises one ``TypeError`` naming the key to fix, before a file is written.
    """
    if isinstance(value, (tuple, list)):
        return [_jsonable(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"{key}: key {k!r} ({type(k).__name__}) cannot be a JSON key; use a string.")
            out[k] = _jsonable(v, f"{key}.{k}")
        return out
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dim() == 0:
        return value.item()
    item = getattr(value, "item", None)  # numpy scalars (np.float32, np.int64, np.bool_)
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    raise TypeError(f"{key}: {type(value).__name__} is not JSON-serialisable in an export's config.json; pass a "
                    f"number, string, list or dict.")


def global_pool_of(backbone: nn.Module) -> str | None:
    """The pooling type of a timm model (``avg``, ``token``, ...), or None.

    Read where timm's own Hub export reads it (``timm.models._input._get_global_pool``): a head that pools
    (ConvNeXt's, RegNet's) holds it, else the model's ``global_pool``.
    """
    head = getattr(backbone, "head", None)
    for pool in (getattr(head, "global_pool", None), getattr(head, "pool_type", None),
                 getattr(backbone, "global_pool", None)):
        pool = getattr(pool, "pool_type", pool)
        if isinstance(pool, str):
            return pool or None
    return None


def timm_config(
    backbone: nn.Module,
    architecture: str,
    model_args: dict[str, Any],
    data_config: dict[str, Any],
    metadata: dict[str, Any],
    license: str = "apache-2.0",
) -> dict[str, Any]:
    """Build the ``config.json`` dict of an export (timm schema + ``spectral_ssl`` key).

    Args:
        backbone: The timm model, built with ``num_classes=0``.
        architecture: timm registry name the backbone was built from.
        model_args: ``create_model`` kwargs needed to rebuild it (``num_classes`` is removed).
        data_config: Training/eval preprocessing: ``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode``,
            ``mean``, ``std``.
        metadata: Contents of the namespaced ``spectral_ssl`` key.
        license: License of the trained weights.
    """
    registry_cfg = dict(getattr(backbone, "pretrained_cfg", {}) or {})
    pretrained_cfg: dict[str, Any] = {k: registry_cfg[k] for k in _ARCH_CFG_KEYS if k in registry_cfg}
    missing = [k for k in _DATA_CFG_KEYS if k not in data_config]
    if missing:
        raise ValueError(f"data_config lacks {missing}; it must describe the preprocessing the weights expect.")
    pretrained_cfg.update({k: data_config[k] for k in _DATA_CFG_KEYS})
    if tuple(registry_cfg.get("input_size", ()))[1:] != tuple(data_config["input_size"])[1:]:
        pretrained_cfg["pool_size"] = None  # the registry's pool size belongs to another resolution
    pretrained_cfg.update(
        architecture=architecture, custom_load=False, num_classes=0, tag="spectral_ssl", license=license
    )
    config: dict[str, Any] = {"architecture": architecture, "num_classes": 0, "num_features": backbone.num_features}
    pool = global_pool_of(backbone)
    if pool:
        config["global_pool"] = pool
    args = {k: v for k, v in model_args.items() if k != "num_classes"}
    if args:
        config["model_args"] = args
    config["pretrained_cfg"] = pretrained_cfg
    config["spectral_ssl"] = metadata
    return _jsonable(config)


def save_export(
    directory: str | Path,
    backbone: nn.Module,
    projector: nn.Module | None,
    config: dict[str, Any],
    card: str | None = None,
) -> Path:
    """Write an export folder: backbone weights, projector weights, config and (optionally) the card.

    Swapped in whole: the files are written and fsynced in ``STAGING``, marked complete, then moved over the old ones
    (``finish_export``). A kill before the mark leaves the previous export as it was; a kill during the moves is
    completed by the next ``save_export``/``read_export`` of the folder, so weights, projector and config always
    belong to one export.
    """
    directory = Path(directory)
    config_text = json.dumps(_jsonable(config), indent=2) + "\n"  # bad metadata fails here, before a folder exists
    directory.mkdir(parents=True, exist_ok=True)
    finish_export(directory)  # an earlier, interrupted swap first
    staging = directory / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}, staging / WEIGHTS_NAME)
    if projector is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in projector.state_dict().items()},
                  staging / PROJECTOR_NAME)
    (staging / CONFIG_NAME).write_text(config_text)
    if card is not None:
        (staging / CARD_NAME).write_text(card)
    # the previous export's projector goes with it; anything else in the folder (a pickle, notes) is not ours
    _commit(directory, [PROJECTOR_NAME] if not (staging / PROJECTOR_NAME).exists() else [])
    return directory


def _commit(directory: Path, remove: list[str]) -> None:
    """Mark the files staged in ``directory/STAGING`` complete (fsynced, the commit point) and move them in;
    ``remove``: files of the previous export that the new one replaces by nothing."""
    staging = directory / STAGING
    for path in staging.iterdir():
        path.chmod(0o644)  # readable by others (tools may write 0600 temporary files)
        with path.open("rb") as f:
            os.fsync(f.fileno())
    (staging / STAGED).write_text(json.dumps({"remove": remove}))  # the commit point
    _fsync(staging)
    finish_export(directory)


STAGING = ".export-staging"
STAGED = "COMPLETE"


def _fsync(folder: Path) -> None:
    with (folder / STAGED).open("rb") as f:
        os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finish_export(directory: str | Path) -> bool:
    """Complete an export swap that was interrupted (``save_export``): move a complete staged export into place, or
    drop an incomplete one. True if a staged export was moved in."""
    directory = Path(directory)
    staging = directory / STAGING
    if not staging.is_dir():
        return False
    if not (staging / STAGED).is_file():  # killed before the commit point: the previous export is intact
        shutil.rmtree(staging, ignore_errors=True)
        return False
    remove = json.loads((staging / STAGED).read_text()).get("remove", [])
    for path in staging.iterdir():
        if path.name != STAGED:
            os.replace(path, directory / path.name)  # each move is atomic; a kill here is finished next time
    for name in remove:  # a stale projector of the previous export
        (directory / name).unlink(missing_ok=True)
    shutil.rmtree(staging)
    return True


StateDict = dict[str, torch.Tensor]


def read_export(directory: str | Path) -> tuple[dict[str, Any], StateDict, StateDict | None]:
    """Read ``(config, backbone_state, projector_state_or_None)`` from an export folder, with clear errors."""
    directory = Path(directory)
    if (directory / STAGING / STAGED).is_file():  # a swap that was cut short: finish it, or read the staged export
        try:
            finish_export(directory)
        except OSError:
            directory = directory / STAGING
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} has no {CONFIG_NAME}; it is not a spectral_ssl/timm export "
                                "(expected config.json + model.safetensors, as written by save_pretrained).")
    if not weights_path.is_file():
        pickles = [n for n in PICKLE_NAMES if (directory / n).is_file()]
        if pickles:
            raise ValueError(f"{directory} holds only pickle weights ({', '.join(pickles)}); spectral_ssl loads "
                             "safetensors only (pickles can run code). Convert it with "
                             "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')`.")
        raise FileNotFoundError(f"{directory} has {CONFIG_NAME} but no {WEIGHTS_NAME}; the export is incomplete.")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path} is not valid JSON ({e}).") from e
    if "architecture" not in config:
        raise ValueError(f"{config_path} has no 'architecture' key; it is not a timm-format config.")
    projector_path = directory / PROJECTOR_NAME
    projector = _load_weights(projector_path) if projector_path.is_file() else None
    return config, _load_weights(weights_path), projector


def non_finite_weights(*states: StateDict | None) -> list[str]:
    """Names of the floating-point tensors of ``states`` that hold NaN or Inf values."""
    return [name for state in states if state for name, value in state.items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())]


def _is_local(dataset: str) -> bool:
    """``spectral_ssl.data.looks_local``: the readers' rule (imported here, not at module level, so that loading a
    model does not import ``datasets``)."""
    from spectral_ssl.data.readers import looks_local

    return looks_local(dataset)


def public_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The ``spectral_ssl`` metadata as published: no path of this machine. A local dataset is named by its folder
    (``dataset_local: true``, so it is never used as a Hub dataset id) and ``output_dir`` by its folder name."""
    meta = json.loads(json.dumps(meta))
    for record in (meta, meta.get("config"), meta.get("linear_probe")):
        if isinstance(record, dict) and isinstance(record.get("dataset"), str) and _is_local(record["dataset"]):
            record["dataset"] = Path(record["dataset"].rstrip("/\\")).expanduser().name or "local"
            record["dataset_local"] = True
    config = meta.get("config")
    if isinstance(config, dict) and isinstance(config.get("output_dir"), str):
        config["output_dir"] = Path(config["output_dir"].rstrip("/")).name
    return meta


def _load_weights(path: Path) -> StateDict:
    """A safetensors file, or a ValueError naming it when it is truncated or corrupted."""
    try:
        return load_file(path)
    except Exception as e:  # noqa: BLE001  (safetensors raises its own SafetensorError for a bad header or body)
        raise ValueError(f"{path} is truncated or corrupted ({type(e).__name__}: {e}); download or export it again"
                         ) from None


def effective_rank_record(features: torch.Tensor, split: str) -> dict[str, Any]:
    """What an export records about its backbone's spectrum: R_eff ("cov") of (N, F) features of ``split``."""
    from spectral_ssl.spectral import COV_EPS, effective_rank

    return {"value": float(effective_rank(features, "cov")), "estimator": "cov", "n_samples": int(features.shape[0]),
            "dim": int(features.shape[1]), "centered": True, "eps": COV_EPS, "features": "backbone", "split": split}


def selection_reff_record(metrics: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean R_eff of the chosen and of random batches from the same pools over a run's logged steps that measured
    them (None when the run logged no selection measurement, e.g. random selection; with a selection schedule,
    ``selection_until``, the steps before it)."""
    rows = [m for m in metrics if "sel_reff_chosen" in m and "sel_reff_random" in m]
    if not rows:
        return None
    return {"chosen": sum(m["sel_reff_chosen"] for m in rows) / len(rows),
            "random": sum(m["sel_reff_random"] for m in rows) / len(rows), "logged_steps": len(rows),
            "space": "selection embeddings (unit projections, whitened when scored as the loss sees them)"}


REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def check_repo_id(repo_id: str | None) -> None:
    """A ValueError unless ``repo_id`` looks like a Hub model repo id ``org/name`` (checked before training)."""
    if not REPO_ID.fullmatch(repo_id or "") or ".." in repo_id or repo_id.endswith((".", "-")):
        raise ValueError(f"repo id {repo_id!r} must look like 'org/name' (letters, digits, '-', '_', '.').")


def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    return constants.HF_HUB_OFFLINE if value is None else value.upper() in ("1", "ON", "YES", "TRUE")


def require_token(flag: str = "--push_to_hub") -> str:
    """The Hub token that a push will use, or a ValueError saying how to provide one (checked before training, or
    before anything is read); offline mode (``HF_HUB_OFFLINE=1``) cannot push and is refused too. ``flag`` names
    what asked for the push in the message (a recipe key; a pretrain run can also push later with the script)."""
    from huggingface_hub import get_token

    later = (f" (or drop {flag} and push later with scripts/push_to_hub.py)" if flag == "--push_to_hub" else "")
    if _offline():
        raise ValueError(f"{flag} needs the Hub and HF_HUB_OFFLINE=1 is set; unset HF_HUB_OFFLINE{later}")
    token = get_token()
    if not token:
        raise ValueError(f"{flag} needs a Hub token and none was found; run `hf auth login` or set HF_TOKEN{later}")
    return token


def _escape(text: str) -> str:
    """``text`` shown literally in a markdown card: HTML escaped, markdown punctuation backslash-escaped."""
    import html

    return re.sub(r"([\\`*_\[\]#|~])", r"\\\1", html.escape(text, quote=True))


def _fmt(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


def render_card(config: dict[str, Any], repo_id: str | None = None, template_path: str | Path | None = None,
                plot: str | None = None) -> str:
    """Render the model card (README.md) of an export from its ``config.json`` dict.

    The YAML header comes from ``huggingface_hub.ModelCardData``, never from string concatenation. ``plot`` is the
    file name of the training-diagnostics PNG next to the card, if there is one.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    meta = public_metadata(config.get("spectral_ssl", {}))  # a card never shows a path of this machine
    loss, selection = meta.get("loss", "unknown"), meta.get("selection", "random")
    tags = [CARD_TAG, "self-supervised", "image-feature-extraction", "timm", str(loss), f"selection-{selection}"]
    reff = meta.get("effective_rank") or {}
    probe = meta.get("linear_probe") or {}
    dataset = str(meta.get("dataset") or "unknown")
    local = meta.get("dataset_local") or _is_local(dataset)
    hub_id = dataset if not local and REPO_ID.fullmatch(dataset) else None  # never a local path as a Hub id
    dataset = hub_id or Path(dataset.rstrip("/")).name or "unknown"
    probe_dataset = str(probe.get("dataset") or dataset)
    if probe.get("dataset_local") or _is_local(probe_dataset):
        probe_dataset = Path(probe_dataset.rstrip("/")).name or "unknown"
    results = []
    if probe.get("top1") is not None:
        results.append(EvalResult(task_type="image-classification", task_name="linear probe (frozen features)",
                                  dataset_type=probe_dataset, dataset_name=probe_dataset,
                                  dataset_split=str(probe.get("split") or "test"), metric_type="accuracy",
                                  metric_name="linear-probe top-1", metric_value=round(float(probe["top1"]), 2)))
    if reff.get("value") is not None:
        results.append(EvalResult(task_type="image-feature-extraction", task_name="effective rank of the features",
                                  dataset_type=dataset, dataset_name=dataset,
                                  dataset_split=str(reff.get("split") or "test"), metric_type="effective_rank",
                                  metric_name=f"R_eff ({reff.get('estimator', 'cov')}, n={reff.get('n_samples')}, "
                                              f"dim={reff.get('dim')})",
                                  metric_value=round(float(reff["value"]), 2)))
    name = repo_id.split("/")[-1] if repo_id else f"{config['architecture']}-spectral-ssl"
    card_data = ModelCardData(
        library_name="timm",
        license=config.get("pretrained_cfg", {}).get("license", "apache-2.0"),
        pipeline_tag="image-feature-extraction",
        tags=tags,
        datasets=[hub_id] if hub_id else None,
        model_name=name,
        eval_results=results or None,
    )
    template = Path(template_path) if template_path else TEMPLATE_PATH
    return ModelCard.from_template(
        card_data,
        template_str=template.read_text(),
        title=repo_id or f"{config['architecture']} pretrained with spectral_ssl",
        architecture=config["architecture"],
        num_features=meta.get("projector", {}).get("in_dim") or config.get("num_features"),  # the pooled width
        input_size=config.get("pretrained_cfg", {}).get("input_size"),
        repo_id=repo_id,
        meta={**meta, "dataset": _escape(dataset), "split": _escape(str(meta.get("split")))},
        reff_value=_fmt(reff.get("value")),
        reff=reff,
        probe={**probe, "dataset": _escape(probe_dataset), "split": _escape(str(probe.get("split")))} if probe
        else probe,
        probe_top1=_fmt(probe.get("top1")),
        probe_top5=_fmt(probe.get("top5")),
        # a fenced block: a backquote in a value could close it (JSON's \u0060 keeps it a backquote)
        training_config=json.dumps(meta.get("config", {}), indent=2, sort_keys=True).replace("`", "\\u0060"),
        plot=plot,
    ).content


def resolve_export(source: str | Path, revision: str | None = None, **hub_kwargs: Any) -> Path:
    """Turn ``source`` into a local export folder.

    ``source`` is a folder, ``local-dir:FOLDER``, a Hub repo id ``org/name`` or ``hf-hub:org/name`` (timm's
    ``hf-hub:org/name@revision`` too; downloaded through the HF cache, so ``HF_HUB_OFFLINE=1`` works once cached).
    Only safetensors weights are fetched (a repo with pickled weights only is named as such, not downloaded).
    Network failures are one-line ``OSError``s (``ConnectionError``).
    """
    text = str(source)
    if text.startswith("local-dir:"):
        text = os.path.expanduser(text[len("local-dir:"):])
        if not Path(text).is_dir():
            raise FileNotFoundError(f"local-dir:{text} is not a folder.")
    if Path(text).expanduser().is_dir():  # ~/runs/x is a folder of this machine, not a literal '~'
        folder = Path(text).expanduser()
        if not (folder / CONFIG_NAME).is_file() and REPO_ID.match(text):  # said by read_export, with the way out
            raise FileNotFoundError(f"{text} is a local folder without {CONFIG_NAME} (not an export); for the Hub "
                                    f"repo of that name pass 'hf-hub:{text}'.")
        return folder
    repo_id = text[len("hf-hub:"):] if text.startswith("hf-hub:") else text
    repo_id, _, at = repo_id.partition("@")  # timm's hf-hub:org/name@revision
    if at and revision is not None and at != revision:
        raise ValueError(f"{source!r} names revision {at!r} and revision={revision!r} was passed; pass one of them")
    revision = revision or at or None
    hub_kwargs.pop("map_location", None)  # PyTorchModelHubMixin's keyword: the weights load to the CPU anyway
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")):
        raise FileNotFoundError(f"{source!r} is neither an existing folder nor a Hub repo id like 'org/name' "
                                "(use 'hf-hub:org/name' or 'local-dir:PATH' to be explicit).")
    from huggingface_hub import snapshot_download

    with download_failures(repo_id, revision):
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=[
            CONFIG_NAME, WEIGHTS_NAME, PROJECTOR_NAME, CARD_NAME, PLOT_NAME], **hub_kwargs))
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"Hub repo {repo_id} has no {CONFIG_NAME}; it is not a timm/spectral_ssl export.")
    if not (folder / WEIGHTS_NAME).is_file():
        _refuse_pickle_only_repo(repo_id, revision, hub_kwargs.get("token"))
    return folder


def _http_status(error: Exception) -> int | str:
    """The HTTP status of a huggingface_hub ``HfHubHTTPError`` ("?" without a response)."""
    response = getattr(error, "response", None)
    return response.status_code if response is not None else "?"


@contextlib.contextmanager
def hub_failures(error: type[Exception], failed: str, advice: str, *, os_errors: bool = False) -> Iterator[None]:
    """Turn a Hub call's HTTP error or broken connection into one line, ``error(f"{failed} (...); {advice}")``: the
    HTTP status and first line of the Hub's answer, or the HTTP client's connection error (``os_errors``: any
    OSError too, e.g. connection refused on upload). Anything else propagates unchanged."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as e:
        raise error(f"{failed} (HTTP {_http_status(e)}: {str(e).splitlines()[0]}); {advice}") from None
    except Exception as e:
        if _broken_connection(e):
            raise error(f"{failed}: the connection broke ({type(e).__name__}: {e}); {advice}") from None
        if os_errors and isinstance(e, OSError):
            raise error(f"{failed} ({type(e).__name__}: {e}); {advice}") from None
        raise


@contextlib.contextmanager
def download_failures(repo_id: str, revision: str | None = None) -> Iterator[None]:
    """A download from Hub repo ``repo_id`` (``snapshot_download``, timm's ``hf-hub:``) failing in one line: a
    missing revision or repo, or a repo neither cached nor reachable, as ``FileNotFoundError``; an HTTP error or a
    broken connection as ``ConnectionError`` (``hub_failures``)."""
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    with hub_failures(ConnectionError, f"downloading {repo_id} from the Hub failed", "retry, or pass a local folder."):
        try:
            yield
        except RevisionNotFoundError:
            raise FileNotFoundError(f"revision {revision!r} does not exist in the Hub repo {repo_id}; pass an "
                                    "existing branch, tag or commit.") from None
        except RepositoryNotFoundError:
            raise FileNotFoundError(f"Hub repo {repo_id} not found (or private: log in with `hf auth login` or set "
                                    "HF_TOKEN); for a local folder, check the path.") from None
        except LocalEntryNotFoundError:
            raise FileNotFoundError(f"{repo_id} is not in the Hugging Face cache and the Hub cannot be reached (or "
                                    "HF_HUB_OFFLINE=1): download it once with a network, or pass a local folder."
                                    ) from None


def _broken_connection(error: Exception) -> bool:
    """A dropped or timed-out connection, raised by the HTTP client itself (not all of its errors are OSErrors)."""
    return type(error).__module__.startswith(("httpx", "httpcore", "requests", "urllib3"))


def _refuse_pickle_only_repo(repo_id: str, revision: str | None, token: Any) -> None:
    """A downloaded repo without ``model.safetensors``: name its pickled weights, if any, without downloading them
    (``read_export`` then says what to do either way)."""
    from huggingface_hub import HfApi

    try:
        files = set(HfApi(token=token).list_repo_files(repo_id, revision=revision))
    except Exception:  # noqa: BLE001 - offline, or the listing failed: read_export's message still applies
        return
    pickles = sorted(files & set(PICKLE_NAMES))
    if pickles:
        raise ValueError(f"Hub repo {repo_id} holds only pickle weights ({', '.join(pickles)}); spectral_ssl loads "
                         "safetensors only (pickles can run code), so they were not downloaded. Convert them with "
                         "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')` and "
                         "push that.")


PUSH_FILES = (CONFIG_NAME, WEIGHTS_NAME, PROJECTOR_NAME, CARD_NAME)
CARD_TAG = "spectral-ssl"  # in the front matter of every card spectral_ssl renders (``keep_card`` looks for it)


def push_export(directory: str | Path, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                commit_message: str | None = None, token: str | None = None, create_pr: bool = False) -> str:
    """Upload an export folder to a Hub model repo in one commit; returns the commit URL (with ``create_pr``, the
    commit opens a pull request against ``revision`` (default: main) and the pull request's URL is returned).

    Uploads exactly the export (``config.json``, ``model.safetensors``, ``projector.safetensors``, the card
    re-rendered for ``repo_id``, and ``*.png`` plots next to them): never checkpoints, metrics or pickles. The local
    folder is only read, so a failed push leaves it as it was and can simply be retried. The token comes from
    ``token``, ``HF_TOKEN`` or the login cache and is never written anywhere.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    directory = Path(directory)
    check_repo_id(repo_id)
    config, backbone, projector = read_export(directory)  # refuses folders without safetensors weights, pickles
    if token is None:  # a missing login or offline mode: one line now, not an HTTP 401 after the upload started
        require_token("pushing to the Hub")  # after the local checks: a wrong folder is said first
    bad = non_finite_weights(backbone, projector)
    if bad:
        raise ValueError(f"{directory} holds non-finite (NaN/Inf) weights in {len(bad)} tensors ({', '.join(bad[:3])})"
                         "; not pushed: export an earlier checkpoint or retrain with a lower --lr")
    config = {**config, "spectral_ssl": public_metadata(config.get("spectral_ssl", {}))}  # no local paths
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(directory / name))
                  for name in PUSH_FILES if name not in (CARD_NAME, CONFIG_NAME) and (directory / name).is_file()]
    operations.append(CommitOperationAdd(path_in_repo=CONFIG_NAME,
                                         path_or_fileobj=(json.dumps(config, indent=2) + "\n").encode()))
    operations += [CommitOperationAdd(path_in_repo=png.name, path_or_fileobj=str(png))
                   for png in sorted(directory.glob("*.png"))]
    card = render_card(config, repo_id=repo_id, plot=PLOT_NAME if (directory / PLOT_NAME).is_file() else None)
    operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card.encode()))
    api = HfApi(token=token)
    with hub_failures(RuntimeError, f"pushing {directory} to {repo_id} failed",
                      "the local export is unchanged, run the same push again to retry.", os_errors=True):
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and not create_pr:  # a pull request targets an existing branch
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        keep_card(api, repo_id, revision, operations)
        info = api.create_commit(repo_id, operations, revision=revision, create_pr=create_pr,
                                 commit_message=commit_message or f"Upload {config['architecture']} (spectral_ssl)")
    url = info.pr_url if create_pr and info.pr_url else info.commit_url
    logger.info("pushed %s to %s (%s)", directory, repo_id, url)
    return url


def keep_card(api: Any, repo_id: str, revision: str | None, operations: list) -> None:
    """Leave out the card upload when the repo holds a README.md that spectral_ssl did not write (its own license,
    text): replaced silently, a user's card (and its license) would be lost. Logged as a warning."""
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RevisionNotFoundError

    try:
        path = api.hf_hub_download(repo_id, CARD_NAME, revision=revision)
    except (EntryNotFoundError, RevisionNotFoundError):
        return  # no card yet (or a new branch): ours is written
    except HfHubHTTPError as e:
        if _http_status(e) == 404:
            return
        raise
    text = Path(path).read_text(errors="replace")
    if CARD_TAG in text.split("\n---", 1)[0]:  # our own front matter: re-rendered
        return
    operations[:] = [op for op in operations if op.path_in_repo != CARD_NAME]
    logger.warning("%s already has a %s that spectral_ssl did not write: it is kept (the export's card is not "
                   "uploaded); delete it on the Hub, or merge the export's card into it, to show the export's "
                   "diagnostics", repo_id, CARD_NAME)


def update_metadata(directory: str | Path, **entries: Any) -> dict[str, Any]:
    """Merge ``entries`` into the ``spectral_ssl`` key of an export's config.json and re-render its card.

    The weights are not touched. Returns the updated config.
    """
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} has no {CONFIG_NAME}; pass the folder written by save_pretrained.")
    finish_export(directory)  # an earlier, interrupted swap first
    config = json.loads(config_path.read_text())
    config.setdefault("spectral_ssl", {}).update(_jsonable(entries, "metadata"))
    card = render_card(config, plot=PLOT_NAME if (directory / PLOT_NAME).is_file() else None)
    staging = directory / STAGING  # config and card swapped in together, as save_export does: a kill leaves one
    shutil.rmtree(staging, ignore_errors=True)  # whole export, never a truncated config.json
    staging.mkdir()
    (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    (staging / CARD_NAME).write_text(card)
    _commit(directory, [])
    return config
