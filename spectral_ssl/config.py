"""Typed recipe configuration: dataclasses filled from a YAML file and ``--key=value`` overrides.

``parse_config(PretrainConfig, argv)`` is the one mechanism both recipes use (as TRL's ``TrlParser``): the
command line is built from the dataclass fields (``--help`` lists every key with its meaning, choices and default,
by group: ``PretrainConfig`` is six small dataclasses, data, model, objective, batching, optim and run, behind one
flat ``--key=value`` namespace), ``--config X.yaml`` supplies values first, ``--key=value`` overrides them. Each
value is checked against its annotation (``int | None``, ``Literal[...]``, ...) once, here; values that only a
constructor can judge (``loss_kwargs``, a backbone name) are checked by that constructor before any data is read.
Every user mistake becomes a ``ConfigError`` whose message is one line naming the key and the fix; recipes exit with
it, no traceback.

The argument list is always passed in: the library never reads ``sys.argv``.

Why not transformers' ``HfArgumentParser`` (TRL's base): its dataclass handling types each option from the
annotation with argparse, which cannot express what these keys need (``dict`` values such as ``--loss_kwargs``,
``float | str`` unions such as ``--target_reff=0.96*C``, YAML lists such as ``--mean=[0.5,0.5,0.5]``, one-line
errors naming the key), so it was only ever used as a base class; plain ``argparse`` with the conversion in
``check_fields`` does the whole job, and a recipe's start no longer imports transformers.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A user mistake in the configuration; ``str(e)`` is one line that names the key and the fix."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads YAML 1.2 exponent floats without a dot (1e-3, 1E5, -2.5e+3, .5e1), which
    YAML 1.1 leaves strings: at every depth, so ``{gamma: 1e-1}`` holds a float as ``gamma: 0.1`` does; and refuses
    a key given twice in one mapping (PyYAML keeps the last silently: an edit that added ``lr`` below an old one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:  # the mapping's own keys: a merged one (<<: *base) may be overridden
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):  # SafeLoader's own construct_mapping refuses it
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} appears twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# appended after SafeLoader's own resolvers (add_implicit_resolver copies them for the subclass): int, dotted float,
# bool, null and the others still win; a word such as e5, 1e or 1.2.3 stays a string
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
                              list("-+0123456789."))


def _load_yaml(text: str) -> Any:
    """``text`` read as YAML (safe: plain data only), exponent numbers as floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (_Loader is a SafeLoader)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What a YAML error says, on one line (a ReaderError's text spans two)."""
    return " ".join(str(getattr(error, "problem", None) or error).split())


def arg(default: Any, help: str, **metadata: Any) -> Any:  # noqa: A002  (argparse's word)
    """A config field with its help text (mutable defaults are copied per instance)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


# ---- checking a value against its annotation ----
def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(map(str, typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(t) for t in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return origin.__name__
    return getattr(tp, "__name__", str(tp))


def _finite_number(text: str) -> float:
    """A number given as a string (e.g. quoted in a YAML file: '1e-4'), or a ValueError ('nan', 'inf' and words
    included)."""
    try:
        number = float(text)
    except ValueError:
        raise ValueError from None
    if not math.isfinite(number):
        raise ValueError
    return number


def _convert(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` or a ValueError; strings from the command line are read as YAML scalars."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in options:
                return None
        for option in sorted((o for o in options if o is not type(None)), key=lambda o: o is str):
            try:
                return _convert(value, option)
            except ValueError:
                continue
        raise ValueError
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ValueError
    if isinstance(value, str) and tp is not str:
        value = _load_yaml(value) if value.strip() else None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            value = _finite_number(value)
        if isinstance(value, float) and value.is_integer():  # 1e4, 1.0e4, 512.0: whole numbers
            return int(value)
        raise ValueError
    if tp is float:
        if isinstance(value, str):
            return _finite_number(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise ValueError
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError
    if origin is list or tp is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError
        return [v if item is Any else _convert(v, item) for v in value]
    if origin is dict or tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ValueError
    return value


def check_fields(config: Any) -> None:
    """Convert every field of dataclass instance ``config`` to its annotated type, or a ConfigError naming it."""
    hints = typing.get_type_hints(type(config), include_extras=False)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        try:
            converted = _convert(value, hints[f.name])
        except ValueError:
            raise ConfigError(f"--{f.name} expects {_describe(hints[f.name])}, got {value!r}") from None
        except yaml.YAMLError as e:  # a command-line value that is no YAML (e.g. --loss_kwargs='{a: 1, a: 2}')
            raise ConfigError(f"--{f.name} expects {_describe(hints[f.name])} written as YAML, got {value!r} "
                              f"({_yaml_problem(e)})") from None
        if isinstance(converted, dict):  # the *_kwargs keys: passed on as keyword arguments
            bad = [k for k in converted if not isinstance(k, str)]
            if bad:
                raise ConfigError(f"--{f.name} keys must be argument names, e.g. {{name: value}}; got the key "
                                  f"{bad[0]!r} in {value!r}")
        setattr(config, f.name, converted)


def require(ok: bool, key: str, message: str) -> None:
    """A one-line ConfigError about ``--key`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"--{key} {message}")


def check_seed(seed: int, key: str = "seed") -> None:
    """A ConfigError unless ``seed`` is one numpy and torch accept (an integer in [0, 2**32 - 1])."""
    require(0 <= seed <= 2**32 - 1, key, f"must be an integer in [0, 2**32 - 1], got {seed}")


def positive(config: Any, *keys: str, allow_zero: bool = False) -> None:
    for key in keys:
        value = getattr(config, key)
        if value is not None:
            bad = not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero)
            require(not bad, key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


# ---- the parser ----
class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(message.replace("\n", " "))


def config_keys(config_cls: type) -> list[tuple[str | None, dataclasses.Field, Any]]:
    """``(group, field, annotation)`` of every key of a config class: its own fields, or, for a grouped config
    (fields whose type is a dataclass), its groups' fields in order (group = the field's name)."""
    hints = typing.get_type_hints(config_cls)
    keys: list[tuple[str | None, dataclasses.Field, Any]] = []
    for f in dataclasses.fields(config_cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            inner = typing.get_type_hints(tp)
            keys += [(f.name, g, inner[g.name]) for g in dataclasses.fields(tp)]
        else:
            keys.append((None, f, tp))
    return keys


def _parser(config_cls: type, description: str | None) -> argparse.ArgumentParser:
    # every value arrives as a string and is converted by check_fields (one place for types and messages)
    # allow_abbrev=False: a key is its whole name, as in a YAML file (argparse took --max_train=10 for
    # --max_train_samples and --epoch=3 for --epochs, silently, and any later key sharing a prefix changed that)
    parser = _OneLineParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            allow_abbrev=False)
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of config keys (command-line keys win)")
    hints = typing.get_type_hints(config_cls)
    sections: dict[str, Any] = {}
    for group, f, tp in config_keys(config_cls):
        if group is None:
            target = parser
        elif group not in sections:
            target = sections[group] = parser.add_argument_group(f"{group} keys", hints[group].__doc__)
        else:
            target = sections[group]
        choices = typing.get_args(tp) if typing.get_origin(tp) is Literal else None
        default = _default(f)
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        kwargs: dict[str, Any] = dict(default=argparse.SUPPRESS, help=f"{f.metadata.get('help', '')} "
                                      f"[{_describe(tp)}; default: {default!r}]")
        if choices:
            kwargs["metavar"] = "{" + ",".join(map(str, choices)) + "}"
        if tp is bool:
            kwargs.update(nargs="?", const="true")
        elif "const" in f.metadata:  # "--key" alone means this value
            kwargs.update(nargs="?", const=f.metadata["const"])
        target.add_argument(*names, **kwargs)
    return parser


def parse_config(config_cls: type, argv: list[str], description: str | None = None) -> Any:
    """``config_cls`` (a dataclass) from ``--config FILE.yaml`` and ``--key=value`` / ``--key value`` overrides.

    Raises ConfigError (one line) for an unknown key, a malformed YAML file (named), a value of the wrong type or
    outside its choices; ``--help`` prints every key and exits.
    """
    parser = _parser(config_cls, description)
    namespace, rest = parser.parse_known_args(argv)
    if rest:
        unknown = next((a for a in rest if a.startswith("--")), rest[0])
        key = unknown.split("=", 1)[0].lstrip("-").replace("-", "_")
        valid = ", ".join(f.name for _, f, _ in config_keys(config_cls))
        if unknown.startswith("--"):
            raise ConfigError(f"unknown config key {key!r}; valid keys: {valid}")
        raise ConfigError(f"unexpected argument {unknown!r}; use --config FILE and --key=value overrides")
    values = vars(namespace)
    loaded: dict[str, Any] = {}
    path = values.pop("config", None)
    if path is not None:
        loaded = _read_config_file(path)
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of config keys")
    keys = config_keys(config_cls)
    names = [f.name for _, f, _ in keys]
    for key in loaded:
        if key not in names:
            raise ConfigError(f"unknown config key {key!r} in {path}; valid keys: {', '.join(names)}")
    given = {**loaded, **values}
    groups: dict[str | None, dict[str, Any]] = {}
    for group, f, _ in keys:
        groups.setdefault(group, {})
        if f.name in given:
            groups[group][f.name] = given[f.name]
    hints = typing.get_type_hints(config_cls)
    # each group checks its keys as it is built (first group first), then the config checks across groups
    return config_cls(**groups.pop(None, {}), **{g: hints[g](**v) for g, v in groups.items()})


def _read_config_file(path: str) -> Any:
    """The YAML data of ``--config`` file ``path``, or a ConfigError (one line naming the file) when it is missing, a
    folder, unreadable, not UTF-8 text or not valid YAML."""
    require(bool(path.strip()), "config", "is empty; name a YAML file of config keys")
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"config file {path} is a directory; pass --config a YAML file")
    if not file.exists():
        raise ConfigError(f"config file {path} not found")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.object[e.start]:#04x} on line {line}); save "
                          "it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read ({e.strerror or type(e).__name__}); check its "
                          "permissions") from None
    try:
        return _load_yaml(text) or {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config file {path}{line} is not valid YAML ({_yaml_problem(e)}); fix the file") from None


def config_defaults(config_cls: type) -> dict[str, Any]:
    """Every key's default, flat (as ``config_dict``), read from the class without building (checking) one."""
    return {f.name: _default(f) for _, f, _ in config_keys(config_cls)}


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def config_dict(config: Any) -> dict[str, Any]:
    """The configuration as flat, plain JSON-able data, one entry per key whatever the grouping (for
    train_config.json, the resume check, trackers and the model card)."""
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flat.update(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else {f.name: value})
    return copy.deepcopy(flat)


# ---- the recipes' configurations ----
# accelerate's tracker names (``accelerate.utils.LoggerType``; the library does not import accelerate)
TRACKERS = ("tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "aim", "clearml", "dvclive", "swanlab")


def report_targets(value: Any) -> list[str]:
    """``--report_to`` as a list of tracker names: [] for ``none``, ``["all"]``, or known names (a ConfigError
    naming the valid ones otherwise)."""
    require(isinstance(value, str), "report_to", f"must be none, all or a comma list of trackers, got {value!r}")
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    if names in ([], ["none"]):
        return []
    unknown = [n for n in names if n not in (*TRACKERS, "all", "none")]
    require(not unknown, "report_to", f"has {', '.join(map(repr, unknown))}; choose none, all or a comma list of "
            f"{', '.join(TRACKERS)}")
    require("none" not in names and ("all" not in names or names == ["all"]), "report_to",
            f"{value!r} mixes none or all with other trackers; give one of them alone, or a list of trackers")
    return list(dict.fromkeys(names))


# label_column is read by the probes only; skip_corrupt rescues a run stopped by an undecodable image
SAFE_TO_CHANGE_ON_RESUME = ("log_every", "max_steps", "save_every", "save_total_limit", "push_to_hub", "num_workers",
                            "resume", "overwrite_output_dir", "probe_every", "probe_samples", "target_accuracy",
                            "label_column", "skip_corrupt", "reff_samples", "collapse_alarm", "collapse_patience",
                            "report_to")


# the documented flat keys of the selectors and the argument of ``batching.create_selector`` each one fills
SELECTION_KEYS = {"pool_factor": "pool_factor", "pool_candidates": "candidates", "greedy_m": "m",
                  "greedy_window": "window", "target_reff": "target", "selection_eps": "eps",
                  "selection_source": "source", "selection_space": "space", "selection_tail": "tail",
                  "selection_until": "until", "selection_embed_size": "embed_size"}


@dataclass
class DataConfig:
    """What is read and how it becomes two views."""

    dataset: str = arg("data/fashion_mnist", "HF datasets id (org/name) or a local folder: parquet/arrow files named "
                       "by split, a save_to_disk folder, or an image folder (class sub-folders optional)")
    split: str = arg("train", "split to pretrain on")
    eval_split: str = arg("test", "split for the exported R_eff and the online probe (--eval_split=train when the "
                          "data has no test split)")
    image_column: str = arg("image", "column holding the images")
    label_column: str | None = arg("label", "column holding integer labels (online probe only; null = none)")
    streaming: bool = arg(True, "stream the data (IterableDataset) instead of loading it map-style")
    shuffle_buffer: int = arg(10_000, "rows in the streaming shuffle buffer")
    num_workers: int = arg(0, "DataLoader workers decoding images (a stream of at least this many shards: "
                           "exact mid-epoch resume needs 0)")
    max_train_samples: int | None = arg(None, "cap on the rows per epoch (quick runs): with the decoded cache the "
                                        "split's first N rows every epoch, streamed the first N of each epoch's "
                                        "shuffled stream; null = the whole split")
    skip_corrupt: bool = arg(False, "skip undecodable images (counted in metrics and the card) instead of stopping")
    image_size: int = arg(32, "training and export resolution (pixels, square)")
    mean: list[float] = arg([0.485, 0.456, 0.406], "per-channel normalisation mean (3 values)")
    std: list[float] = arg([0.229, 0.224, 0.225], "per-channel normalisation std (3 values)")
    augment: Literal["simclr", "byol", "grayscale", "none"] = arg(
        "simclr", "augmentation preset (spectral_ssl.transforms.PRESETS); grayscale suits digits and scans")
    augment_kwargs: dict = arg({}, "per-transform overrides of the preset for both views, e.g. "
                               "{crop_scale: [0.5, 1.0], grayscale_p: 0}")
    augment_on: Literal["auto", "loader", "device"] = arg(
        "auto", "where augmentations run: loader (PIL, per sample, in DataLoader workers) or device (batched on the "
        "training device); auto = device")
    cache_decoded: Literal["auto", "off", "ram", "device"] = arg(
        "auto", "keep the decoded split as one uint8 tensor reused every epoch (needs augment_on=device): ram, "
        "device (the training device's memory) or off; auto = device on a GPU, ram on the CPU, when the split's "
        "length is known and each process's share (1/number of processes) fits in 4 GiB (spectral_ssl.data.cache)")
    decode: Literal["auto", "cpu", "device"] = arg(
        "auto", "where JPEGs are decoded: cpu (in the loader, DCT-domain downscaled to the size the crops need; "
        "spectral_ssl.data.jpeg) or device (batched nvJPEG on the GPU, crops there; needs CUDA and "
        "--augment_on=device, --skip_corrupt=false; not with the decoded cache, which decodes once on the CPU); auto = "
        "device on a GPU when the split holds JPEGs and is not cached, else cpu")

    def __post_init__(self) -> None:
        check_fields(self)
        require(bool(self.dataset.strip()), "dataset", "is empty; name a Hub dataset (org/name) or a local folder")
        for key in ("image_size", "shuffle_buffer"):
            require(getattr(self, key) >= 1, key, f"must be a positive integer, got {getattr(self, key)!r}")
        require(self.max_train_samples is None or self.max_train_samples >= 1, "max_train_samples",
                f"must be a positive integer or null, got {self.max_train_samples!r}")
        require(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers!r}")
        require(self.image_size >= 8, "image_size", f"must be >= 8 pixels, got {self.image_size}")
        for key in ("mean", "std"):
            require(len(getattr(self, key)) == 3, key, f"needs 3 values (R, G, B), got {getattr(self, key)}")
        require(all(s > 0 for s in self.std), "std", f"values must be > 0, got {self.std}")
        require(self.cache_decoded in ("auto", "off") or self.augment_on != "loader", "cache_decoded",
                f"set to {self.cache_decoded!r} needs --augment_on=device (the cache holds unaugmented uint8 images); "
                "pass --cache_decoded=off with --augment_on=loader")
        require(self.decode != "device" or self.augment_on != "loader", "decode",
                "set to device needs --augment_on=device (the images then stay on the GPU); pass --decode=cpu")
        require(self.decode != "device" or not self.skip_corrupt, "decode",
                "set to device cannot skip undecodable rows (one batched decode per batch); pass --decode=cpu with "
                "--skip_corrupt=true")
        if self.decode == "device":
            import torch  # only for this check: a config is read before torch is needed

            require(torch.cuda.is_available(), "decode", "set to device needs a CUDA GPU (nvJPEG) and none is visible; "
                    "pass --decode=cpu or --decode=auto")


@dataclass
class ModelConfig:
    """The network: a timm backbone and the projector."""

    backbone: str = arg("resnet18", "any timm model name (created with num_classes=0)")
    backbone_kwargs: dict = arg({}, "extra timm.create_model arguments, e.g. {img_size: 32, patch_size: 4} for a ViT")
    proj_hidden_dim: int = arg(2048, "projector hidden width")
    proj_dim: int = arg(128, "projection dimension D")
    memory_format: Literal["channels_last", "contiguous"] = arg(
        "channels_last", "layout of the weights and images in training: channels_last (NHWC; a half-width resnet18 "
        "step 1.35x faster on 2 CPU cores, and the layout of a GPU's tensor-core convolutions) or contiguous (NCHW); "
        "exports are contiguous either way")

    def __post_init__(self) -> None:
        check_fields(self)
        for key in ("proj_dim", "proj_hidden_dim"):
            require(getattr(self, key) >= 1, key, f"must be a positive integer, got {getattr(self, key)!r}")


# create_objective's arguments that the recipe sets from other keys: a loss_kwargs entry for one is refused
OBJECTIVE_SET_BY_RECIPE = {
    "temperature": "--temperature", "dim": "--proj_dim", "dataset_size": "the split's length",
    "gather_distributed": "the number of processes", "whitening": "--whitening", "whitening_eps": "--whitening_eps",
    "whitening_solver": "--whitening_solver", "whitening_sync": "--whitening_sync", "ema_momentum": "--ema_momentum",
    "ema_momentum_final": "--ema_momentum_final"}


@dataclass
class ObjectiveConfig:
    """What turns two views into a loss (``spectral_ssl.objective``): loss, whitening, EMA target."""

    loss: str = arg("infonce", "objective: infonce (simclr), dcl, moco, sogclr, isoloss, byol, simsiam")
    loss_kwargs: dict = arg({}, "the loss's own arguments (create_loss), e.g. {queue_size: 4096} for moco, "
                            "{gamma: 0.9} for sogclr, {ema: true} for isoloss; each loss owns its defaults")
    temperature: float = arg(0.2, "temperature of the contrastive losses and of the gradient band")
    monitor_temperature: float = arg(0.2, "temperature of the NT-Xent monitor logged for every loss")
    ema_momentum: float | None = arg(None, "target-network EMA momentum at step 0 (byol, moco, isoloss with ema: true; "
                                     "refused for a loss without one); null = the loss's default")
    ema_momentum_final: float | None = arg(None, "EMA momentum at the end (cosine); null = the loss's default")
    whitening: Literal["none", "zca", "cholesky"] = arg("none", "in-batch whitening of each view's projections")
    whitening_eps: float = arg(1e-4, "whitening ridge, relative to the mean eigenvalue")
    whitening_solver: Literal["auto", "eigh", "newton_schulz"] = arg(
        "auto", "zca's inverse square root: eigh (on CUDA one host synchronisation per view and step), newton_schulz "
        "(matrix products only: no synchronisation; float32-eigh accuracy; more work on a CPU) or auto (newton_schulz "
        "on CUDA up to proj_dim 512, eigh elsewhere)")
    whitening_sync: bool = arg(False, "whiten with the statistics of the global batch (every process's rows, as "
                               "SyncBatchNorm): the result does not depend on the number of processes, and a "
                               "process's batch_size may be <= proj_dim when the global batch is larger; false: each "
                               "process whitens its own batch (per-GPU BatchNorm)")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.loss == "simclr":
            self.loss = "infonce"
        positive(self, "temperature", "monitor_temperature", "whitening_eps")
        require(self.whitening_solver != "newton_schulz" or self.whitening in ("zca", "none"), "whitening_solver",
                f"{self.whitening_solver} computes zca's inverse square root; whitening={self.whitening} takes none: "
                "use whitening_solver=auto")
        for key in ("ema_momentum", "ema_momentum_final"):
            value = getattr(self, key)
            require(value is None or 0 <= value <= 1, key, f"must be in [0, 1], got {value}")
        for name, source in OBJECTIVE_SET_BY_RECIPE.items():  # else create_objective gets it twice
            require(name not in self.loss_kwargs, "loss_kwargs", f"sets {name!r}, which the recipe sets from "
                    f"{source}; set that instead")

    def objective_arguments(self) -> dict[str, Any]:
        """``objective.create_objective``'s keyword arguments from these keys (the loss's own ones from
        ``loss_kwargs``); the recipe adds ``dim``, ``dataset_size`` and ``gather_distributed``."""
        own = (name for name in OBJECTIVE_SET_BY_RECIPE if name in self.__dataclass_fields__)  # one list of them
        return {**{name: getattr(self, name) for name in own}, **self.loss_kwargs}


@dataclass
class SelectionConfig:
    """How each batch is chosen (``batching.create_selector``)."""

    selection: Literal["random", "pool", "greedy"] = arg(
        "random", "batch selection: random, pool (Pool-P: best of P batches by R_eff) or greedy (Greedy-m log-det)")
    selection_kwargs: dict = arg({}, "the selector's own arguments (batching.create_selector), e.g. {m: 64, "
                                 "window: 20} for greedy, {candidates: 3, target: 0.5} for pool; each selector owns "
                                 "its defaults. The flat keys below fill the same arguments (a key given both ways is "
                                 "an error)")
    pool_factor: int | None = arg(None, "greedy: candidates per process = pool_factor x batch_size; null = the "
                                  "selector's default (4)")
    pool_candidates: int | None = arg(None, "pool: P candidate batches per step; null = the selector's default (3)")
    greedy_m: int | None = arg(None, "greedy: candidates scored per pick (64 = Greedy-64); null = exact greedy")
    greedy_window: float | None = arg(None, "greedy: stop at this R_eff and fill the rest at random; null = off")
    target_reff: float | str | None = arg(None, "pool: target R_eff, a number, a fraction of proj_dim (0 < t < 1) "
                                          "or 'RHO*C' (needs num_classes); null = the largest R_eff")
    num_classes: int | None = arg(None, "C for 'RHO*C' targets")
    selection_source: Literal["cache", "online"] | None = arg(
        None, "greedy candidates' embeddings: cache (last visit) or online (a no-grad pass); null = cache")
    selection_eps: float | None = arg(None, "greedy: ridge of the log-det objective; null = the selector's default "
                                      "(1e-2)")
    selection_space: Literal["loss", "projections"] | None = arg(
        None, "score candidates as the loss sees them (whitened when whitening is on) or as raw projections; "
        "null = loss")
    selection_tail: Literal["train", "drop"] | None = arg(
        None, "pool and greedy: the end of an epoch: train (the pool down to its last batch, every sample once per "
        "epoch; the last batches are the candidates passed over) or drop (the epoch ends at the first pool that "
        "cannot be refilled, as drop_last; pool_factor - 1 fewer steps per epoch); null = train")
    selection_until: float | None = arg(
        None, "pool and greedy: choose by the spectrum for this many steps (a whole number), or for this fraction of "
        "the run (0 < f < 1), then take random batches of the same pool (no embedding or decision: random batches' "
        "speed); null = the whole run")
    selection_embed_size: int | None = arg(
        None, "pool and greedy: embed candidates by their first view resized to this side in pixels (half the side "
        "costs about a quarter of the no-grad pass); null = image_size")

    def __post_init__(self) -> None:
        check_fields(self)
        positive(self, "selection_eps")
        for key in ("greedy_m", "num_classes", "pool_factor", "pool_candidates", "selection_embed_size"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, f"must be a positive integer or null, got {value!r}")
        if self.selection_until is not None:  # the rule is batching.resolve_until's, which the recipe applies
            from spectral_ssl.batching import resolve_until

            try:
                steps = resolve_until(self.selection_until, 1)  # a fraction of a 1-step run: 1
            except ValueError:
                steps = None
            require(steps is not None, "selection_until", "must be a whole number of steps, a fraction of the run "
                    f"(0 < f < 1) or null, got {self.selection_until!r}")
            if self.selection_until >= 1:
                self.selection_until = steps
        if isinstance(self.target_reff, str):
            try:
                self.target_reff = float(self.target_reff)
            except ValueError:
                pass  # 'RHO*C': resolved by batching.resolve_target, which names the fix
        self.selector_arguments()  # unknown selection_kwargs, or a key given both ways

    def selector_arguments(self) -> dict[str, Any]:
        """The chosen selector's own arguments (``batching.create_selector``): ``selection_kwargs`` plus the flat
        keys that apply to it (``SELECTION_KEYS``; a flat key of another selector is ignored, as documented)."""
        from spectral_ssl.batching import selector_arguments  # torch: only when a config is checked

        accepted = selector_arguments(self.selection)
        unknown = sorted(set(self.selection_kwargs) - set(accepted))
        require(not unknown, "selection_kwargs", f"has {', '.join(map(repr, unknown))}, which selection "
                f"{self.selection!r} does not take; its arguments are {sorted(accepted)}")
        kwargs = dict(self.selection_kwargs)
        for key, name in SELECTION_KEYS.items():
            value = getattr(self, key)
            if value is None or name not in accepted:
                continue
            require(name not in kwargs, key, f"and --selection_kwargs {{{name}: ...}} both set the selector's "
                    f"{name!r}; keep one")
            kwargs[name] = value
        return kwargs


@dataclass
class OptimConfig:
    """Optimisation: batch, length, optimiser, schedule, precision, seed."""

    batch_size: int = arg(256, "batch size per process")
    epochs: int = arg(1, "passes over the split (ignored when max_steps is set)")
    max_steps: int | None = arg(None, "total optimisation steps; null = epochs x steps per epoch")
    optimizer: Literal["adamw", "sgd"] = arg("adamw", "optimiser (sgd: momentum 0.9)")
    lr: float = arg(1e-3, "peak learning rate (linear warm-up, cosine decay to 0)")
    weight_decay: float = arg(1e-4, "weight decay of weight matrices (biases and norms: none)")
    warmup_steps: int = arg(0, "linear warm-up steps")
    grad_clip: float | None = arg(None, "clip the gradient norm to this value; null = no clipping")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = arg(
        "auto", "auto: bf16 on a GPU, none on CPU (bf16 there: ~1.2x a step with native bf16, -0.46 point on the demo)")
    seed: int = arg(0, "seed of the data order, augmentations, initialisation and selection")

    def __post_init__(self) -> None:
        check_fields(self)
        positive(self, "lr", "grad_clip")
        positive(self, "weight_decay", allow_zero=True)
        require(self.batch_size >= 1, "batch_size", f"must be a positive integer, got {self.batch_size!r}")
        require(self.max_steps is None or self.max_steps >= 1, "max_steps",
                f"must be a positive integer or null, got {self.max_steps!r}")
        for key in ("epochs", "warmup_steps"):
            require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)!r}")
        require(self.epochs >= 1 or self.max_steps, "epochs", "must be >= 1 (or set --max_steps)")
        require(self.batch_size >= 2, "batch_size", "must be >= 2 (a contrastive batch needs negatives)")
        check_seed(self.seed)


@dataclass
class RunConfig:
    """Bookkeeping: the run folder, checkpoints, logging, probes, the export and the push."""

    output_dir: str = arg("outputs/run", "run folder: export at its root, checkpoints/, metrics.jsonl")
    overwrite_output_dir: bool = arg(False, "clear an output_dir that holds another run first")
    resume: bool = arg(False, "continue the run in output_dir from its newest complete checkpoint")
    save_every: int | None = arg(500, "steps between checkpoints (the final state is always saved); null = end only")
    save_total_limit: int | None = arg(2, "checkpoints kept (oldest deleted); null = all")
    log_every: int = arg(10, "steps between metrics lines")
    probe_every: int | None = arg(None, "steps between online kNN probes; null = off")
    probe_samples: int = arg(2000, "images of each split used by the online probe")
    target_accuracy: float | None = arg(None, "online-probe top-1 (percent) whose first crossing is recorded as "
                                        "time-to-accuracy; needs probe_every")
    reff_samples: int = arg(2000, "eval images used for the exported effective rank")
    collapse_alarm: Literal["warn", "stop", "none"] = arg(
        "warn", "when the logged projections stay collapsed for collapse_patience logs (R_eff or RankMe under 0.05 x "
        "min(2B, proj_dim), or std_of_l2_normalized under 0.1/sqrt(proj_dim)): warn, or stop training (saved and "
        "exported; --resume=true goes on), or none")
    collapse_patience: int = arg(3, "consecutive collapsed logs before the collapse alarm fires")
    push_to_hub: str | None = arg(None, "Hub repo id to push the export to at the end; null = no push")
    report_to: str = arg("none", "trackers the logged metrics also go to (accelerate's log_with), each needing its "
                         f"package: none, all (every one installed), or a comma list of {', '.join(TRACKERS)}; local "
                         "logs (TensorBoard's) in output_dir/trackers/")

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.log_every >= 1, "log_every", f"must be a positive integer, got {self.log_every!r}")
        self.report_to = ",".join(report_targets(self.report_to)) or "none"
        require(self.collapse_patience >= 1, "collapse_patience", f"must be a positive integer, got "
                f"{self.collapse_patience!r}")
        require(self.probe_samples >= 2, "probe_samples", f"must be >= 2 (a kNN probe needs images of 2 classes), got "
                f"{self.probe_samples!r}")
        for key in ("save_every", "save_total_limit", "probe_every"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, f"must be a positive integer or null, got {value!r}")
        require(self.reff_samples >= 2, "reff_samples", f"must be >= 2 (an effective rank needs 2 samples), got "
                f"{self.reff_samples}")
        require(self.target_accuracy is None or 0 < self.target_accuracy <= 100, "target_accuracy",
                f"is a top-1 in percent (0, 100], got {self.target_accuracy}")
        require(not (self.resume and self.overwrite_output_dir), "resume",
                "and --overwrite_output_dir=true contradict each other; choose one")
        self.output_dir = check_output_dir(self.output_dir)
        if self.push_to_hub is not None:  # found now, not after training
            from spectral_ssl.hub import check_repo_id

            try:
                check_repo_id(self.push_to_hub)
            except ValueError as e:
                raise ConfigError(f"--push_to_hub: {e}") from None

    def trackers(self) -> list[str]:
        """``report_to`` as accelerate's ``log_with`` names: [] (none), ``["all"]`` or the trackers asked for."""
        return report_targets(self.report_to)


def check_output_dir(path: str, key: str = "output_dir") -> str:
    """``path`` with ``~`` expanded, or a ConfigError when it cannot become a run folder: an existing file, below a
    file, or in a folder this process cannot write (checked before anything is loaded)."""
    path = os.path.expanduser(path)
    require(bool(path.strip()), key, "is empty; name a folder")
    target = Path(path)
    existing = next((p for p in (target, *target.parents) if p.exists()), Path("."))
    where = "is an existing file" if existing == target else f"is below {existing}, a file"
    require(existing.is_dir(), key, f"{path} {where}, not a folder; choose another --{key}")
    require(os.access(existing, os.W_OK | os.X_OK), key, f"{path}: {existing} is not writable; choose "
            f"another --{key}")
    return path


def check_output_file(path: str, key: str) -> str:
    """``path`` with ``~`` expanded, or a ConfigError when a file cannot be written there (an existing folder, below
    a file, an unwritable folder): found before the work whose result it holds, not after."""
    path = os.path.expanduser(path)
    require(bool(path.strip()) and not path.endswith(("/", os.sep)), key, f"{path!r} must name a file, e.g. "
            "results/probe.json")
    require(not Path(path).is_dir(), key, f"{path} is an existing folder; name a file in it, e.g. "
            f"{Path(path) / 'linear_probe.json'}")
    check_output_dir(str(Path(path).parent), key)
    return path


def check_dataset_folder(dataset: str | None, key: str = "dataset", output_dir: str | None = None,
                         output_key: str = "output_dir") -> None:
    """A ConfigError when a local ``dataset`` folder is a spectral_ssl run folder (its train_config.json and metrics
    would be read as data) or holds ``output_dir`` (the run's files would mix with the data and be read as data the
    next time)."""
    if not dataset or not os.path.isdir(os.path.expanduser(dataset)):
        return  # a Hub id, or a path the readers report
    from spectral_ssl.run_folder import not_a_dataset  # run_folder imports this module

    folder = Path(os.path.expanduser(dataset)).resolve()
    refusal = not_a_dataset(dataset)  # the readers' own check (data.load_images), made before anything is loaded
    require(refusal is None, key, str(refusal))
    if output_dir is not None:
        out = Path(output_dir).resolve()
        require(out != folder and folder not in out.parents, output_key, f"{output_dir} is inside --{key} {dataset}: "
                f"the run's files would mix with the data (and be read as data); choose an --{output_key} outside it")


@dataclass
class PretrainConfig:
    """Every key of ``recipes/pretrain.py``, in six groups, ``data``, ``model``, ``objective``, ``batching`` (the
    selection keys), ``optim`` and ``run`` (``--help`` prints them by group with their defaults).

    The command line and YAML files stay flat (``--lr=0.1``, not ``--optim.lr``): key names are unique across the
    groups, so ``parse_config`` routes each to its group. Code reads ``cfg.optim.lr``; a flat read (``cfg.lr``)
    also works, for scripts written against the flat config. Each group checks its own keys; the checks that span
    groups are here.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    batching: SelectionConfig = field(default_factory=SelectionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        data, model, objective, optim, run = self.data, self.model, self.objective, self.optim, self.run
        # with whitening_sync the global batch counts: the recipe checks it once it knows the number of processes
        require(objective.whitening == "none" or objective.whitening_sync or optim.batch_size > model.proj_dim,
                "whitening", f"needs batch_size > proj_dim (got {optim.batch_size} <= {model.proj_dim}); raise "
                "--batch_size, lower --proj_dim, or with several processes set --whitening_sync=true")
        require(run.target_accuracy is None or (run.probe_every and data.label_column), "target_accuracy",
                "needs --probe_every (the online probe measures it) and a --label_column")
        require(not run.probe_every or data.label_column, "probe_every", "needs a --label_column (the online kNN "
                "probe scores labels); set one, or --probe_every=null")
        check_dataset_folder(data.dataset, output_dir=run.output_dir)

    def __getattr__(self, name: str) -> Any:
        """Flat read access: ``cfg.lr`` is ``cfg.optim.lr`` (only called for names that are not attributes)."""
        for group in _GROUPS:
            values = self.__dict__.get(group)
            if values is not None and name in values.__dataclass_fields__:
                return getattr(values, name)
        raise AttributeError(f"{type(self).__name__} has no key {name!r}")


_GROUPS = ("data", "model", "objective", "batching", "optim", "run")


@dataclass
class ProbeConfig:
    """Every key of ``recipes/linear_probe.py``."""

    model: str = arg("", "export folder, hf-hub:org/name or org/name (required)")
    dataset: str | None = arg(None, "dataset to probe on; null = the one the model was trained on")
    train_split: str = arg("train", "split the probe is fitted on")
    test_split: str = arg("test", "split the probe is scored on")
    image_column: str | None = arg(None, "column holding the images; null = the run's (on its own dataset), else "
                                   "'image'")
    label_column: str | None = arg(None, "column holding integer class labels; null = the run's (on its own "
                                   "dataset), else 'label'")
    max_train_samples: int | None = arg(None, "cap on train rows; null = whole split")
    max_test_samples: int | None = arg(None, "cap on test rows; null = whole split")
    skip_corrupt: bool = arg(False, "skip undecodable images instead of stopping")
    batch_size: int = arg(512, "feature-extraction batch size")
    num_workers: int = arg(0, "DataLoader workers decoding the probe's images")
    knn: bool = arg(False, "also run a weighted kNN probe")
    compare_random_init: bool = arg(False, "also probe the same architecture fairly initialised at random "
                                    "(standard init, no zero-initialised residual branches, BatchNorm statistics "
                                    "recalibrated on training images)")
    compare_raw_pixels: bool = arg(False, "also probe the normalised raw pixels (logistic regression)")
    bn_batches: int = arg(20, "training batches that set the random-init baseline's BatchNorm statistics")
    weight_decays: list[float] | None = arg(None, "the linear probe's L2 penalties: each is fitted on nine tenths of "
                                            "the train rows and scored (cross-entropy) on the rest, the lowest "
                                            "refitted on all; null = half-decades from 1e-5 to 1 "
                                            "(spectral_ssl.probe.WEIGHT_DECAYS)")
    output: str | None = arg(None, "JSON file for the results; null = MODEL/linear_probe.json")
    record: bool = arg(True, "write the result into the export's metadata and card")
    seed: int = arg(0, "seed of the probe and the random-init baseline")
    push: str | None = arg(None, "Hub repo id whose card metrics to update after the probe; --push alone = --model's "
                           "Hub repo", const="model")

    def __post_init__(self) -> None:
        check_fields(self)
        require(bool(self.model), "model", "is required: an export folder, hf-hub:org/name or org/name")
        prefix = "local-dir:" if self.model.startswith("local-dir:") else ""
        self.model = prefix + os.path.expanduser(self.model.removeprefix(prefix))  # ~/runs/x: a folder, not '~'
        require(self.batch_size >= 1, "batch_size", f"must be a positive integer, got {self.batch_size}")
        require(self.bn_batches >= 0, "bn_batches", f"must be >= 0, got {self.bn_batches}")
        require(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        require(self.weight_decays is None or isinstance(self.weight_decays, list) and len(self.weight_decays) >= 1
                and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                        for v in self.weight_decays),
                "weight_decays", f"must be a list of one or more numbers >= 0, e.g. '[1e-4, 1e-2, 1]', got "
                f"{self.weight_decays!r}")
        check_seed(self.seed)
        for key in ("max_train_samples", "max_test_samples"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, f"must be a positive integer or null, got {value!r}")
        if self.output is not None:  # found now, not after the probe
            self.output = check_output_file(self.output, "output")
        if self.push not in (None, "model"):  # found now, not after the probe
            from spectral_ssl.hub import check_repo_id

            try:
                check_repo_id(self.push)
            except ValueError as e:
                raise ConfigError(f"--push: {e}") from None
        check_dataset_folder(self.dataset)
