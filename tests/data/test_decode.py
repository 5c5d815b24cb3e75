"""spectral_ssl.data.decode / jpeg: JPEGs decoded at the size needed, checked against every crop the random resized
crop draws, full-size decodes (the pixels barely change) and the decoders' own sizes."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from spectral_ssl import decode_need, transforms
from spectral_ssl.data import decode, jpeg

BACKENDS = ["pil"] + (["simplejpeg"] if jpeg._simplejpeg() is not None else [])


def photo(width: int, height: int, seed: int = 0, quality: int = 90, mode: str = "RGB") -> bytes:
    """A smooth, textured JPEG (upsampled noise + rectangles), like a photo for a decoder."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray((rng.random((height // 16 + 2, width // 16 + 2, 3)) * 255).astype(np.uint8))
    image = np.asarray(base.resize((width, height), Image.Resampling.BICUBIC)).copy()
    for _ in range(6):
        x, y = rng.integers(0, width), rng.integers(0, height)
        image[y:y + height // 4, x:x + width // 4] = rng.integers(0, 256, 3)
    out = io.BytesIO()
    Image.fromarray(image).convert(mode).save(out, "JPEG", quality=quality)
    return out.getvalue()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("width,height", [(500, 375), (1600, 1200), (700, 2100), (900, 900)])
def test_decoded_image_is_never_smaller_than_needed_and_every_drawn_crop_stays_at_the_output_size(
        backend, width, height):
    data = photo(width, height)
    need = decode_need.views_need(224, transforms.augment_preset("simclr", 224))
    image = jpeg.decode_jpeg_at_least(data, need, backend)
    w, h = image.size
    nw, nh = need(width, height)
    assert w >= nw and h >= nh and w <= width and h <= height
    if (w, h) != (width, height):
        torch.manual_seed(0)
        boxes = [v2.RandomResizedCrop.get_params(image, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)) for _ in range(500)]
        assert min(min(bh, bw) for _, _, bh, bw in boxes) >= 224
    # the decoder took the largest reduction it offers: one step smaller would break the need
    steps = [1, 2, 4, 8] if backend == "pil" else [8 / n for n in range(8, 0, -1)]
    taken = width / w
    smaller = [f for f in steps if f > taken * 1.01]
    if smaller:
        assert math.ceil(width / smaller[0]) < nw or math.ceil(height / smaller[0]) < nh


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_side_need_gives_the_same_uint8_image_as_a_full_decode_up_to_resampling(backend):
    data = photo(1600, 1200, seed=3)
    full = decode.to_uint8(decode.decode_image(data), 224).float()
    sized_image = decode.decode_image(data, decode_need.ShortSideNeed(224), backend)
    assert min(sized_image.size) >= 224 and sized_image.size != (1600, 1200)  # it was reduced (by 4 or more)
    sized = decode.to_uint8(sized_image, 224).float()
    assert (sized - full).abs().mean() < 2.0  # of 255: DCT-domain scaling ~ an antialiased resize


def test_without_a_need_or_for_other_formats_images_decode_at_full_size(tmp_path):
    data = photo(640, 480)
    assert decode.decode_image(data).size == (640, 480)
    png = io.BytesIO()
    Image.open(io.BytesIO(data)).save(png, "PNG")
    assert decode.decode_image(png.getvalue(), decode_need.ShortSideNeed(32)).size == (640, 480)
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    by_path = decode.decode_image({"bytes": None, "path": str(path)}, decode_need.ShortSideNeed(32))
    assert by_path.mode == "RGB" and min(by_path.size) >= 32 and by_path.size[0] <= 640 // 4


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_gray_and_cmyk_jpegs_come_out_rgb_at_the_needed_size(backend, mode):
    data = photo(800, 600, mode=mode)
    image = decode.decode_image(data, decode_need.ShortSideNeed(100), backend)
    assert image.mode == "RGB" and min(image.size) >= 100 and image.size[0] < 800


def test_a_corrupt_jpeg_raises_a_decode_error_with_either_backend():
    data = photo(400, 300)[:200]
    for backend in BACKENDS:
        with pytest.raises(decode.DECODE_ERRORS):
            decode.decode_image(data, decode_need.ShortSideNeed(64), backend)


def test_a_row_without_an_image_or_with_another_type_is_a_value_error_saying_what_it_holds(tmp_path):
    for missing in (None, {"bytes": None, "path": None}):
        with pytest.raises(ValueError, match=r"^the row has no image \(None\)$"):
            decode.decode_image(missing)
    for other in (42, {"bytes": 3, "path": None}, [b"x"]):
        with pytest.raises(ValueError, match=r"^the image is a (int|dict|list) .*not an image file's bytes"):
            decode.decode_image(other)
    path = tmp_path / "a.png"
    Image.new("RGB", (5, 3), (1, 2, 3)).save(path)
    for value in (str(path), path, {"bytes": None, "path": str(path)}, path.read_bytes()):
        assert np.asarray(decode.decode_image(value)).tolist() == [[[1, 2, 3]] * 5] * 3


