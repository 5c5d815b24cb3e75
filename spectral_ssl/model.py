"""SpectralSSL: a timm backbone (``num_classes=0``) plus an MLP projector, saved in timm's own Hub format."""

from __future__ import annotations

import copy
import difflib
import logging
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from spectral_ssl import hub

logger = logging.getLogger(__name__)


def create_backbone(name: str, backbone_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """``timm.create_model(name, num_classes=0, **backbone_kwargs)`` with clear errors.

    Every architecture change must be a timm kwarg (for example ``img_size``/``patch_size`` for ViTs), so that
    plain timm rebuilds the exported model from ``config.json`` alone.
    """
    kwargs = dict(backbone_kwargs or {})
    if "num_classes" in kwargs:
        raise ValueError("backbone_kwargs must not set num_classes: the backbone is always built head-less "
                         "(num_classes=0); train a linear probe for classification.")
    listed = sorted(FEATURE_MAP_KEYS & set(kwargs))
    if listed:
        raise ValueError(f"backbone_kwargs must not set {', '.join(listed)}: pretraining needs the pooled feature "
                         "vector (num_classes=0), not timm's list of feature maps; drop the key.")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See timm.list_models() for valid names."
        raise ValueError(f"Unknown timm backbone {name!r}.{hint}")
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except TypeError as e:
        raise ValueError(f"timm backbone {name!r} rejected backbone_kwargs {kwargs}: {e}. Remove or rename the "
                         "offending key (it must be a keyword of the timm model's constructor; a config file's "
                         "backbone_kwargs stay when only the backbone changes: pass --backbone_kwargs={} to clear "
                         "them).") from e
    except (AssertionError, ValueError, RuntimeError) as e:  # timm checks argument values with assert
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"timm backbone {name!r} rejected backbone_kwargs {kwargs} ({type(e).__name__}: "
                         f"{detail}); fix the offending value.") from None


# timm factory keys that turn the model into a feature-map extractor (a list of maps, no pooled vector)
FEATURE_MAP_KEYS = frozenset({"features_only", "out_indices", "feature_cls"})


def feature_dim(backbone: nn.Module) -> int:
    """Width of what a timm backbone built with ``num_classes=0`` returns: ``head_hidden_size`` where the head has
    layers of its own (MobileNetV3/V4, GhostNet, HGNetV2: a conv or MLP after the pooling), else ``num_features``."""
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


