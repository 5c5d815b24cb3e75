"""Two-view augmentations: a configuration, named presets, a loader-side PIL path and a batched on-device path.

- ``AugmentConfig``: one view's augmentation parameters (crop, flip, colour jitter, grayscale, blur, solarize).
- ``PRESETS`` / ``augment_preset(name, image_size)``: the two views' configs of "simclr", "byol", "grayscale", "none".
- ``TwoViewTransform``: per-sample PIL path (torchvision v2), run by the data loader; ``EvalTransform``.
- ``DeviceAugment``: the same recipe on a uint8 batch (B, C, H, W) where it lives (GPU or CPU), with per-sample
  random parameters drawn from a ``torch.Generator`` (same seed -> identical output).

Op order (both paths): random resized crop -> horizontal flip -> colour jitter (p=jitter_p) -> grayscale
(p=grayscale_p) -> Gaussian blur (p=blur_p) -> solarize (p=solarize_p) -> float, normalise.

How ``DeviceAugment`` differs from the PIL path (by design, documented here once):

- Crop boxes are sampled exactly like ``RandomResizedCrop.get_params`` (10 tries of uniform area fraction and
  log-uniform aspect, integer boxes, then the central fallback), but resampled with one sampling grid (the
  ``affine_grid`` of a scale + shift, built by broadcasting) and one ``grid_sample`` (bilinear, half-pixel centres,
  border padding; the flip is the sign of the grid's x scale), without antialiasing: shrinking a crop by more than
  ~2x aliases (irrelevant for 28 -> 32 px, visible for 500 -> 224 px).
- Colour jitter runs brightness / contrast / saturation / hue in a per-sample random order (like torchvision's
  ``ColorJitter``), clamping to [0, 1] after each op. Every op is an affine map of the RGB vector (contrast's offset
  uses the current image's grayscale mean), so each step is one batched 3x3 matrix product. Hue is a rotation of
  the RGB cube about the gray axis by 2*pi*hue (keeps grays and the per-pixel mean; positive hue turns red towards
  yellow as in HSV), not torchvision's RGB->HSV->RGB round trip, so saturated colours come out slightly differently.
- Everything stays float32 between ops; the PIL path rounds to uint8 after every op.
- A 1-channel batch stays 1-channel until the final normalisation: saturation, hue and grayscale leave gray images
  unchanged (each jitter op acts as its matrix's row sum, 1 for those two; grayscale is skipped), so it does a third
  of the work and gives the result of the replicated 3-channel batch up to float rounding.

Where it runs, how it is scheduled: on an accelerator every per-sample op (jitter, grayscale, blur, solarize) is
computed for the whole batch and ``torch.where`` keeps the chosen samples (indexing them would need ``nonzero``, a
host sync every step). On the CPU there is no sync to avoid, so each op runs on its chosen samples only, and the
batch goes through in cache-sized groups of samples (``CPU_GROUP_BYTES``; 4 samples at 224 px): same views, two
224 px views 3.6-4.3x faster than the whole batch with every op on every sample (1 thread).

Why our own implementation rather than ``kornia.augmentation`` (0.9.0): ``benchmarks/bench_augment.py --threads 1``
(batch 256, 28x28 uint8 gray inputs -> two 32 px views, methods timed round-robin, median of 9; 2-core x86_64 CPU
shared with other jobs, load average 3-5, so absolute rates are pessimistic, ratios are the point) gave, in img/s
(two views each), simclr / byol preset: PIL loop 259 / 151, DeviceAugment on the 1-channel batch 11787 / 9429, on
the same batch as RGB 6018 / 3907, kornia (RGB float input) 986 / 809. DeviceAugment is 4.8-6.1x faster than kornia
on RGB input (12x with the gray shortcut) and 23-62x faster than the PIL loop. It also adds no dependency and draws
from the caller's generator (kornia draws from the global RNG). No GPU was available for the measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from spectral_ssl.decode_need import views_need

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_INTERPOLATION = "bilinear"  # what EvalTransform resizes with; exported in pretrained_cfg
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma as PIL's convert("L"); sums to 1, so grays stay gray
_CROP_TRIES = 10  # as torchvision's RandomResizedCrop.get_params
_JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
CPU_GROUP_BYTES = 5 * 2**19  # DeviceAugment on the CPU: samples per group ~ this / one float view (4 at 224 px)
JITTER_KEYS = ("brightness", "contrast", "saturation", "hue", "jitter_order")  # what _jitter reads


def _pair(value, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (min, max) pair of numbers, got {value!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be finite with min <= max, got {value!r}.")
    return lo, hi


@dataclass(frozen=True)
class AugmentConfig:
    """One view's augmentations; the defaults are SimCLR's (Chen et al. 2020) with blur on.

    Attributes:
        crop_scale: (min, max) area fraction of the random resized crop, 0 < min <= max <= 1; drawn uniformly.
        crop_ratio: (min, max) aspect ratio w/h of the crop, 0 < min <= max; drawn log-uniformly.
        hflip_p: Probability of a horizontal flip, in [0, 1].
        jitter: (brightness, contrast, saturation, hue) strengths: brightness/contrast/saturation >= 0 give factors
            uniform in [max(0, 1 - s), 1 + s]; hue in [0, 0.5] gives a shift uniform in [-hue, hue] (of a full turn).
        jitter_p: Probability of applying the colour jitter, in [0, 1].
        grayscale_p: Probability of converting to grayscale (kept 3-channel), in [0, 1].
        blur_p: Probability of a Gaussian blur, in [0, 1]; kernel size ``blur_kernel_size(image_size)``.
        blur_sigma: (min, max) blur standard deviation in pixels, 0 < min <= max; drawn uniformly.
        solarize_p: Probability of solarizing (x -> 1 - x where x >= threshold), in [0, 1].
        solarize_threshold: Solarize threshold on the [0, 1] intensity scale, in [0, 1].
    """

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5

    def __post_init__(self) -> None:
        scale = _pair(self.crop_scale, "crop_scale")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale!r}.")
        ratio = _pair(self.crop_ratio, "crop_ratio")
        if ratio[0] <= 0:
            raise ValueError(f"crop_ratio must be positive (w/h), got {self.crop_ratio!r}.")
        sigma = _pair(self.blur_sigma, "blur_sigma")
        if sigma[0] <= 0:
            raise ValueError(f"blur_sigma must be positive, got {self.blur_sigma!r}.")
        try:
            jitter = tuple(float(v) for v in self.jitter)
        except (TypeError, ValueError):
            raise ValueError(f"jitter must be 4 numbers (brightness, contrast, saturation, hue), got "
                             f"{self.jitter!r}.") from None
        if len(jitter) != 4 or not all(math.isfinite(v) and v >= 0 for v in jitter):
            raise ValueError(f"jitter must be 4 finite numbers >= 0 (brightness, contrast, saturation, hue), got "
                             f"{self.jitter!r}.")
        if jitter[3] > 0.5:
            raise ValueError(f"jitter hue must be in [0, 0.5] (a fraction of a full turn), got {jitter[3]!r}.")
        for name in ("hflip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p", "solarize_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
        for name, value in (("crop_scale", scale), ("crop_ratio", ratio), ("jitter", jitter), ("blur_sigma", sigma)):
            object.__setattr__(self, name, value)  # normalise lists etc. to float tuples

    @property
    def jitter_on(self) -> bool:
        """Whether the colour jitter does anything (p > 0 and some strength > 0)."""
        return self.jitter_p > 0 and any(v > 0 for v in self.jitter)


def blur_kernel_size(image_size: int) -> int:
    """Odd Gaussian kernel size for an output of ``image_size`` px: ~10% of the side, at least 3."""
    return max(3, int(0.1 * image_size) // 2 * 2 + 1)


def _check_size(image_size) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}.")


def _simclr(image_size: int) -> tuple[AugmentConfig, AugmentConfig]:
    view = AugmentConfig(blur_p=0.5 if image_size > 64 else 0.0)
    return view, view


def _byol(image_size: int) -> tuple[AugmentConfig, AugmentConfig]:
    common = dict(crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, grayscale_p=0.2)
    return (AugmentConfig(**common, blur_p=1.0, solarize_p=0.0),
            AugmentConfig(**common, blur_p=0.1, solarize_p=0.2))


def _grayscale(image_size: int) -> tuple[AugmentConfig, AugmentConfig]:
    view = AugmentConfig(crop_scale=(0.2, 1.0), hflip_p=0.0, jitter=(0.4, 0.4, 0.0, 0.0), jitter_p=0.8,
                         grayscale_p=0.0, blur_p=0.5 if image_size > 64 else 0.0)
    return view, view


def _none(image_size: int) -> tuple[AugmentConfig, AugmentConfig]:
    view = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=0.0, jitter=(0.0, 0.0, 0.0, 0.0),
                         jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
    return view, view


PRESETS: dict[str, Callable[[int], tuple[AugmentConfig, AugmentConfig]]] = {
    "simclr": _simclr,
    "byol": _byol,
    "grayscale": _grayscale,
    "none": _none,
}
"""Named two-view recipes, ``name -> f(image_size) -> (view1, view2)``:

- "simclr" (Chen et al. 2020; the recipe this project always used): both views crop area 0.2-1, aspect 3/4-4/3,
  flip 0.5, jitter (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale 0.2, blur p 0.5 with sigma 0.1-2 only above 64 px
  (blur destroys most of a 32 px image), no solarize.
- "byol" (Grill et al. 2020, asymmetric): crop area 0.08-1 (BYOL's published value), aspect 3/4-4/3, flip 0.5,
  jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale 0.2, sigma 0.1-2; view 1 blur p 1.0 and no solarize, view 2
  blur p 0.1 and solarize p 0.2 at 0.5. Blur is used at every size, as published.
- "grayscale" (digits, scans, medical images): crop area 0.2-1, aspect 3/4-4/3, brightness/contrast jitter 0.4
  with p 0.8, no saturation/hue jitter, no grayscale op, no solarize, blur as "simclr" (only above 64 px), and NO
  horizontal flip: mirrored digits and letters are different or invalid symbols and mirrored scans swap anatomical
  left and right, so flip invariance would be a wrong prior. For mirror-symmetric data (e.g. Fashion-MNIST) use
  ``dataclasses.replace(view, hflip_p=0.5)``.
- "none": resize only (crop area 1, aspect 1: the central square of a non-square image, resized; no other op).
"""


def augment_preset(name: str, image_size: int) -> tuple[AugmentConfig, AugmentConfig]:
    """The two views' ``AugmentConfig`` of a named recipe (see ``PRESETS``) for outputs of ``image_size`` px."""
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}; choose one of {sorted(PRESETS)}.")
    _check_size(image_size)
    return PRESETS[name](image_size)


def augment_views(preset: str, image_size: int, overrides: dict | None = None) -> tuple[AugmentConfig, AugmentConfig]:
    """``augment_preset(preset, image_size)`` with ``overrides`` (``AugmentConfig`` fields: the recipes'
    ``--augment_kwargs``) applied to both views, each value checked by ``AugmentConfig``; an unknown key is a
    ``ValueError`` listing the valid ones."""
    overrides = overrides or {}
    names = [f.name for f in fields(AugmentConfig)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"--augment_kwargs has unknown transform keys {unknown}; valid keys: {', '.join(names)}")
    return tuple(replace(v, **overrides) for v in augment_preset(preset, image_size))


def _check_views(views) -> tuple[AugmentConfig, AugmentConfig]:
    if (not isinstance(views, (tuple, list)) or len(views) != 2
            or not all(isinstance(v, AugmentConfig) for v in views)):
        raise ValueError(f"views must be a pair of AugmentConfig (e.g. augment_preset('simclr', size)), got "
                         f"{views!r}.")
    return views[0], views[1]


def _check_mean_std(mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
        raise ValueError(f"mean and std must be 3 numbers each with std > 0, got mean={mean} std={std}.")
    return mean, std


def pil_view_transform(view: AugmentConfig, image_size: int, *, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """One view's torchvision v2 pipeline on a PIL RGB image -> (3, image_size, image_size) float32.

    Ops whose probability is 0 are left out, so that the draws from torch's global RNG (and with them the output for
    a given ``torch.manual_seed``) are exactly those of the pipeline that never had them.
    """
    _check_size(image_size)
    ops = [v2.RandomResizedCrop(image_size, scale=view.crop_scale, ratio=view.crop_ratio, antialias=True)]
    if view.hflip_p > 0:
        ops.append(v2.RandomHorizontalFlip(p=view.hflip_p))
    if view.jitter_on:
        ops.append(v2.RandomApply([v2.ColorJitter(*view.jitter)], p=view.jitter_p))
    if view.grayscale_p > 0:
        ops.append(v2.RandomGrayscale(p=view.grayscale_p))
    if view.blur_p > 0:
        ops.append(v2.RandomApply([v2.GaussianBlur(blur_kernel_size(image_size), sigma=view.blur_sigma)],
                                  p=view.blur_p))
    if view.solarize_p > 0:  # PIL compares uint8 values: x >= 255 * t, the same pixels as x / 255 >= t
        ops.append(v2.RandomSolarize(255 * view.solarize_threshold, p=view.solarize_p))
    ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)


class TwoViewTransform:
    """Two augmented views of one PIL image, per sample in the data loader (torchvision v2 on PIL).

    Args:
        image_size: Output side in pixels (>= 8).
        mean, std: Per-channel normalisation.
        views: The two views' ``AugmentConfig``; default ``augment_preset("simclr", image_size)``, which reproduces
            the project's original SimCLR transform op for op (same RNG draws, same output for a given seed).

    The ops run on the PIL image and convert to a tensor last (measured at 32 px: 670 µs per pair vs 1170 µs with
    uint8-tensor ops).

    Returns:
        Two (3, image_size, image_size) float32 tensors.
    """

    def __init__(self, image_size: int, *, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 views: tuple[AugmentConfig, AugmentConfig] | None = None) -> None:
        _check_size(image_size)
        mean, std = _check_mean_std(mean, std)
        self.views = _check_views(augment_preset("simclr", image_size) if views is None else views)
        self.transforms = tuple(pil_view_transform(v, image_size, mean=mean, std=std) for v in self.views)
        self.decode_need = views_need(image_size, self.views)  # both views' crops: the loader's JPEG decode size

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transforms[0](image), self.transforms[1](image)


@dataclass(frozen=True)
class Preprocessing:
    """What a model's inputs are, in one place: the side in pixels, the per-channel normalisation and the resize
    interpolation of evaluation. A recipe builds it once from its config and writes it into the model's timm
    ``data_config`` (exported as ``pretrained_cfg``); everything downstream (eval loaders, probes, the linear-probe
    recipe) reads it back from there with ``from_data_config``.
    """

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = EVAL_INTERPOLATION

    def data_config(self) -> dict:
        """timm's data-config keys for these inputs (crop_pct 1: resize the short side, centre crop)."""
        return {"input_size": (3, self.image_size, self.image_size), "mean": tuple(self.mean),
                "std": tuple(self.std), "crop_pct": 1.0, "crop_mode": "center", "interpolation": self.interpolation}

    @classmethod
    def from_data_config(cls, config: dict) -> Preprocessing:
        """The preprocessing a timm data config (a model's ``data_config`` / ``pretrained_cfg``) describes."""
        return cls(int(config["input_size"][-1]), tuple(config["mean"]), tuple(config["std"]),
                   config.get("interpolation") or EVAL_INTERPOLATION)

    def eval_transform(self, *, normalize: bool = True) -> EvalTransform:
        """The deterministic evaluation transform (resize, centre crop, normalise) of these inputs; with
        ``normalize=False`` it stops at the resized uint8 image and ``EvalTransform.normalize`` finishes it."""
        return EvalTransform(self.image_size, mean=self.mean, std=self.std, interpolation=self.interpolation,
                             normalize=normalize)


class EvalTransform:
    """Deterministic evaluation preprocessing: resize the short side, centre crop, normalise (crop_pct = 1).

    ``normalize=False`` stops before the normalisation: (3, S, S) uint8, a quarter of the float32 image's bytes, for
    images kept and reused (``probe.OnlineKnn``). ``normalize`` then finishes a batch of them anywhere (the model's
    device) with the same operations, so the result equals the one-step transform's exactly.
    """

    def __init__(self, image_size: int, *, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 interpolation: str = EVAL_INTERPOLATION, normalize: bool = True) -> None:
        mode = v2.InterpolationMode(interpolation)
        self.resize = v2.Compose([v2.ToImage(), v2.Resize(image_size, interpolation=mode, antialias=True),
                                  v2.CenterCrop(image_size)])
        self.mean, self.std, self.normalized = list(mean), list(std), normalize

    def __call__(self, image: Image.Image) -> torch.Tensor:
        resized = self.resize(image).as_subclass(torch.Tensor)
        return self.normalize(resized) if self.normalized else resized

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (..., 3, S, S) -> float32 in [0, 1], normalised by the mean and std."""
        return v2.functional.normalize(v2.functional.to_dtype(images, torch.float32, scale=True), self.mean, self.std)


def _hue_matrices(hue: torch.Tensor) -> torch.Tensor:
    """(n,) hue shifts (fractions of a turn) -> (n, 3, 3) rotations of RGB about the gray axis (1, 1, 1)/sqrt(3)."""
    theta = 2 * math.pi * hue
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    eye = torch.eye(3, dtype=hue.dtype, device=hue.device)
    k = torch.full((3,), 1 / math.sqrt(3), dtype=hue.dtype, device=hue.device)
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], dtype=hue.dtype,
                         device=hue.device) / math.sqrt(3)
    return cos * eye + sin * cross + (1 - cos) * torch.outer(k, k)  # Rodrigues' formula


def _on_samples(mask: torch.Tensor, op: Callable[[torch.Tensor, dict], torch.Tensor], x: torch.Tensor,
                params: dict[str, torch.Tensor], keys: tuple[str, ...] = ()) -> torch.Tensor:
    """``op(x, params)`` for the samples where ``mask`` (B,) is set, ``x`` elsewhere; ``op`` works sample by sample
    and reads only ``params[k]`` for k in ``keys`` (the only ones indexed for the chosen samples).

    On an accelerator ``op`` runs on every sample and ``torch.where`` selects: indexing the chosen samples needs
    ``nonzero``, which waits for the device (a host sync) every step. On the CPU there is nothing to wait for, so
    ``op`` runs on the chosen samples only (half the blur work at p=0.5), written back into ``x`` in place.
    """
    if x.device.type != "cpu":
        return torch.where(mask.view(-1, *([1] * (x.ndim - 1))), op(x, params), x)
    chosen = mask.nonzero().squeeze(1)
    if chosen.numel() == 0:
        return x
    if chosen.numel() == x.shape[0]:
        return op(x, params)
    x = x.contiguous()  # our own tensor (a gray batch may be an expanded view): written in place
    x[chosen] = op(x[chosen], {k: params[k][chosen] for k in keys})
    return x


class DeviceAugment(nn.Module):
    """Batched two-view augmentation on the batch's own device, per-sample random parameters from a generator.

    Args:
        image_size: Output side S in pixels (>= 8).
        mean, std: Per-channel normalisation of the (3-channel) output.
        views: The two views' ``AugmentConfig``; default ``augment_preset("simclr", image_size)``.

    ``forward(batch, generator)``: uint8 (B, C, H, W), C in {1, 3}, on any device -> two float32 normalised views
    (B, 3, S, S) on that device. Parameters are drawn from ``generator`` (view 1's, then view 2's), so the same
    generator state gives identical output; a CPU generator gives the same parameters whatever the batch's device.
    ``sample_params`` / ``apply`` split a view into drawing and applying (see the module docstring for how the ops
    differ from the PIL path).
    """

    def __init__(self, image_size: int, *, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 views: tuple[AugmentConfig, AugmentConfig] | None = None) -> None:
        super().__init__()
        _check_size(image_size)
        mean, std = _check_mean_std(mean, std)
        self.image_size = image_size
        self.views = _check_views(augment_preset("simclr", image_size) if views is None else views)
        self.blur_kernel = blur_kernel_size(image_size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("gray_weights", torch.tensor(GRAY_WEIGHTS), persistent=False)

    @staticmethod
    def _check_batch(batch: torch.Tensor) -> None:
        if not isinstance(batch, torch.Tensor) or batch.dtype != torch.uint8 or batch.ndim != 4 \
                or batch.shape[1] not in (1, 3):
            raise ValueError(f"batch must be a uint8 tensor (B, C, H, W) with C in {{1, 3}}, got "
                             f"{getattr(batch, 'dtype', type(batch))} {tuple(getattr(batch, 'shape', ()))}.")

    def forward(self, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, C, H, W) -> two float32 (B, 3, S, S) views; view 1's parameters are drawn first."""
        self._check_batch(batch)
        params = [self.sample_params(batch, generator, view=v) for v in (0, 1)]
        return self.apply(batch, params[0], view=0), self.apply(batch, params[1], view=1)

    def sample_params(self, batch: torch.Tensor, generator: torch.Generator, view: int = 0) -> dict[str, torch.Tensor]:
        """Per-sample random parameters of one view, on the batch's device.

        Always draws the same numbers from ``generator`` (one (B, 36) uniform tensor on the generator's device)
        whatever the config, so two configs fed the same seed share crops, factors and coin flips.

        Returns:
            ``crop_box`` (B, 4) long (top, left, height, width) in input pixels; ``crop_scale``, ``crop_ratio`` (B,)
            the accepted area fraction and aspect w/h draws (the box's own values where all tries failed and the
            central fallback was used, marked by ``crop_fallback`` (B,) bool); ``flip``, ``jitter``, ``grayscale``,
            ``blur``, ``solarize`` (B,) bool; ``brightness``, ``contrast``, ``saturation`` (B,) factors, ``hue``
            (B,) shift in turns; ``jitter_order`` (B, 4) long, a permutation of 0..3 (brightness, contrast,
            saturation, hue); ``blur_sigma`` (B,).
        """
        self._check_batch(batch)
        cfg = self.views[view]
        b, _, h_in, w_in = batch.shape
        t = _CROP_TRIES
        u = torch.rand(b, 2 * t + 16, generator=generator, device=generator.device, dtype=torch.float64)
        if u.device != batch.device:  # a CPU generator feeding a GPU batch: pinned, so the copy does not block
            u = (u.pin_memory() if batch.device.type == "cuda" else u).to(batch.device, non_blocking=True)
        u_scale, u_ratio, u_pos = u[:, :t], u[:, t:2 * t], u[:, 2 * t:2 * t + 2]
        u_flip, u_jit, u_fac, u_ord, u_gray, u_blur, u_sig, u_sol = (
            u[:, 2 * t + 2], u[:, 2 * t + 3], u[:, 2 * t + 4:2 * t + 8], u[:, 2 * t + 8:2 * t + 12], u[:, 2 * t + 12],
            u[:, 2 * t + 13], u[:, 2 * t + 14], u[:, 2 * t + 15])

        # RandomResizedCrop.get_params, vectorised over samples and tries
        area = h_in * w_in
        s_lo, s_hi = cfg.crop_scale
        lr_lo, lr_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
        scale = s_lo + (s_hi - s_lo) * u_scale
        ratio = torch.exp(lr_lo + (lr_hi - lr_lo) * u_ratio)
        w = torch.round(torch.sqrt(area * scale * ratio))
        h = torch.round(torch.sqrt(area * scale / ratio))
        ok = (w > 0) & (w <= w_in) & (h > 0) & (h <= h_in)
        first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # first accepted try (0 if none)
        found = ok.any(dim=1)
        w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
        scale, ratio = scale.gather(1, first)[:, 0], ratio.gather(1, first)[:, 0]
        in_ratio = w_in / h_in
        if in_ratio < cfg.crop_ratio[0]:
            fw, fh = w_in, int(round(w_in / cfg.crop_ratio[0]))
        elif in_ratio > cfg.crop_ratio[1]:
            fw, fh = int(round(h_in * cfg.crop_ratio[1])), h_in
        else:
            fw, fh = w_in, h_in
        w = torch.where(found, w, torch.full_like(w, fw))
        h = torch.where(found, h, torch.full_like(h, fh))
        scale = torch.where(found, scale, w * h / area)
        ratio = torch.where(found, ratio, w / h)
        top = torch.where(found, torch.floor(u_pos[:, 0] * (h_in - h + 1)).clamp(max=h_in - h), (h_in - h) // 2)
        left = torch.where(found, torch.floor(u_pos[:, 1] * (w_in - w + 1)).clamp(max=w_in - w), (w_in - w) // 2)

        def factor(strength: float, uniform: torch.Tensor) -> torch.Tensor:
            lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
            return (lo + (hi - lo) * uniform).float()

        return {
            "crop_box": torch.stack([top, left, h, w], dim=1).long(),
            "crop_scale": scale.float(),
            "crop_ratio": ratio.float(),
            "crop_fallback": ~found,
            "flip": u_flip < cfg.hflip_p,
            "jitter": (u_jit < cfg.jitter_p) & cfg.jitter_on,
            "brightness": factor(cfg.jitter[0], u_fac[:, 0]),
            "contrast": factor(cfg.jitter[1], u_fac[:, 1]),
            "saturation": factor(cfg.jitter[2], u_fac[:, 2]),
            "hue": (cfg.jitter[3] * (2 * u_fac[:, 3] - 1)).float(),
            "jitter_order": u_ord.argsort(dim=1),
            "grayscale": u_gray < cfg.grayscale_p,
            "blur": u_blur < cfg.blur_p,
            "blur_sigma": (cfg.blur_sigma[0] + (cfg.blur_sigma[1] - cfg.blur_sigma[0]) * u_sig).float(),
            "solarize": u_sol < cfg.solarize_p,
        }

    def apply(self, batch: torch.Tensor, params: dict[str, torch.Tensor], view: int = 0) -> torch.Tensor:
        """Apply one view's ``params`` (from ``sample_params``) to uint8 (B, C, H, W) -> float32 (B, 3, S, S).

        On the CPU the batch goes through in groups of a few samples whose float views fit in the core's cache
        (``CPU_GROUP_BYTES``): every op is a pass over memory, and a whole 224 px batch does not fit (2.2x faster
        than the whole batch at once at 224 px, 1 thread). The output is the same up to float rounding (bit for bit
        at 32 px; the blur's grouped convolution may round differently for another number of samples).
        """
        self._check_batch(batch)
        params = {k: v.to(batch.device) for k, v in params.items()}
        group = max(1, CPU_GROUP_BYTES // (4 * 3 * self.image_size ** 2))
        # float32 whatever the caller's autocast (the recipe draws batches inside it): the blur's convolutions and
        # the grayscale's einsum are on autocast's bf16 list
        with torch.autocast(batch.device.type, enabled=False):
            if batch.device.type != "cpu" or batch.shape[0] <= group:
                return self._one_group(batch, params, view)
            out = batch.new_empty((batch.shape[0], 3, self.image_size, self.image_size), dtype=torch.float32)
            for i in range(0, batch.shape[0], group):  # each group normalised straight into its rows: no final cat
                self._one_group(batch[i:i + group], {k: v[i:i + group] for k, v in params.items()}, view,
                                out=out[i:i + group])
            return out

    def _one_group(self, batch: torch.Tensor, params: dict[str, torch.Tensor], view: int,
                   out: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.views[view]
        device = batch.device
        x = self._crop_flip(batch.float(), params).mul_(1 / 255)  # the crop is linear: scale after it
        if cfg.jitter_on:
            x = _on_samples(params["jitter"], self._jitter, x, params, JITTER_KEYS)
        if x.shape[1] == 3 and cfg.grayscale_p > 0:
            x = _on_samples(params["grayscale"], self._grayscale, x, params)
        if cfg.blur_p > 0:
            x = _on_samples(params["blur"], self._blur, x, params, ("blur_sigma",))
        if cfg.solarize_p > 0:
            threshold = cfg.solarize_threshold
            x = _on_samples(params["solarize"], lambda xs, _: torch.where(xs >= threshold, 1 - xs, xs), x, params)
        inv_std = 1 / self.std.to(device)
        return torch.addcmul(-self.mean.to(device) * inv_std, x, inv_std, out=out)  # (x - mean) / std; gray -> RGB

    def _crop_flip(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Crop boxes + flips as one sampling grid: output pixel k reads input x = left + (k + 0.5) w / S - 0.5.

        The grid is ``affine_grid`` of theta = [[±w/W, 0, cx], [0, h/H, cy]] (normalised, align_corners=False),
        built by broadcasting because ``affine_grid``'s batched matmul costs more than the sampling at 32 px.
        """
        b, _, h_in, w_in = x.shape
        top, left, h, w = params["crop_box"].to(torch.float32).unbind(1)
        sign = 1 - 2 * params["flip"].to(torch.float32)
        size = self.image_size
        base = torch.arange(size, device=x.device, dtype=torch.float32).add_(0.5).mul_(2 / size).sub_(1)  # (S,)
        gx = (sign * w / w_in)[:, None] * base + ((2 * left + w) / w_in - 1)[:, None]  # (B, S)
        gy = (h / h_in)[:, None] * base + ((2 * top + h) / h_in - 1)[:, None]  # (B, S)
        grid = torch.stack([gx[:, None, :].expand(b, size, size), gy[:, :, None].expand(b, size, size)], dim=-1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _grayscale(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """RGB -> its luma in all three channels."""
        gray = torch.einsum("c,nchw->nhw", self.gray_weights.to(x.device), x)
        return gray[:, None].expand(-1, 3, -1, -1)

    def _jitter(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Brightness, contrast, saturation, hue in each sample's order; each op an affine RGB map, then clamp."""
        xs = x
        n, c, hh, ww = xs.shape
        b, con, sat = params["brightness"], params["contrast"], params["saturation"]
        order = params["jitter_order"]
        eye = torch.eye(3, device=x.device)
        wg = self.gray_weights.to(x.device)
        mats = torch.stack([
            b[:, None, None] * eye,
            con[:, None, None] * eye,
            sat[:, None, None] * eye + (1 - sat)[:, None, None] * wg.expand(3, 3),
            _hue_matrices(params["hue"]),
        ], dim=1)  # (n, 4 ops, 3, 3)
        rows = torch.arange(n, device=x.device)
        for slot in range(4):
            op = order[:, slot]
            mat = mats[rows, op]
            if c == 3:
                mean_gray = xs.mean(dim=(2, 3)) @ wg
            else:
                mean_gray = xs.mean(dim=(1, 2, 3))
            offset = torch.where(op == 1, (1 - con) * mean_gray, torch.zeros_like(con))  # contrast blends to mean
            if c == 3:
                xs = torch.baddbmm(offset[:, None, None], mat, xs.reshape(n, 3, hh * ww)).view(n, 3, hh, ww)
            else:  # gray in, gray out: every row of every op's matrix has the same sum
                gain = mat[:, 0].sum(dim=1)
                xs = xs * gain[:, None, None, None] + offset[:, None, None, None]
            xs = xs.clamp_(0, 1)
        return xs

    def _blur(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Separable Gaussian blur with each sample's sigma (reflect padding, as torchvision's GaussianBlur)."""
        xs = x
        n, c, hh, ww = xs.shape
        k = self.blur_kernel
        offsets = torch.arange(k, device=x.device, dtype=torch.float32) - (k - 1) / 2
        kernel = torch.exp(-0.5 * (offsets / params["blur_sigma"][:, None]) ** 2)
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n * c, k)
        pad = k // 2
        flat = F.pad(xs.reshape(1, n * c, hh, ww), (pad, pad, pad, pad), mode="reflect")
        flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
        flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
        return flat.view(n, c, hh, ww)