@pytest.mark.parametrize("need", [None, decode_need.ShortSideNeed(16)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_decompression_bomb_is_a_decode_error_and_a_large_image_a_warning_with_every_backend(monkeypatch, backend,
                                                                                              need):
    png = io.BytesIO()
    Image.new("RGB", (64, 48)).save(png, "PNG")
    for data in (photo(64, 48), png.getvalue()):  # 3072 pixels
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # an error over 2000 pixels
        with pytest.raises(decode.DECODE_ERRORS) as error:
            decode.decode_image(data, need, backend)
        assert error.type is Image.DecompressionBombError
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # a warning over 2000 pixels, an error over 4000
        with pytest.warns(Image.DecompressionBombWarning):
            assert min(decode.decode_image(data, need, backend).size) >= 16


def test_simplejpeg_backend_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(jpeg, "_simplejpeg", lambda: None)
    assert jpeg.jpeg_backend("auto") == "pil"
    with pytest.raises(ImportError, match=r"spectral_ssl\[jpeg\]"):
        jpeg.jpeg_backend("simplejpeg")
    assert decode.decode_image(photo(800, 600), decode_need.ShortSideNeed(100)).size == (200, 150)  # PIL's draft: 1/4


def test_to_uint8_crops_the_centre_square_before_resizing():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8))
    out = decode.to_uint8(image, 30)
    slow = image.crop((15, 0, 75, 60)).resize((30, 30), Image.Resampling.BILINEAR)  # the obvious way
    slow = torch.from_numpy(np.array(slow)).permute(2, 0, 1)
    # equal away from the edges (the box resize's filter also reads the pixels just outside the square)
    assert out.shape == (3, 30, 30) and torch.equal(out[:, 1:-1, 1:-1], slow[:, 1:-1, 1:-1])
    same = Image.fromarray(np.zeros((30, 30, 3), np.uint8))
    assert torch.equal(decode.to_uint8(same, 30), torch.zeros(3, 30, 30, dtype=torch.uint8))


def test_transforms_declare_what_they_need():
    assert decode.decode_need_of(decode.Uint8Transform(64)) == decode_need.ShortSideNeed(64)
    views = transforms.augment_preset("byol", 96)
    need = decode.decode_need_of(transforms.TwoViewTransform(96, views=views))
    assert need == decode_need.CropNeed(96, (0.08, 1.0), (3 / 4, 4 / 3))
    assert decode.decode_need_of(transforms.EvalTransform(64)) is None


def test_batched_decode_on_the_cpu_matches_the_loader_decode():
    datas = [photo(320, 240, seed=1), photo(200, 260, seed=2), photo(64, 64, seed=3)]
    batch = jpeg.decode_jpeg_batch([torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas], 64, "cpu")
    assert batch.shape == (3, 3, 64, 64) and batch.dtype == torch.uint8
    for got, data in zip(batch, datas):
        want = decode.to_uint8(decode.decode_image(data), 64)
        assert (got.float() - want.float()).abs().mean() < 3.0  # torch's vs PIL's antialiased bilinear
    with pytest.raises(ValueError, match="at least one image"):
        jpeg.decode_jpeg_batch([], 64, "cpu")


def test_loader_decodes_at_the_needed_size_unless_asked_for_full_size(tmp_path, monkeypatch):
    from spectral_ssl import data

    for i in range(4):
        (tmp_path / "train" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / f"c{i % 2}" / f"{i}.jpg").write_bytes(photo(640, 480, seed=i))
    images = data.load_images(str(tmp_path), "train", streaming=False)
    sizes = []
    real = decode.to_uint8
    monkeypatch.setattr(decode, "to_uint8", lambda image, size: sizes.append(image.size) or real(image, size))
    out = {}
    for mode in ("cpu", "full"):
        loader = data.make_loader(images, decode.Uint8Transform(48), batch_size=4, collate="eval", shuffle=False,
                                  decode=mode)
        out[mode] = next(iter(loader))["image"].float()
    assert sizes[:4] == [(80, 60)] * 4 and sizes[4:] == [(640, 480)] * 4  # 1/8: the short side stays >= 48
    assert (out["cpu"] - out["full"]).abs().mean() < 3.0  # of 255
    with pytest.raises(ValueError, match="decode must be"):
        data.make_loader(images, decode.Uint8Transform(48), batch_size=4, decode="gpu")


def test_decode_key_is_documented_and_device_without_cuda_is_one_line_naming_it(monkeypatch, capsys):
    from spectral_ssl.config import ConfigError, PretrainConfig, parse_config

    assert parse_config(PretrainConfig, []).data.decode == "auto"
    assert parse_config(PretrainConfig, ["--decode=cpu"]).data.decode == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv, fix in ((["--decode=device"], "--decode=cpu"), (["--decode=gpu"], "auto | cpu | device"),
                      (["--decode=device", "--augment_on=loader"], "--augment_on=device")):
        with pytest.raises(ConfigError) as e:
            parse_config(PretrainConfig, argv)
        assert str(e.value).startswith("--decode") and fix in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SystemExit):
        parse_config(PretrainConfig, ["--help"])
    assert "--decode {auto,cpu,device}" in capsys.readouterr().out