def make_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """SimCLR projector: Linear-BN-ReLU-Linear."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


class SpectralSSL(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="timm",
    tags=["spectral-ssl", "self-supervised", "image-feature-extraction"],
    pipeline_tag="image-feature-extraction",
    license="apache-2.0",
):
    """A timm backbone with a projector head for self-supervised pretraining.

    ``embed(x)`` returns backbone features (what is published and probed); ``forward(x)`` returns projections (what
    the loss sees). ``save_pretrained(dir)`` writes a timm-native export (see ``spectral_ssl.hub``) that loads with
    ``SpectralSSL.from_pretrained(dir)``, ``timm.create_model("local-dir:dir", pretrained=True)`` and transformers'
    ``AutoModel``.

    Args:
        backbone: timm registry name, built with ``num_classes=0``.
        proj_hidden_dim: Hidden width of the projector MLP.
        proj_dim: Output dimension of the projector.
        backbone_kwargs: Extra ``timm.create_model`` kwargs (architecture changes must go here).

    Attributes:
        data_config: Preprocessing the weights expect (``input_size``, ``mean``, ``std``, ``interpolation``,
            ``crop_pct``, ``crop_mode``); recipes set it to the training preprocessing, it is exported as
            ``pretrained_cfg``.
        metadata: Training metadata written under the ``spectral_ssl`` key of ``config.json``.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        backbone_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        for key, value in (("proj_hidden_dim", proj_hidden_dim), ("proj_dim", proj_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}.")
        self.backbone_name = backbone
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.backbone = create_backbone(backbone, self.backbone_kwargs)
        self.num_features: int = feature_dim(self.backbone)
        self.projector = make_projector(self.num_features, proj_hidden_dim, proj_dim)
        cfg = self.backbone.pretrained_cfg
        self.data_config: dict[str, Any] = {
            "input_size": tuple(cfg.get("input_size", (3, 224, 224))),
            "interpolation": cfg.get("interpolation", "bicubic"),
            "crop_pct": cfg.get("crop_pct", 1.0),
            "crop_mode": cfg.get("crop_mode", "center"),
            "mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            "std": tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        }
        self.metadata: dict[str, Any] = {}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features: (B, C, H, W) images -> (B, num_features)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections: (B, C, H, W) images -> (B, proj_dim)."""
        return self.projector(self.backbone(x))

    @torch.no_grad()
    def check_input(self, image_size: int, channels: int = 3, key: str = "--image_size") -> None:
        """A ValueError naming the key to fix unless the backbone takes ``(channels, image_size, image_size)``
        images: one forward pass of two blank images in eval mode (no weight or statistic changes), so that a ViT
        built for another size or ``in_chans: 1`` on RGB input is found before training, not at its first step.
        ``key``: the setting that asks for ``image_size`` (e.g. ``--selection_embed_size``), named in the error."""
        was_training = self.training
        self.eval()
        try:
            features = self.backbone(torch.zeros(2, channels, image_size, image_size))
        except Exception as e:  # noqa: BLE001  (timm raises AssertionError, RuntimeError or ValueError)
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            in_chans = self.backbone_kwargs.get("in_chans", channels)
            fix = (f"drop in_chans: {in_chans} from --backbone_kwargs (the images are decoded as {channels}-channel "
                   "RGB, grayscale images too)" if in_chans != channels else
                   f"set --image_size to the size the backbone was built for, or pass its size in --backbone_kwargs "
                   f"(e.g. {{img_size: {image_size}}} for a ViT)" if key == "--image_size" else
                   f"set {key} to a size the backbone takes, or to null (a timm ViT takes other sizes with "
                   "{dynamic_img_size: true} in --backbone_kwargs)")
            raise ValueError(f"backbone {self.backbone_name!r} (backbone_kwargs {self.backbone_kwargs}) does not take "
                             f"{channels}x{image_size}x{image_size} images ({type(e).__name__}: {detail}); "
                             f"{fix}") from None
        finally:
            self.train(was_training)
        embed = getattr(self.backbone, "patch_embed", None)
        patch = getattr(embed, "patch_size", None)
        patch = (patch, patch) if isinstance(patch, int) else tuple(patch or ())
        if len(patch) == 2 and not getattr(embed, "dynamic_img_pad", False) and (image_size % patch[0]
                                                                                  or image_size % patch[1]):
            logger.warning("backbone %r cuts %dx%d images into %dx%d patches: the last %d pixel rows/columns are never "
                           "seen; pick an image_size or patch_size that divides it", self.backbone_name, image_size,
                           image_size, patch[0], patch[1], max(image_size % patch[0], image_size % patch[1]))
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"backbone {self.backbone_name!r} returns features of shape {tuple(features.shape)} for "
                             f"{image_size}x{image_size} images, not (N, {self.num_features}); pick a backbone that "
                             "pools to a vector (timm's num_classes=0 contract)")

    def parameter_groups(self, weight_decay: float, extra: nn.Module | None = None) -> list[dict[str, Any]]:
        """Optimiser parameter groups: weight matrices and kernels decay, biases and norm weights (ndim <= 1) do not.

        ``extra``: another module trained with the model (a BYOL/SimSiam predictor inside the loss), grouped alike.
        """
        params = list(self.parameters()) + (list(extra.parameters()) if extra is not None else [])
        return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
                {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]

    # ---- Hub format -------------------------------------------------------------------------------------------
    def export_config(self) -> dict[str, Any]:
        """The ``config.json`` dict of this model's export."""
        from spectral_ssl import __version__

        meta = copy.deepcopy(self.metadata)
        meta["projector"] = {"in_dim": self.num_features, "hidden_dim": self.projector[0].out_features,
                             "dim": self.projector[-1].out_features}
        meta["version"] = __version__
        return hub.timm_config(self.backbone, self.backbone_name, self.backbone_kwargs, self.data_config, meta)

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> str | None:
        """Write the timm-native export to ``save_directory`` (``PyTorchModelHubMixin.save_pretrained``).

        Metadata that JSON cannot hold raises one ``TypeError`` naming its key before anything is created or removed
        (the mixin would first create the folder and delete an existing export's config.json).
        """
        self.export_config()
        return super().save_pretrained(save_directory, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        # Called by PyTorchModelHubMixin.save_pretrained / push_to_hub: write the timm-native files ourselves (the
        # mixin's default would save prefixed keys that plain timm cannot load).
        config = self.export_config()
        plot = hub.PLOT_NAME if (Path(save_directory) / hub.PLOT_NAME).is_file() else None
        hub.save_export(save_directory, self.backbone, self.projector, config,
                        card=hub.render_card(config, plot=plot))

    def push_to_hub(self, repo_id: str, *, revision: str | None = None, branch: str | None = None,
                    create_pr: bool | None = None, private: bool | None = None, commit_message: str | None = None,
                    token: str | None = None, config: Any = None, model_card_kwargs: Any = None,
                    **unsupported: Any) -> str:
        """Export to a temporary folder and upload it to the Hub model repo ``repo_id`` (see
        ``spectral_ssl.hub.push_export``); returns the commit URL (the pull request's with ``create_pr=True``).

        ``branch`` is ``PyTorchModelHubMixin``'s name for ``revision``; its ``config`` and ``model_card_kwargs``
        (passed by ``save_pretrained(push_to_hub=True)``) are ignored: the export writes its own config and card.
        Its file-pattern arguments do not apply to an export (always the same files) and are refused.
        """
        import tempfile

        if unsupported:
            raise TypeError(f"push_to_hub() does not take {', '.join(sorted(unsupported))}: an export pushes its "
                            "own files (config.json, model.safetensors, projector.safetensors, the card, plots)")
        if branch is not None and revision is not None and branch != revision:
            raise TypeError(f"push_to_hub() got branch={branch!r} and revision={revision!r}; pass one of them")
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            return hub.push_export(tmp, repo_id, revision=revision or branch, private=private,
                                   commit_message=commit_message, token=token, create_pr=bool(create_pr))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, revision: str | None = None,
                        strict: bool = True, **hub_kwargs: Any) -> SpectralSSL:
        """Load an export from a local folder or a Hub repo (through the HF cache; ``HF_HUB_OFFLINE=1`` works).

        Args:
            pretrained_model_name_or_path: Folder written by ``save_pretrained`` (or ``local-dir:FOLDER``), a Hub
                repo id ``org/name`` or ``hf-hub:org/name``.
            revision: Hub revision (branch, tag or commit) when loading from the Hub.
            strict: Refuse missing/unexpected backbone keys (default). The projector is optional: a plain timm
                export has none, and a fresh projector is built with a warning.
        """
        directory = hub.resolve_export(pretrained_model_name_or_path, revision=revision, **hub_kwargs)
        config, backbone_state, projector_state = hub.read_export(directory)
        bad = hub.non_finite_weights(backbone_state, projector_state)
        if bad:
            logger.warning("%s holds non-finite (NaN/Inf) weights in %d tensors (%s); its features will be NaN",
                           directory, len(bad), ", ".join(bad[:3]))
        meta = config.get("spectral_ssl", {})
        proj = meta.get("projector", {})
        model_args = dict(config.get("model_args") or {})
        model_args.pop("num_classes", None)  # timm's own exports may set it; the backbone is always head-less
        try:
            model = cls(
                backbone=config["architecture"],
                proj_hidden_dim=int(proj.get("hidden_dim", 2048)),
                proj_dim=int(proj.get("dim", 128)),
                backbone_kwargs=model_args,
            )
        except ValueError as e:
            raise ValueError(f"{directory / hub.CONFIG_NAME} describes a backbone this timm {timm.__version__} "
                             f"cannot build: {e} If the export was made with a newer timm, upgrade timm "
                             "(pip install -U timm).") from None
        backbone_state = _without_classifier(model.backbone, backbone_state, directory)
        _load_state(model.backbone, backbone_state, strict, directory / hub.WEIGHTS_NAME, directory / hub.CONFIG_NAME)
        if projector_state is not None:
            _load_state(model.projector, projector_state, strict, directory / hub.PROJECTOR_NAME,
                        directory / hub.CONFIG_NAME)
        else:
            logger.warning("%s has no %s: the projector is freshly initialised (embed() is unaffected).",
                           directory, hub.PROJECTOR_NAME)
        pretrained_cfg = config.get("pretrained_cfg", {})
        model.data_config.update({k: pretrained_cfg[k] for k in model.data_config if k in pretrained_cfg})
        model.data_config = {k: tuple(v) if isinstance(v, list) else v for k, v in model.data_config.items()}
        if isinstance(getattr(model.backbone, "pretrained_cfg", None), dict):  # what timm.data reads, as timm's
            model.backbone.pretrained_cfg = {**model.backbone.pretrained_cfg, **model.data_config}  # own loader does
        model.metadata = {k: v for k, v in meta.items() if k not in ("projector", "version")}
        return model.eval()


def _without_classifier(backbone: nn.Module, state: dict[str, torch.Tensor], directory: Path
                        ) -> dict[str, torch.Tensor]:
    """``state`` less a timm classifier head that the head-less ``backbone`` lacks (a plain timm export of a
    classifier, e.g. ``fc.weight``/``fc.bias``), as timm drops it when loading with ``num_classes=0``."""
    classifier = backbone.pretrained_cfg.get("classifier") if hasattr(backbone, "pretrained_cfg") else None
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    own = backbone.state_dict()
    head = [k for k in state if k not in own and any(k.startswith(f"{name}.") for name in names)]
    if head:
        logger.info("%s: left out the classifier head of the timm export (%s); the backbone is head-less",
                    directory, ", ".join(head))
    return {k: v for k, v in state.items() if k not in head}


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], strict: bool, weights: Path, config: Path) -> None:
    """``module.load_state_dict(state)``, or one ValueError naming both files and the first differing keys (torch's
    own message lists every key on its own line)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state] if strict else []
    unexpected = [k for k in state if k not in expected] if strict else []
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{len(names)} {what} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
                 for what, names in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches, file vs config", shapes)) if names]
        raise ValueError(f"{weights} does not match the model that {config} describes: {'; '.join(parts)}; the "
                         f"config was edited or belongs to other weights: restore {config.name} or export again")
    module.load_state_dict(state, strict=strict)
