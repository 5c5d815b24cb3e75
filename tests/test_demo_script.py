"""scripts/demo.py: the ETA line and how the demo wires it to the pretrain recipe (recipes replaced by fakes)."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import SCRIPTS, load_module


@pytest.fixture(scope="module")
def demo():
    return load_module(SCRIPTS / "demo.py")


def test_probe_estimate_scales_with_images_and_training_speed(demo):
    reference = demo.probe_seconds(20_000, demo.REFERENCE_TRAIN_IMG_PER_S)
    assert reference == pytest.approx(103.0)  # the measured reference run: 10 000 + 10 000 images
    assert demo.probe_seconds(40_000, demo.REFERENCE_TRAIN_IMG_PER_S / 2) == pytest.approx(4 * 103.0)
    assert demo.eta_line(530, 143) == "demo: about 12 min left on this machine (pretraining 9 min, probes 3 min)"


def test_the_demo_prints_one_eta_line_from_the_recipes_estimate(demo, monkeypatch, tmp_path, capsys):
    calls = []

    def pretrain_main(argv, *, on_eta):
        calls.append(argv)
        on_eta(300.0, demo.REFERENCE_TRAIN_IMG_PER_S)
        return tmp_path

    result = {"top1": 80.0}
    fakes = {"prepare_fashion_mnist": SimpleNamespace(main=lambda argv: None),
             "pretrain": SimpleNamespace(main=pretrain_main),
             "linear_probe": SimpleNamespace(main=lambda argv: dict.fromkeys(("pretrained", "random_init",
                                                                                "raw_pixels"), result))}
    monkeypatch.setattr(demo, "load_script", lambda path: fakes[Path(path).stem])
    meta = {"config": {"backbone": "resnet18"}, "loss": "infonce", "steps": 10, "global_batch": 128, "epochs": 1,
            "effective_rank": {"n_samples": 10, "value": 5.0, "dim": 256}}
    import spectral_ssl

    monkeypatch.setattr(spectral_ssl.SpectralSSL, "from_pretrained", lambda path: SimpleNamespace(metadata=meta))
    monkeypatch.setattr(demo, "choose_config", lambda cuda: (demo.CPU_CONFIG, demo.CPU_PROBE))
    demo.main([])
    lines = [line for line in capsys.readouterr().out.splitlines() if "left on this machine" in line]
    # 300 s of pretraining; 20 000 probe images (the whole test split) at the reference speed: 103 s
    assert lines == ["demo: about 7 min left on this machine (pretraining 5 min, probes 2 min)"]
    assert len(calls) == 1


def test_help_prepares_and_trains_nothing(demo, monkeypatch, capsys):
    monkeypatch.setattr(demo, "load_script", lambda path: pytest.fail(f"{path} loaded for --help"))
    demo.main(["--help"])
    out = capsys.readouterr().out
    assert "make demo" in out and "python recipes/pretrain.py --help" in out
