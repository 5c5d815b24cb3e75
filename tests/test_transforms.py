"""spectral_ssl.transforms: configs and presets, the PIL path against the original SimCLR recipe, and DeviceAugment
against slow per-sample references (torchvision functionals, explicit bilinear sampling), closed forms and
invariances (flip, grayscale, 1 vs 3 channels), plus the distributions of its sampled parameters."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from spectral_ssl import transforms
from spectral_ssl.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    AugmentConfig,
    DeviceAugment,
    EvalTransform,
    TwoViewTransform,
    augment_preset,
    augment_views,
    blur_kernel_size,
)

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
NONE = augment_preset("none", 32)[0]


def images(b=16, c=3, h=28, w=28, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8)


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * STD + MEAN


def run(cfg: AugmentConfig, x: torch.Tensor, seed=0, size=32, view=0):
    aug = DeviceAugment(size, views=(cfg, cfg))
    params = aug.sample_params(x, torch.Generator().manual_seed(seed), view=view)
    return aug.apply(x, params, view=view), params


# ---------------------------------------------------------------------------------------------------- configs


def test_presets_validate_and_differ_as_documented():
    assert set(PRESETS) == {"simclr", "byol", "grayscale", "none"}
    for name in PRESETS:
        for size in (32, 96):
            v1, v2_ = augment_preset(name, size)
            assert isinstance(v1, AugmentConfig) and isinstance(v2_, AugmentConfig)
    assert augment_preset("simclr", 32)[0].blur_p == 0 and augment_preset("simclr", 96)[0].blur_p == 0.5
    assert augment_preset("simclr", 96)[0] == AugmentConfig()
    b1, b2 = augment_preset("byol", 32)
    assert (b1.blur_p, b1.solarize_p, b2.blur_p, b2.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert b1.jitter == b2.jitter == (0.4, 0.4, 0.2, 0.1) and b1.grayscale_p == 0.2 and b1.jitter_p == 0.8
    g = augment_preset("grayscale", 32)[0]
    assert g.jitter[2:] == (0.0, 0.0) and g.grayscale_p == 0 and g.hflip_p == 0 and g.crop_scale == (0.2, 1.0)
    n = augment_preset("none", 32)[0]
    assert n.crop_scale == (1, 1) and n.crop_ratio == (1, 1) and not n.jitter_on
    assert n.hflip_p == n.grayscale_p == n.blur_p == n.solarize_p == 0
    with pytest.raises(ValueError, match="preset"):
        augment_preset("moco", 32)
    with pytest.raises(ValueError, match="image_size"):
        augment_preset("simclr", 4)


def test_augment_views_apply_the_overrides_to_both_views_of_the_preset():
    assert augment_views("byol", 32) == augment_views("byol", 32, {}) == augment_preset("byol", 32)
    v1, v2_ = augment_views("byol", 32, {"blur_p": 0.3, "crop_scale": (0.5, 1.0)})
    b1, b2 = augment_preset("byol", 32)
    assert v1 == dataclasses.replace(b1, blur_p=0.3, crop_scale=(0.5, 1.0))
    assert v2_ == dataclasses.replace(b2, blur_p=0.3, crop_scale=(0.5, 1.0))
    with pytest.raises(ValueError, match=r"^--augment_kwargs has unknown transform keys \['blur', 'flip'\]; valid "
                                         r"keys: crop_scale, crop_ratio, hflip_p"):
        augment_views("simclr", 32, {"flip": 0.5, "blur": 1.0, "hflip_p": 0.0})
    with pytest.raises(ValueError, match="blur_p"):  # each value checked by AugmentConfig
        augment_views("simclr", 32, {"blur_p": 2})


@pytest.mark.parametrize("field, value", [
    ("crop_scale", (0.0, 1.0)), ("crop_scale", (0.5, 0.2)), ("crop_scale", (0.2, 1.5)), ("crop_scale", 0.5),
    ("crop_ratio", (-1.0, 1.0)), ("crop_ratio", (2.0, 1.0)), ("hflip_p", 1.5), ("jitter_p", -0.1),
    ("grayscale_p", "0.2"), ("blur_p", 2), ("solarize_p", float("nan")), ("solarize_threshold", 1.2),
    ("blur_sigma", (0.0, 2.0)), ("blur_sigma", (2.0, 1.0)), ("jitter", (0.4, 0.4, 0.4)),
    ("jitter", (0.4, -0.1, 0.4, 0.1)), ("jitter", (0.4, 0.4, 0.4, 0.6)),
])
def test_bad_config_value_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        AugmentConfig(**{field: value})


def test_bad_views_and_batches_are_rejected():
    with pytest.raises(ValueError, match="views"):
        DeviceAugment(32, views=(AugmentConfig(),))
    with pytest.raises(ValueError, match="views"):
        TwoViewTransform(32, views=({"hflip_p": 0.5}, AugmentConfig()))
    aug = DeviceAugment(32)
    for bad in (images().float(), images(c=2), images()[0]):
        with pytest.raises(ValueError, match="uint8"):
            aug(bad, torch.Generator())


# ---------------------------------------------------------------------------------------------------- PIL path


def original_simclr(image_size: int) -> v2.Compose:
    """The project's SimCLR transform as it was before this module (spectral_ssl/data.py), verbatim."""
    ops = [
        v2.RandomResizedCrop(image_size, scale=(0.2, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ]
    if image_size > 64:
        kernel = max(3, int(0.1 * image_size) // 2 * 2 + 1)
        ops.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5))
    ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD))]
    return v2.Compose(ops)


