import json
import subprocess
import sys

import pytest
import timm
import torch

from spectral_ssl import SpectralSSL
from spectral_ssl.model import create_backbone


@pytest.fixture(scope="module")
def trained_like():
    """A tiny model with non-default weights, metadata and training preprocessing."""
    torch.manual_seed(0)
    model = SpectralSSL("test_resnet", proj_hidden_dim=32, proj_dim=16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.data_config.update(input_size=(3, 32, 32), mean=(0.3, 0.3, 0.3), std=(0.35, 0.35, 0.35), crop_pct=1.0,
                             interpolation="bilinear")
    model.metadata = {"loss": "infonce", "selection": "random", "whitening": "none", "dataset": "synthetic",
                      "steps": 3, "effective_rank": {"value": 5.5, "estimator": "cov", "n_samples": 64, "dim": 96,
                                                     "centered": True, "eps": 1e-12}}
    return model.eval()


def test_shapes_embed_and_forward(trained_like):
    x = torch.randn(4, 3, 32, 32)
    assert trained_like.embed(x).shape == (4, 96)
    assert trained_like(x).shape == (4, 16)
    assert trained_like.num_features == 96


def test_unknown_backbone_suggests_close_matches():
    with pytest.raises(ValueError, match="Did you mean.*resnet18"):
        SpectralSSL("resnet_18")


def test_bad_backbone_kwarg_and_num_classes_are_rejected():
    with pytest.raises(ValueError, match="rejected backbone_kwargs"):
        create_backbone("test_resnet", {"not_a_kwarg": 1})
    with pytest.raises(ValueError, match="num_classes"):
        create_backbone("test_resnet", {"num_classes": 10})
    with pytest.raises(ValueError, match="proj_dim"):
        SpectralSSL("test_resnet", proj_dim=0)


@pytest.mark.parametrize("name,kwargs,fragment", [
    ("test_resnet", {"global_pool": "foo"}, r"\(AssertionError: Invalid pool type: foo\); fix the offending value"),
    ("test_vit", {"global_pool": "foo"}, r"\(AssertionError: Only avg, .*\); fix the offending value"),
    ("test_resnet", {"features_only": True}, "must not set features_only: pretraining needs the pooled feature"),
    ("test_resnet", {"features_only": True, "out_indices": (1, 2)}, "must not set features_only, out_indices"),
])
def test_bad_backbone_kwarg_values_are_one_line(name, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment) as e:  # timm asserts on values; features_only returns maps
        SpectralSSL(name, proj_hidden_dim=8, proj_dim=4, backbone_kwargs=kwargs)
    assert "\n" not in str(e.value) and e.value.__cause__ is None


@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "ghostnet_050"])
def test_a_head_with_layers_of_its_own_sizes_the_projector_and_exports(name, tmp_path):
    from transformers import AutoModel

    torch.manual_seed(0)
    model = SpectralSSL(name, proj_hidden_dim=16, proj_dim=8)
    backbone = model.backbone
    assert backbone.head_hidden_size > backbone.num_features  # a conv after the pooling: the output is wider
    assert model.num_features == backbone.head_hidden_size == model.projector[0].in_features
    model.check_input(32)
    model.data_config.update(input_size=(3, 32, 32), crop_pct=1.0)
    model.eval().save_pretrained(tmp_path)
    assert f"({backbone.head_hidden_size}-d features" in (tmp_path / "README.md").read_text()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model.embed(x)
        assert ref.shape == (2, backbone.head_hidden_size)
        torch.testing.assert_close(SpectralSSL.from_pretrained(tmp_path).embed(x), ref, rtol=0, atol=0)
        torch.testing.assert_close(timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()(x), ref,
                                   rtol=0, atol=0)
        torch.testing.assert_close(AutoModel.from_pretrained(tmp_path).eval()(pixel_values=x).pooler_output, ref,
                                   rtol=0, atol=1e-6)


def test_global_pool_is_read_where_timm_reads_it(tmp_path):
    from timm.models._input import _get_global_pool

    from spectral_ssl.hub import global_pool_of

    for name, kwargs in (("convnext_atto", {}), ("test_resnet", {"global_pool": "max"}), ("test_vit", {}),
                         ("regnetx_002", {}), ("test_vit", {"global_pool": "avg"})):
        backbone = create_backbone(name, kwargs)
        assert global_pool_of(backbone) == _get_global_pool(backbone) and global_pool_of(backbone), name