def jpeg_folder(root, n=6, png_every=3, size=(96, 72)):
    """An image folder (train split, two classes) of photo JPEGs with every ``png_every``-th image a PNG."""
    for i in range(n):
        folder = root / "train" / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        data = photo(*size, seed=i)
        if i % png_every == png_every - 1:
            out = io.BytesIO()
            Image.open(io.BytesIO(data)).save(out, "PNG")
            (folder / f"{i}.png").write_bytes(out.getvalue())
        else:
            (folder / f"{i}.jpg").write_bytes(data)
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_device_decode_path_on_the_cpu_gives_the_loader_decodes_batch(tmp_path, workers):
    from spectral_ssl import data

    images = data.load_images(str(jpeg_folder(tmp_path)), "train", streaming=False)
    common = dict(batch_size=6, collate="eval", shuffle=False, num_workers=workers)
    on_cpu = next(iter(data.make_loader(images, decode.Uint8Transform(32), **common)))
    passed = next(iter(data.make_loader(images, decode.Uint8Transform(32, jpeg_on_device=True), **common)))
    assert torch.equal(passed["idx"], on_cpu["idx"]) and isinstance(passed["image"], list)
    kinds = [tuple(image.shape) if image.ndim == 3 else "file" for image in passed["image"]]
    assert kinds.count((3, 32, 32)) == 2 and kinds.count("file") == 4  # PNGs decoded in the loader, JPEGs passed
    batch = jpeg.decode_jpeg_batch(passed["image"], 32, "cpu")
    assert batch.shape == on_cpu["image"].shape and batch.dtype == torch.uint8
    assert (batch.float() - on_cpu["image"].float()).abs().mean() < 4.0  # libjpeg full decode + torch resize


def test_auto_decodes_on_the_device_only_for_jpeg_sources_on_a_gpu(tmp_path):
    from spectral_ssl import data

    jpegs = data.load_images(str(jpeg_folder(tmp_path / "j", png_every=99)), "train", streaming=False)
    pngs = data.load_images(str(jpeg_folder(tmp_path / "p", png_every=1)), "train", streaming=False)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert jpeg.decode_on_device("auto", cuda, jpegs) and not jpeg.decode_on_device("auto", cpu, jpegs)
    assert not jpeg.decode_on_device("auto", cuda, pngs)
    assert not jpeg.decode_on_device("auto", cuda, jpegs, skip_corrupt=True)  # one batched decode cannot skip a row
    assert jpeg.decode_on_device("device", cpu, pngs) and not jpeg.decode_on_device("cpu", cuda, jpegs)
    with pytest.raises(ValueError, match="auto, cpu or device"):
        jpeg.decode_on_device("gpu", cuda, jpegs)
    assert jpeg.undecoded_jpeg(photo(16, 16))[:3] == jpeg.JPEG_MAGIC and jpeg.undecoded_jpeg(b"\x89PNG....") is None


def test_device_decode_cannot_skip_corrupt_rows():
    from spectral_ssl.config import ConfigError, PretrainConfig, parse_config

    with pytest.raises(ConfigError, match=r"^--decode set to device cannot skip undecodable rows.*--decode=cpu"):
        parse_config(PretrainConfig, ["--decode=device", "--skip_corrupt=true"])


def test_recipe_trains_with_jpegs_decoded_by_the_batched_decoder(tmp_path, monkeypatch):
    """The recipe's decode=device wiring, run on the CPU: decode_on_device forced on, decode_jpeg_batch on the CPU."""
    from tests.conftest import ROOT, load_module

    pretrain = load_module(ROOT / "recipes" / "pretrain.py", "recipe_pretrain_jpeg")
    calls = []
    real = jpeg.decode_jpeg_batch
    monkeypatch.setattr(jpeg, "decode_on_device", lambda *a, **k: True)
    monkeypatch.setattr(jpeg, "decode_jpeg_batch", lambda *a: calls.append(len(a[0])) or real(*a))
    folder = jpeg_folder(tmp_path / "data", n=16, png_every=5, size=(80, 60))
    out = pretrain.main(["--dataset", str(folder), "--eval_split=train", f"--output_dir={tmp_path / 'run'}",
                         "--backbone=test_resnet", "--proj_hidden_dim=32", "--proj_dim=16", "--batch_size=8",
                         "--image_size=32", "--max_steps=2", "--log_every=1", "--reff_samples=8",
                         "--cache_decoded=off", "--save_every=null", "--label_column=null"])
    assert calls and all(n == 8 for n in calls) and (out / "model.safetensors").is_file()