def pil_image(size=40, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [24, 72])
def test_pil_simclr_preset_reproduces_the_original_transform(size):
    image, new, old = pil_image(90), TwoViewTransform(size), original_simclr(size)
    for seed in range(4):
        torch.manual_seed(seed)
        got = new(image)
        torch.manual_seed(seed)
        want = old(image), old(image)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert not torch.equal(*got)


def test_pil_presets_give_two_normalised_views():
    for name in PRESETS:
        a, b = TwoViewTransform(32, views=augment_preset(name, 32))(pil_image())
        assert a.shape == b.shape == (3, 32, 32) and a.dtype == torch.float32
    assert EvalTransform(32)(pil_image()).shape == (3, 32, 32)


@pytest.mark.parametrize("change", [
    dict(solarize_p=1.0), dict(grayscale_p=1.0), dict(blur_p=1.0, blur_sigma=(1.3, 1.3)),
])
def test_pil_and_device_paths_agree_on_deterministic_ops(change):
    """Crop area 1 at the input's own size is the identity in both paths; the op then matches up to uint8 rounding."""
    cfg = dataclasses.replace(NONE, **change)
    x = images(4, 3, 32, 32)
    tf = TwoViewTransform(32, views=(cfg, cfg))
    want = torch.stack([tf(Image.fromarray(img.permute(1, 2, 0).numpy()))[0] for img in x])
    got, _ = run(cfg, x)
    assert (unnormalise(got) - unnormalise(want)).abs().max() <= 1.01 / 255


# ---------------------------------------------------------------------------------------------------- DeviceAugment


def test_output_shape_determinism_and_view_difference():
    x = images(8, 3)
    aug = DeviceAugment(32, views=augment_preset("byol", 32))
    a1, a2 = aug(x, torch.Generator().manual_seed(3))
    b1, b2 = aug(x, torch.Generator().manual_seed(3))
    c1, _ = aug(x, torch.Generator().manual_seed(4))
    assert a1.shape == a2.shape == (8, 3, 32, 32) and a1.dtype == torch.float32
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.allclose(a1, a2, atol=0.1) and not torch.allclose(a1, c1, atol=0.1)