def test_a_patch_size_that_does_not_divide_the_image_is_named(caplog):
    vit = SpectralSSL("vit_tiny_patch16_224", proj_hidden_dim=8, proj_dim=4,
                      backbone_kwargs={"img_size": 30, "patch_size": 4})  # timm floors 30 / 4 to 7 patches
    with caplog.at_level("WARNING", logger="spectral_ssl.model"):
        vit.check_input(30)
    assert "cuts 30x30 images into 4x4 patches: the last 2 pixel rows/columns are never seen" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="spectral_ssl.model"):
        SpectralSSL("vit_tiny_patch16_224", proj_hidden_dim=8, proj_dim=4,
                    backbone_kwargs={"img_size": 32, "patch_size": 4}).check_input(32)
    assert "patches" not in caplog.text


def test_save_load_round_trip_is_exact(trained_like, tmp_path):
    trained_like.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                          "projector.safetensors"]
    loaded = SpectralSSL.from_pretrained(tmp_path)
    x = torch.randn(3, 3, 32, 32)
    assert not loaded.training
    torch.testing.assert_close(loaded.embed(x), trained_like.embed(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded(x), trained_like(x), rtol=0, atol=0)
    assert loaded.data_config["input_size"] == (3, 32, 32)
    assert loaded.metadata["effective_rank"]["value"] == 5.5


def test_config_is_timm_schema_without_inherited_supervised_tags(trained_like, tmp_path):
    trained_like.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architecture"] == "test_resnet" and cfg["num_classes"] == 0 and cfg["num_features"] == 96
    assert "num_classes" not in cfg.get("model_args", {})
    pcfg = cfg["pretrained_cfg"]
    assert pcfg["input_size"] == [3, 32, 32] and pcfg["mean"] == [0.3, 0.3, 0.3] and pcfg["crop_pct"] == 1.0
    assert pcfg["tag"] == "spectral_ssl" and pcfg["num_classes"] == 0
    for inherited in ("hf_hub_id", "url", "origin_url", "paper_ids", "test_input_size"):
        assert inherited not in pcfg
    meta = cfg["spectral_ssl"]
    assert meta["effective_rank"]["estimator"] == "cov"
    assert meta["projector"] == {"in_dim": 96, "hidden_dim": 32, "dim": 16}
    from safetensors.torch import load_file

    keys = load_file(tmp_path / "model.safetensors").keys()
    assert set(keys) == set(trained_like.backbone.state_dict()) and not any(k.startswith("backbone.") for k in keys)


@pytest.mark.slow  # a fresh interpreter importing torch + timm
def test_plain_timm_local_dir_gives_identical_features_in_a_fresh_process(trained_like, tmp_path):
    """timm alone (no spectral_ssl model code imported) rebuilds the backbone from config.json."""
    trained_like.save_pretrained(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch, timm\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"  # same reduction order as this process: bit-equal
        "assert not any(m.startswith('spectral_ssl') for m in sys.modules)\n"
        f"m = timm.create_model('local-dir:{tmp_path}', pretrained=True).eval()\n"
        f"cfg = timm.data.resolve_model_data_config(m)\n"
        f"torch.save((m(torch.load('{tmp_path}/x.pt')), cfg['input_size'], cfg['mean']), '{tmp_path}/y.pt')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    y, input_size, mean = torch.load(tmp_path / "y.pt")
    torch.testing.assert_close(y, trained_like.embed(x), rtol=0, atol=0)
    assert tuple(input_size) == (3, 32, 32) and tuple(mean) == (0.3, 0.3, 0.3)


def test_architecture_kwargs_round_trip_through_timm(tmp_path):
    model = SpectralSSL("test_vit", proj_hidden_dim=16, proj_dim=8, backbone_kwargs={"img_size": 32}).eval()
    model.data_config.update(input_size=(3, 32, 32))
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_args"] == {"img_size": 32}
    x = torch.randn(2, 3, 32, 32)
    plain = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    torch.testing.assert_close(plain(x), model.embed(x), rtol=0, atol=0)
    assert SpectralSSL.from_pretrained(f"local-dir:{tmp_path}").backbone_kwargs == {"img_size": 32}


def test_strict_loading_refuses_mismatched_weights(trained_like, tmp_path):
    from safetensors.torch import load_file, save_file

    trained_like.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.safetensors does not match .*1 unexpected keys \(extra.weight\)"):
        SpectralSSL.from_pretrained(tmp_path)


def test_an_edited_export_config_is_one_line_naming_both_files(trained_like, tmp_path):
    trained_like.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architecture": "test_efficientnet"}))
    with pytest.raises(ValueError) as e:  # torch's own message: one line per key (58 for this pair)
        SpectralSSL.from_pretrained(tmp_path)
    message = str(e.value)
    assert "\n" not in message and str(tmp_path / "model.safetensors") in message
    assert str(tmp_path / "config.json") in message and "missing keys" in message and "restore config.json" in message


def test_missing_weights_and_pickle_only_folders_give_clear_errors(trained_like, tmp_path):
    trained_like.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        SpectralSSL.from_pretrained(tmp_path)
    torch.save(trained_like.backbone.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="safetensors only"):
        SpectralSSL.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither an existing folder"):
        SpectralSSL.from_pretrained(str(tmp_path / "does-not-exist"))


def test_config_naming_an_unknown_architecture_says_which_file_and_what_to_do(trained_like, tmp_path):
    trained_like.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["architecture"] = "resnet_from_the_future"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json describes a backbone .*resnet_from_the_future.*upgrade timm"):
        SpectralSSL.from_pretrained(tmp_path)


def test_plain_timm_export_without_projector_loads_with_fresh_projector(trained_like, tmp_path, caplog):
    trained_like.save_pretrained(tmp_path)
    (tmp_path / "projector.safetensors").unlink()
    loaded = SpectralSSL.from_pretrained(tmp_path)
    assert "projector is freshly initialised" in caplog.text
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.embed(x), trained_like.embed(x), rtol=0, atol=0)


@pytest.mark.parametrize("name, num_classes", [("test_resnet", 0), ("test_resnet", 10), ("test_vit", 10)])
def test_exports_written_by_timm_itself_load_head_less(name, num_classes, tmp_path, caplog):
    # timm's save_for_hf writes model_args with num_classes, and a classifier's head keys (fc.*, head.*)
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    plain = timm.create_model(name, num_classes=num_classes).eval()
    save_for_hf(plain, tmp_path, safe_serialization=True, model_args={"num_classes": num_classes})
    with caplog.at_level("INFO", logger="spectral_ssl"):
        loaded = SpectralSSL.from_pretrained(tmp_path)
    assert ("left out the classifier head" in caplog.text) == (num_classes > 0)
    x = torch.randn(2, *plain.pretrained_cfg["input_size"])
    torch.testing.assert_close(loaded.embed(x), plain.forward_head(plain.forward_features(x), pre_logits=True),
                               rtol=0, atol=0)


def test_check_input_names_the_key_to_fix_and_changes_nothing():
    model = SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.check_input(32)  # takes RGB 32x32: no error, no running statistic updated, still training
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    gray = SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8, backbone_kwargs={"in_chans": 1})
    with pytest.raises(ValueError, match=r"does not take 3x32x32 images .*drop in_chans: 1 from --backbone_kwargs"):
        gray.check_input(32)
    vit = SpectralSSL("vit_tiny_patch16_224", proj_hidden_dim=16, proj_dim=8)  # fixed 224 input
    with pytest.raises(ValueError) as e:
        vit.check_input(32)
    assert "\n" not in str(e.value) and "--image_size" in str(e.value) and "{img_size: 32}" in str(e.value)
    vit.check_input(224)
    with pytest.raises(ValueError, match=r"does not take 3x112x112 images .*set --selection_embed_size to a size the "
                                         r"backbone takes, or to null .*\{dynamic_img_size: true\}") as e:
        vit.check_input(112, key="--selection_embed_size")  # candidates embedded at half the side
    assert "\n" not in str(e.value) and "--image_size" not in str(e.value)
    SpectralSSL("vit_tiny_patch16_224", proj_hidden_dim=16, proj_dim=8,
                backbone_kwargs={"dynamic_img_size": True}).check_input(112, key="--selection_embed_size")


def test_timm_data_config_of_a_loaded_backbone_is_the_exports(trained_like, tmp_path):
    trained_like.save_pretrained(tmp_path)
    loaded = SpectralSSL.from_pretrained(tmp_path)
    resolved = timm.data.resolve_model_data_config(loaded.backbone)
    plain = timm.data.resolve_model_data_config(timm.create_model(f"local-dir:{tmp_path}", pretrained=True))
    assert resolved == {k: tuple(v) if isinstance(v, list) else v for k, v in plain.items()}  # JSON gives lists
    assert (resolved["input_size"], resolved["mean"], resolved["interpolation"]) == (
        (3, 32, 32), (0.3, 0.3, 0.3), "bilinear")