def test_parameters_differ_per_sample():
    params = DeviceAugment(32).sample_params(images(64), torch.Generator().manual_seed(0))
    assert params["crop_box"].unique(dim=0).shape[0] > 32
    for key in ("brightness", "contrast", "saturation", "hue", "blur_sigma"):
        assert params[key].unique().numel() == 64, key
    for key in ("flip", "jitter", "grayscale"):
        assert 0 < params[key].sum() < 64, key
    assert params["jitter_order"].unique(dim=0).shape[0] > 8


def test_parameter_distributions_follow_the_config():
    n, cfg = 4000, AugmentConfig(crop_scale=(0.1, 0.5), blur_p=0.3, solarize_p=0.6)
    batch = torch.zeros(1, 1, 64, 64, dtype=torch.uint8).expand(n, -1, -1, -1)  # every try fits: no rejection
    p = DeviceAugment(32, views=(cfg, cfg)).sample_params(batch, torch.Generator().manual_seed(0))
    assert not p["crop_fallback"].any()

    def uniform(values, lo, hi, name):
        sd = (hi - lo) / math.sqrt(12)
        assert lo <= values.min() < lo + 0.01 * (hi - lo) and hi - 0.01 * (hi - lo) < values.max() <= hi, name
        assert abs(values.mean() - (lo + hi) / 2) < 4 * sd / math.sqrt(n), name
        assert abs(values.std() - sd) < 0.05 * sd, name
        assert abs((values < (lo + hi) / 2).float().mean() - 0.5) < 4 * 0.5 / math.sqrt(n), name

    uniform(p["crop_scale"].double(), 0.1, 0.5, "crop_scale")
    uniform(p["crop_ratio"].double().log(), math.log(3 / 4), math.log(4 / 3), "log crop_ratio")
    for key in ("brightness", "contrast", "saturation"):
        uniform(p[key].double(), 0.6, 1.4, key)
    uniform(p["hue"].double(), -0.1, 0.1, "hue")
    uniform(p["blur_sigma"].double(), 0.1, 2.0, "blur_sigma")
    top, left, h, w = p["crop_box"].unbind(1)
    area = (h * w).double() / 64**2
    assert ((area - p["crop_scale"]).abs() < (h + w + 1) / 64**2).all()  # boxes are the rounded draws
    assert ((top >= 0) & (left >= 0) & (top + h <= 64) & (left + w <= 64)).all()
    for key, prob in (("flip", 0.5), ("jitter", 0.8), ("grayscale", 0.2), ("blur", 0.3), ("solarize", 0.6)):
        assert abs(p[key].double().mean() - prob) < 4 * math.sqrt(prob * (1 - prob) / n), key
    order = p["jitter_order"]
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    counts = torch.bincount(order[:, 0], minlength=4).double() / n
    assert (counts - 0.25).abs().max() < 4 * math.sqrt(0.25 * 0.75 / n)


def test_crop_boxes_match_torchvision_get_params_in_distribution():
    """With rejection (28 px input, scale 0.2-1, aspect 3/4-4/3) against torchvision's own sampler."""
    n = 3000
    batch = torch.zeros(1, 1, 28, 28, dtype=torch.uint8).expand(n, -1, -1, -1)
    box = DeviceAugment(32).sample_params(batch, torch.Generator().manual_seed(0))["crop_box"].double()
    torch.manual_seed(0)
    ref = torch.tensor([T.RandomResizedCrop.get_params(torch.empty(1, 28, 28), [0.2, 1.0], [3 / 4, 4 / 3])
                        for _ in range(n)], dtype=torch.float64)
    for name, f in (("area", lambda b: b[:, 2] * b[:, 3] / 784), ("aspect", lambda b: b[:, 3] / b[:, 2]),
                    ("full", lambda b: (b[:, 2] * b[:, 3] == 784).double()), ("top", lambda b: b[:, 0])):
        got, want = f(box), f(ref)
        se = math.sqrt((got.var() + want.var()) / n)
        assert abs(got.mean() - want.mean()) < 4.5 * se + 1e-9, name


@pytest.mark.parametrize("h, w", [(28, 28), (40, 40)])
def test_identity_config_is_the_resized_normalised_input(h, w):
    x = images(6, 3, h, w)
    got, _ = run(NONE, x)
    want = (F.interpolate(x.float() / 255, size=(32, 32), mode="bilinear", align_corners=False) - MEAN) / STD
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def reference_crop(x: torch.Tensor, box, flip: bool, size: int) -> torch.Tensor:
    """Explicit bilinear sampling at half-pixel centres of a box, coordinates clamped to the image (float64)."""
    top, left, h, w = (int(v) for v in box)
    img = x.double() / 255
    ys = (top + (torch.arange(size, dtype=torch.float64) + 0.5) * h / size - 0.5).clamp(0, x.shape[1] - 1)
    xs = (left + (torch.arange(size, dtype=torch.float64) + 0.5) * w / size - 0.5).clamp(0, x.shape[2] - 1)
    if flip:
        xs = xs.flip(0)
    y0, x0 = ys.floor().long(), xs.floor().long()
    y1, x1 = (y0 + 1).clamp(max=x.shape[1] - 1), (x0 + 1).clamp(max=x.shape[2] - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    out = torch.empty(x.shape[0], size, size, dtype=torch.float64)
    for c in range(x.shape[0]):
        a, b = img[c][y0][:, x0], img[c][y0][:, x1]
        d, e = img[c][y1][:, x0], img[c][y1][:, x1]
        out[c] = (a * (1 - fx) + b * fx) * (1 - fy) + (d * (1 - fx) + e * fx) * fy
    return out


def test_crop_and_flip_match_explicit_bilinear_sampling():
    cfg = dataclasses.replace(NONE, crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip_p=0.5)
    x = images(12, 3, 28, 36)
    got, p = run(cfg, x)
    assert 0 < p["flip"].sum() < 12
    for i in range(12):
        want = reference_crop(x[i], p["crop_box"][i], bool(p["flip"][i]), 32)
        torch.testing.assert_close(unnormalise(got)[i].double(), want, atol=2e-5, rtol=0)


def every_sample_then_select(aug: DeviceAugment, x: torch.Tensor, params: dict, view: int = 0) -> torch.Tensor:
    """The accelerator's way, written out: each op on every sample, ``torch.where`` keeps the chosen samples."""
    cfg = aug.views[view]

    def pick(mask, new, old):
        return torch.where(mask.view(-1, 1, 1, 1), new, old)

    y = aug._crop_flip(x.float(), params).mul_(1 / 255)
    y = pick(params["jitter"], aug._jitter(y.clone(), params), y) if cfg.jitter_on else y
    y = pick(params["grayscale"], aug._grayscale(y, params), y) if x.shape[1] == 3 and cfg.grayscale_p else y
    y = pick(params["blur"], aug._blur(y, params), y) if cfg.blur_p else y
    y = pick(params["solarize"], torch.where(y >= cfg.solarize_threshold, 1 - y, y), y) if cfg.solarize_p else y
    return (y - aug.mean) / aug.std


@pytest.mark.parametrize("preset,c", [("simclr", 3), ("byol", 3), ("byol", 1), ("grayscale", 1)])
def test_cpu_runs_each_op_on_its_chosen_samples_only_with_the_same_result(preset, c):
    """On the CPU the ops run on the chosen samples only (no host sync to avoid): the output equals every op on
    every sample then selected, bit for bit up to float rounding, for every coin-flip pattern in the batch."""
    aug = DeviceAugment(96, views=augment_preset(preset, 96))
    x = images(24, c, 100, 90)
    for view in (0, 1):
        params = aug.sample_params(x, torch.Generator().manual_seed(view), view=view)
        assert 0 < params["jitter"].sum() < 24  # some chosen, some not, in one batch
        torch.testing.assert_close(aug.apply(x, params, view=view), every_sample_then_select(aug, x, params, view),
                                   atol=1e-6, rtol=0)
    for key in ("jitter", "blur"):  # none chosen, all chosen
        for value in (False, True):
            params = {**aug.sample_params(x, torch.Generator().manual_seed(5)), key: torch.full((24,), value)}
            torch.testing.assert_close(aug.apply(x, params), every_sample_then_select(aug, x, params), atol=1e-6,
                                       rtol=0)


@pytest.mark.parametrize("preset,c,size", [("simclr", 3, 96), ("byol", 1, 96), ("simclr", 1, 32)])
def test_cpu_groups_of_samples_give_the_whole_batchs_output(monkeypatch, preset, c, size):
    """On the CPU ``apply`` runs a few samples at a time (cache-sized groups): one sample per group, the default
    groups and the whole batch at once all give the same views."""
    aug = DeviceAugment(size, views=augment_preset(preset, size)).to("cpu")  # a module still: .to() works
    default = transforms.CPU_GROUP_BYTES
    x = images(2 * max(1, default // (12 * size**2)) + 3, c, size + 7, size + 3)  # 3 groups, the last one short
    params = aug.sample_params(x, torch.Generator().manual_seed(2))
    outputs = []
    for group_bytes in (1, default, 1 << 40):
        monkeypatch.setattr(transforms, "CPU_GROUP_BYTES", group_bytes)
        outputs.append(aug.apply(x, params))
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], atol=1e-6, rtol=0)


def test_flip_commutes_with_the_whole_pipeline():
    cfg = dataclasses.replace(AugmentConfig(), blur_p=0.5, solarize_p=0.5)
    x = images(16, 3)
    flipped, _ = run(dataclasses.replace(cfg, hflip_p=1.0), x)
    plain, _ = run(dataclasses.replace(cfg, hflip_p=0.0), x)
    torch.testing.assert_close(flipped, torch.flip(plain, dims=[-1]), atol=1e-5, rtol=0)


def test_grayscale_gives_equal_channels_and_one_channel_input_matches_three():
    x = images(16, 1)
    cfg = dataclasses.replace(AugmentConfig(), grayscale_p=1.0, blur_p=0.5, solarize_p=0.5)
    gray, _ = run(cfg, images(16, 3))
    g = unnormalise(gray)
    torch.testing.assert_close(g[:, 0], g[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(g[:, 0], g[:, 2], atol=1e-5, rtol=0)
    for cfg in (AugmentConfig(), augment_preset("byol", 32)[1]):
        one, _ = run(cfg, x)
        three, _ = run(cfg, x.expand(-1, 3, -1, -1))
        assert one.shape == (16, 3, 32, 32)
        torch.testing.assert_close(one, three, atol=1e-4, rtol=0)


def test_jitter_matches_torchvision_functionals_in_each_samples_order():
    """Brightness/contrast/saturation (hue off) against per-sample torchvision ops on the un-jittered crop."""
    cfg = dataclasses.replace(NONE, crop_scale=(0.3, 1.0), jitter=(0.5, 0.6, 0.7, 0.0), jitter_p=0.7)
    x = images(24, 3)
    got, p = run(cfg, x)
    crop, _ = run(dataclasses.replace(cfg, jitter_p=0.0), x)
    crop, got = unnormalise(crop), unnormalise(got)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for i in range(24):
        want = crop[i]
        if p["jitter"][i]:
            for op in p["jitter_order"][i].tolist():
                if op < 3:
                    want = ops[op](want, float(p[("brightness", "contrast", "saturation")[op]][i]))
        torch.testing.assert_close(got[i], want, atol=3e-4, rtol=0)  # gray weights 0.299 here, 0.2989 there


def test_hue_rotates_about_the_gray_axis():
    colours = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [90, 90, 90]], dtype=torch.uint8)  # R, G, B, gray
    x = colours.T[:, :, None].repeat_interleave(8, dim=1).expand(3, 32, 32).expand(2, 3, 32, 32).contiguous()
    cfg = dataclasses.replace(NONE, jitter=(0.0, 0.0, 0.0, 0.5), jitter_p=1.0)
    aug = DeviceAugment(32, views=(cfg, cfg))
    p = aug.sample_params(x, torch.Generator().manual_seed(0))
    p["hue"] = torch.tensor([1 / 3, 0.02])
    out = unnormalise(aug.apply(x, p))
    ref = x.float() / 255
    torch.testing.assert_close(out[0], ref[0].roll(1, dims=0), atol=1e-5, rtol=0)  # a third of a turn: R->G->B
    red = out[1, :, 0, 0]
    tv = TF.adjust_hue(ref[1:2, :, :1, :1], 0.02)[0, :, 0, 0]
    assert red[1] > red[2] and tv[1] > tv[2]  # a small positive shift turns red towards yellow, like torchvision
    torch.testing.assert_close(out[1, :, 24:], ref[1, :, 24:], atol=1e-5, rtol=0)  # gray is unchanged


def test_blur_matches_torchvision_gaussian_blur_per_sample():
    cfg = dataclasses.replace(NONE, blur_p=0.5)
    x = images(12, 3, 32, 32)
    got, p = run(cfg, x, size=32)
    k = blur_kernel_size(32)
    assert 0 < p["blur"].sum() < 12
    for i in range(12):
        want = x[i].float() / 255
        if p["blur"][i]:
            sigma = float(p["blur_sigma"][i])
            want = TF.gaussian_blur(want, [k, k], [sigma, sigma])
        torch.testing.assert_close(unnormalise(got)[i], want, atol=1e-5, rtol=0)


def test_solarize_inverts_above_the_threshold():
    cfg = dataclasses.replace(NONE, solarize_p=1.0, solarize_threshold=0.3)
    x = images(4, 3, 32, 32)
    got, _ = run(cfg, x)
    v = x.float() / 255
    torch.testing.assert_close(unnormalise(got), torch.where(v >= 0.3, 1 - v, v), atol=1e-5, rtol=0)


def test_preprocessing_round_trips_through_a_models_data_config():
    from spectral_ssl.transforms import Preprocessing

    prep = Preprocessing(28, (0.3, 0.3, 0.3), (0.2, 0.2, 0.2))
    config = prep.data_config()
    assert config["input_size"] == (3, 28, 28) and config["crop_pct"] == 1.0
    assert Preprocessing.from_data_config(config) == prep
    image = Image.new("RGB", (40, 30), (255, 0, 0))
    torch.testing.assert_close(prep.eval_transform()(image), EvalTransform(28, mean=prep.mean, std=prep.std)(image))


def test_eval_transform_in_two_steps_equals_torchvisions_pipeline():
    """uint8 resize + crop, then ``normalize`` on a whole batch: exactly torchvision's one-step pipeline."""
    mean, std = (0.2, 0.3, 0.4), (0.5, 0.6, 0.7)
    reference = v2.Compose([v2.ToImage(), v2.Resize(24, antialias=True), v2.CenterCrop(24),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((24, 24), (40, 31),
                                                                                              (90, 200))]
    expected = torch.stack([reference(p) for p in photos])
    whole = EvalTransform(24, mean=mean, std=std)
    resized = EvalTransform(24, mean=mean, std=std, normalize=False)
    kept = torch.stack([resized(p) for p in photos])
    assert kept.dtype == torch.uint8 and kept.shape == (3, 3, 24, 24)
    assert torch.equal(torch.stack([whole(p) for p in photos]), expected)
    assert torch.equal(whole.normalize(kept), expected) and torch.equal(resized.normalize(kept), expected)
